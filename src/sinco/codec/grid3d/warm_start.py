"""The volume decoder's warm start: ``grid``'s packaged warm start, lifted to the volume decoder's tensors.

The volume decoder is ``grid``'s decoder with a wider entropy model (it reads the previous slice's latents too) and a
slice-axis kernel per stage that halves the slice axis (:mod:`sinco.codec.grid3d.networks`). Its warm start is
``grid``'s (:mod:`sinco.codec.grid.warm_start`), with the tensors the volume adds set to what a fit from scratch would
start them at: zero weights for the previous-slice inputs of the entropy model's first layer (the model begins as the
2-D one), zero slice-axis kernels (bicubic). The lift is integer bookkeeping only, so every decoder rebuilds the same
references from the packaged integers.
"""

from __future__ import annotations

import dataclasses
import functools

import numpy as np

from sinco.codec.grid import warm_start as grid_warm_start
from sinco.codec.grid.warm_start import WarmStart
from sinco.codec.grid3d.networks import depth_tensor_count, tensor_shapes
from sinco.codec.grid3d.spec import Grid3dSpec
from sinco.errors import BitstreamError


def load_warm_start(spec: Grid3dSpec) -> WarmStart | None:
    """The warm start ``spec`` names, as tensors of the volume decoder (``None`` for ``warm_start`` 0).

    Args:
        spec: the volume decoder spec.

    Returns:
        A :class:`~sinco.codec.grid.warm_start.WarmStart` whose tensors follow
        :func:`sinco.codec.grid3d.networks.tensor_shapes` (its ``spec`` is the in-plane spec it was fitted for).

    Raises:
        BitstreamError: if this sinco has no warm start of that id, or it was made for another in-plane spec.

    Example::

        spec = Grid3dSpec(warm_start=1)
        warm = load_warm_start(spec)
        warm.reference(0, 8).shape  # (12, 19): the entropy model's first layer, previous-slice columns zero
    """
    if spec.warm_start == 0:
        return None
    return _lifted(spec)


@functools.lru_cache(maxsize=8)
def _lifted(spec: Grid3dSpec) -> WarmStart:
    plane = grid_warm_start.load_warm_start(dataclasses.replace(spec.plane, warm_start=spec.warm_start))  # not None: id > 0
    first = plane.tensors[0]
    arm_first = np.concatenate([first, np.zeros((first.shape[0], spec.arm_previous), dtype=np.int64)], axis=1)
    zeros = tuple(np.zeros(4, dtype=np.int64) for _ in range(depth_tensor_count(spec)))
    tensors = (arm_first, *plane.tensors[1:], *zeros)
    if [t.shape for t in tensors] != [tuple(s) for s in tensor_shapes(spec)]:
        raise BitstreamError(f"grid3d spec: warm start {spec.warm_start} does not fit this volume decoder")
    return WarmStart(tensors=tensors, spec=plane.spec)
