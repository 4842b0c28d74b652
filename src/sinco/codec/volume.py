"""Whole volumes: a ``.sinco`` volume file holds one ``.sinco`` record per slice.

All integers and floats are little-endian. Layout (format version 2; version 1 is the same
container around version-1 ``.sinco`` records, and is still read)::

    offset  size  field
    0       4     magic b"SNCV"
    4       1     format version (2)
    5       1     slicing axis of the source volume (0, 1 or 2)
    6       2     reserved, 0
    8       4     slice rows H, uint32
    12      4     slice columns W, uint32
    16      4     number of slices S, uint32
    20      4     source index of the first slice (the slices are consecutive), uint32
    24      128   voxel-to-world affine of the source, 4 x 4 float64, row-major (identity if unknown)
    152     ...   S records, each
                    kind uint8 = 0: a constant slice, followed by its value, float64
                    kind uint8 = 1: a fitted slice, followed by a length L (uint32) and L bytes
                                    of a complete ``.sinco`` file (any codec family) of an H x W image
    end-4   4     CRC-32 (zlib) of every byte before it

A constant slice (empty background at the ends of a scan) costs 9 bytes and no fit; a fitted
slice costs its ``.sinco`` file plus 5 bytes. Compressing volumes is :func:`sinco.compression.volume.compress_volume`;
this module reads and writes the bytes.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass

import numpy as np

from sinco.codec.files import SincoFile, decode_file, parse_file
from sinco.codec.format import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE
from sinco.errors import BitstreamError, InputError

VOLUME_MAGIC = b"SNCV"
VOLUME_VERSION = 2
READABLE_VOLUME_VERSIONS = (1, 2)
MAX_SLICES = 65535
# Decoding holds the volume as float32: 2 GiB at most, whatever a file announces.
MAX_VOXELS = 1 << 29
_HEAD = struct.Struct("<4sBBHIIII16d")
_CONSTANT, _FITTED = 0, 1


@dataclass(frozen=True)
class VolumeHeader:
    """What a ``.sinco`` volume file says about its content.

    Args:
        axis: slicing axis of the source volume.
        height: rows of every slice.
        width: columns of every slice.
        n_slices: slices stored.
        first_index: source index of the first stored slice.
        affine: the source's voxel-to-world matrix ``(4, 4)``.
    """

    axis: int
    height: int
    width: int
    n_slices: int
    first_index: int
    affine: np.ndarray

    @property
    def n_voxels(self) -> int:
        """``S * H * W``."""
        return self.n_slices * self.height * self.width


@dataclass(frozen=True)
class SliceRecord:
    """One stored slice: a constant value, or the bytes of a ``.sinco`` file.

    Args:
        constant: the value of a constant slice (``None`` for a fitted slice).
        data: the ``.sinco`` file of a fitted slice (``None`` for a constant slice).
    """

    constant: float | None = None
    data: bytes | None = None


def is_volume_file(data: bytes) -> bool:
    """Whether ``data`` starts like a ``.sinco`` volume file."""
    return data[: len(VOLUME_MAGIC)] == VOLUME_MAGIC


def encode_volume(header: VolumeHeader, records: list[SliceRecord]) -> bytes:
    """Serialize slice records into the bytes of a ``.sinco`` volume file.

    Args:
        header: geometry of the stored slices.
        records: one per slice, in order.

    Returns:
        The file's bytes.

    Raises:
        InputError: if the records do not match the header or a value does not fit the format.
    """
    if header.axis not in (0, 1, 2):
        raise InputError(f"--axis {header.axis}: must be 0, 1 or 2")
    if len(records) != header.n_slices or not 1 <= header.n_slices <= MAX_SLICES:
        raise InputError(f"volume: {len(records)} slice records for {header.n_slices} slices (1..{MAX_SLICES} allowed)")
    affine = np.asarray(header.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"affine: expected a finite 4 x 4 matrix, got shape {affine.shape}")
    parts = [_HEAD.pack(VOLUME_MAGIC, VOLUME_VERSION, header.axis, 0, header.height, header.width, header.n_slices,
                        header.first_index, *affine.reshape(-1).tolist())]  # fmt: skip
    for index, record in enumerate(records):
        if record.data is None:
            if record.constant is None or not math.isfinite(record.constant):
                raise InputError(f"slice {header.first_index + index}: a constant slice needs a finite value")
            parts.append(struct.pack("<Bd", _CONSTANT, record.constant))
        else:
            inner = parse_file(record.data)
            if (inner.height, inner.width) != (header.height, header.width):
                raise InputError(f"slice {header.first_index + index}: {inner.height}x{inner.width}, the volume's slices are {header.height}x{header.width}")
            parts.append(struct.pack("<BI", _FITTED, len(record.data)) + record.data)
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_volume_file(data: bytes) -> tuple[VolumeHeader, list[SliceRecord]]:
    """Parse and validate a ``.sinco`` volume file (every slice record is checked too).

    Args:
        data: the whole file.

    Returns:
        ``(header, records)``.

    Raises:
        BitstreamError: naming what is wrong: wrong magic, unsupported version, truncation, CRC
            mismatch, implausible geometry, or an invalid slice record.
    """
    if not is_volume_file(data):
        raise BitstreamError("not a .sinco volume file (wrong magic bytes)")
    if len(data) < _HEAD.size + 4:
        raise BitstreamError(f"truncated .sinco volume file: {len(data)} bytes, the header alone needs {_HEAD.size + 4}")
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"implausible .sinco volume file: larger than {MAX_FILE_BYTES >> 20} MiB")
    magic, version, axis, reserved, height, width, n_slices, first, *affine = _HEAD.unpack_from(data, 0)
    if version not in READABLE_VOLUME_VERSIONS:
        raise BitstreamError(f"unsupported .sinco volume format version {version} (this sinco reads versions 1 and 2)")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError("corrupted .sinco volume file: CRC-32 mismatch (or truncated)")
    if axis not in (0, 1, 2) or reserved != 0:
        raise BitstreamError("corrupted .sinco volume header: bad axis or reserved bytes")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise BitstreamError(f"implausible .sinco volume header: slices of {height}x{width}")
    if not 1 <= n_slices <= MAX_SLICES or n_slices * height * width > MAX_VOXELS:
        raise BitstreamError(f"implausible .sinco volume header: {n_slices} slices of {height}x{width}")
    if not all(math.isfinite(v) for v in affine):
        raise BitstreamError("corrupted .sinco volume header: non-finite affine")
    records: list[SliceRecord] = []
    offset, end = _HEAD.size, len(data) - 4
    for index in range(n_slices):
        if offset >= end:
            raise BitstreamError(f"truncated .sinco volume file: {index} of {n_slices} slice records present")
        kind = data[offset]
        if kind == _CONSTANT:
            if offset + 9 > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            (value,) = struct.unpack_from("<d", data, offset + 1)
            if not math.isfinite(value):
                raise BitstreamError(f"corrupted .sinco volume file: slice record {index} holds a non-finite value")
            records.append(SliceRecord(constant=value))
            offset += 9
        elif kind == _FITTED:
            if offset + 5 > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            (length,) = struct.unpack_from("<I", data, offset + 1)
            inner = data[offset + 5 : offset + 5 + length]
            if len(inner) != length or offset + 5 + length > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            try:
                slice_header = parse_file(inner)
            except BitstreamError as exc:
                raise BitstreamError(f"slice record {index}: {exc}") from None
            if (slice_header.height, slice_header.width) != (height, width):
                raise BitstreamError(f"corrupted .sinco volume file: slice record {index} is {slice_header.height}x{slice_header.width}")
            records.append(SliceRecord(data=inner))
            offset += 5 + length
        else:
            raise BitstreamError(f"corrupted .sinco volume file: unknown kind {kind} of slice record {index}")
    if offset != end:
        raise BitstreamError(f"corrupted .sinco volume file: {end - offset} bytes after the last slice record")
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first,
                          affine=np.asarray(affine, dtype=np.float64).reshape(4, 4))  # fmt: skip
    return header, records


def decode_volume(data: bytes) -> tuple[VolumeHeader, np.ndarray, list[SincoFile | None]]:
    """Decode a ``.sinco`` volume file to restored intensities, slices stacked along the first axis.

    Args:
        data: the whole file.

    Returns:
        ``(header, volume, slice_files)``: ``volume`` float32 ``(S, H, W)`` in the source's
        intensity units; ``slice_files[i]`` is the parsed record, ``None`` for a constant slice.

    Raises:
        BitstreamError: if the file is not valid.
    """
    from sinco.data.intensity import restore_intensity

    header, records = decode_volume_file(data)
    volume = np.empty((header.n_slices, header.height, header.width), dtype=np.float32)
    slice_headers: list[SincoFile | None] = []
    for index, record in enumerate(records):
        if record.data is None:
            volume[index] = record.constant
            slice_headers.append(None)
        else:
            slice_header, image = decode_file(record.data)
            volume[index] = restore_intensity(image, vmin=slice_header.vmin, vmax=slice_header.vmax)
            slice_headers.append(slice_header)
    return header, volume, slice_headers
