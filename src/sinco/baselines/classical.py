"""Classical codecs (JPEG, JPEG 2000, JPEG XL, AVIF, WebP) behind one interface, and rate matching.

Every codec takes an image scaled to ``[0, 1]``, quantises it to the deepest integer samples the
codec accepts here (JPEG 12-bit, JPEG 2000 and JPEG XL 16-bit, AVIF and WebP 8-bit), and returns
the real bytes of the file; ``decode`` maps them back to ``[0, 1]``. :func:`encode_at_bpp` finds,
by bisection, the highest quality whose file does not exceed a target rate.
"""

from __future__ import annotations

import io
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sinco.errors import InputError


class Codec(ABC):
    """An image codec with one quality knob.

    Attributes:
        name: method name in results (``"jpeg"``, ``"jpeg2000"``, ...).
        extension: file suffix of its output.
        bit_depth: bits per sample fed to the codec.
        quality_range: lowest and highest quality; higher is better.
        integer_quality: whether quality takes integer values only.
        library: what does the coding, for reports.
    """

    name: str
    extension: str
    bit_depth: int
    quality_range: tuple[float, float]
    integer_quality: bool = True
    library: str = ""

    def to_samples(self, image: np.ndarray) -> np.ndarray:
        """Quantise ``(H, W)`` in ``[0, 1]`` to unsigned integers of :attr:`bit_depth` bits."""
        peak = (1 << self.bit_depth) - 1
        return np.rint(np.clip(image, 0, 1) * peak).astype(np.uint8 if self.bit_depth <= 8 else np.uint16)

    def from_samples(self, samples: np.ndarray) -> np.ndarray:
        """Map decoded integer samples back to float32 ``[0, 1]``."""
        if samples.ndim == 3:  # codecs that decode grey as RGB
            samples = samples[..., 0]
        return (samples.astype(np.float64) / ((1 << self.bit_depth) - 1)).astype(np.float32)

    @abstractmethod
    def encode(self, image: np.ndarray, *, quality: float) -> bytes:
        """Compress an image.

        Args:
            image: ``(H, W)`` in ``[0, 1]``.
            quality: within :attr:`quality_range`; higher is better.

        Returns:
            The file's bytes.
        """

    @abstractmethod
    def decode(self, data: bytes) -> np.ndarray:
        """Decompress. Args: data: a file from :meth:`encode`. Returns: float32 ``(H, W)`` in ``[0, 1]``."""


class JPEG(Codec):
    """Baseline JPEG via libjpeg-turbo (imagecodecs), 12-bit samples, quality 1..100."""

    name, extension, bit_depth, quality_range, library = "jpeg", ".jpg", 12, (1, 100), "imagecodecs/libjpeg-turbo"

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        import imagecodecs

        return bytes(imagecodecs.jpeg8_encode(self.to_samples(image), level=int(quality), bitspersample=12))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return self.from_samples(imagecodecs.jpeg8_decode(data))


class JPEG2000(Codec):
    """JPEG 2000 via OpenJPEG (imagecodecs), 16-bit samples; quality = the target PSNR layer in dB."""

    name, extension, bit_depth, quality_range, library = "jpeg2000", ".j2k", 16, (1.0, 99.0), "imagecodecs/OpenJPEG"
    integer_quality = False

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        import imagecodecs

        return bytes(imagecodecs.jpeg2k_encode(self.to_samples(image), level=float(quality), codecformat="J2K"))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return self.from_samples(imagecodecs.jpeg2k_decode(data))


class JPEGXL(Codec):
    """JPEG XL via libjxl (imagecodecs), 16-bit samples; quality = 25 - Butteraugli distance."""

    name, extension, bit_depth, quality_range, library = "jpegxl", ".jxl", 16, (0.0, 24.95), "imagecodecs/libjxl"
    integer_quality = False

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        import imagecodecs

        return bytes(imagecodecs.jpegxl_encode(self.to_samples(image), distance=25.0 - float(quality)))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return self.from_samples(imagecodecs.jpegxl_decode(data))


class _PillowCodec(Codec):
    format: str = ""

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.to_samples(image)).save(buffer, format=self.format, quality=int(quality))
        return buffer.getvalue()

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        from PIL import Image

        with Image.open(io.BytesIO(data)) as img:
            return self.from_samples(np.array(img.convert("L")))


class AVIF(_PillowCodec):
    """AVIF via Pillow (libavif), 8-bit greyscale, quality 0..100 (imagecodecs' AVIF ignored quality here)."""

    name, extension, bit_depth, quality_range, library, format = "avif", ".avif", 8, (0, 100), "Pillow/libavif", "AVIF"


class WebP(_PillowCodec):
    """Lossy WebP via Pillow (libwebp), 8-bit (grey stored as YUV 4:2:0), quality 0..100."""

    name, extension, bit_depth, quality_range, library, format = "webp", ".webp", 8, (0, 100), "Pillow/libwebp", "WEBP"


CODECS: dict[str, type[Codec]] = {c.name: c for c in (JPEG, JPEG2000, JPEGXL, AVIF, WebP)}


def get_codec(name: str) -> Codec:
    """The codec called ``name``.

    Raises:
        InputError: if no codec has that name.
    """
    if name not in CODECS:
        raise InputError(f"codec {name!r}: expected one of {', '.join(CODECS)}")
    return CODECS[name]()


@dataclass(frozen=True)
class RateMatch:
    """Result of :func:`encode_at_bpp`.

    Args:
        data: the chosen file's bytes.
        quality: its quality setting.
        bpp: its real rate, ``8 * len(data) / pixels``.
        within_budget: False when even the lowest quality exceeds the target (``data`` is then the
            lowest-quality file).
        trials: how many encodings the search ran.
    """

    data: bytes
    quality: float
    bpp: float
    within_budget: bool
    trials: int


def encode_at_bpp(codec: Codec, image: np.ndarray, *, target_bpp: float, tolerance: float = 0.01) -> RateMatch:
    """Highest quality whose real file rate does not exceed ``target_bpp``, by bisection.

    The rate is assumed to grow with quality (true of these codecs up to small wobbles; the
    answer is always a file within budget when one exists among the qualities tried).

    Args:
        codec: the codec.
        image: ``(H, W)`` in ``[0, 1]``.
        target_bpp: the rate budget (bits per pixel, whole file).
        tolerance: stop once the quality interval is this narrow (continuous qualities only).

    Returns:
        A :class:`RateMatch`.

    Raises:
        InputError: if ``target_bpp`` is not positive.
    """
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise InputError(f"--bpp {target_bpp}: must be a positive number")
    pixels = image.shape[0] * image.shape[1]
    trials = 0

    def attempt(q: float) -> tuple[bytes, float]:
        nonlocal trials
        trials += 1
        data = codec.encode(image, quality=q)
        return data, 8 * len(data) / pixels

    lo, hi = codec.quality_range
    data, bpp = attempt(hi)
    if bpp <= target_bpp:
        return RateMatch(data=data, quality=hi, bpp=bpp, within_budget=True, trials=trials)
    data, bpp = attempt(lo)
    if bpp > target_bpp:
        return RateMatch(data=data, quality=lo, bpp=bpp, within_budget=False, trials=trials)
    best = (data, lo, bpp)
    # Invariant: quality lo fits the budget, quality hi does not.
    while (hi - lo > 1) if codec.integer_quality else (hi - lo > tolerance):
        mid = (lo + hi) // 2 if codec.integer_quality else (lo + hi) / 2
        data, bpp = attempt(mid)
        if bpp <= target_bpp:
            lo, best = mid, (data, mid, bpp)
        else:
            hi = mid
    return RateMatch(data=best[0], quality=best[1], bpp=best[2], within_budget=True, trials=trials)
