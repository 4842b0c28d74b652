"""The interface every codec family implements.

A codec family is one kind of codec: how its hyper-parameters (its *spec*) are chosen for a
target rate and written into the file's family block, how an image is fitted, how the result is
turned into payload bytes, and how those bytes decode back to an image. The container around
block and payload (:mod:`sinco.codec.format`), the pipeline (:mod:`sinco.pipeline`), the CLI and
the benchmark are the same for every family; they reach a family only through the registry
(:mod:`sinco.codec.families`).

Family modules keep torch imports inside their methods, so the CLI can list the families without
importing torch.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from sinco.errors import InputError


@dataclass(frozen=True)
class FamilyOption:
    """A codec option a family reads, declared as data so the CLI can offer it as a flag.

    Args:
        dest: the option's name (the key in :attr:`CodecConfig.options`).
        flag: the command-line flag.
        type: parses the flag's text.
        help: what it sets.
        metavar: the flag's value placeholder.
    """

    dest: str
    flag: str
    type: Callable[[str], Any]
    help: str
    metavar: str | None = None


@dataclass(frozen=True)
class BenchmarkMethod:
    """A benchmark method a family provides.

    Args:
        label: the name tables and figures show.
        regularised: whether it fits with the structural regulariser.
        in_demo: whether ``sinco demo`` runs it (a demo should take minutes).
    """

    label: str
    regularised: bool
    in_demo: bool = True


@dataclass(frozen=True)
class FitOutcome:
    """What fitting one image produced.

    Args:
        spec: the family's spec of the fitted codec (what the family block stores).
        payload: the payload bytes.
        report: the fitting loop's report (best step, steps, evaluations, divergences, lam, reg_every,
            lr_final, compiled, batch, seconds).
        extras: family-specific figures for the record (e.g. ``psnr_fp32``, ``bpp_params``).
    """

    spec: Any
    payload: bytes
    report: Any
    extras: Mapping[str, Any] = field(default_factory=dict)


class CodecFamily(ABC):
    """One kind of codec. Subclasses set the class attributes and implement the methods.

    Attributes:
        name: the ``--arch`` name.
        family_id: the id byte in the file header (unique, 1..255).
        summary: one line for ``--help`` and ``sinco info``.
        options: the codec options it reads (see :class:`FamilyOption`).
        fit_options: the fitting options it accepts beyond the common ones (``steps``, ``lr``,
            ``seed``, ``lam``, ``reg_every``), declared like :attr:`options`.
        common_fit_options: the common fitting options it reads.
        methods: benchmark method name -> :class:`BenchmarkMethod`.
        presets: preset name -> fitting settings.
        default_preset: the preset used when none is named.
    """

    name: ClassVar[str]
    family_id: ClassVar[int]
    summary: ClassVar[str]
    options: ClassVar[tuple[FamilyOption, ...]] = ()
    fit_options: ClassVar[tuple[FamilyOption, ...]] = ()
    common_fit_options: ClassVar[tuple[str, ...]] = ()
    methods: ClassVar[Mapping[str, BenchmarkMethod]] = {}
    presets: ClassVar[Mapping[str, Mapping[str, Any]]] = {}
    default_preset: ClassVar[str]

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
        ``resolved(regularised=...)``, which names the data term of a default ``"auto"``:
        :func:`sinco.fit.config.resolve_data_term`).

        Args:
            preset: a name from :attr:`presets` (``None``: :attr:`default_preset`).
            overrides: option name -> value; ``None`` values keep the preset's.

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
            lam: per-image regulariser weights ``(S,)``.
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

    def check_options(self, options: Mapping[str, Any]) -> None:
        """Refuse options this family does not read.

        Raises:
            InputError: naming the option's flag.
        """
        known = {o.dest for o in self.options}
        for key in options:
            if key not in known:
                raise self.refuse_option(key)

    def reads_option(self, dest: str) -> bool:
        """Whether this family reads the flag whose argparse destination is ``dest`` (a codec or fitting option)."""
        return dest in self.common_fit_options or any(o.dest == dest for o in (*self.options, *self.fit_options))

    def check_fit_config(self, config: Any) -> None:
        """Refuse a fitting configuration made for another family (an INR ``FitConfig`` given to ``grid``).

        Raises:
            InputError: naming ``fit``, its type and the type this family takes.
        """
        expected = type(self.fit_config(None, {}))
        if not isinstance(config, expected):
            raise InputError(f"fit: a {type(config).__name__} does not configure --arch {self.name}, which takes a "
                             f"{expected.__name__} (codec.family.fit_config(preset, overrides) makes one)")  # fmt: skip

    def refuse_option(self, dest: str) -> InputError:
        """The one-line error for a flag this family does not read, naming the families that read it.

        Args:
            dest: the flag's argparse destination, e.g. ``"lbfgs_after"``.

        Returns:
            An :class:`~sinco.errors.InputError` to raise: ``--lbfgs-after: does not apply to --arch grid (an
            option of --arch siren, pe-mlp)``.
        """
        from sinco.codec.families import all_families

        readers = [f.name for f in all_families() if f.name != self.name and f.reads_option(dest)]
        where = f" (an option of --arch {', '.join(readers)})" if readers else ""
        return InputError(f"--{dest.replace('_', '-')}: does not apply to --arch {self.name}{where}")
