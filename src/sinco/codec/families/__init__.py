"""The registry of codec families.

Adding a family is writing its module (a :class:`~sinco.codec.families.base.CodecFamily`
subclass decorated with :func:`register`) and naming that module in :data:`FAMILY_MODULES`.
The modules are imported on first use, not when this package is.
"""

from __future__ import annotations

import importlib

from sinco.codec.families.base import BenchmarkMethod, CodecFamily, FamilyOption, FitOutcome
from sinco.errors import BitstreamError, InputError

__all__ = ["BenchmarkMethod", "CodecFamily", "FamilyOption", "FitOutcome", "all_families", "benchmark_methods", "family_by_id", "get_family",
           "register"]  # fmt: skip

FAMILY_MODULES = (
    "sinco.codec.families.siren",
    "sinco.codec.families.pe_mlp",
    "sinco.codec.families.grid",
)
# The family `sinco compress` uses when --arch is not given.
DEFAULT_FAMILY = "grid"
_REGISTRY: dict[str, CodecFamily] = {}


def register(cls: type[CodecFamily]) -> type[CodecFamily]:
    """Class decorator: add a family to the registry (its name and id must be new)."""
    family = cls()
    for other in _REGISTRY.values():
        if other.name == family.name or other.family_id == family.family_id:
            raise ValueError(f"codec family {family.name!r} (id {family.family_id}) clashes with {other.name!r}")
    _REGISTRY[family.name] = family
    return cls


def _load() -> dict[str, CodecFamily]:
    if len(_REGISTRY) < len(FAMILY_MODULES):
        for module in FAMILY_MODULES:
            importlib.import_module(module)
    return _REGISTRY


def all_families() -> tuple[CodecFamily, ...]:
    """Every registered family, in :data:`FAMILY_MODULES` order."""
    return tuple(_load().values())


def get_family(name: str) -> CodecFamily:
    """The family called ``name``.

    Raises:
        InputError: naming ``--arch`` and the known names.
    """
    families = _load()
    if name not in families:
        raise InputError(f"--arch {name!r}: expected one of {', '.join(families)}")
    return families[name]


def family_by_id(family_id: int) -> CodecFamily:
    """The family with this header id.

    Raises:
        BitstreamError: for an unknown id.
    """
    for family in _load().values():
        if family.family_id == family_id:
            return family
    raise BitstreamError(f"unknown codec family id {family_id} in .sinco header")


def benchmark_methods() -> dict[str, tuple[CodecFamily, BenchmarkMethod]]:
    """Benchmark method name -> (its family, the method's label and whether it is regularised)."""
    return {name: (family, method) for family in _load().values() for name, method in family.methods.items()}
