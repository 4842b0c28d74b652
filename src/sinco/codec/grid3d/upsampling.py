"""Upsampling the volume's latent grids to full resolution: ``grid``'s separable 2x stages in-plane, applied to every
slice at once, and the same 8-tap kernels (bicubic or learned, a kernel per stage) along the slice axis at the stages
that halve it. Float in training, integer-valued float64 in the decoder (rounded after each axis, bit-exact, as
:mod:`sinco.codec.grid.upsampling`)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from sinco.codec.grid.numerics import round_shift_clamped_
from sinco.codec.grid.upsampling import BICUBIC_EXPONENT, BICUBIC_TAPS, learned_taps, stage_matrix, upsample2x


def depth_sources(rows: Sequence[int], *, size: int, length: int) -> list[int]:
    """The input slices (ascending) that the output slices ``rows`` of a 2x slice-axis stage from ``length`` slices to
    ``size`` read (each output reads 4 inputs, replicate borders)."""
    reads = stage_matrix(size, length, torch.ones(4, dtype=torch.float64))[list(rows)] != 0
    return torch.nonzero(reads.any(dim=0)).flatten().tolist()


def upsample_depth(
    x: torch.Tensor, size: int, *, exact: bool, taps: torch.Tensor | None = None, tap_exponent: int = 0,
    rows: Sequence[int] | None = None, length: int | None = None,
) -> torch.Tensor:  # fmt: skip
    """2x upsampling of ``(C, d, h, w)`` along ``d`` to ``(C, size, h, w)`` (cropped), with replicate borders.

    Args:
        x: the grids; with ``exact`` integer-valued float64, rounded after the stage.
        size: output slices, at most ``2 d``.
        exact: fixed-point mode of the decoder.
        taps: ``(4,)`` taps of a learned stage (:func:`~sinco.codec.grid.upsampling.learned_taps`); None: bicubic.
        tap_exponent: with ``exact``, the taps' step exponent.
        rows: only these output slices (ascending; default all): then ``x`` holds only the slices of a grid of
            ``length`` slices that they read (:func:`depth_sources`), and the result ``(C, len(rows), h, w)`` equals
            those slices of the whole stage's.
        length: with ``rows``, the slices of the whole input grid.
    """
    if taps is None:
        scale = 1.0 if exact else 2.0**-BICUBIC_EXPONENT
        taps, tap_exponent = torch.tensor(BICUBIC_TAPS, dtype=x.dtype, device=x.device) * scale, BICUBIC_EXPONENT
    channels, depth, height, width = x.shape
    if rows is None:
        matrix = stage_matrix(size, depth, taps)
    else:
        # The rows' other entries are zero: the sums are the same integers (exact arithmetic, any order).
        matrix = stage_matrix(size, length, taps)[list(rows)][:, depth_sources(rows, size=size, length=length)]
    out = (matrix @ x.reshape(channels, depth, height * width)).reshape(channels, matrix.shape[0], height, width)
    return round_shift_clamped_(out, tap_exponent) if exact else out


def upsample_volume(
    grids: list[torch.Tensor], shapes: list[tuple[int, int, int]], *, depth_stages: tuple[bool, ...], exact: bool, plane_deltas: list[torch.Tensor] | None = None,
    depth_deltas: list[torch.Tensor] | None = None, plane_exponents: list[int] | None = None, depth_exponents: list[int] | None = None,
    slices: Sequence[int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Bring every grid ``(1, d_l, h_l, w_l)`` (finest first) to full resolution; returns ``(L, D, H, W)`` (``(L,
    len(slices), H, W)`` with ``slices``).

    Grid ``l`` goes through ``l`` stages, each (where the slice axis shrinks there) a slice-axis stage then ``grid``'s
    in-plane stage on every slice, cropped to the next finer grid's shape; grids that share a stage go together, as
    channels.

    Args:
        grids: the latent grids, finest first.
        shapes: their shapes ``(d, h, w)``.
        depth_stages: the spec's flags of the stages that halve the slice axis (the slice-axis kernels are theirs, in
            order, whether or not a slab has slices left to halve there).
        exact: fixed-point mode of the decoder.
        plane_deltas: learned in-plane stages, one ``(4,)`` per stage (the stage into grid 0 first); None: bicubic.
        depth_deltas: learned slice-axis stages, one ``(4,)`` per flag of ``depth_stages`` set (finest first).
        plane_exponents: with ``exact``, the in-plane stages' step exponents.
        depth_exponents: with ``exact``, the slice-axis stages' step exponents.
        slices: only these full-resolution slices (ascending; default all): each grid is upsampled on the slices that
            they read only (the same values as those slices of the whole result; the decoder's random access).
    """
    wanted = None if slices is None else _wanted_slices(shapes, list(slices))
    x = grids[-1] if wanted is None else grids[-1][:, wanted[-1]]
    for level in range(len(grids) - 2, -1, -1):
        depth, height, width = shapes[level]
        rows = None if wanted is None else wanted[level]
        if shapes[level + 1][0] < depth:
            taps, exponent = None, 0
            if depth_deltas:
                k = sum(depth_stages[:level])
                taps, exponent = learned_taps(depth_deltas[k], depth_exponents[k] if exact else None)
            x = upsample_depth(x, depth, exact=exact, taps=taps, tap_exponent=exponent, rows=rows, length=shapes[level + 1][0])
        taps, exponent = None, 0
        if plane_deltas:
            taps, exponent = learned_taps(plane_deltas[level], plane_exponents[level] if exact else None)
        own = grids[level] if rows is None else grids[level][:, rows]
        x = torch.cat([own, upsample2x(x, height, width, exact=exact, taps=taps, tap_exponent=exponent)], dim=0)
    return x


def _wanted_slices(shapes: list[tuple[int, int, int]], slices: list[int]) -> list[list[int]]:
    """Per grid (finest first), the slices the full-resolution ``slices`` read through the stages."""
    wanted = [slices]
    for level in range(len(shapes) - 1):
        depth, coarser = shapes[level][0], shapes[level + 1][0]
        wanted.append(depth_sources(wanted[-1], size=depth, length=coarser) if coarser < depth else wanted[-1])
    return wanted
