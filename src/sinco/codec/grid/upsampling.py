"""Upsampling of the latent grids to full resolution: separable 2x stages, bicubic or learned 8-tap kernels.

Float in training, integer-valued float64 in the decoder (rounded after each axis, bit-exact).
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sinco.codec.grid.numerics import round_shift_clamped_

# Bicubic (a = -0.75) 2x upsampling is a symmetric 8-tap kernel (u0, u1, u2, u3, u3, u2, u1, u0) over 128: output
# 2n takes input pixels n-2 .. n+1 with (u0, u2, u3, u1), output 2n+1 takes n-1 .. n+2 with (u1, u3, u2, u0).
BICUBIC_TAPS = (-3, -9, 29, 111)
BICUBIC_EXPONENT = 7
_EVEN_TAPS = (0, 2, 3, 1)
_ODD_TAPS = (1, 3, 2, 0)


def _tap_basis(size: int, length: int) -> np.ndarray:
    """``(4, size, length)``: entry ``[k, r, c]`` counts how often tap ``u_k`` weighs input ``c`` in output ``r`` of a
    2x upsampling of ``length`` samples to ``size`` with replicate borders."""
    basis = np.zeros((4, size, length))
    for r in range(size):
        n, order, first = (r // 2, _EVEN_TAPS, -2) if r % 2 == 0 else (r // 2, _ODD_TAPS, -1)
        for k, tap in enumerate(order):
            basis[tap, r, min(max(n + first + k, 0), length - 1)] += 1
    return basis


@functools.lru_cache(maxsize=128)
def _basis_operator(size: int, length: int, *, dtype: torch.dtype, device: torch.device, transposed: bool) -> torch.Tensor:
    """:func:`_tap_basis` as a contiguous ``(size * length, 4)`` tensor (``(length * size, 4)``, the matrix transposed,
    if ``transposed``), made once per geometry, dtype and device: the stage's matrix is one product with its taps."""
    basis = _tap_basis(size, length)
    basis = basis.transpose(0, 2, 1) if transposed else basis
    return torch.from_numpy(np.ascontiguousarray(basis.reshape(4, -1).T)).to(dtype=dtype, device=device)


@functools.lru_cache(maxsize=16)
def _bicubic_taps(dtype: torch.dtype, device: torch.device, scale: float) -> torch.Tensor:
    return torch.tensor(BICUBIC_TAPS, dtype=dtype, device=device) * scale


def learned_taps(delta: torch.Tensor, exponent: int | None = None) -> tuple[torch.Tensor, int]:
    """The taps ``(u0, u1, u2, u3)`` of a learned upsampling stage: the bicubic taps plus ``delta (4,)``.

    Args:
        delta: the stage's tensor: floats (training), or integers at scale ``2^-exponent`` (decoder).
        exponent: ``delta``'s step exponent in fixed point; None for floats.

    Returns:
        Float taps and 0, or integer-valued taps at scale ``2^-e`` and ``e = max(7, exponent)`` (exact: the
        bicubic taps are integers over ``2^7``).
    """
    if exponent is None:
        return _bicubic_taps(delta.dtype, delta.device, 2.0**-BICUBIC_EXPONENT) + delta, 0
    scale = max(BICUBIC_EXPONENT, exponent)
    return _bicubic_taps(delta.dtype, delta.device, float(2 ** (scale - BICUBIC_EXPONENT))) + delta * float(2 ** (scale - exponent)), scale


def stage_matrix(size: int, length: int, taps: torch.Tensor) -> torch.Tensor:
    """The ``(size, length)`` matrix of a 2x stage along one axis: ``length`` samples to ``size`` (at most ``2 length``,
    cropped) with the taps ``(4,)`` (:func:`learned_taps`) and replicate borders; the rows of :func:`upsample2x`.

    Example::

        taps, _ = learned_taps(torch.zeros(4, dtype=torch.float64))
        stage_matrix(6, 3, taps) @ torch.ones(3, dtype=torch.float64)  # six ones: the taps sum to 1
    """
    return (_basis_operator(size, length, dtype=taps.dtype, device=taps.device, transposed=False) @ taps).view(size, length)


def upsample2x(
    x: torch.Tensor, height: int, width: int, *, exact: bool, taps: torch.Tensor | None = None, tap_exponent: int = 0
) -> torch.Tensor:
    """Separable 2x upsampling of ``(1, C, h, w)`` to ``(1, C, height, width)`` (cropped), per channel.

    Written as two matrix products with a matrix per axis built from the taps (a cached 0/1 basis times them), fast,
    and exact on integer-valued float64.

    Args:
        x: the grids; with ``exact`` integer-valued float64, rounded after each axis.
        height: output rows, at most ``2 h``.
        width: output columns, at most ``2 w``.
        exact: fixed-point mode of the decoder.
        taps: ``(4,)`` taps of a learned stage (:func:`learned_taps`); None: bicubic (:data:`BICUBIC_TAPS`).
        tap_exponent: with ``exact``, the taps' step exponent.
    """
    if taps is None:
        taps, tap_exponent = _bicubic_taps(x.dtype, x.device, 1.0 if exact else 2.0**-BICUBIC_EXPONENT), BICUBIC_EXPONENT
    cols_t = (_basis_operator(width, x.shape[-1], dtype=x.dtype, device=x.device, transposed=True) @ taps).view(x.shape[-1], width)
    rows = (_basis_operator(height, x.shape[-2], dtype=x.dtype, device=x.device, transposed=False) @ taps).view(height, x.shape[-2])
    if not exact:
        # Learned taps get their gradient through the matrices: two more products per stage in training.
        return rows @ (x @ cols_t)
    # Learned taps are unbounded: the clamps keep every later sum below 2^53 (see the module's docstring); bicubic
    # planes of valid latents stay far inside them.
    half = round_shift_clamped_(x @ cols_t, tap_exponent)
    return round_shift_clamped_(rows @ half, tap_exponent)


def upsample_grids(
    grids: list[torch.Tensor], shapes: list[tuple[int, int]], *, exact: bool, deltas: list[torch.Tensor] | None = None,
    delta_exponents: list[int] | None = None,
) -> torch.Tensor:  # fmt: skip
    """Bring every grid ``(1, 1, h_l, w_l)`` (finest first) to full resolution; returns ``(1, L, H, W)``.

    Grid ``l`` goes through ``l`` successive 2x stages, each cropped to the next finer grid's shape; the grids
    that share a stage are upsampled together, as channels.

    Args:
        grids: the latent grids, finest first.
        shapes: their shapes.
        exact: fixed-point mode of the decoder.
        deltas: learned upsampling: one ``(4,)`` tensor per stage (:func:`learned_taps`), the stage into grid
            ``l``'s shape first; None: bicubic.
        delta_exponents: with ``exact`` and ``deltas``, their step exponents.
    """
    x = grids[-1]
    for level in range(len(grids) - 2, -1, -1):
        taps, tap_exponent = None, 0
        if deltas is not None:
            taps, tap_exponent = learned_taps(deltas[level], delta_exponents[level] if exact else None)
        x = torch.cat([grids[level], upsample2x(x, *shapes[level], exact=exact, taps=taps, tap_exponent=tap_exponent)], dim=1)
    return x
