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

Format version 3 holds a volume family's slabs (``grid3d``): consecutive slices coded together, each slab an
independent payload, so that any slices decode from their slabs alone (:func:`decode_slab_volume`)::

    offset  size  field
    0       4     magic b"SNCV"
    4       1     format version (3)
    5       1     slicing axis of the source volume (0, 1 or 2)
    6       1     codec family id (a family that codes slabs)
    7       1     reserved, 0
    8       4     slice rows H, uint32
    12      4     slice columns W, uint32
    16      4     number of slices S, uint32
    20      4     source index of the first slice, uint32
    24      128   voxel-to-world affine of the source, 4 x 4 float64 (the voxel spacing is its columns' lengths)
    152     2     family block length B, uint16
    154     B     family block: the family's spec, shared by every slab
    154+B   4     number of slabs N, uint32
    158+B   28 N  slab table, per slab: slices (uint32), intensity minimum and maximum (float64 each: the values 0
                  and 1 of its decoded voxels stand for), payload length L (uint32), CRC-32 of the payload (uint32);
                  a payload of length 0 is a constant slab, every voxel its minimum
    ...     4     CRC-32 (zlib) of every byte before it (header, block and table)
    ...     sum L the slab payloads, in table order

The table's slices add up to ``S`` and its lengths to the bytes after the table's CRC, exactly; each payload's CRC is
checked when its slab is decoded.
"""

from __future__ import annotations

import math
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np

from sinco.codec.files import SincoFile, decode_file, parse_file
from sinco.codec.format import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE
from sinco.errors import BitstreamError, InputError

VOLUME_MAGIC = b"SNCV"
VOLUME_VERSION = 2
READABLE_VOLUME_VERSIONS = (1, 2)
SLAB_VOLUME_VERSION = 3
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
    if version == SLAB_VOLUME_VERSION:
        raise BitstreamError("a .sinco volume of slabs (format version 3): it has no slice records (decode_slab_volume reads it)")
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

    if is_slab_volume(data):
        header, volume = decode_slab_volume(data)
        return header, volume, [None] * header.n_slices
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


# ------------------------------------------------------------------------------------------ slabs (version 3)
# The version-3 header and slab table, declared as data: (field, struct code).
SLAB_HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("magic", "4s"), ("version", "B"), ("axis", "B"), ("family_id", "B"), ("reserved", "B"), ("height", "I"), ("width", "I"),
    ("n_slices", "I"), ("first_index", "I"), ("affine", "16d"), ("block_bytes", "H"),
)  # fmt: skip
SLAB_ENTRY_FIELDS: tuple[tuple[str, str], ...] = (("slices", "I"), ("vmin", "d"), ("vmax", "d"), ("payload_bytes", "I"), ("crc", "I"))
_SLAB_HEAD = struct.Struct("<" + "".join(code for _, code in SLAB_HEADER_FIELDS))
_SLAB_ENTRY = struct.Struct("<" + "".join(code for _, code in SLAB_ENTRY_FIELDS))
_U32 = struct.Struct("<I")
MAX_SLABS = MAX_SLICES


@dataclass(frozen=True)
class SlabRecord:
    """One stored slab: its slices, intensity range and payload (empty for a constant slab, every voxel ``vmin``).

    Args:
        slices: slices in the slab.
        vmin: the intensity 0 stands for (a constant slab's value).
        vmax: the intensity 1 stands for.
        payload: the family's payload of the slab.
    """

    slices: int
    vmin: float
    vmax: float
    payload: bytes = b""


@dataclass(frozen=True)
class SlabVolume:
    """A parsed version-3 volume file (payloads not yet checked against their CRCs).

    Args:
        header: geometry of the stored slices.
        family_id: the codec family's id byte.
        spec: the family's spec, read from the family block.
        slabs: the slab records, in order.
        crcs: each payload's stored CRC-32.
        header_bytes: bytes before the first payload (header, block, table, the table's CRC).
    """

    header: VolumeHeader
    family_id: int
    spec: Any
    slabs: tuple[SlabRecord, ...]
    crcs: tuple[int, ...]
    header_bytes: int

    def slab_starts(self) -> list[int]:
        """The position (0-based, in the file) of each slab's first slice."""
        starts, position = [], 0
        for slab in self.slabs:
            starts.append(position)
            position += slab.slices
        return starts


def slab_header_bytes(*, n_slabs: int, block_bytes: int) -> int:
    """Bytes of a version-3 file besides its payloads (what a rate budget reserves for them)."""
    return _SLAB_HEAD.size + block_bytes + _U32.size + n_slabs * _SLAB_ENTRY.size + _U32.size


def is_slab_volume(data: bytes) -> bool:
    """Whether ``data`` starts like a version-3 volume file (slabs)."""
    return is_volume_file(data) and len(data) > 4 and data[4] == SLAB_VOLUME_VERSION


def encode_slab_volume(header: VolumeHeader, *, family_id: int, block: bytes, slabs: list[SlabRecord]) -> bytes:
    """Serialize slabs into the bytes of a version-3 ``.sinco`` volume file.

    Args:
        header: geometry of the stored slices.
        family_id: the family's id byte.
        block: the family block (its spec, shared by every slab).
        slabs: the slabs, in order; their slices add up to ``header.n_slices``.

    Returns:
        The file's bytes.

    Raises:
        InputError: if the slabs do not match the header or a value does not fit the format.
    """
    from sinco.codec.format import MAX_BLOCK_BYTES

    affine = np.asarray(header.affine, dtype=np.float64)
    if header.axis not in (0, 1, 2) or affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"volume: axis {header.axis} or an affine of shape {affine.shape} that is not finite")
    if not 1 <= len(slabs) <= MAX_SLABS or sum(s.slices for s in slabs) != header.n_slices:
        raise InputError(f"volume: {len(slabs)} slabs of {sum(s.slices for s in slabs)} slices for {header.n_slices} slices")
    if len(block) > MAX_BLOCK_BYTES or not 1 <= family_id <= 255:
        raise InputError(f"volume: a family block of {len(block)} bytes or family id {family_id}")
    table = b"".join(_SLAB_ENTRY.pack(s.slices, s.vmin, s.vmax, len(s.payload), zlib.crc32(s.payload)) for s in slabs)
    head = _SLAB_HEAD.pack(VOLUME_MAGIC, SLAB_VOLUME_VERSION, header.axis, family_id, 0, header.height, header.width, header.n_slices,
                           header.first_index, *affine.reshape(-1).tolist(), len(block)) + block + _U32.pack(len(slabs)) + table  # fmt: skip
    return head + _U32.pack(zlib.crc32(head)) + b"".join(s.payload for s in slabs)


def parse_slab_volume(data: bytes) -> SlabVolume:
    """Parse and check a version-3 volume file's header, family block and slab table (every length against the file's
    size and the caps, before anything is allocated).

    Raises:
        BitstreamError: naming what is wrong: truncation, a CRC mismatch of the header, implausible geometry, a slab
            table whose slices or lengths do not add up, a family that does not code slabs, a malformed block.
    """
    from sinco.codec.registry import family_by_id

    if not is_slab_volume(data):
        raise BitstreamError("not a .sinco volume file of slabs (wrong magic bytes or format version)")
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"implausible .sinco volume file: larger than {MAX_FILE_BYTES >> 20} MiB")
    if len(data) < _SLAB_HEAD.size + 2 * _U32.size:
        raise BitstreamError(f"truncated .sinco volume file: {len(data)} bytes, the header alone needs {_SLAB_HEAD.size + 2 * _U32.size}")
    _, _, axis, family_id, reserved, height, width, n_slices, first, *rest = _SLAB_HEAD.unpack_from(data)
    affine, block_bytes = rest[:16], rest[16]
    table_at = _SLAB_HEAD.size + block_bytes
    if table_at + _U32.size > len(data):
        raise BitstreamError(f"truncated .sinco volume file: its {block_bytes}-byte family block runs past the end")
    (n_slabs,) = _U32.unpack_from(data, table_at)
    crc_at = table_at + _U32.size + n_slabs * _SLAB_ENTRY.size
    if not 1 <= n_slabs <= MAX_SLABS or crc_at + _U32.size > len(data):
        raise BitstreamError(f"truncated or corrupted .sinco volume file: a table of {n_slabs} slabs does not fit its {len(data)} bytes")
    if zlib.crc32(data[:crc_at]) != _U32.unpack_from(data, crc_at)[0]:
        raise BitstreamError("corrupted .sinco volume file: CRC-32 mismatch of its header and slab table")
    if axis not in (0, 1, 2) or reserved != 0 or not all(math.isfinite(v) for v in affine):
        raise BitstreamError("corrupted .sinco volume header: bad axis, reserved byte or non-finite affine")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise BitstreamError(f"implausible .sinco volume header: slices of {height}x{width}")
    if not 1 <= n_slices <= MAX_SLICES or n_slices * height * width > MAX_VOXELS:
        raise BitstreamError(f"implausible .sinco volume header: {n_slices} slices of {height}x{width}")
    family = family_by_id(family_id)
    if not family.codes_slabs:
        raise BitstreamError(f"corrupted .sinco volume file: family {family.name} does not code slabs")
    spec = family.decode_spec(data[_SLAB_HEAD.size : table_at], version=SLAB_VOLUME_VERSION)
    entries = [_SLAB_ENTRY.unpack_from(data, table_at + _U32.size + k * _SLAB_ENTRY.size) for k in range(n_slabs)]
    if sum(e[0] for e in entries) != n_slices or any(e[0] < 1 for e in entries):
        raise BitstreamError(f"corrupted .sinco volume file: its {n_slabs} slabs hold {sum(e[0] for e in entries)} slices, the header says {n_slices}")
    payload_at = crc_at + _U32.size
    needed = sum(e[3] for e in entries)
    if needed != len(data) - payload_at:
        what = "truncated" if needed > len(data) - payload_at else "corrupted"
        raise BitstreamError(f"{what} .sinco volume file: its slab table announces {needed} bytes of payloads, {len(data) - payload_at} follow")
    slabs, crcs, offset = [], [], payload_at
    for k, (slices, vmin, vmax, length, crc) in enumerate(entries):
        if not (math.isfinite(vmin) and math.isfinite(vmax) and vmin <= vmax):
            raise BitstreamError(f"corrupted .sinco volume file: slab {k} has the intensity range {vmin}..{vmax}")
        family.check_slab(spec, payload_bytes=length, depth=slices, height=height, width=width)
        slabs.append(SlabRecord(slices=slices, vmin=vmin, vmax=vmax, payload=data[offset : offset + length]))
        crcs.append(crc)
        offset += length
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first,
                          affine=np.asarray(affine, dtype=np.float64).reshape(4, 4))  # fmt: skip
    return SlabVolume(header=header, family_id=family_id, spec=spec, slabs=tuple(slabs), crcs=tuple(crcs), header_bytes=payload_at)


def check_slab_crcs(volume: SlabVolume, indices: Any = None) -> None:
    """Check the payloads of the slabs ``indices`` (default: all) against their CRC-32.

    Raises:
        BitstreamError: naming the first slab that fails.
    """
    for k in range(len(volume.slabs)) if indices is None else indices:
        if zlib.crc32(volume.slabs[k].payload) != volume.crcs[k]:
            raise BitstreamError(f"corrupted .sinco volume file: slab {k} fails its CRC-32")


def decode_slab_volume(data: bytes, *, slices: range | None = None) -> tuple[VolumeHeader, np.ndarray]:
    """Decode the slices ``slices`` of a version-3 volume file (default: all), from the slabs that hold them only.

    Args:
        data: the whole file.
        slices: positions in the file (0-based, like indexing the decoded array), a range with step 1.

    Returns:
        ``(header, voxels)``: ``voxels`` float32 ``(len(slices), H, W)`` in the source's intensity units, exactly those
        slices of the whole file's decode.

    Raises:
        BitstreamError: if the file, or a slab it decodes, is invalid.
        InputError: if ``slices`` is empty or leaves the volume.
    """
    volume = parse_slab_volume(data)
    header = volume.header
    slices = range(header.n_slices) if slices is None else slices
    if slices.step != 1 or len(slices) == 0 or slices.start < 0 or slices.stop > header.n_slices:
        raise InputError(f"--slices {slices.start}:{slices.stop}: the file holds slices 0..{header.n_slices - 1} (0-based, half-open A:B)")
    from sinco.codec.registry import family_by_id
    from sinco.data.intensity import restore_intensity

    family = family_by_id(volume.family_id)
    out = np.empty((len(slices), header.height, header.width), np.float32)
    for k, (start, slab) in enumerate(zip(volume.slab_starts(), volume.slabs, strict=True)):
        lo, hi = max(start, slices.start), min(start + slab.slices, slices.stop)
        if lo >= hi:
            continue
        check_slab_crcs(volume, [k])
        if not slab.payload:
            out[lo - slices.start : hi - slices.start] = slab.vmin
            continue
        unit = family.decode_slab(volume.spec, slab.payload, depth=slab.slices, height=header.height, width=header.width,
                                  slices=range(lo - start, hi - start))  # fmt: skip
        out[lo - slices.start : hi - slices.start] = restore_intensity(unit, vmin=slab.vmin, vmax=slab.vmax)
    return header, out
