"""Entropy model of the latents: causal contexts, wave order, the Laplace table and the range coder.

The auto-regressive model (ARM) predicts a Laplace mean and log2-scale per latent from its causal
neighbours and the co-located latent of the coarser grid. For coding, the mean is snapped to ``1/MEAN_STEPS``
and the log2-scale to ``1/SCALE_STEPS`` of an octave, and probabilities come from a table computed once with
correctly rounded software arithmetic (``decimal``) and IEEE basic operations only: encoder and decoder agree
bit for bit on every machine.
"""

from __future__ import annotations

import functools
from decimal import Decimal, localcontext

import numpy as np
import torch

from sinco.codec.grid.spec import CONTEXT_OFFSETS, GridSpec

MEAN_STEPS = 16
SCALE_STEPS = 8
LOG2_SCALE_MIN = -4
LOG2_SCALE_MAX = 6
N_SCALES = (LOG2_SCALE_MAX - LOG2_SCALE_MIN) * SCALE_STEPS + 1
PROB_BITS = 16
_LN2 = 0.6931471805599453


def context_width(spec: GridSpec) -> int:
    """Inputs of the ARM: the causal neighbours and the coarser-grid latent."""
    return spec.arm_context + 1


def grid_contexts(grids: list[torch.Tensor], spec: GridSpec) -> torch.Tensor:
    """Contexts of every latent, all grids at once (training and encoder side), channels first.

    Args:
        grids: latents ``(h_l, w_l)`` per grid, finest first (float; integer-valued when coding).
        spec: the spec (number of neighbours).

    Returns:
        ``(arm_context + 1, N)`` with ``N = sum h_l w_l``, grids finest first, row-major within a grid: the
        layout :func:`~sinco.codec.grid.networks.run_arm` takes (each context a contiguous row). Neighbours
        outside a grid and the coarsest grid's parent read zero.
    """
    shapes = [(int(g.shape[0]), int(g.shape[1])) for g in grids]
    return flat_contexts(torch.cat([g.reshape(-1) for g in grids]), shapes, spec)


def flat_contexts(values: torch.Tensor, shapes: list[tuple[int, int]], spec: GridSpec) -> torch.Tensor:
    """:func:`grid_contexts` of the grids flattened and concatenated finest first, ``values (N,)``.

    One gather: on a GPU the training step is bound by kernel launches, and slicing every neighbour of every
    grid (with the slices' backward passes) cost about 500 launches a step.
    """
    index = _context_index(tuple(shapes), spec.arm_context, values.device)
    padded = torch.cat([values, values.new_zeros(1)])
    # index_select: its backward (index_add) was the fastest on the CPU of the gathers tried (advanced indexing, take).
    return padded.index_select(0, index.reshape(-1)).reshape(index.shape)


@functools.lru_cache(maxsize=8)  # 6 MB for a 240 x 240 slice; a volume's slices share one
def _context_index(shapes: tuple[tuple[int, int], ...], neighbours: int, device: torch.device) -> torch.Tensor:
    """``(neighbours + 1, N)`` positions in the finest-first concatenation of the flattened grids, ``N`` (one past
    the end, a zero) where a neighbour falls outside its grid; the last row is the coarser grid's latent at
    ``(i // 2, j // 2)``."""
    offsets = np.cumsum([0] + [h * w for h, w in shapes])
    zero = int(offsets[-1])
    blocks = []
    for level, (h, w) in enumerate(shapes):
        i, j = np.divmod(np.arange(h * w), w)
        rows = []
        for dy, dx in CONTEXT_OFFSETS[:neighbours]:
            ii, jj = i + dy, j + dx
            inside = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
            rows.append(np.where(inside, offsets[level] + ii * w + jj, zero))
        if level + 1 < len(shapes):
            rows.append(offsets[level + 1] + (i // 2) * shapes[level + 1][1] + j // 2)
        else:
            rows.append(np.full(h * w, zero))
        blocks.append(np.stack(rows))
    return torch.from_numpy(np.concatenate(blocks, axis=1)).to(device)


def wave_positions(height: int, width: int) -> list[tuple[np.ndarray, np.ndarray]]:
    """Positions ``(i, j)`` of each anti-diagonal wave ``2 i + j = t``: every context of a wave lies in earlier waves."""
    waves = []
    for t in range(2 * (height - 1) + width):
        i = np.arange(max(0, -(-(t - width + 1) // 2)), min(height - 1, t // 2) + 1)
        waves.append((i, t - 2 * i))
    return waves


def schedule(shapes: list[tuple[int, int]]) -> list[list[tuple[int, np.ndarray, np.ndarray]]]:
    """Decoding steps: each a list of ``(level, i, j)`` waves that can be decoded together.

    Wave ``t`` of grid ``l`` runs at step ``t + (L - 1 - l)``: the coarsest grid starts first and each finer grid
    one step later. A latent's coarser-grid context ``(i // 2, j // 2)`` lies in wave ``<= t / 2`` of grid
    ``l + 1``, which ran at an earlier step, so all grids advance together: about ``2 H + W`` steps in all.
    Within a step, grids go coarsest first.
    """
    levels = len(shapes)
    waves = [wave_positions(h, w) for h, w in shapes]
    steps = max(len(waves[level]) + levels - 1 - level for level in range(levels))
    plan = []
    for step in range(steps):
        parts = []
        for level in range(levels - 1, -1, -1):
            t = step - (levels - 1 - level)
            if 0 <= t < len(waves[level]):
                parts.append((level, *waves[level][t]))
        plan.append(parts)
    return plan


def coding_order(shapes: list[tuple[int, int]]) -> np.ndarray:
    """Indices into the finest-first concatenation of flattened grids, in coding order (see :func:`schedule`)."""
    offsets = np.cumsum([0] + [h * w for h, w in shapes])
    return np.concatenate(
        [offsets[level] + i * shapes[level][1] + j for parts in schedule(shapes) for level, i, j in parts]
    )


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
    """Differentiable code length (bits) of integer(-like) ``values`` under a discretised Laplace; same shape."""
    scale = torch.exp2(log2_scale.clamp(LOG2_SCALE_MIN, LOG2_SCALE_MAX))
    t = values - mean

    def cdf(z: torch.Tensor) -> torch.Tensor:
        return 0.5 + 0.5 * torch.sign(z) * (1.0 - torch.exp(-z.abs() / scale))

    prob = cdf(t + 0.5) - cdf(t - 0.5)
    return -torch.log2(prob.clamp_min(2.0**-PROB_BITS))


def mean_log2_scale(arm_out: torch.Tensor, bound: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Split the float ARM output ``(2, N)`` into a mean (clamped to the latent range) and a log2-scale."""
    return arm_out[0].clamp(-bound, bound), arm_out[1]
