"""Fixed-point arithmetic of the decoder (bit-exact), and the layer primitive the float and fixed-point networks share.

The decoder works on integers held in float64 tensors: activations are integers at scale ``2^-FRAC_BITS``,
weights integers at scale ``2^-e``. Every value and every partial sum stays below ``2^53`` (activations are
clamped to ``ACT_LIMIT``, weights to ``WEIGHT_LIMIT``, fan-in to ``32 * 5 * 5``), so every sum is exact
whatever the summation order: results do not depend on BLAS, thread count or machine.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

FRAC_BITS = 16
ACT_LIMIT = float(1 << 24)
WEIGHT_LIMIT = (1 << 15) - 1
MAX_EXPONENT = 12

def round_shift(values: torch.Tensor, bits: int) -> torch.Tensor:
    """``floor(values / 2^bits + 1/2)`` of integer-valued float64 tensors (exact: divisions by powers of two)."""
    return torch.floor(values * (2.0**-bits) + 0.5) if bits > 0 else values


def round_shift_clamped_(values: torch.Tensor, bits: int) -> torch.Tensor:
    """:func:`round_shift` then the clamp to ``+-ACT_LIMIT``, in place on a temporary (the same operations, so the same
    integers: the decoder's large upsampled planes are not copied three times)."""
    if bits > 0:
        values.mul_(2.0**-bits).add_(0.5).floor_()
    return values.clamp_(-ACT_LIMIT, ACT_LIMIT)


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
    elif weight.shape[-1] == 1 and x.shape[0] == 1:
        # A 1x1 layer as one matrix product on (C, H W): float64 convolutions have no fast kernel on the CPU.
        _, channels, height, width = x.shape
        y = (weight[:, :, 0, 0] @ x.reshape(channels, height * width)).reshape(1, -1, height, width)
    else:
        pad = weight.shape[-1] // 2
        y = F.conv2d(F.pad(x, (pad,) * 4, mode="replicate") if pad else x, weight)
    if bias is not None:
        y = y + (bias * float(2 ** (FRAC_BITS + w_exp - b_exp))).reshape((-1, 1) if x.dim() == 2 else (-1, 1, 1))
    return round_shift_clamped_(y, w_exp)


def layer_tuples(tensors: list[torch.Tensor], exps: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    """``[w0, b0, w1, b1, ...]`` and their step exponents as ``(weight, bias, w_exp, b_exp)`` per layer."""
    return [(tensors[i], tensors[i + 1], exps[i], exps[i + 1]) for i in range(0, len(tensors), 2)]


def apply_layer(x: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor | None, int, int], *, exact: bool) -> torch.Tensor:
    """One layer (linear on ``(C, N)``, convolution on ``(1, C, H, W)``): float, or fixed point when ``exact``."""
    weight, bias, w_exp, b_exp = layer
    if exact:
        return fixed_conv(x, weight, bias, w_exp=w_exp, b_exp=b_exp)
    if x.dim() == 4 and weight.shape[-1] == 1 and x.shape[0] == 1:
        # 1x1 layers as one matrix product on channels-first pixels (C, H W): no permute, and the backward's
        # products keep the long axis contiguous (twice as fast as a channels-last linear layer). A batch of
        # slices (grid3d's slab) takes the convolution below.
        _, channels, height, width = x.shape
        return affine(weight[:, :, 0, 0], bias, x.reshape(channels, height * width)).reshape(1, -1, height, width)
    if x.dim() == 2:
        return affine(weight, bias, x)
    pad = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (pad,) * 4, mode="replicate") if pad else x, weight, bias)


def affine(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``weight (O, C) @ x (C, N) + bias (O,)``."""
    return weight @ x if bias is None else torch.addmm(bias[:, None], weight, x)
