"""The benchmark's methods, declared once: the codec families' (from the codec registry) and the classical codecs'
(from the classical registry), with the labels tables and figures show."""

from __future__ import annotations

from typing import Any

#: What ``sinco benchmark`` runs when ``--methods`` is not given (the regularized ones only with ``--seg-model``).
DEFAULT_METHODS = ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "jpeg", "jpeg2000")
#: The Bjontegaard anchor of the tables when ``--anchor`` is not given: VVC intra, the state of the art of classical
#: still-image coding here; where it does not run, the tables fall back to :data:`SECOND_ANCHOR`.
DEFAULT_ANCHOR = "vvc"
#: The anchor every table also compares with (when it ran): JPEG 2000, the usual anchor of medical image compression.
SECOND_ANCHOR = "jpeg2000"


def codec_methods() -> dict[str, tuple[Any, Any]]:
    """The neural codec methods: name -> (family, :class:`~sinco.codec.family.BenchmarkMethod`)."""
    from sinco.codec.registry import benchmark_methods

    return benchmark_methods()


def classical_methods() -> tuple[str, ...]:
    """The classical codecs' method names (:data:`sinco.classical.registry.CLASSICAL_CODECS`)."""
    from sinco.classical.registry import CLASSICAL_CODECS

    return tuple(CLASSICAL_CODECS)


def volume_methods() -> tuple[str, ...]:
    """The methods that code whole volumes, ``--volumes`` only: the codec families' volume methods (``grid3d``) and the
    classical volume codecs (:data:`sinco.classical.registry.VOLUME_CODECS`)."""
    from sinco.classical.registry import VOLUME_CODECS

    return (*(m for m, (_, info) in codec_methods().items() if info.volumes), *VOLUME_CODECS)


def all_methods() -> tuple[str, ...]:
    """Every benchmark method of single slices: the codec families' (plain fits first, then the regularized ones, as
    the paper's Table 1 orders them) and the classical codecs (the volume methods are :func:`volume_methods`)."""
    methods = {m: info for m, (_, info) in codec_methods().items() if not info.volumes}
    plain = [m for m, info in methods.items() if not info.regularized]
    return (*plain, *(m for m in methods if m not in plain), *classical_methods())


def is_regularized(method: str) -> bool:
    """Whether ``method`` fits with the structural regularizer."""
    methods = codec_methods()
    return method in methods and methods[method][1].regularized


def swept_key(method: str, lam: float) -> str:
    """The name of one lambda of a swept method in the Bjontegaard section, e.g. ``sinco-siren@0.1``
    (:func:`method_label` shows it as "SINCO (SIREN), lambda 0.1")."""
    return f"{method}@{lam:g}"


def method_label(method: str, lam: float | None = None) -> str:
    """The name tables and figures show for a method (with its lambda when a sweep ran several)."""
    from sinco.classical.registry import CLASSICAL_CODECS, VOLUME_CODECS

    if "@" in method:  # one lambda of a swept method (see swept_key)
        base, value = method.split("@", 1)
        return f"{method_label(base)}, lambda {value}"
    known = codec_methods()
    classical = {**CLASSICAL_CODECS, **VOLUME_CODECS}
    label = known[method][1].label if method in known else (classical[method].label if method in classical else method)
    return label if lam is None else f"{label}, lambda {lam:g}"
