"""Arithmetic shared by the trainer (float) and the decoder (fixed point, bit-exact).

The decoder works on integers held in float64 tensors: activations are integers at scale ``2^-FRAC_BITS``,
weights integers at scale ``2^-e``. Every value and every partial sum stays below ``2^53`` (activations are
clamped to ``ACT_LIMIT``, weights to ``WEIGHT_LIMIT``, fan-in to ``32 * 5 * 5``), so every sum is exact
whatever the summation order: results do not depend on BLAS, thread count or machine.
"""

from __future__ import annotations

import functools

import numpy as np
import torch
import torch.nn.functional as F

FRAC_BITS = 16
ACT_LIMIT = float(1 << 24)
WEIGHT_LIMIT = (1 << 15) - 1
MAX_EXPONENT = 12

# Bicubic (a = -0.75) weights for 2x upsampling, output samples at -1/4 and +1/4 of an input pixel, over 128.
_TAPS_EVEN = (-3, 29, 111, -9)  # output 2n: input pixels n-2 .. n+1
_TAPS_ODD = (-9, 111, 29, -3)  # output 2n+1: input pixels n-1 .. n+2


def round_shift(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``floor(values / 2^bits + 1/2)`` of integer-valued float64 tensors (exact: divisions by powers of two)."""
    return torch.floor(values * (2.0**-bits) + 0.5) if bits > 0 else values


@functools.lru_cache(maxsize=64)
def _upsampling_matrix(size: int, length: int) -> np.ndarray:
    """``(size, length)`` integer matrix (taps over 128) of 2x bicubic upsampling with replicate borders."""
    matrix = np.zeros((size, length))
    for r in range(size):
        n, taps, first = (r // 2, _TAPS_EVEN, -2) if r % 2 == 0 else (r // 2, _TAPS_ODD, -1)
        for k, tap in enumerate(taps):
            matrix[r, min(max(n + first + k, 0), length - 1)] += tap
    return matrix


def upsample2x(x: torch.Tensor, height: int, width: int, *, exact: bool) -> torch.Tensor:
    """Separable 2x bicubic upsampling of ``(1, C, h, w)`` to ``(1, C, height, width)`` (cropped), per channel.

    Written as two matrix products with a fixed integer matrix (fast, and exact on integer-valued float64).

    Args:
        x: the grids; with ``exact`` integer-valued float64, rounded after each axis.
        height: output rows, at most ``2 h``.
        width: output columns, at most ``2 w``.
        exact: fixed-point mode of the decoder.
    """
    # The float path takes the taps divided by 128 (exact: a power of two) and skips the rounding.
    scale = 1.0 if exact else 1.0 / 128.0
    cols_t = _upsampling_operator(width, x.shape[-1], dtype=x.dtype, device=x.device, scale=scale, transposed=True)
    rows = _upsampling_operator(height, x.shape[-2], dtype=x.dtype, device=x.device, scale=scale, transposed=False)
    if exact:
        return round_shift(rows @ round_shift(x @ cols_t, 7), 7)
    return rows @ (x @ cols_t)


@functools.lru_cache(maxsize=128)
def _upsampling_operator(
    size: int, length: int, *, dtype: torch.dtype, device: torch.device, scale: float, transposed: bool
) -> torch.Tensor:
    """:func:`_upsampling_matrix` times ``scale`` as a contiguous tensor, made once per geometry, dtype and device
    (the training step upsamples 6 stages: building these every step was 12 copies per step)."""
    matrix = _upsampling_matrix(size, length) * scale
    return torch.from_numpy(np.ascontiguousarray(matrix.T if transposed else matrix)).to(dtype=dtype, device=device)


def upsample_grids(grids: list[torch.Tensor], shapes: list[tuple[int, int]], *, exact: bool) -> torch.Tensor:
    """Bring every grid ``(1, 1, h_l, w_l)`` (finest first) to full resolution; returns ``(1, L, H, W)``.

    Grid ``l`` goes through ``l`` successive 2x stages, each cropped to the next finer grid's shape; the grids
    that share a stage are upsampled together, as channels.
    """
    x = grids[-1]
    for level in range(len(grids) - 2, -1, -1):
        x = torch.cat([grids[level], upsample2x(x, *shapes[level], exact=exact)], dim=1)
    return x


def fixed_conv(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, *, w_exp: int, b_exp: int) -> torch.Tensor:
    """A fixed-point convolution (or a linear layer when ``x`` is ``(C, N)``), rounded back to ``FRAC_BITS``.

    Args:
        x: integer-valued float64 activations at scale ``2^-FRAC_BITS``, ``(1, C, H, W)`` or channels first ``(C, N)``.
        weight: integer-valued float64 ``(O, C, k, k)`` (replicate padding) or ``(O, C)`` at scale ``2^-w_exp``.
        bias: integer-valued float64 ``(O,)`` at scale ``2^-b_exp``, or None (no bias).
        w_exp: weight step exponent, ``0..MAX_EXPONENT``.
        b_exp: bias step exponent, ``0..MAX_EXPONENT``.

    Returns:
        Integer-valued float64 activations at scale ``2^-FRAC_BITS``, clamped to ``+-ACT_LIMIT``.
    """
    if x.dim() == 2:
        y = weight @ x
    else:
        pad = weight.shape[-1] // 2
        y = F.conv2d(F.pad(x, (pad,) * 4, mode="replicate") if pad else x, weight)
    if bias is not None:
        y = y + (bias * float(2 ** (FRAC_BITS + w_exp - b_exp))).reshape((-1, 1) if x.dim() == 2 else (-1, 1, 1))
    return round_shift(y, w_exp).clamp(-ACT_LIMIT, ACT_LIMIT)
