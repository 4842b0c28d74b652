"""The decoder-side hyper-parameters of the volume latent-grid family, and their bytes (the family block).

A :class:`Grid3dSpec` is a :class:`~sinco.codec.grid.spec.GridSpec` (the in-plane pyramid, the synthesis network, the
entropy model's layers, the latents' range) plus what the third axis adds: at which pyramid stages the slice axis is
halved too (:func:`depth_stages_for`, from the voxel spacing), and how many latents of the previous slice the entropy
model reads.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

from sinco.codec.grid.spec import MAX_WARM_START, GridSpec
from sinco.errors import BitstreamError, InputError

#: Version 2 added the ``warm_start`` byte. A spec is written in the oldest version that holds it (one without a warm
#: start as version 1), so files written before warm starts existed keep their bytes.
SPEC3D_VERSION = 2
#: Latents of the previous slice the entropy model may read, ``(dy, dx)`` around the co-located one, most
#: informative first. The previous slice of the same grid is decoded before (:func:`sinco.codec.grid3d.arm.decode_steps`).
PREVIOUS_OFFSETS: tuple[tuple[int, int], ...] = ((0, 0), (0, -1), (-1, 0), (0, 1), (1, 0), (-1, -1), (-1, 1), (1, -1), (1, 1))
# Caps: a hostile family block or volume header must not make the decoder allocate beyond these.
MAX_SLAB_SLICES = 256
MAX_SLAB_VOXELS = 1 << 22  # 64 slices of 256 x 256; the decoder's float64 planes at 7 levels: about 0.25 GB


def default_plane() -> GridSpec:
    """The in-plane part of the default spec: ``grid``'s default decoder without a warm start."""
    return GridSpec()


@dataclass(frozen=True)
class Grid3dSpec:
    """Every hyper-parameter the volume decoder needs besides the payload.

    Args:
        plane: the in-plane spec (levels, upsampling, synthesis, entropy-model layers, latent range); no warm start.
        depth_stages: one flag per 2x stage (``plane.levels - 1`` of them, the stage into grid 1 first): whether the
            stage halves the slice axis too (see :func:`depth_stages_for`).
        arm_previous: latents of the previous slice the entropy model reads (first of :data:`PREVIOUS_OFFSETS`).
        warm_start: ``grid``'s packaged warm start (:mod:`sinco.codec.grid.warm_start`) the fit starts from, lifted to
            the volume decoder (:mod:`sinco.codec.grid3d.warm_start`), and the payload codes the weights as differences
            from; 0: none.

    Raises:
        InputError: on construction, if a value is out of its range.

    Example::

        spec = Grid3dSpec(depth_stages=depth_stages_for(spacing=(1.0, 1.0, 1.0), levels=7))
        spec.grid_shapes(16, 240, 240)[1]  # (8, 120, 120)
    """

    plane: GridSpec = field(default_factory=default_plane)
    depth_stages: tuple[bool, ...] = (True,) * 6
    arm_previous: int = 9
    warm_start: int = 0

    def __post_init__(self) -> None:
        problem = None
        if not isinstance(self.plane, GridSpec) or self.plane.warm_start:
            problem = "plane: expected a GridSpec without a warm start"
        elif len(self.depth_stages) != self.plane.levels - 1 or not all(isinstance(s, bool) for s in self.depth_stages):
            problem = f"depth_stages {self.depth_stages}: expected {self.plane.levels - 1} flags (one per 2x stage)"
        elif not (isinstance(self.arm_previous, int) and 0 <= self.arm_previous <= len(PREVIOUS_OFFSETS)):
            problem = f"arm_previous {self.arm_previous!r}: expected 0..{len(PREVIOUS_OFFSETS)}"
        elif not (isinstance(self.warm_start, int) and 0 <= self.warm_start <= MAX_WARM_START):
            problem = f"warm_start {self.warm_start!r}: expected 0..{MAX_WARM_START}"
        if problem:
            raise InputError(f"grid3d spec: {problem}")

    @property
    def levels(self) -> int:
        """Number of latent grids."""
        return self.plane.levels

    def grid_shapes(self, depth: int, height: int, width: int) -> list[tuple[int, int, int]]:
        """Shapes ``(d_l, h_l, w_l)`` of the latent grids, finest first: in-plane as ``grid``'s, the slice axis halved
        (rounded up) at the stages :attr:`depth_stages` names while more than one slice is left."""
        shapes, d = [], depth
        for level, (h, w) in enumerate(self.plane.grid_shapes(height, width)):
            if level > 0 and self.depth_stages[level - 1] and d > 1:
                d = math.ceil(d / 2)
            shapes.append((d, h, w))
        return shapes

    def validate_for(self, depth: int, height: int, width: int, *, error: type[Exception] = InputError) -> None:
        """Check that this spec can code a slab of ``depth x height x width``.

        Raises:
            InputError (or ``error``): if the geometry is outside the decoder's caps.
        """
        self.plane.validate_for(height, width, error=error)
        if not (1 <= depth <= MAX_SLAB_SLICES and depth * height * width <= MAX_SLAB_VOXELS):
            raise error(f"slab of {depth} slices of {height}x{width}: grid3d takes 1..{MAX_SLAB_SLICES} slices, at most {MAX_SLAB_VOXELS} voxels")

    def to_bytes(self) -> bytes:
        """The family block: its version, the depth stages as a bit mask (bit ``l``: the stage into grid ``l + 1``), the
        previous-slice context count, the warm start (version 2 only), then the in-plane spec's own block
        (:meth:`GridSpec.to_bytes`). The version is the oldest that holds the spec: 1 without a warm start."""
        mask = sum(1 << level for level, halves in enumerate(self.depth_stages) if halves)
        head = [2, mask, self.arm_previous, self.warm_start] if self.warm_start else [1, mask, self.arm_previous]
        return bytes(head) + self.plane.to_bytes()

    @classmethod
    def from_bytes(cls, block: bytes) -> Grid3dSpec:
        """Parse a family block written by :meth:`to_bytes`.

        Raises:
            BitstreamError: if the block is truncated, of another version, or holds a value out of range.
        """
        data = bytes(block)
        version = data[0] if data else 0
        if not 1 <= version <= SPEC3D_VERSION:
            raise BitstreamError(f"grid3d spec block: version {version} is not supported (expected 1..{SPEC3D_VERSION})")
        head = 3 if version == 1 else 4
        if len(data) < head + 1:
            raise BitstreamError(f"grid3d spec block: truncated ({len(data)} bytes)")
        mask, previous = data[1:3]
        warm_start = data[3] if version >= 2 else 0
        # One spelling per spec: a version-2 block always names a warm start.
        if version == 2 and warm_start == 0:
            raise BitstreamError("grid3d spec block: a version-2 block without a warm start")
        plane = GridSpec.from_bytes(data[head:])
        if mask >> (plane.levels - 1):
            raise BitstreamError(f"grid3d spec block: depth-stage mask {mask:#x} names stages beyond the {plane.levels} levels")
        try:
            return cls(plane=plane, depth_stages=tuple(bool(mask >> level & 1) for level in range(plane.levels - 1)), arm_previous=previous,
                       warm_start=warm_start)  # fmt: skip
        except InputError as exc:
            raise BitstreamError(f"grid3d spec block: {exc}".replace("grid3d spec: ", "")) from None


def depth_stages_for(*, spacing: Sequence[float], levels: int) -> tuple[bool, ...]:
    """Which 2x stages halve the slice axis too: those after which the voxels are closer to cubic than without.

    At stage ``l`` (into grid ``l + 1``) the in-plane spacing doubles; the slice axis is halved too when that leaves
    ``|log2(slice spacing / in-plane spacing)|`` smaller than keeping it (a tie keeps it). Isotropic 1 mm voxels are
    halved at every stage; 5 mm slices of 1 mm pixels from the third stage on.

    Args:
        spacing: ``(slice, row, column)`` voxel spacing (any unit, positive).
        levels: number of latent grids.

    Returns:
        ``levels - 1`` flags, the stage into grid 1 first.

    Raises:
        InputError: for a non-positive or non-finite spacing.
    """
    if len(spacing) != 3 or not all(math.isfinite(s) and s > 0 for s in spacing):
        raise InputError(f"voxel spacing {tuple(spacing)}: expected three positive numbers (slice, row, column)")
    ratio = math.log2(spacing[0] / math.sqrt(spacing[1] * spacing[2]))
    stages, halved = [], 0
    for level in range(levels - 1):
        keep = abs(ratio + halved - (level + 1))
        halve = abs(ratio + halved + 1 - (level + 1))
        stages.append(halve < keep)
        halved += int(halve < keep)
    return tuple(stages)
