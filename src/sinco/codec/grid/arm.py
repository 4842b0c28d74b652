"""The auto-regressive entropy model (ARM) of the latents: its causal contexts, the decoding order that keeps them
causal, and the network itself (float in training, fixed point in the coder).

The ARM predicts a Laplace mean and log2-scale per latent from its causal neighbours in its own grid
(:data:`~sinco.codec.grid.spec.CONTEXT_OFFSETS`) and the co-located latent of the coarser grid.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sinco.codec.grid.entropy import snap
from sinco.codec.grid.networks import QuantizedDecoder, arm_tensor_count
from sinco.codec.grid.numerics import ACT_LIMIT, FRAC_BITS, apply_layer, layer_tuples
from sinco.codec.grid.spec import CONTEXT_OFFSETS, GridSpec


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


def run_arm(tensors: list[torch.Tensor], contexts: torch.Tensor, *, exact: bool, exps: list[int] | None = None) -> torch.Tensor:
    """Entropy model: contexts ``(C, N)`` (channels first) -> ``(2, N)`` (mean, log2-scale); in fixed point when ``exact``.

    With ``exact``, ``tensors`` and ``contexts`` are integer-valued float64, contexts at scale ``2^-FRAC_BITS``.
    """
    layers = layer_tuples(tensors, exps if exps is not None else [0] * len(tensors))
    x = contexts  # ReLU as torch.relu: its backward is one fused kernel, clamp_min's a comparison and a select
    for layer in layers[:-1]:
        x = torch.relu(apply_layer(x, layer, exact=exact))
    return apply_layer(x, layers[-1], exact=exact)


def fixed_arm_layers(decoder: QuantizedDecoder, spec: GridSpec) -> list[tuple[np.ndarray, np.ndarray, float]]:
    """The entropy model's fixed-point layers, folded for :func:`fixed_arm_params`: per layer ``(weight (I, O), offset
    (O,), floor)``, float64, so that the layer is ``clip(floor(x @ weight + offset), floor, ACT_LIMIT)``.

    A layer of step exponent ``e`` computes ``floor((x W^T + b) 2^-e + 1/2)`` on activations at scale ``2^-FRAC_BITS``;
    folded, ``weight = W^T 2^-e`` (times ``2^FRAC_BITS`` for the first layer, whose inputs are the integer latents) and
    ``offset = b 2^-e + 1/2``. Scaling by powers of two is exact, and every sum stays an integer multiple of ``2^-e``
    below ``2^53`` in magnitude (see :mod:`sinco.codec.grid.numerics`), so the folded layers give the same integers.
    """
    n_arm = arm_tensor_count(spec)
    tensors, exps = decoder.tensors[:n_arm], decoder.exponents[:n_arm]
    layers = []
    for i in range(0, n_arm, 2):
        exponent = exps[i]
        input_scale = float(1 << FRAC_BITS) if i == 0 else 1.0
        weight = np.ascontiguousarray(tensors[i].astype(np.float64).T) * (input_scale * 2.0**-exponent)
        bias = tensors[i + 1].astype(np.float64) * float(2 ** (FRAC_BITS + exps[i] - exps[i + 1]))
        floor = 0.0 if i + 2 < n_arm else -ACT_LIMIT  # ReLU on the hidden layers
        layers.append((weight, bias * 2.0**-exponent + 0.5, floor))
    return layers


def fixed_arm_params(contexts: np.ndarray, arm: list[tuple[np.ndarray, np.ndarray, float]], spec: GridSpec) -> tuple[np.ndarray, ...]:
    """The fixed-point entropy model on integer contexts ``(N, C)`` (the latents themselves): snapped ``(m, f, q)``.

    The same arithmetic as ``run_arm(exact=True)``, in numpy and with :func:`fixed_arm_layers`' folded layers: the
    decoder calls this once per wave, where torch's per-call overhead would dominate. Exact (see numerics).
    """
    x = contexts if contexts.dtype == np.float64 else contexts.astype(np.float64)
    for weight, offset, floor in arm:
        x = x @ weight
        x += offset
        # Floor, ReLU and the +-ACT_LIMIT clamp in place, as plain ufuncs: np.clip's Python wrapper costs more here.
        np.floor(x, out=x)
        np.maximum(x, floor, out=x)
        np.minimum(x, ACT_LIMIT, out=x)
    return snap(x[:, 0], x[:, 1], frac_bits=FRAC_BITS, bound=spec.latent_bound)
