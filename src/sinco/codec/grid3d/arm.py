"""The volume entropy model's causal contexts and the decoding order that keeps them causal.

A latent at ``(z, i, j)`` of grid ``l`` reads, as ``grid``'s entropy model does, its causal neighbours in its own slice
(:data:`~sinco.codec.grid.spec.CONTEXT_OFFSETS`) and the co-located latent of the coarser grid (``(z // 2, i // 2,
j // 2)`` where the stage halves the slice axis, else ``(z, i // 2, j // 2)``), and besides them the previous slice's
latents around ``(z - 1, i, j)`` (:data:`~sinco.codec.grid3d.spec.PREVIOUS_OFFSETS`). The network itself is ``grid``'s
(:func:`sinco.codec.grid.arm.run_arm`, :func:`~sinco.codec.grid.arm.fixed_arm_params`).

Decoding order: latent ``(z, i, j)`` of grid ``l`` is decoded at step ``2 i + j + 4 z + (L - 1 - l)``. Same-slice
neighbours lie on earlier anti-diagonal waves (``2 dy + dx < 0``); previous-slice neighbours on waves at most 3 later of
a slice 4 steps earlier; the coarser grid's latent on a wave at most half as far, of a slice no later, one step
earlier. So every context is decoded before its latent, and all grids and slices advance together: about
``2 H + W + 4 S`` steps per slab instead of one wave schedule per slice.
"""

from __future__ import annotations

import functools

import numpy as np
import torch

from sinco.codec.grid.spec import CONTEXT_OFFSETS
from sinco.codec.grid3d.spec import PREVIOUS_OFFSETS, Grid3dSpec

#: Steps between the decoding of a slice and of the next (previous-slice contexts reach 3 waves ahead).
SLICE_LAG = 4


def _key(shapes: list[tuple[int, int, int]], spec: Grid3dSpec) -> tuple:
    return tuple(shapes), spec.plane.arm_context, spec.arm_previous


def context_index(shapes: list[tuple[int, int, int]], spec: Grid3dSpec) -> np.ndarray:
    """``(C, N)`` positions of every latent's context in the finest-first concatenation of the flattened grids (each
    ``(d, h, w)`` row-major), ``N`` (one past the end, a zero) where a context falls outside; rows: same-slice
    neighbours, the coarser grid's latent, previous-slice latents. Read-only, cached per geometry."""
    return _context_index(*_key(shapes, spec))


@functools.lru_cache(maxsize=4)
def _context_index(shapes: tuple[tuple[int, int, int], ...], neighbours: int, previous: int) -> np.ndarray:
    offsets = np.cumsum([0] + [d * h * w for d, h, w in shapes])
    zero = int(offsets[-1])
    blocks = []
    for level, (d, h, w) in enumerate(shapes):
        z, rest = np.divmod(np.arange(d * h * w), h * w)
        i, j = np.divmod(rest, w)

        def at(zz: np.ndarray, ii: np.ndarray, jj: np.ndarray, lvl: int = level, dims: tuple = (d, h, w)) -> np.ndarray:
            inside = (zz >= 0) & (ii >= 0) & (ii < dims[1]) & (jj >= 0) & (jj < dims[2])
            return np.where(inside, offsets[lvl] + (zz * dims[1] + ii) * dims[2] + jj, zero)

        rows = [at(z, i + dy, j + dx) for dy, dx in CONTEXT_OFFSETS[:neighbours]]
        if level + 1 < len(shapes):
            coarse = shapes[level + 1]
            zp = z // 2 if coarse[0] < d else z
            rows.append(at(zp, i // 2, j // 2, level + 1, coarse))
        else:
            rows.append(np.full(d * h * w, zero))
        rows += [at(z - 1, i + dy, j + dx) for dy, dx in PREVIOUS_OFFSETS[:previous]]
        blocks.append(np.stack(rows))
    # int32: the decoder's largest table (19 rows of a 2^22-voxel slab) stays near 0.4 GB.
    index = np.ascontiguousarray(np.concatenate(blocks, axis=1), dtype=np.int32)
    index.setflags(write=False)
    return index


@functools.lru_cache(maxsize=8)
def torch_context_index(shapes: tuple[tuple[int, int, int], ...], neighbours: int, previous: int, device: torch.device) -> torch.Tensor:
    """:func:`context_index` as an int64 tensor on ``device`` (training's gather)."""
    return torch.from_numpy(_context_index(shapes, neighbours, previous).astype(np.int64)).to(device)


def flat_contexts(values: torch.Tensor, shapes: list[tuple[int, int, int]], spec: Grid3dSpec) -> torch.Tensor:
    """Contexts ``(C, N)`` of the latents ``values (N,)`` (the grids flattened finest first), one gather."""
    index = torch_context_index(*_key(shapes, spec), values.device)
    padded = torch.cat([values, values.new_zeros(1)])
    return padded.index_select(0, index.reshape(-1)).reshape(index.shape)


def decode_steps(shapes: list[tuple[int, int, int]]) -> tuple[np.ndarray, np.ndarray]:
    """The decoding order (see the module's docstring): ``(order, bounds)``, ``order`` the flat latent indices sorted
    by step (then by index), ``bounds`` the start of each step in ``order`` and its end. Cached per geometry."""
    return _decode_steps(tuple(shapes))


@functools.lru_cache(maxsize=4)
def _decode_steps(shapes: tuple[tuple[int, int, int], ...]) -> tuple[np.ndarray, np.ndarray]:
    levels = len(shapes)
    steps = []
    for level, (d, h, w) in enumerate(shapes):
        z, rest = np.divmod(np.arange(d * h * w), h * w)
        i, j = np.divmod(rest, w)
        steps.append(2 * i + j + SLICE_LAG * z + (levels - 1 - level))
    step = np.concatenate(steps)
    order = np.argsort(step, kind="stable")
    bounds = np.searchsorted(step[order], np.arange(int(step.max()) + 2))
    for array in (order, bounds):
        array.setflags(write=False)
    return order, bounds


def decode_contexts(shapes: list[tuple[int, int, int]], spec: Grid3dSpec) -> np.ndarray:
    """:func:`context_index` in decoding order, one latent per row: ``(N, C)`` (int32, contiguous), row ``k`` the
    contexts of latent ``order[k]`` (:func:`decode_steps`), so that a decoding step gathers a contiguous block of rows.
    Read-only, cached per geometry (about 80 MB for a slab of 16 slices of 240 x 240)."""
    return _decode_contexts(*_key(shapes, spec))


@functools.lru_cache(maxsize=2)
def _decode_contexts(shapes: tuple[tuple[int, int, int], ...], neighbours: int, previous: int) -> np.ndarray:
    order, _ = _decode_steps(shapes)
    rows = np.ascontiguousarray(_context_index(shapes, neighbours, previous)[:, order].T)
    rows.setflags(write=False)
    return rows
