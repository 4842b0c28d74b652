"""The ``.sinco`` file format (version 1).

All integers and floats are little-endian. Layout::

    offset  size  field
    0       4     magic b"SNCO"
    4       1     format version (1)
    5       1     architecture id: 1 = siren, 2 = pe-mlp
    6       1     depth (hidden layers)
    7       1     reserved, 0
    8       2     width (units per hidden layer), uint16
    10      4     image height H, uint32
    14      4     image width W, uint32
    18      8     intensity minimum, float64
    26      8     intensity maximum, float64
    34      4     number of parameters P, uint32
    38      8     architecture block:
                    siren:  w0 float32, w0_first float32
                    pe-mlp: n_freqs uint8, reserved uint8 (0), skip mask uint16
                            (bit i set = hidden layer i takes the encoding again), reserved uint32 (0)
    46      2P    parameters, float16, in ``model.parameters()`` order
    46+2P   4     CRC-32 (zlib) of every byte before it

The header is 46 bytes and the trailer 4, so a file costs ``16 P + 400`` bits.
"""

from __future__ import annotations

import math
import os
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sinco.errors import BitstreamError, InputError
from sinco.inr.models import INRSpec

MAGIC = b"SNCO"
FORMAT_VERSION = 1
_ARCH_IDS = {"siren": 1, "pe-mlp": 2}
_ARCH_NAMES = {v: k for k, v in _ARCH_IDS.items()}
_FIXED = struct.Struct("<4sBBBBHIIddI")
_SIREN_BLOCK = struct.Struct("<ff")
_PEMLP_BLOCK = struct.Struct("<BBHI")
HEADER_BYTES = _FIXED.size + 8
TRAILER_BYTES = 4
# Decoding allocates 4 bytes per pixel: refuse, before allocating anything, shapes that no real
# image has, and shapes a file of this size cannot honestly describe (below 0.001 bpp).
MAX_SIDE = 32768
MAX_PIXELS = 1 << 27
MAX_PIXELS_PER_BYTE = 8000
# No INR codec stores 100M+ parameters; reading stops here instead of slurping any file it is given.
MAX_FILE_BYTES = 256 << 20


@dataclass(frozen=True)
class SincoHeader:
    """What a ``.sinco`` file says about its content.

    Args:
        spec: the network architecture.
        height: image rows ``H``.
        width: image columns ``W``.
        vmin: intensity that 0 maps back to.
        vmax: intensity that 1 maps back to.
    """

    spec: INRSpec
    height: int
    width: int
    vmin: float
    vmax: float

    @property
    def n_pixels(self) -> int:
        """``H * W``."""
        return self.height * self.width


def file_size(spec: INRSpec) -> int:
    """Bytes of a ``.sinco`` file holding a network of this architecture, header included."""
    return HEADER_BYTES + 2 * spec.n_params() + TRAILER_BYTES


def encode_file(header: SincoHeader, weights: np.ndarray) -> bytes:
    """Serialise a header and fp16 weights into the bytes of a ``.sinco`` file.

    Args:
        header: architecture, image shape and intensity range.
        weights: float16 array of shape ``(P,)``, ``P == header.spec.n_params()``.

    Returns:
        The file's bytes.

    Raises:
        InputError: if the weights do not match the architecture, are not finite, or the header
            values do not fit the format.
    """
    spec = header.spec
    weights = np.asarray(weights)
    if weights.dtype != np.float16 or weights.ndim != 1:
        raise InputError(f"weights must be a 1-D float16 array, got {weights.dtype} of shape {weights.shape}")
    if weights.size != spec.n_params():
        raise InputError(f"weights has {weights.size} values, the {spec.arch} architecture needs {spec.n_params()}")
    if not np.all(np.isfinite(weights)):
        raise InputError("weights contain NaN or Inf: refusing to store them")
    _check_shape(header.height, header.width, error=InputError)
    if not (math.isfinite(header.vmin) and math.isfinite(header.vmax) and header.vmax > header.vmin):
        raise InputError(f"intensity range ({header.vmin}, {header.vmax}): must be finite with max > min")
    fixed = _FIXED.pack(
        MAGIC, FORMAT_VERSION, _ARCH_IDS[spec.arch], spec.depth, 0, spec.width,
        header.height, header.width, header.vmin, header.vmax, spec.n_params(),
    )  # fmt: skip
    if spec.arch == "siren":
        block = _SIREN_BLOCK.pack(spec.w0, spec.w0_first)
    else:
        block = _PEMLP_BLOCK.pack(spec.n_freqs, 0, sum(1 << s for s in spec.skips), 0)
    body = fixed + block + weights.astype("<f2").tobytes()
    return body + struct.pack("<I", zlib.crc32(body))


def _check_shape(height: int, width: int, *, error: type[Exception]) -> None:
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise error(
            f"image shape {height}x{width}: outside the supported range "
            f"(sides 1..{MAX_SIDE}, at most {MAX_PIXELS} pixels)"
        )


def decode_header(data: bytes) -> SincoHeader:
    """Parse and validate the header of a ``.sinco`` file, checking its length and CRC.

    Args:
        data: the whole file.

    Returns:
        The header.

    Raises:
        BitstreamError: naming what is wrong: not a ``.sinco`` file, an unsupported version,
            a truncated or over-long file, a CRC mismatch, or header values that make no sense.
    """
    if len(data) < len(MAGIC) or data[: len(MAGIC)] != MAGIC:
        raise BitstreamError("not a .sinco file (wrong magic bytes)")
    if len(data) < len(MAGIC) + 1:
        raise BitstreamError("truncated .sinco file: no format version")
    version = data[len(MAGIC)]
    if version != FORMAT_VERSION:
        raise BitstreamError(f"unsupported .sinco format version {version} (this sinco reads version {FORMAT_VERSION})")
    if len(data) < HEADER_BYTES + TRAILER_BYTES:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, the header alone needs {HEADER_BYTES + TRAILER_BYTES}")
    _, _, arch_id, depth, reserved, width, height, img_width, vmin, vmax, n_params = _FIXED.unpack_from(data, 0)
    expected = HEADER_BYTES + 2 * n_params + TRAILER_BYTES
    if len(data) < expected:
        raise BitstreamError(f"truncated .sinco file: {len(data)} bytes, its header announces {expected}")
    if len(data) > expected:
        raise BitstreamError(f"corrupted .sinco file: {len(data)} bytes, its header announces {expected}")
    (crc,) = struct.unpack_from("<I", data, expected - TRAILER_BYTES)
    if zlib.crc32(data[: expected - TRAILER_BYTES]) != crc:
        raise BitstreamError("corrupted .sinco file: CRC-32 mismatch")
    if arch_id not in _ARCH_NAMES:
        raise BitstreamError(f"unknown architecture id {arch_id} in .sinco header")
    if reserved != 0:
        raise BitstreamError("corrupted .sinco file: reserved header byte is not zero")
    _check_shape(height, img_width, error=BitstreamError)
    if height * img_width > MAX_PIXELS_PER_BYTE * len(data):
        raise BitstreamError(
            f"implausible .sinco header: {height}x{img_width} pixels from a {len(data)}-byte file "
            f"(below {8 / MAX_PIXELS_PER_BYTE:g} bpp)"
        )
    if not (math.isfinite(vmin) and math.isfinite(vmax) and vmax > vmin):
        raise BitstreamError(f"corrupted .sinco header: intensity range ({vmin}, {vmax})")
    arch = _ARCH_NAMES[arch_id]
    try:
        if arch == "siren":
            w0, w0_first = _SIREN_BLOCK.unpack_from(data, _FIXED.size)
            spec = INRSpec(arch=arch, width=width, depth=depth, w0=w0, w0_first=w0_first)
        else:
            n_freqs, pad, mask, pad2 = _PEMLP_BLOCK.unpack_from(data, _FIXED.size)
            if pad or pad2:
                raise BitstreamError("corrupted .sinco file: reserved header bytes are not zero")
            skips = tuple(i for i in range(16) if mask >> i & 1)
            spec = INRSpec(arch=arch, width=width, depth=depth, n_freqs=n_freqs, skips=skips)
    except InputError as exc:
        raise BitstreamError(f"invalid architecture in .sinco header: {exc}") from None
    if spec.n_params() != n_params:
        raise BitstreamError(
            f"corrupted .sinco header: {n_params} parameters stored, the architecture needs {spec.n_params()}"
        )
    return SincoHeader(spec=spec, height=height, width=img_width, vmin=vmin, vmax=vmax)


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


def decode_file(data: bytes) -> tuple[SincoHeader, np.ndarray]:
    """Parse a ``.sinco`` file into its header and weights.

    Args:
        data: the whole file.

    Returns:
        ``(header, weights)`` with ``weights`` a float16 array of shape ``(P,)``.

    Raises:
        BitstreamError: if the file is not valid (see :func:`decode_header`) or holds non-finite weights.
    """
    header = decode_header(data)
    n_params = header.spec.n_params()
    weights = np.frombuffer(data, dtype="<f2", count=n_params, offset=HEADER_BYTES).astype(np.float16)
    if not np.all(np.isfinite(weights)):
        raise BitstreamError("corrupted .sinco file: weights contain NaN or Inf")
    return header, weights
