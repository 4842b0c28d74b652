"""The latents' probability model: a discretized Laplace per latent, its mean and log2-scale from the ARM
(:mod:`sinco.codec.grid.arm`). For coding, the mean is snapped to ``1/MEAN_STEPS``
and the log2-scale to ``1/SCALE_STEPS`` of an octave, and probabilities come from a table computed once with
correctly rounded software arithmetic (``decimal``) and IEEE basic operations only: encoder and decoder agree
bit for bit on every machine.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np
import torch

MEAN_STEPS = 16
SCALE_STEPS = 8
LOG2_SCALE_MIN = -4
LOG2_SCALE_MAX = 6
N_SCALES = (LOG2_SCALE_MAX - LOG2_SCALE_MIN) * SCALE_STEPS + 1
PROB_BITS = 16
_LN2 = 0.6931471805599453


# ------------------------------------------------------------------------------------------------ snapping
def snap(mean_fixed: np.ndarray, log2_scale_fixed: np.ndarray, *, frac_bits: int, bound: int) -> tuple[np.ndarray, ...]:
    """Integer mean ``m``, mean fraction index ``f`` and scale index ``q`` from fixed-point ARM outputs.

    The snapped mean is ``m + (f - MEAN_STEPS / 2) / MEAN_STEPS`` and the scale ``2^(LOG2_SCALE_MIN + q / SCALE_STEPS)``.
    """
    half = 1 << (frac_bits - 1)
    mean_q = (mean_fixed.astype(np.int64) * MEAN_STEPS + half) >> frac_bits
    m = (mean_q + MEAN_STEPS // 2) // MEAN_STEPS
    f = mean_q + MEAN_STEPS // 2 - m * MEAN_STEPS
    shifted = (log2_scale_fixed.astype(np.int64) - (LOG2_SCALE_MIN << frac_bits)) * SCALE_STEPS
    q = np.minimum(np.maximum((shifted + half) >> frac_bits, 0), N_SCALES - 1)
    return np.minimum(np.maximum(m, -bound), bound), f, q


@functools.lru_cache(maxsize=4)
def laplace_table(bound: int) -> np.ndarray:
    """Probabilities (integer counts, float64) of offsets ``d = k - m`` in ``[-2 bound, 2 bound]``.

    Returns:
        ``(MEAN_STEPS, N_SCALES, 4 bound + 1)``; tails folded into the extreme offsets; every count >= 1.
    """
    reach = 2 * bound
    table = np.zeros((MEAN_STEPS, N_SCALES, 2 * reach + 1))
    with localcontext() as ctx:
        ctx.prec = 40
        for q in range(N_SCALES):
            inv_b = (Decimal(-(LOG2_SCALE_MIN * SCALE_STEPS + q)) / SCALE_STEPS * Decimal(2).ln()).exp()
            ratio = float((-inv_b).exp())
            powers = np.cumprod(np.concatenate([[1.0], np.full(reach, ratio)]))
            for f in range(MEAN_STEPS):
                c = Decimal(f - MEAN_STEPS // 2) / MEAN_STEPS
                above = 0.5 * float((-(Decimal("0.5") - c) * inv_b).exp()) * powers  # P(X > upper edge of d), d >= 0
                below = 0.5 * float((-(Decimal("0.5") + c) * inv_b).exp()) * powers  # P(X < lower edge of -d), d >= 0
                probs = np.empty(2 * reach + 1)
                probs[reach] = 1.0 - above[0] - below[0]
                probs[reach + 1 :] = above[:-1] - above[1:]
                probs[:reach][::-1] = below[:-1] - below[1:]
                probs[-1] += above[-1]
                probs[0] += below[-1]
                table[f, q] = np.maximum(np.rint(probs * (1 << PROB_BITS)), 1.0)
    return table


def laplace_bits(values: torch.Tensor, mean: torch.Tensor, log2_scale: torch.Tensor) -> torch.Tensor:
    """Differentiable code length (bits) of integer(-like) ``values`` under a discretized Laplace; same shape."""
    scale = torch.exp2(log2_scale.clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX))
    t = values - mean

    def cdf(z: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * torch.sign(z) * (1.0 - torch.exp(-z.abs() / scale))

    prob = cdf(t + 0.5) - cdf(t - 0.5)
    return -torch.log2(prob.clamp_min(2.0**-PROB_BITS))


def mean_log2_scale(arm_out: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the float ARM output ``(2, N)`` into a mean (clamped to the latent range) and a log2-scale."""
    return arm_out[0].clamp(-bound, bound), arm_out[1]
