"""What every classical codec is to sinco: an image codec with one quality knob, and the search of the highest
quality within a rate."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from dataclasses import dataclass

import numpy as np

from sinco.errors import InputError


class Codec(ABC):
    """An image codec with one quality knob.

    Attributes:
        name: method name in results (``"jpeg"``, ``"jpeg2000"``, ...).
        label: the name tables and figures show.
        extension: file suffix of its output.
        bit_depth: bits per sample fed to the codec.
        quality_range: lowest and highest quality; higher is better.
        integer_quality: whether quality takes integer values only.
        library: what does the coding, for reports.
        ndim: 2 for an image codec (:meth:`encode` takes ``(H, W)``), 3 for a volume codec (``(D, H, W)``, the slices
            coded together, e.g. as the frames of a video).
    """

    name: str
    label: str
    extension: str
    bit_depth: int
    quality_range: tuple[float, float]
    integer_quality: bool = True
    library: str = ""
    ndim: int = 2

    def to_samples(self, image: np.ndarray) -> np.ndarray:
        """Quantize ``(H, W)`` in ``[0, 1]`` to unsigned integers of :attr:`bit_depth` bits."""
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
    """Highest quality whose real file rate (bits per pixel, or per voxel for a volume codec) does not exceed
    ``target_bpp``, by bisection.

    The rate is assumed to grow with quality (true of these codecs up to small wobbles; the
    answer is always a file within budget when one exists among the qualities tried).

    Args:
        codec: the codec.
        image: ``(H, W)`` in ``[0, 1]``, or ``(D, H, W)`` for a volume codec.
        target_bpp: the rate budget (bits per pixel or voxel, whole file).
        tolerance: stop once the quality interval is this narrow (continuous qualities only).

    Returns:
        A :class:`RateMatch`.

    Raises:
        InputError: if ``target_bpp`` is not positive.
    """
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise InputError(f"--bpp {target_bpp}: must be a positive number")
    if image.ndim != codec.ndim:
        raise InputError(f"{codec.name} codes {codec.ndim}-D arrays, got shape {tuple(image.shape)}")
    pixels = image.size
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
