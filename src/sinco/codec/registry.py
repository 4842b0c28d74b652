"""The registry of codec families.

Adding a family is writing its adapter (a :class:`~sinco.codec.family.CodecFamily` subclass) and naming it in
:data:`FAMILY_CLASSES`. The adapters are imported on first use, not when this module is, and they do not import
the registry: knowledge that spans families (which family reads an option, the default family) lives here.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

from sinco.codec.family import BenchmarkMethod, CodecFamily
from sinco.errors import BitstreamError, InputError

#: ``module:class`` of every family adapter, in the order ``--help`` lists them.
FAMILY_CLASSES = (
    "sinco.codec.inr.family:SirenFamily",
    "sinco.codec.inr.family:PEMLPFamily",
    "sinco.codec.grid.family:GridFamily",
    "sinco.codec.grid3d.family:Grid3dFamily",
)
#: The family ``sinco compress`` uses when ``--arch`` is not given.
DEFAULT_FAMILY = "grid"
_REGISTRY: dict[str, CodecFamily] = {}


def _load() -> dict[str, CodecFamily]:
    if not _REGISTRY:
        families = []
        for path in FAMILY_CLASSES:
            module, cls = path.split(":")
            families.append(getattr(importlib.import_module(module), cls)())
        for i, family in enumerate(families):
            for other in families[:i]:
                if other.name == family.name or other.family_id == family.family_id:
                    raise RuntimeError(f"codec family {family.name!r} (id {family.family_id}) clashes with {other.name!r}")
        _REGISTRY.update((f.name, f) for f in families)
    return _REGISTRY


def all_families() -> tuple[CodecFamily, ...]:
    """Every registered family, in :data:`FAMILY_CLASSES` order."""
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
    """Benchmark method name -> (its family, the method's label and whether it is regularized)."""
    return {name: (family, method) for family in _load().values() for name, method in family.methods.items()}


def refuse_option(family: CodecFamily, dest: str) -> InputError:
    """The one-line error for a flag ``family`` does not read, naming the families that read it.

    Args:
        family: the family the option was given to.
        dest: the flag's argparse destination, e.g. ``"lbfgs_after"``.

    Returns:
        An :class:`~sinco.errors.InputError` to raise: ``--lbfgs-after: does not apply to --arch grid (an option of
        --arch siren, pe-mlp)``.
    """
    readers = [f.name for f in all_families() if f.name != family.name and f.reads_option(dest)]
    where = f" (an option of --arch {', '.join(readers)})" if readers else ""
    return InputError(f"{family.unread_option(dest)}{where}")


def check_options(family: CodecFamily, options: Mapping[str, Any]) -> None:
    """Refuse codec or fitting options ``family`` does not read (``None`` values are not given).

    Raises:
        InputError: naming the option and the families that read it.
    """
    for key, value in options.items():
        if value is not None and not family.reads_option(key):
            raise refuse_option(family, key)


def fit_config(arch: str, preset: str | None = None, overrides: Mapping[str, Any] | None = None) -> Any:
    """The fitting configuration of family ``arch``: its ``preset`` with the ``overrides`` that are set.

    Args:
        arch: a family name.
        preset: one of the family's presets (``None``: its default).
        overrides: option name -> value (``None``: keep the preset's).

    Returns:
        The family's configuration object.

    Raises:
        InputError: for an unknown family or preset, an option the family does not read (naming the families that
            do), or a bad value.

    Example::

        config = fit_config("grid", "fast", {"seed": 3})
        config.seed  # 3
    """
    family = get_family(arch)
    overrides = dict(overrides or {})
    check_options(family, overrides)
    return family.fit_config(preset, overrides)
