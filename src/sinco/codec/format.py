"""The ``.sinco`` container: a common header, a family block and an opaque payload (format v2).

All integers and floats are little-endian. Layout of version 2 (:data:`HEADER_FIELDS`)::

    offset  size  field
    0       4     magic b"SNCO"
    4       1     format version (2)
    5       1     codec family id (see ``sinco.codec.registry``)
    6       4     image height H, uint32
    10      4     image width W, uint32
    14      8     intensity minimum, float64
    22      8     intensity maximum, float64
    30      2     family block length B, uint16 (at most MAX_BLOCK_BYTES)
    32      B     family block: the family's spec (every hyper-parameter its decoder needs)
    32+B    4     payload length L, uint32
    36+B    L     payload: the family's bytes (fp16 weights, entropy-coded latents, ...)
    36+B+L  4     CRC-32 (zlib) of every byte before it

Version 1 (sinco 0.1: SIREN and PE-MLP only, fp16 weights) is still read: its architecture
fields become a family block of version 1 that the family parses (:func:`unpack`).

Every length is checked against the file's size and the caps below before anything is allocated,
so a family's parser only ever sees a block and a payload that are really there.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

from sinco.errors import BitstreamError, InputError

MAGIC = b"SNCO"
FORMAT_VERSION = 2
READABLE_VERSIONS = (1, 2)
# The common header, declared as data: (field, struct code).
HEADER_FIELDS: tuple[tuple[str, str], ...] = (
    ("magic", "4s"), ("version", "B"), ("family_id", "B"), ("height", "I"), ("width", "I"),
    ("vmin", "d"), ("vmax", "d"), ("block_bytes", "H"),
)  # fmt: skip
_HEADER = struct.Struct("<" + "".join(code for _, code in HEADER_FIELDS))
_LENGTH = struct.Struct("<I")
HEADER_BYTES = _HEADER.size
TRAILER_BYTES = 4
# Bytes a file spends around its family block and payload.
OVERHEAD_BYTES = HEADER_BYTES + _LENGTH.size + TRAILER_BYTES
MAX_BLOCK_BYTES = 1024
# Decoding allocates 4 bytes per pixel: refuse, before allocating anything, shapes that no real
# image has, and shapes a file of this size cannot honestly describe (below 0.001 bpp).
MAX_SIDE = 32768
MAX_PIXELS = 1 << 27
MAX_PIXELS_PER_BYTE = 8000
# No codec here stores 100M+ parameters; reading stops here instead of slurping any file it is given.
MAX_FILE_BYTES = 256 << 20

# Version 1: magic, version, arch id, depth, reserved, width, H, W, vmin, vmax, n_params, 8-byte arch block.
_V1_FIXED = struct.Struct("<4sBBBBHIIddI")
_V1_HEADER_BYTES = _V1_FIXED.size + 8


@dataclass(frozen=True)
class FileHeader:
    """The common header of a ``.sinco`` file.

    Args:
        family_id: the codec family's id byte.
        height: image rows ``H``.
        width: image columns ``W``.
        vmin: intensity that 0 maps back to.
        vmax: intensity that 1 maps back to.
    """

    family_id: int
    height: int
    width: int
    vmin: float
    vmax: float

    @property
    def n_pixels(self) -> int:
        """``H * W``."""
        return self.height * self.width


@dataclass(frozen=True)
class Container:
    """A parsed ``.sinco`` file before its family reads the block and payload.

    Args:
        version: the format version the file was written in.
        header: the common header.
        block: the family block (for version 1: depth uint8, width uint16, the 8-byte architecture block).
        payload: the family's payload.
    """

    version: int
    header: FileHeader
    block: bytes
    payload: bytes


def check_shape(height: int, width: int, *, error: type[Exception]) -> None:
    """Refuse image shapes outside the format's caps (sides 1..MAX_SIDE, at most MAX_PIXELS pixels)."""
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise error(f"image shape {height}x{width}: outside the supported range (sides 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels)")


def pack(header: FileHeader, *, block: bytes, payload: bytes) -> bytes:
    """Serialize a header, a family block and a payload into the bytes of a version-2 file.

    Args:
        header: family id, image shape and intensity range.
        block: the family's spec bytes (at most :data:`MAX_BLOCK_BYTES`).
        payload: the family's payload.

    Returns:
        The file's bytes.

    Raises:
        InputError: if a value does not fit the format.
    """
    check_shape(header.height, header.width, error=InputError)
    if not (math.isfinite(header.vmin) and math.isfinite(header.vmax) and header.vmax > header.vmin):
        raise InputError(f"intensity range ({header.vmin}, {header.vmax}): must be finite with max > min")
    if not 0 <= header.family_id <= 255:
        raise InputError(f"family_id={header.family_id}: must be in 0..255")
    if len(block) > MAX_BLOCK_BYTES:
        raise InputError(f"family block of {len(block)} bytes: at most {MAX_BLOCK_BYTES}")
    if OVERHEAD_BYTES + len(block) + len(payload) > MAX_FILE_BYTES:
        raise InputError(f"payload of {len(payload)} bytes: a .sinco file holds at most {MAX_FILE_BYTES >> 20} MiB")
    head = _HEADER.pack(MAGIC, FORMAT_VERSION, header.family_id, header.height, header.width, header.vmin, header.vmax, len(block))
    body = head + block + _LENGTH.pack(len(payload)) + payload
    return body + struct.pack("<I", zlib.crc32(body))


def unpack(data: bytes) -> Container:
    """Split a ``.sinco`` file (version 1 or 2) into header, family block and payload, checking lengths and CRC.

    Args:
        data: the whole file.

    Returns:
        The :class:`Container`.

    Raises:
        BitstreamError: naming what is wrong: not a ``.sinco`` file, an unsupported version,
            a truncated or over-long file, a CRC mismatch, or header values that make no sense.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not a .sinco file (wrong magic bytes)")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError("truncated .sinco file: no format version")
    version = data[len(MAGIC)]
    if version not in READABLE_VERSIONS:
        raise BitstreamError(f"unsupported .sinco format version {version} (this sinco reads versions 1 and 2)")
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"implausible .sinco file: larger than {MAX_FILE_BYTES >> 20} MiB")
    container = _unpack_v1(data) if version == 1 else _unpack_v2(data)
    header = container.header
    check_shape(header.height, header.width, error=BitstreamError)
    if header.n_pixels > MAX_PIXELS_PER_BYTE * len(data):
        raise BitstreamError(
            f"implausible .sinco header: {header.height}x{header.width} pixels from a {len(data)}-byte file "
            f"(below {8 / MAX_PIXELS_PER_BYTE:g} bpp)"
        )
    if not (math.isfinite(header.vmin) and math.isfinite(header.vmax) and header.vmax > header.vmin):
        raise BitstreamError(f"corrupted .sinco header: intensity range ({header.vmin}, {header.vmax})")
    return container


def _check_crc(data: bytes, end: int) -> None:
    (crc,) = struct.unpack_from("<I", data, end - TRAILER_BYTES)
    if zlib.crc32(data[: end - TRAILER_BYTES]) != crc:
        raise BitstreamError("corrupted .sinco file: CRC-32 mismatch")


def _check_length(data: bytes, expected: int) -> None:
    if len(data) < expected:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, its header announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"corrupted .sinco file: {len(data)} bytes, its header announces {expected}")


def _unpack_v2(data: bytes) -> Container:
    if len(data) < OVERHEAD_BYTES:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, the header alone needs {OVERHEAD_BYTES}")
    fields = dict(zip((name for name, _ in HEADER_FIELDS), _HEADER.unpack_from(data, 0), strict=True))
    n_block = fields["block_bytes"]
    if n_block > MAX_BLOCK_BYTES:
        raise BitstreamError(f"corrupted .sinco header: a family block of {n_block} bytes (at most {MAX_BLOCK_BYTES})")
    if len(data) < HEADER_BYTES + n_block + _LENGTH.size + TRAILER_BYTES:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, its family block alone needs {HEADER_BYTES + n_block}")
    (n_payload,) = _LENGTH.unpack_from(data, HEADER_BYTES + n_block)
    payload_at = HEADER_BYTES + n_block + _LENGTH.size
    _check_length(data, payload_at + n_payload + TRAILER_BYTES)
    _check_crc(data, len(data))
    header = FileHeader(family_id=fields["family_id"], height=fields["height"], width=fields["width"],
                        vmin=fields["vmin"], vmax=fields["vmax"])  # fmt: skip
    return Container(version=2, header=header, block=data[HEADER_BYTES : HEADER_BYTES + n_block],
                     payload=data[payload_at : payload_at + n_payload])  # fmt: skip


def _unpack_v1(data: bytes) -> Container:
    if len(data) < _V1_HEADER_BYTES + TRAILER_BYTES:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, the header alone needs {_V1_HEADER_BYTES + TRAILER_BYTES}")
    _, _, arch_id, depth, reserved, width, height, img_width, vmin, vmax, n_params = _V1_FIXED.unpack_from(data, 0)
    _check_length(data, _V1_HEADER_BYTES + 2 * n_params + TRAILER_BYTES)
    _check_crc(data, len(data))
    if reserved != 0:
        raise BitstreamError("corrupted .sinco file: reserved header byte is not zero")
    block = struct.pack("<BH", depth, width) + data[_V1_FIXED.size : _V1_HEADER_BYTES]
    header = FileHeader(family_id=arch_id, height=height, width=img_width, vmin=vmin, vmax=vmax)
    return Container(version=1, header=header, block=block, payload=data[_V1_HEADER_BYTES : _V1_HEADER_BYTES + 2 * n_params])


def read_file(path: str | os.PathLike[str], *, arg: str = "INPUT") -> bytes:
    """Read a ``.sinco`` file, refusing anything larger than a ``.sinco`` file can be.

    Args:
        path: the file.
        arg: the command-line argument it came from, for error messages.

    Returns:
        Its bytes.

    Raises:
        InputError: if it is missing or not a regular file.
        BitstreamError: if it is larger than :data:`MAX_FILE_BYTES`.
    """
    file = Path(path)
    if not file.is_file():
        raise InputError(f"{arg} {str(file)!r}: no such file")
    with open(file, "rb") as handle:
        data = handle.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"{arg} {str(file)!r}: larger than {MAX_FILE_BYTES >> 20} MiB, not a .sinco file")
    return data
