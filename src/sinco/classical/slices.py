"""An image codec coding a volume slice by slice at one quality: how a user codes a slab with a still-image codec.

The file is the slices' own files in order, each preceded by its length, so its size is the real cost of the slab.
Layout (little-endian)::

    offset  size  field
    0       4     magic b"SNSS"
    4       1     format version (1)
    5       4     number of slices S, uint32
    9       ...   S records: length L (uint32), then the L bytes of the slice's file

Coding a slab at a rate is :func:`~sinco.classical.base.encode_at_bpp` on this codec: one quality for every slice,
the highest whose whole file fits the slab's budget, which is what a user with a rate budget for the volume does with
a codec that has one quality knob.
"""

from __future__ import annotations

import struct

import numpy as np

from sinco.classical.base import Codec
from sinco.errors import BitstreamError, InputError

SLICES_MAGIC = b"SNSS"
SLICES_VERSION = 1
_HEAD = struct.Struct("<4sBI")
_LENGTH = struct.Struct("<I")


class SliceBySlice(Codec):
    """A 2-D :class:`~sinco.classical.base.Codec` applied to every slice of a ``(D, H, W)`` volume at one quality.

    Args:
        image_codec: the still-image codec (``ndim`` 2).

    Raises:
        InputError: if ``image_codec`` is not an image codec.

    Example::

        codec = SliceBySlice(JPEG2000())
        match = encode_at_bpp(codec, slab, target_bpp=0.6)  # slab: (D, H, W) in [0, 1]
        codec.decode(match.data).shape  # (D, H, W)
    """

    ndim = 3

    def __init__(self, image_codec: Codec) -> None:
        if image_codec.ndim != 2:
            raise InputError(f"{image_codec.name}: codes {image_codec.ndim}-D arrays; slice by slice needs an image codec")
        self.image_codec = image_codec
        self.name, self.label, self.library = image_codec.name, image_codec.label, image_codec.library
        self.extension = image_codec.extension + "s"
        self.bit_depth, self.quality_range = image_codec.bit_depth, image_codec.quality_range
        self.integer_quality = image_codec.integer_quality

    @property
    def details(self) -> dict[str, object]:
        """What a benchmark record states: the image codec's own details (where it states any) and the rate control."""
        own = getattr(self.image_codec, "details", None)
        own = own() if callable(own) else own
        return {**dict(own or {}), "rate_control": "one quality for every slice"}

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:
        """Code every slice of ``(D, H, W)`` in ``[0, 1]`` at ``quality``; returns the container's bytes."""
        if image.ndim != 3:
            raise InputError(f"{self.name} slice by slice: expected (D, H, W), got shape {tuple(image.shape)}")
        parts = [_HEAD.pack(SLICES_MAGIC, SLICES_VERSION, image.shape[0])]
        for plane in image:
            data = self.image_codec.encode(plane, quality=quality)
            parts += [_LENGTH.pack(len(data)), data]
        return b"".join(parts)

    def decode(self, data: bytes) -> np.ndarray:
        """Decode a container from :meth:`encode` to float32 ``(D, H, W)`` in ``[0, 1]``.

        Raises:
            BitstreamError: if ``data`` is not such a container, is truncated, or its slices differ in shape.
        """
        if len(data) < _HEAD.size or data[:4] != SLICES_MAGIC:
            raise BitstreamError("not a slice-by-slice file (wrong magic bytes)")
        _, version, count = _HEAD.unpack_from(data, 0)
        if version != SLICES_VERSION:
            raise BitstreamError(f"unsupported slice-by-slice format version {version}")
        planes, offset = [], _HEAD.size
        for index in range(count):
            if offset + _LENGTH.size > len(data):
                raise BitstreamError(f"truncated slice-by-slice file: {index} of {count} slices present")
            (length,) = _LENGTH.unpack_from(data, offset)
            offset += _LENGTH.size
            if offset + length > len(data):
                raise BitstreamError(f"truncated slice-by-slice file in slice {index}")
            planes.append(self.image_codec.decode(data[offset : offset + length]))
            offset += length
        if offset != len(data) or not planes or len({p.shape for p in planes}) != 1:
            raise BitstreamError("corrupted slice-by-slice file: trailing bytes, no slice, or slices of different shapes")
        return np.stack(planes).astype(np.float32)
