"""The latent-grid family's adapter (``--arch grid``): what the registry, compression and the CLI see of it.

Family block: the bytes of :class:`~sinco.codec.grid.spec.GridSpec` (its own version byte first).
Payload: the quantized networks and the range-coded latents with their checksum, and a residual layer where the
rate search added one (:func:`sinco.codec.grid.payload.decode_grid`).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sinco.codec.family import BenchmarkMethod, CodecFamily, FamilyOption, FitOutcome, FitReport, parse_on_off
from sinco.codec.format import OVERHEAD_BYTES
from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.spec import DEFAULT_WARM_START, UPSAMPLING_KINDS, GridSpec
from sinco.errors import BitstreamError, InputError
from sinco.regularizer.terms import AUTO_DATA_TERM, resolve_data_term

# A payload above 32 bits per pixel (plus a margin for the networks) is no grid payload.
MAX_PAYLOAD_BITS_PER_PIXEL = 32
PAYLOAD_MARGIN_BYTES = 1 << 16
# The grid's loss is per pixel (MSE + rate): sse divides the regularizer by H W; l2 has no such form.
GRID_DATA_TERMS = ("mse", "sse")
#: ``--data-term`` of the latent-grid families.
UPSAMPLING_OPTION = FamilyOption("upsampling", "--upsampling", str, "how the latent grids reach full resolution: learned (a "
                                 "kernel per 2x stage, fitted and coded with the decoder) or bicubic (fixed) (default: learned)",
                                 "learned|bicubic")  # fmt: skip
WARM_START_OPTION = FamilyOption("warm_start", "--warm-start", str, "start each fit from the packaged decoder weights and code "
                                 "the weights as differences from them (on), or from random weights coded as they are (off) "
                                 "(default: on)", "on|off")  # fmt: skip
DATA_TERM_OPTION = FamilyOption("data_term", "--data-term", str, "data term: mse or sse (the regularizer's weight over H W; "
                                "default: sse with the regularizer, else mse)", "mse|sse")  # fmt: skip


@dataclass(frozen=True)
class GridFamilyFit:
    """The grid family's fitting configuration: the grid fit, whether ``lambda_rd`` is fixed, and the regularizer.

    Args:
        grid: the :class:`~sinco.codec.grid.config.GridFitConfig`.
        fixed_lambda: ``--lambda-rd`` was given: one fit at that weight, no rate search.
        lam: weight of the structural regularizer.
        reg_every: the regularizer's period (the grid fit applies it every step: 1 only).
        data_term: ``"mse"``, ``"sse"`` or ``"auto"`` (``"sse"`` with a segmentation network, else
            ``"mse"``; :func:`sinco.regularizer.terms.resolve_data_term`). With ``"sse"`` the objective is
            the paper's ``||x_hat - x||^2 + lam (1 - Dice)`` plus the rate term, divided by the pixel
            count so that ``lambda_rd`` keeps its meaning: the regularizer's weight becomes ``lam / (H W)``.
    """

    grid: Any
    fixed_lambda: bool = False
    lam: float = 1.0
    reg_every: int = 1
    data_term: str = AUTO_DATA_TERM
    #: The family's name, for error messages.
    arch: ClassVar[str] = "grid"

    def __post_init__(self) -> None:
        if self.data_term not in (*GRID_DATA_TERMS, AUTO_DATA_TERM):
            raise InputError(f"--data-term {self.data_term!r}: --arch {self.arch} takes {' or '.join(GRID_DATA_TERMS)} "
                             "(its rate term is per pixel; l2 has no such form)")  # fmt: skip

    @property
    def seed(self) -> int:
        """The fit's seed."""
        return self.grid.seed

    @property
    def steps(self) -> int:
        """Steps of a fit from scratch."""
        return self.grid.steps

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return {**self.grid.to_dict(), "fixed_lambda": self.fixed_lambda, "lam": self.lam, "reg_every": self.reg_every,
                "data_term": self.data_term}  # fmt: skip

    def resolved(self, *, regularized: bool) -> GridFamilyFit:
        """This configuration with ``data_term`` ``"auto"`` replaced by the term the fit uses."""
        return dataclasses.replace(self, data_term=resolve_data_term(self.data_term, regularized=regularized))

    def regularizer_weights(self, lam: Any, *, regularized: bool, pixels: int) -> Any:
        """The weights ``lam`` of the regularizer in a loss whose data term is the MSE over ``pixels`` pixels: ``lam``
        itself for ``mse``, ``lam / pixels`` for ``sse`` (the paper's ``||x_hat - x||^2 + lam (1 - Dice)`` divided by
        the pixel count, so that ``lambda_rd`` keeps its meaning)."""
        return lam / pixels if self.resolved(regularized=regularized).data_term == "sse" else lam


class GridFamily(CodecFamily):
    """Latent grids + synthesis + auto-regressive entropy model, as Cool-chic and C3 (single channel, any bit depth)."""

    name = "grid"
    family_id = 3
    summary = "latent grids, synthesis network and auto-regressive entropy model, entropy-coded (Cool-chic / C3 style)"
    options = (UPSAMPLING_OPTION, WARM_START_OPTION)
    fit_options = (
        FamilyOption("lambda_rd", "--lambda-rd", float,
                     "rate weight of the loss MSE + lambda_rd x bits / pixels; given, one fit at it (no --bpp search)", "X"),
        DATA_TERM_OPTION,
        FamilyOption("residual", "--residual", str, "with --bpp, may code the grid's error in a residual layer with the "
                     "bits the grids leave below the target (default: on)", "on|off"),
        FamilyOption("context", "--context", str, "with --bpp, may code the image's grey levels by the context coder "
                     "alone: exact when --bpp reaches the lossless rate, else within the least error bound that fits "
                     "(default: on)", "on|off"),
        FamilyOption("hybrid", "--hybrid", str, "with --bpp, may code the image's grey levels by the context coder reading "
                     "a grid file's decoded image as a prediction, within the least error bound that fits (default: off)", "on|off"),
        FamilyOption("candidates", "--candidates", int, "a fit from scratch trains N seeds (--seed, --seed + 1, ...) for "
                     "1/15 of its steps and goes on with the one of least loss (default: the preset's, fast 1, quality and long 4)", "N"),
    )  # fmt: skip
    common_fit_options = ("steps", "seed", "lam", "reg_every")
    methods = {
        "grid": BenchmarkMethod("Latent grids", regularized=False),
        # A rate search with the regularizer doubles the demo's time for a method the plain one already shows.
        "sinco-grid": BenchmarkMethod("SINCO (latent grids)", regularized=True, in_demo=False),
    }
    presets = tuple(GRID_PRESETS)
    default_preset = "fast"

    def encode_spec(self, spec: Any) -> bytes:
        return spec.to_bytes()

    def decode_spec(self, block: bytes, *, version: int) -> Any:
        if version < 2:
            raise BitstreamError("corrupted .sinco file: a grid codec in a version-1 file")
        from sinco.codec.grid.warm_start import load_warm_start

        spec = GridSpec.from_bytes(block)
        load_warm_start(spec)  # an unknown warm start, or one of another decoder spec, is refused before the payload is read
        return spec

    def make_spec(self, options: Mapping[str, Any]) -> Any:
        """The decoder spec of a fit: the default ``GridSpec`` with the options given.

        Raises:
            InputError: on an option this family does not read or an unknown upsampling kind.
        """
        upsampling = options.get("upsampling") or "learned"
        if upsampling not in UPSAMPLING_KINDS:
            raise InputError(f"--upsampling {upsampling!r}: expected one of {', '.join(UPSAMPLING_KINDS)}")
        warm = parse_on_off(options.get("warm_start") or "on", flag="--warm-start")
        spec = GridSpec(upsampling=upsampling)
        # The packaged warm start serves the default decoder spec only; another spec starts from random weights.
        return dataclasses.replace(spec, warm_start=DEFAULT_WARM_START) if warm and spec == GridSpec() else spec

    def check_rate(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> None:
        self.make_spec(options)

    def check_payload(self, spec: Any, *, payload_bytes: int, height: int, width: int) -> None:
        spec.validate_for(height, width, error=BitstreamError)
        cap = MAX_PAYLOAD_BITS_PER_PIXEL * height * width // 8 + PAYLOAD_MARGIN_BYTES
        if payload_bytes > cap:
            raise BitstreamError(f"implausible .sinco file: a grid payload of {payload_bytes} bytes for {height}x{width} pixels")

    def fit_config(self, preset: str | None, overrides: Mapping[str, Any]) -> GridFamilyFit:
        preset = self.default_preset if preset is None else preset
        if preset not in GRID_PRESETS:
            raise InputError(f"--preset {preset!r}: --arch {self.name} has presets {', '.join(GRID_PRESETS)}")
        given = self.given_overrides(overrides)
        if given.get("reg_every", 1) != 1:
            raise InputError(f"--reg-every {given['reg_every']}: --arch {self.name} applies the regularizer every step (1)")
        grid = GRID_PRESETS[preset]
        if "steps" in given:
            grid = grid.with_steps(given["steps"])
        grid = dataclasses.replace(grid, **{k: given[k] for k in ("seed", "lambda_rd") if k in given})
        if "residual" in given:
            grid = dataclasses.replace(grid, residual=parse_on_off(given["residual"], flag="--residual"))
        if "context" in given:
            grid = dataclasses.replace(grid, context=parse_on_off(given["context"], flag="--context"))
        if "hybrid" in given:
            grid = dataclasses.replace(grid, hybrid=parse_on_off(given["hybrid"], flag="--hybrid"))
        if "candidates" in given:
            grid = grid.with_candidates(given["candidates"])
        return GridFamilyFit(grid=grid, fixed_lambda="lambda_rd" in given, **regularizer_fields(given))

    def fit(self, targets: Any, *, bpp: float, options: Mapping[str, Any], config: GridFamilyFit, device: Any, regularizer: Any = None,
            lam: Any = None, progress: bool = False, desc: str = "fit") -> list[FitOutcome]:  # fmt: skip
        from sinco.codec.grid.rate_search import fit_grid_at_bpp
        from sinco.codec.grid.training import fit_grid

        spec = self.make_spec(options)
        lam_used = [0.0] * targets.shape[0] if regularizer is None or lam is None else [float(v) for v in lam]
        if lam is not None:
            pixels = targets.shape[-2] * targets.shape[-1]
            lam = config.regularizer_weights(lam, regularized=regularizer is not None, pixels=pixels)
        common = dict(spec=spec, config=config.grid, device=device, regularizer=regularizer, lam=lam, progress=progress)
        if config.fixed_lambda:
            results = fit_grid(targets, **common)
        else:
            header = OVERHEAD_BYTES + len(spec.to_bytes())
            results = fit_grid_at_bpp(targets, target_bpp=bpp, header_bytes=header, **common)
        return [FitOutcome(spec=r.spec, payload=r.payload, report=_report(r, lam=lam_i)) for r, lam_i in zip(results, lam_used, strict=True)]

    def decode(self, spec: Any, payload: bytes, *, height: int, width: int) -> np.ndarray:
        from sinco.codec.grid.payload import decode_grid

        return decode_grid(payload, spec=spec, height=height, width=width)

    def describe_payload(self, spec: Any, payload: bytes) -> dict[str, Any]:
        from sinco.codec.grid.payload import payload_layout

        return payload_layout(payload)

    def describe(self, spec: Any) -> dict[str, Any]:
        fields = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec).items()}
        return {"arch": self.name, **fields}

    def describe_fit(self, config: GridFamilyFit) -> str:
        grid = config.grid
        rate = f"lambda_rd {grid.lambda_rd:g}" if config.fixed_lambda else f"lambda_rd searched (at most {grid.max_rate_trials} fits)"
        layer = ", residual layer where it pays" if grid.residual and not config.fixed_lambda else ""
        layer += ", context-coded levels where they pay" if grid.context and not config.fixed_lambda else ""
        layer += ", context-coded levels on a grid prediction where they pay" if grid.hybrid and not config.fixed_lambda else ""
        picks = f", best of {grid.candidates} seeds after {grid.candidate_steps} steps without a warm start" if grid.candidates > 1 else ""
        return f"{grid.steps} steps ({grid.ste_steps} straight-through){picks}, {rate}{layer}"


def regularizer_fields(given: Mapping[str, Any]) -> dict[str, Any]:
    """The regularizer's settings of a fitting configuration from the overrides given: ``lam`` (default 1) and
    ``data_term`` (default ``"auto"``).

    Raises:
        InputError: naming ``--lam`` when it is negative or not finite.
    """
    lam = given.get("lam", 1.0)
    if not (math.isfinite(lam) and lam >= 0):
        raise InputError(f"--lam {lam}: must be a non-negative number")
    return {"lam": lam, "data_term": given.get("data_term", AUTO_DATA_TERM)}


def _report(result: Any, *, lam: float) -> FitReport:
    """The common report of a grid fit: every step of every trial, and the rate search's own figures."""
    details = {"lambda_rd": result.config.lambda_rd, "rate_trials": result.trials, "within_band": result.within_band,
               "network_rate_weight": result.network_rate_weight, "residual_levels": result.residual_levels,
               "residual_step": result.residual_step, "residual_bits": result.residual_bits, "candidate_seed": result.candidate_seed,
               "estimated_bits": result.estimated_bits, "latent_bits_estimate": result.latent_bits_estimate,
               "network_bits": result.network_bits, "context_coded": result.payload[:1] == b"\x03",
               "grid_prediction": result.payload[:1] == b"\x03" and result.payload[1:5] != bytes(4)}  # fmt: skip
    return FitReport(steps=result.steps, evaluations=result.steps, seconds=result.seconds, lam=lam, details=details)
