"""Lossless and near-lossless classical codecs: JPEG-LS, reversible JPEG 2000 and HTJ2K, lossless JPEG XL and FFV1.

They code integer grey levels ``0..2**bits - 1`` as they are, at the levels' own bit depth: levels of at most 8 bits
as 8-bit samples, deeper ones in 16-bit containers with the depth declared where the codec takes it (JPEG 2000 and
JPEG XL ``bitspersample``, FFV1 ``gray10le``/``gray12le``/...; CharLS and OpenJPH through imagecodecs take the
container's 16 bits: :meth:`LosslessCodec.coded_bits` says which). :func:`image_levels` puts an image on its levels (its lattice, :func:`~sinco.codec.grid.lossless.find_lattice`)
and refuses, in one line, data on no integer lattice.

Example::

    levels, lattice, bits = image_levels(raw_slice)
    codec = LOSSLESS_CODECS["jpegls"]()
    data = codec.encode(levels, bits=bits, max_error=2)
    assert np.abs(codec.decode(data) - levels).max() <= 2
"""

from __future__ import annotations

import subprocess
from abc import ABC, abstractmethod
from typing import Any

import numpy as np

from sinco.errors import InputError

#: The deepest levels these codecs take (16-bit containers).
MAX_BITS = 16


def image_levels(values: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, Any, int]:
    """An image's (or volume's) integer levels, its lattice and the levels' bit depth.

    Args:
        values: pixels: integers, or floats on an integer lattice (e.g. the BraTS z-scores).
        name: how errors refer to the input.

    Returns:
        ``(levels, lattice, bits)``: int64 levels ``0..lattice.top`` (value - minimum, in steps), the
        :class:`~sinco.codec.grid.lossless.Lattice`, and ``bits`` = the bit length of ``lattice.top``.

    Raises:
        InputError: one line, for data on no integer lattice, non-finite or constant data, or more than 65,536 levels.
    """
    from sinco.codec.grid.lossless import find_lattice, to_levels

    lattice = find_lattice(values, name=name)
    return to_levels(values, lattice), lattice, max(1, int(lattice.top).bit_length())


class LosslessCodec(ABC):
    """A codec of integer grey levels, exact or (where :attr:`supports_max_error`) within ``max_error`` levels.

    Attributes:
        name: method name in results (``"jpegls"``, ...).
        label: the name tables show.
        extension: file suffix of its output.
        library: what does the coding, for reports.
        supports_max_error: whether :meth:`encode` takes ``max_error > 0`` (near-lossless).
        ndim: 2 for an image codec, 3 for one that also codes volumes ``(D, H, W)`` (as video frames); a volume codec
            takes an image as a one-frame volume.
    """

    name: str
    label: str
    extension: str
    library: str
    supports_max_error: bool = False
    ndim: int = 2

    def container_bits(self, bits: int) -> int:
        """The bits of the samples the codec is given for levels of ``bits`` bits: 8 or 16."""
        return 8 if bits <= 8 else 16

    def check(self, levels: np.ndarray, *, bits: int, max_error: int) -> np.ndarray:
        """Validate the arguments of :meth:`encode` and return the levels in their container (uint8 or uint16).

        Raises:
            InputError: naming the parameter and value.
        """
        array = np.asarray(levels)
        if not isinstance(bits, (int, np.integer)) or not 1 <= bits <= MAX_BITS:
            raise InputError(f"{self.name}: bits {bits!r}: expected an integer in 1..{MAX_BITS}")
        if array.ndim not in ((2, 3) if self.ndim == 3 else (2,)) or array.size == 0:
            raise InputError(
                f"{self.name}: expected {'(H, W) or (D, H, W)' if self.ndim == 3 else '(H, W)'} levels, got shape {array.shape}"
            )
        if array.dtype.kind not in "biu":
            raise InputError(
                f"{self.name}: expected integer levels, got {array.dtype}; put the image on its levels first (image_levels)"
            )
        low, high = int(array.min()), int(array.max())
        if low < 0 or high >= 1 << bits:
            raise InputError(f"{self.name}: levels {low}..{high} outside 0..{(1 << bits) - 1} of {bits} bits")
        if not isinstance(max_error, (int, np.integer)) or isinstance(max_error, bool) or max_error < 0:
            raise InputError(f"{self.name}: max_error {max_error!r}: expected a non-negative integer")
        if max_error and not self.supports_max_error:
            raise InputError(f"{self.name}: max_error {max_error}: this codec is lossless only")
        return array.astype(np.uint8 if self.container_bits(bits) == 8 else np.uint16)

    def coded_bits(self, bits: int) -> int:
        """The sample depth the codec codes levels of ``bits`` bits at (the depth it is told, or its container's)."""
        return bits

    @abstractmethod
    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:
        """Compress integer levels.

        Args:
            levels: ``(H, W)`` integers in ``0..2**bits - 1`` (``(D, H, W)`` too for a volume codec).
            bits: the levels' bit depth (1..16).
            max_error: the largest error allowed (0: lossless; above 0 only where :attr:`supports_max_error`).

        Returns:
            The file's bytes.

        Raises:
            InputError: for levels out of range or a bound the codec does not take.
        """

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress a file of :meth:`encode` to its levels (int64, the shape that was encoded)."""


def depth_jpegls() -> Any | None:
    """pyjpegls's ``jpeg_ls`` module (CharLS told the levels' depth), or None when it is not installed."""
    try:
        import jpeg_ls
    except ImportError:
        return None
    return jpeg_ls


class JPEGLS(LosslessCodec):
    """JPEG-LS via CharLS: lossless, or near-lossless with ``NEAR = max_error`` (at most 255).

    With pyjpegls installed, CharLS codes the levels at their own depth (``bits_stored``: 10-bit levels with P = 10);
    without it, imagecodecs' CharLS codes the container's depth (8 or 16 bits), which costs deeper levels: on three
    BraTS FLAIR slices of 10 and 11 bits, P = 16 took 8-11% more bits lossless and 12-17% more at NEAR = 1..4.
    :attr:`library` and :meth:`coded_bits` say which coded a file; both decode with either.
    """

    name, label, extension = "jpegls", "JPEG-LS", ".jls"
    supports_max_error = True

    def __init__(self) -> None:
        self._at_depth = depth_jpegls()

    @property
    def library(self) -> str:  # type: ignore[override]
        """``pyjpegls/CharLS`` (the levels' depth) or ``imagecodecs/CharLS`` (the container's)."""
        return "pyjpegls/CharLS" if self._at_depth is not None else "imagecodecs/CharLS"

    def coded_bits(self, bits: int) -> int:
        """The levels' depth with pyjpegls (at least 2, CharLS's least), else the container's (8 or 16)."""
        return max(2, bits) if self._at_depth is not None else self.container_bits(bits)

    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:  # noqa: D102
        import imagecodecs

        samples = self.check(levels, bits=bits, max_error=max_error)
        if max_error > 255:
            raise InputError(f"{self.name}: max_error {max_error}: CharLS takes NEAR up to 255")
        if self._at_depth is None:
            return bytes(imagecodecs.jpegls_encode(samples, level=int(max_error)))
        little = samples.astype("<u2") if samples.dtype == np.uint16 else samples
        height, width = samples.shape
        return bytes(self._at_depth.encode_buffer(np.ascontiguousarray(little).tobytes(), height, width, 1, self.coded_bits(bits),
                                                  lossy_error=int(max_error)))  # fmt: skip

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return np.asarray(imagecodecs.jpegls_decode(data)).astype(np.int64)


class JPEG2000Reversible(LosslessCodec):
    """JPEG 2000 via OpenJPEG (imagecodecs), reversible 5/3 wavelet, one lossless layer (``level=0``), J2K codestream."""

    name, label, extension, library = "jpeg2000", "JPEG 2000 (reversible)", ".j2k", "imagecodecs/OpenJPEG"

    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:  # noqa: D102
        import imagecodecs

        samples = self.check(levels, bits=bits, max_error=max_error)
        return bytes(imagecodecs.jpeg2k_encode(samples, level=0, reversible=True, codecformat="J2K", bitspersample=bits))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return np.asarray(imagecodecs.jpeg2k_decode(data)).astype(np.int64)


class HTJ2K(LosslessCodec):
    """High-throughput JPEG 2000 (Part 15) via OpenJPH (imagecodecs), reversible."""

    name, label, extension, library = "htj2k", "HTJ2K (reversible)", ".j2c", "imagecodecs/OpenJPH"

    def coded_bits(self, bits: int) -> int:
        """The container's depth: imagecodecs' HTJ2K encoder declares the sample type's bits (8 or 16)."""
        return self.container_bits(bits)

    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:  # noqa: D102
        import imagecodecs

        samples = self.check(levels, bits=bits, max_error=max_error)
        return bytes(imagecodecs.htj2k_encode(samples, reversible=True))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return np.asarray(imagecodecs.htj2k_decode(data)).astype(np.int64)


class JPEGXLLossless(LosslessCodec):
    """Lossless JPEG XL via libjxl (imagecodecs), modular mode, effort 9, the levels' bit depth declared."""

    name, label, extension, library = "jpegxl", "JPEG XL (lossless, e9)", ".jxl", "imagecodecs/libjxl"

    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:  # noqa: D102
        import imagecodecs

        samples = self.check(levels, bits=bits, max_error=max_error)
        return bytes(imagecodecs.jpegxl_encode(samples, lossless=True, effort=9, bitspersample=bits))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return np.asarray(imagecodecs.jpegxl_decode(data)).astype(np.int64)


#: FFV1's grey pixel formats by bit depth (levels of ``b`` bits go into the first format of at least ``b``).
FFV1_FORMATS = {8: "gray", 9: "gray9le", 10: "gray10le", 12: "gray12le", 14: "gray14le", 16: "gray16le"}
#: FFV1 settings: version 3, context model 1 (the larger), the range coder with its own state table, one slice a
#: frame. On an 8-bit LGG FLAIR volume (TCGA_CS_5397, 22 slices) these gave 1.949 bits per voxel against 2.054 with
#: the defaults (Golomb-Rice, several slices a frame); each volume is one group (``-g`` = its slices), which carries
#: the context states from slice to slice (2.106 with ``-g 1``).
FFV1_OPTIONS = ("-level", "3", "-context", "1", "-coder", "range_tab", "-slices", "1")


def ffmpeg_executable() -> str:
    """The ffmpeg of the ``imageio-ffmpeg`` wheel.

    Raises:
        InputError: if imageio-ffmpeg or its binary is missing (one line naming FFV1).
    """
    try:
        import imageio_ffmpeg

        return imageio_ffmpeg.get_ffmpeg_exe()
    except (ImportError, RuntimeError, OSError) as exc:
        raise InputError(f"ffv1: ffmpeg (from imageio-ffmpeg) is not available: {exc}") from None


def _ffmpeg(arguments: list[str], *, data: bytes, what: str) -> bytes:
    """Run ffmpeg on ``data`` (stdin) and return its stdout; a failure is one line naming the method."""
    command = [ffmpeg_executable(), "-hide_banner", "-nostdin", "-loglevel", "error", *arguments]
    try:
        done = subprocess.run(command, input=data, capture_output=True, check=False, timeout=600)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise InputError(f"ffv1: ffmpeg could not {what}: {exc}") from None
    if done.returncode != 0:
        message = " ".join(done.stderr.decode(errors="replace").split())[-300:] or f"exit status {done.returncode}"
        raise InputError(f"ffv1: ffmpeg could not {what}: {message}")
    return done.stdout


class FFV1(LosslessCodec):
    """FFV1 (version 3) via the ffmpeg of imageio-ffmpeg, in a NUT file: a volume's slices as the frames of one
    group, an image as one frame; the levels' bit depth as the pixel format (``gray``, ``gray10le``, ...)."""

    name, label, extension, library = "ffv1", "FFV1", ".nut", "ffmpeg (imageio-ffmpeg)/FFV1"
    ndim = 3

    @staticmethod
    def pixel_format(bits: int) -> str:
        """The grey pixel format of levels of ``bits`` bits."""
        return FFV1_FORMATS[min(b for b in FFV1_FORMATS if b >= bits)]

    def coded_bits(self, bits: int) -> int:
        """The depth of :meth:`pixel_format`."""
        return min(b for b in FFV1_FORMATS if b >= bits)

    def encode(self, levels: np.ndarray, *, bits: int, max_error: int = 0) -> bytes:  # noqa: D102
        samples = self.check(levels, bits=bits, max_error=max_error)
        frames = samples[None] if samples.ndim == 2 else samples
        depth, height, width = frames.shape
        raw = np.ascontiguousarray(frames.astype("<u2") if samples.dtype == np.uint16 else frames).tobytes()
        arguments = ["-f", "rawvideo", "-pix_fmt", self.pixel_format(bits), "-s", f"{width}x{height}", "-framerate", "25",
                     "-i", "pipe:", "-c:v", "ffv1", *FFV1_OPTIONS, "-g", str(depth), "-f", "nut", "pipe:"]  # fmt: skip
        return _ffmpeg(arguments, data=raw, what="encode")

    def decode(self, data: bytes) -> np.ndarray:
        """The levels of a file of :meth:`encode`: ``(D, H, W)``, or ``(H, W)`` for one frame."""
        import re

        from sinco.errors import BitstreamError

        # The frame size and pixel format come from the NUT stream header, which ffmpeg reports at the info level; the
        # frames come out in that format (no conversion: gray10le stays 10-bit values in 16-bit words).
        command = [
            ffmpeg_executable(),
            "-hide_banner",
            "-nostdin",
            "-loglevel",
            "info",
            "-f",
            "nut",
            "-i",
            "pipe:",
            "-f",
            "rawvideo",
            "pipe:",
        ]
        try:
            done = subprocess.run(command, input=data, capture_output=True, check=False, timeout=600)
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise InputError(f"ffv1: ffmpeg could not decode: {exc}") from None
        log = done.stderr.decode(errors="replace")
        stream = re.search(r"Video: ffv1\b[^,]*, (gray\w*)[^,]*, (\d+)x(\d+)", log)
        if done.returncode != 0 or stream is None:
            raise BitstreamError(f"ffv1: not a decodable grey FFV1 file ({' '.join(log.split())[-200:] or 'no stream'})")
        pixel_format, width, height = stream.group(1), int(stream.group(2)), int(stream.group(3))
        frames = np.frombuffer(done.stdout, dtype=np.uint8 if pixel_format == "gray" else "<u2")
        if frames.size == 0 or frames.size % (height * width):
            raise BitstreamError(f"ffv1: decoded {frames.size} samples, not whole {width}x{height} frames")
        volume = frames.reshape(-1, height, width).astype(np.int64)
        return volume[0] if len(volume) == 1 else volume
