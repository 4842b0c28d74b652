"""The volume latent-grid family's adapter (``--arch grid3d``): what the registry, compression and the CLI see of it.

Family block: the bytes of :class:`~sinco.codec.grid3d.spec.Grid3dSpec`, once per volume file (format version 3,
:mod:`sinco.codec.volume`). Payload: one per slab (:mod:`sinco.codec.grid3d.payload`). The family codes volumes only:
a single image given to it is refused (``grid`` codes it better than a one-slice slab, which would pay the volume
header and read no previous slice).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from sinco.codec.family import BenchmarkMethod, CodecFamily, FamilyOption, FitOutcome, parse_on_off
from sinco.codec.grid.family import DATA_TERM_OPTION, UPSAMPLING_OPTION, WARM_START_OPTION, GridFamilyFit, regularizer_fields
from sinco.codec.grid.spec import DEFAULT_WARM_START, UPSAMPLING_KINDS, GridSpec
from sinco.codec.grid3d.config import DEFAULT_SLAB, GRID3D_PRESETS, MAX_SLAB
from sinco.codec.grid3d.spec import Grid3dSpec, depth_stages_for
from sinco.errors import BitstreamError, InputError

#: The volume file format version whose family block this family reads.
SLAB_FORMAT_VERSION = 3
# A slab payload above 32 bits per voxel (plus a margin for the networks) is no grid3d payload.
MAX_PAYLOAD_BITS_PER_VOXEL = 32
PAYLOAD_MARGIN_BYTES = 1 << 16


@dataclass(frozen=True)
class Grid3dFamilyFit(GridFamilyFit):
    """The volume family's fitting configuration: ``grid``'s (:class:`~sinco.codec.grid.family.GridFamilyFit`), its
    ``grid`` the :class:`~sinco.codec.grid.config.GridFitConfig` of each slab's fit and ``fixed_lambda`` one fit per
    slab at ``--lambda-rd``; ``lam`` and ``data_term`` weigh the structural regularizer on the slab's slices."""

    arch: ClassVar[str] = "grid3d"


class Grid3dFamily(CodecFamily):
    """Latent grids over ``(slices, H, W)``, one synthesis network and one entropy model per slab of slices."""

    name = "grid3d"
    family_id = 4
    summary = "volumes as volumes: 3-D latent grids per slab of slices, one synthesis and entropy model per slab (needs --slices)"
    options = (
        UPSAMPLING_OPTION,
        WARM_START_OPTION,
        FamilyOption("slab", "--slab", int, f"slices per slab: each slab an independent fit, the unit of random access "
                     f"(default: {DEFAULT_SLAB}, at most {MAX_SLAB})", "N"),
    )  # fmt: skip
    fit_options = (
        FamilyOption("lambda_rd", "--lambda-rd", float,
                     "rate weight of the loss MSE + lambda_rd x bits / pixels; given, one fit at it (no --bpp search)", "X"),
        DATA_TERM_OPTION,
    )  # fmt: skip
    common_fit_options = ("steps", "seed", "lam")
    methods = {"grid3d": BenchmarkMethod("Latent grids 3-D (slabs)", regularized=False, in_demo=False, volumes=True)}
    presets = tuple(GRID3D_PRESETS)
    default_preset = "fast"
    codes_slabs = True

    def encode_spec(self, spec: Any) -> bytes:
        return spec.to_bytes()

    def decode_spec(self, block: bytes, *, version: int) -> Any:
        if version != SLAB_FORMAT_VERSION:
            raise BitstreamError(f"corrupted .sinco file: a grid3d codec in a version-{version} file (it codes volume files of slabs)")
        from sinco.codec.grid3d.warm_start import load_warm_start

        spec = Grid3dSpec.from_bytes(block)
        load_warm_start(spec)  # an unknown warm start, or one of another decoder spec, is refused before a slab is read
        return spec

    def slab_size(self, options: Mapping[str, Any]) -> int:
        """Slices per slab (``--slab``).

        Raises:
            InputError: naming ``--slab`` outside ``1..MAX_SLAB``.
        """
        slab = DEFAULT_SLAB if options.get("slab") is None else options["slab"]
        if not isinstance(slab, int) or not 1 <= slab <= MAX_SLAB:
            raise InputError(f"--slab {slab}: expected 1..{MAX_SLAB} slices")
        return slab

    def make_spec(self, options: Mapping[str, Any], *, spacing: Sequence[float] = (1.0, 1.0, 1.0)) -> Grid3dSpec:
        """The decoder spec of a volume: ``grid``'s default in-plane spec, its pyramid halving the slice axis where the
        voxel ``spacing`` ``(slice, row, column)`` asks for it (:func:`depth_stages_for`), from ``grid``'s warm start
        unless ``--warm-start off`` (or ``--upsampling bicubic``, which the warm start was not fitted for).

        Raises:
            InputError: on an unknown upsampling kind, a bad ``--slab`` or spacing.
        """
        upsampling = options.get("upsampling") or "learned"
        if upsampling not in UPSAMPLING_KINDS:
            raise InputError(f"--upsampling {upsampling!r}: expected one of {', '.join(UPSAMPLING_KINDS)}")
        warm = parse_on_off(options.get("warm_start") or "on", flag="--warm-start")
        self.slab_size(options)
        plane = GridSpec(upsampling=upsampling)
        # grid's warm start serves its default decoder spec only; another in-plane spec starts from random weights.
        warm_start = DEFAULT_WARM_START if warm and plane == GridSpec() else 0
        return Grid3dSpec(plane=plane, depth_stages=depth_stages_for(spacing=spacing, levels=plane.levels), warm_start=warm_start)

    def check_rate(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> None:
        self.make_spec(options)

    def check_payload(self, spec: Any, *, payload_bytes: int, height: int, width: int) -> None:
        raise BitstreamError("corrupted .sinco file: a grid3d codec outside a volume file of slabs")

    def check_slab(self, spec: Any, *, payload_bytes: int, depth: int, height: int, width: int) -> None:
        spec.validate_for(depth, height, width, error=BitstreamError)
        cap = MAX_PAYLOAD_BITS_PER_VOXEL * depth * height * width // 8 + PAYLOAD_MARGIN_BYTES
        if payload_bytes > cap:
            raise BitstreamError(f"implausible .sinco volume file: a grid3d slab payload of {payload_bytes} bytes for {depth}x{height}x{width} voxels")

    def fit_config(self, preset: str | None, overrides: Mapping[str, Any]) -> Grid3dFamilyFit:
        preset = self.default_preset if preset is None else preset
        if preset not in GRID3D_PRESETS:
            raise InputError(f"--preset {preset!r}: --arch {self.name} has presets {', '.join(GRID3D_PRESETS)}")
        given = self.given_overrides(overrides)
        grid = GRID3D_PRESETS[preset]
        if "steps" in given:
            grid = grid.with_steps(given["steps"])
        grid = dataclasses.replace(grid, **{k: given[k] for k in ("seed", "lambda_rd") if k in given})
        return Grid3dFamilyFit(grid=grid, fixed_lambda="lambda_rd" in given, **regularizer_fields(given))

    def fit(self, targets: Any, *, bpp: float, options: Mapping[str, Any], config: Any, device: Any, regularizer: Any = None,
            lam: Any = None, progress: bool = False, desc: str = "fit") -> list[FitOutcome]:  # fmt: skip
        raise InputError("--arch grid3d codes volumes: give a volume with --slices A:B (a single image: --arch grid)")

    def fit_slab(self, target: Any, *, spec: Grid3dSpec, budget_bits: float | None, config: Grid3dFamilyFit, device: Any,
                 regularizer: Any = None, lam: Any = None, progress: bool = False) -> Any:  # fmt: skip
        """Fit one slab ``(D, H, W)`` in ``[0, 1]``: a rate search within ``budget_bits`` of payload, or one fit at the
        configuration's ``lambda_rd`` when it is fixed (then ``budget_bits`` is not used).

        With ``regularizer`` (reconstructions ``(D, 1, H, W)`` to values ``(D,)``) and its weights ``lam`` ``(D,)`` the
        loss adds, per slice, ``grid``'s regularizer term of that slice (``lam`` over ``H W`` with the ``sse`` data
        term), averaged over the slab as the MSE is.

        Returns:
            The :class:`~sinco.codec.grid3d.training.SlabFitResult`.

        Raises:
            InputError: for a bad slab or weights; RateUnreachableError if no trial fits the budget.
        """
        from sinco.codec.grid3d.rate_search import fit_slab_at_bits
        from sinco.codec.grid3d.training import fit_slab

        if regularizer is not None:
            depth, height, width = target.shape
            lam = config.regularizer_weights(lam, regularized=True, pixels=height * width) / depth
        common = dict(spec=spec, config=config.grid, device=device, regularizer=regularizer, lam=lam, progress=progress)
        if config.fixed_lambda:
            return fit_slab(target, **common)
        return fit_slab_at_bits(target, budget_bits=budget_bits, **common)

    def decode(self, spec: Any, payload: bytes, *, height: int, width: int) -> np.ndarray:
        raise BitstreamError("corrupted .sinco file: a grid3d payload outside a volume file of slabs")

    def decode_slab(self, spec: Any, payload: bytes, *, depth: int, height: int, width: int, slices: range) -> np.ndarray:
        from sinco.codec.grid3d.payload import decode_slab

        return decode_slab(payload, spec=spec, shape=(depth, height, width), slices=slices)

    def describe_payload(self, spec: Any, payload: bytes) -> dict[str, Any]:
        from sinco.codec.grid3d.payload import payload_layout

        return payload_layout(payload)

    def describe(self, spec: Any) -> dict[str, Any]:
        plane = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(spec.plane).items() if k != "warm_start"}
        return {"arch": self.name, **plane, "depth_stages": [int(s) for s in spec.depth_stages], "arm_previous": spec.arm_previous,
                "warm_start": spec.warm_start}  # fmt: skip

    def describe_fit(self, config: Grid3dFamilyFit) -> str:
        grid = config.grid
        rate = f"lambda_rd {grid.lambda_rd:g}" if config.fixed_lambda else f"lambda_rd searched per slab (at most {grid.max_rate_trials} fits)"
        return f"{grid.steps} steps per slab ({grid.ste_steps} straight-through), {rate}"
