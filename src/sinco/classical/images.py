"""Still-image codecs through imagecodecs and Pillow: JPEG, JPEG 2000, JPEG XL, AVIF (8-bit) and WebP.

Every codec takes an image scaled to ``[0, 1]``, quantizes it to the deepest integer samples the codec accepts here
(JPEG 12-bit, JPEG 2000 and JPEG XL 16-bit, AVIF and WebP 8-bit), and returns the real bytes of the file; ``decode``
maps them back to ``[0, 1]``.
"""

from __future__ import annotations

import io

import numpy as np

from sinco.classical.base import Codec


class JPEG(Codec):
    """Baseline JPEG via libjpeg-turbo (imagecodecs), 12-bit samples, quality 1..100."""

    name, label, extension, bit_depth, quality_range, library = "jpeg", "JPEG", ".jpg", 12, (1, 100), "imagecodecs/libjpeg-turbo"

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        import imagecodecs

        return bytes(imagecodecs.jpeg8_encode(self.to_samples(image), level=int(quality), bitspersample=12))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return self.from_samples(imagecodecs.jpeg8_decode(data))


class JPEG2000(Codec):
    """JPEG 2000 via OpenJPEG (imagecodecs), 16-bit samples; quality = the target PSNR layer in dB."""

    name, label, extension, bit_depth, quality_range, library = "jpeg2000", "JPEG 2000", ".j2k", 16, (1.0, 99.0), "imagecodecs/OpenJPEG"
    integer_quality = False

    def encode(self, image: np.ndarray, *, quality: float) -> bytes:  # noqa: D102
        import imagecodecs

        return bytes(imagecodecs.jpeg2k_encode(self.to_samples(image), level=float(quality), codecformat="J2K"))

    def decode(self, data: bytes) -> np.ndarray:  # noqa: D102
        import imagecodecs

        return self.from_samples(imagecodecs.jpeg2k_decode(data))


class JPEGXL(Codec):
    """JPEG XL via libjxl (imagecodecs), 16-bit samples; quality = 25 - Butteraugli distance."""

    name, label, extension, bit_depth, quality_range, library = "jpegxl", "JPEG XL", ".jxl", 16, (0.0, 24.95), "imagecodecs/libjxl"
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

    name, label, extension, bit_depth, quality_range, library, format = "avif", "AVIF (8-bit)", ".avif", 8, (0, 100), "Pillow/libavif", "AVIF"


class WebP(_PillowCodec):
    """Lossy WebP via Pillow (libwebp), 8-bit (grey stored as YUV 4:2:0), quality 0..100."""

    name, label, extension, bit_depth, quality_range, library, format = "webp", "WebP", ".webp", 8, (0, 100), "Pillow/libwebp", "WEBP"
