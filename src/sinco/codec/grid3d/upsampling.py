"""Upsampling the volume's latent grids to full resolution: ``grid``'s separable 2x stages in-plane, applied to every
slice at once, and the same 8-tap kernels (bicubic or learned, a kernel per stage) along the slice axis at the stages
that halve it. Float in training, integer-valued float64 in the decoder (rounded after each axis, bit-exact, as
:mod:`sinco.codec.grid.upsampling`)."""

from __future__ import annotations

import torch

from sinco.codec.grid.numerics import ACT_LIMIT, round_shift
from sinco.codec.grid.upsampling import BICUBIC_EXPONENT, BICUBIC_TAPS, learned_taps, stage_matrix, upsample2x


def upsample_depth(x: torch.Tensor, size: int, *, exact: bool, taps: torch.Tensor | None = None, tap_exponent: int = 0) -> torch.Tensor:
    """2x upsampling of ``(C, d, h, w)`` along ``d`` to ``(C, size, h, w)`` (cropped), with replicate borders.

    Args:
        x: the grids; with ``exact`` integer-valued float64, rounded after the stage.
        size: output slices, at most ``2 d``.
        exact: fixed-point mode of the decoder.
        taps: ``(4,)`` taps of a learned stage (:func:`~sinco.codec.grid.upsampling.learned_taps`); None: bicubic.
        tap_exponent: with ``exact``, the taps' step exponent.
    """
    if taps is None:
        scale = 1.0 if exact else 2.0**-BICUBIC_EXPONENT
        taps, tap_exponent = torch.tensor(BICUBIC_TAPS, dtype=x.dtype, device=x.device) * scale, BICUBIC_EXPONENT
    channels, depth, height, width = x.shape
    out = (stage_matrix(size, depth, taps) @ x.reshape(channels, depth, height * width)).reshape(channels, size, height, width)
    return round_shift(out, tap_exponent).clamp(-ACT_LIMIT, ACT_LIMIT) if exact else out


def upsample_volume(
    grids: list[torch.Tensor], shapes: list[tuple[int, int, int]], *, depth_stages: tuple[bool, ...], exact: bool, plane_deltas: list[torch.Tensor] | None = None,
    depth_deltas: list[torch.Tensor] | None = None, plane_exponents: list[int] | None = None, depth_exponents: list[int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Bring every grid ``(1, d_l, h_l, w_l)`` (finest first) to full resolution; returns ``(L, D, H, W)``.

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
    """
    x = grids[-1]
    for level in range(len(grids) - 2, -1, -1):
        depth, height, width = shapes[level]
        if shapes[level + 1][0] < depth and depth_deltas:
            k = sum(depth_stages[:level])
            taps, exponent = learned_taps(depth_deltas[k], depth_exponents[k] if exact else None)
            x = upsample_depth(x, depth, exact=exact, taps=taps, tap_exponent=exponent)
        elif shapes[level + 1][0] < depth:
            x = upsample_depth(x, depth, exact=exact)
        taps, exponent = None, 0
        if plane_deltas:
            taps, exponent = learned_taps(plane_deltas[level], plane_exponents[level] if exact else None)
        x = torch.cat([grids[level], upsample2x(x, height, width, exact=exact, taps=taps, tap_exponent=exponent)], dim=0)
    return x
