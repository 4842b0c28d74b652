"""The interface every codec family implements, and the report every fit returns.

A codec family is one kind of codec: how its hyper-parameters (its *spec*) are chosen for a
target rate and written into the file's family block, how an image is fitted, how the result is
turned into payload bytes, and how those bytes decode back to an image. The container around
block and payload (:mod:`sinco.codec.format`), compression (:mod:`sinco.compression`), the CLI and
the benchmark are the same for every family; they reach a family only through the registry
(:mod:`sinco.codec.registry`).

Family adapters keep torch imports inside their methods, so the CLI can list the families and their
options without importing torch.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sinco.errors import BitstreamError, InputError

#: Fitting options every codec family takes (the CLI's ``--steps``, ``--lr``, ``--seed``, ``--lam``, ``--reg-every``);
#: a family reads those of them it names in :attr:`CodecFamily.common_fit_options`.
COMMON_FIT_OPTIONS = ("steps", "lr", "seed", "lam", "reg_every")


@dataclass(frozen=True)
class FamilyOption:
    """A codec or fitting option a family reads, declared as data so the CLI can offer it as a flag.

    Args:
        dest: the option's name (the key in :attr:`CodecConfig.options` or in the fitting overrides).
        flag: the command-line flag.
        type: parses the flag's text.
        help: what it sets.
        metavar: the flag's value placeholder.
        aliases: other spellings of the flag that are still read (hidden from ``--help``).
    """

    dest: str
    flag: str
    type: Callable[[str], Any]
    help: str
    metavar: str | None = None
    aliases: tuple[str, ...] = ()


def parse_on_off(value: str, *, flag: str) -> bool:
    """An ``on|off`` family option as a bool.

    Raises:
        InputError: naming ``flag`` for any other value.
    """
    if value not in ("on", "off"):
        raise InputError(f"{flag} {value!r}: expected on or off")
    return value == "on"


@dataclass(frozen=True)
class BenchmarkMethod:
    """A benchmark method a family provides (declared here as data; the benchmark reads it).

    Args:
        label: the name tables and figures show.
        regularized: whether it fits with the structural regularizer.
        in_demo: whether ``sinco demo`` runs it (a demo should take minutes).
        volumes: whether it codes whole volumes (``sinco benchmark --volumes`` only; a family that codes slabs).
    """

    label: str
    regularized: bool
    in_demo: bool = True
    volumes: bool = False


@dataclass(frozen=True)
class FitReport:
    """What fitting one image cost and how it ended, the same fields for every family.

    Args:
        steps: optimization steps run for this file (every trial of a rate search, every phase).
        evaluations: gradient evaluations run (fewer than ``steps`` when L-BFGS converged early).
        seconds: wall-clock seconds of the fit (of the whole batch when images were fitted together).
        lam: the structural regularizer's weight used (0 when the fit had none).
        details: the family's own figures and bookkeeping, JSON-ready (the INR families: ``best_step``,
            ``divergences``, ``lr_final``, ...; the grid family: its rate search's ``lambda_rd``, ``rate_trials``,
            residual layer, ...). Only what the family really measured: no field is filled in for show.

    Example::

        report = FitReport(steps=900, evaluations=900, seconds=61.2, lam=0.0, details={"lambda_rd": 3e-4})
        report.to_dict()["lambda_rd"]  # 0.0003
    """

    steps: int
    evaluations: int
    seconds: float
    lam: float = 0.0
    details: Mapping[str, Any] = field(default_factory=dict)

    @property
    def divergences(self) -> int:
        """Times a fit restored its best state after diverging (0 for families that never do)."""
        return int(self.details.get("divergences", 0))

    def to_dict(self) -> dict[str, Any]:
        """The common fields then the details, flat, non-finite floats as ``None``."""
        common = {"steps": self.steps, "evaluations": self.evaluations, "fit_seconds": self.seconds, "lam": self.lam}
        return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in {**common, **self.details}.items()}


@dataclass(frozen=True)
class FitOutcome:
    """What fitting one image produced.

    Args:
        spec: the family's spec of the fitted codec (what the family block stores).
        payload: the payload bytes.
        report: how the fit went (:class:`FitReport`).
    """

    spec: Any
    payload: bytes
    report: FitReport


class CodecFamily(ABC):
    """One kind of codec. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the ``--arch`` name.
        family_id: the id byte in the file header (unique, 1..255).
        summary: one line for ``--help`` and ``sinco info``.
        options: the codec options it reads (see :class:`FamilyOption`).
        fit_options: the fitting options it accepts beyond the common ones (:data:`COMMON_FIT_OPTIONS`).
        common_fit_options: the common fitting options it reads.
        methods: benchmark method name -> :class:`BenchmarkMethod`.
        presets: the names of its fitting presets.
        default_preset: the preset used when none is named.
        codes_slabs: whether it codes volumes as slabs of slices (a version-3 volume file, :mod:`sinco.codec.volume`)
            rather than images; such a family implements :meth:`check_slab` and :meth:`decode_slab`.
    """

    name: ClassVar[str]
    family_id: ClassVar[int]
    summary: ClassVar[str]
    options: ClassVar[tuple[FamilyOption, ...]] = ()
    fit_options: ClassVar[tuple[FamilyOption, ...]] = ()
    common_fit_options: ClassVar[tuple[str, ...]] = ()
    methods: ClassVar[Mapping[str, BenchmarkMethod]] = {}
    presets: ClassVar[tuple[str, ...]] = ()
    default_preset: ClassVar[str]
    codes_slabs: ClassVar[bool] = False

    @abstractmethod
    def encode_spec(self, spec: Any) -> bytes:
        """The family block of a spec."""

    @abstractmethod
    def decode_spec(self, block: bytes, *, version: int) -> Any:
        """Parse a family block written by format ``version``.

        Raises:
            BitstreamError: if the block is malformed or describes a codec outside the family's caps.
        """

    @abstractmethod
    def check_payload(self, spec: Any, *, payload_bytes: int, height: int, width: int) -> None:
        """Refuse, before any allocation, a payload length the spec cannot have.

        Raises:
            BitstreamError: naming the mismatch.
        """

    @abstractmethod
    def fit_config(self, preset: str | None, overrides: Mapping[str, Any]) -> Any:
        """The fitting configuration (a frozen dataclass with ``to_dict``, ``seed``, ``lam``, ``steps``, and
        ``resolved(regularized=...)``, which names the data term of a default ``"auto"``:
        :func:`sinco.regularizer.terms.resolve_data_term`).

        Args:
            preset: a name from :attr:`presets` (``None``: :attr:`default_preset`).
            overrides: option name -> value, each one this family reads (:meth:`reads_option`); ``None`` values
                keep the preset's. :func:`sinco.codec.registry.fit_config` checks the names first.

        Raises:
            InputError: for an unknown preset, an option this family does not take, or a bad value.
        """

    @abstractmethod
    def fit(
        self,
        targets: Any,
        *,
        bpp: float,
        options: Mapping[str, Any],
        config: Any,
        device: Any,
        regularizer: Any = None,
        lam: Any = None,
        progress: bool = False,
        desc: str = "fit",
    ) -> list[FitOutcome]:
        """Fit ``S`` images of one shape at a target rate.

        Args:
            targets: float32 tensor ``(S, H, W)`` in ``[0, 1]``.
            bpp: target bits per pixel.
            options: the family's codec options (see :attr:`options`).
            config: from :meth:`fit_config`.
            device: where to fit.
            regularizer: maps reconstructions ``(S, 1, H, W)`` to per-image values ``(S,)``.
            lam: per-image regularizer weights ``(S,)``.
            progress: show a progress bar.
            desc: label of the progress bar.

        Returns:
            One :class:`FitOutcome` per image.

        Raises:
            InputError: if the rate cannot be met or an option is out of range.
        """

    @abstractmethod
    def decode(self, spec: Any, payload: bytes, *, height: int, width: int) -> np.ndarray:
        """Decode a payload on the CPU, deterministically, to a float32 image ``(H, W)`` in ``[0, 1]``.

        Memory is bounded whatever the spec says (decoding runs in chunks).

        Raises:
            BitstreamError: if the payload is invalid.
        """

    @abstractmethod
    def describe(self, spec: Any) -> dict[str, Any]:
        """A JSON-ready description of the spec (``arch`` first)."""

    def check_slab(self, spec: Any, *, payload_bytes: int, depth: int, height: int, width: int) -> None:
        """Refuse, before any allocation, a slab payload length or geometry the spec cannot have (families that code
        slabs only).

        Raises:
            BitstreamError: naming the mismatch (for a family that codes no slabs: always).
        """
        raise BitstreamError(f"codec family {self.name} codes no slabs of a volume")

    def decode_slab(self, spec: Any, payload: bytes, *, depth: int, height: int, width: int, slices: range) -> np.ndarray:
        """Decode the ``slices`` (positions in the slab) of a slab payload on the CPU, deterministically, to float32
        ``(len(slices), H, W)`` in ``[0, 1]`` (families that code slabs only).

        Raises:
            BitstreamError: if the payload is invalid (for a family that codes no slabs: always).
        """
        raise BitstreamError(f"codec family {self.name} codes no slabs of a volume")

    def describe_payload(self, spec: Any, payload: bytes) -> dict[str, Any]:
        """JSON-ready facts about a payload's layout for ``sinco info`` (nothing by default).

        Raises:
            BitstreamError: if the payload's head is malformed.
        """
        return {}

    def check_rate(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> None:
        """Refuse, before any fitting, a rate this family cannot meet on images of this shape (nothing by default:
        a family that searches its rate finds out by fitting).

        Raises:
            InputError: naming ``--bpp``.
        """
        return None

    def describe_fit(self, config: Any) -> str:
        """One phrase describing a fitting configuration, for tables."""
        return ", ".join(f"{k} {v}" for k, v in config.to_dict().items())

    def rate_fields(self, spec: Any, *, n_pixels: int) -> dict[str, Any]:
        """Rate figures besides the file's own (e.g. the paper's parameter bpp); none by default."""
        return {}

    def reads_option(self, dest: str) -> bool:
        """Whether this family reads the option whose argparse destination is ``dest`` (a codec or fitting option)."""
        return dest in self.common_fit_options or any(o.dest == dest for o in (*self.options, *self.fit_options))

    def check_fit_config(self, config: Any) -> None:
        """Refuse a fitting configuration made for another family (an INR configuration given to ``grid``).

        Raises:
            InputError: naming ``fit_config``, its type and the type this family takes.
        """
        expected = type(self.fit_config(None, {}))
        # The exact type: one family's configuration may extend another's (grid3d's is grid's) and still not fit it.
        if type(config) is not expected:
            raise InputError(f"fit_config: a {type(config).__name__} does not configure --arch {self.name}, which takes a "
                             f"{expected.__name__} (sinco.codec.registry.fit_config(arch, preset, overrides) makes one)")  # fmt: skip

    def unread_option(self, dest: str) -> InputError:
        """The error for an option this family does not read (:func:`sinco.codec.registry.refuse_option` adds the
        families that do read it)."""
        return InputError(f"--{dest.replace('_', '-')}: does not apply to --arch {self.name}")

    def given_overrides(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The overrides that are set (not ``None``), each checked to be one this family reads.

        Raises:
            InputError: naming the first option it does not read.
        """
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in given:
            if not self.reads_option(key):
                raise self.unread_option(key)
        return given
