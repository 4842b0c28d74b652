"""What every classical codec is to sinco: an image codec with one quality knob, and the search of the highest
quality within a rate."""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from sinco.errors import InputError


def psnr_ceiling(bit_depth: int) -> float:
    """The PSNR (dB, on the ``[0, 1]`` range) of rounding uniformly spread values to ``bit_depth``-bit samples.

    The step is ``1 / (2**b - 1)`` and the rounding error is uniform over one step, so MSE = ``1 / (12 (2**b - 1)**2)``
    and PSNR = ``20 log10(2**b - 1) + 10 log10(12)``: 58.9 dB at 8 bits, 71.0 at 10, 83.0 at 12, 107.1 at 16. A codec
    that sees ``b``-bit samples of a continuous image does not exceed it on average.

    Args:
        bit_depth: bits per sample.

    Returns:
        The PSNR in dB.

    Raises:
        InputError: if ``bit_depth`` is not a positive integer.

    Example::

        >>> round(psnr_ceiling(10), 1)
        71.0
    """
    if isinstance(bit_depth, bool) or not isinstance(bit_depth, int) or bit_depth < 1:
        raise InputError(f"bit_depth {bit_depth!r}: must be a positive integer")
    return 20 * math.log10((1 << bit_depth) - 1) + 10 * math.log10(12)


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
        rate_model: ``(quality, bpp, qualities per halving of the rate)`` typical of a brain MRI slice, for integer
            qualities: :func:`encode_at_bpp` starts where it predicts the target and steps by secants of the log-rate
            from there (three to five encodings instead of bisection's eight, for slow encoders); ``None``: bisection.
    """

    name: str
    label: str
    extension: str
    bit_depth: int
    quality_range: tuple[float, float]
    integer_quality: bool = True
    library: str = ""
    ndim: int = 2
    rate_model: tuple[float, float, float] | None = None

    @property
    def psnr_ceiling(self) -> float:
        """The highest PSNR the codec's :attr:`bit_depth`-bit samples allow on average (see :func:`psnr_ceiling`)."""
        return psnr_ceiling(self.bit_depth)

    @property
    def details(self) -> dict[str, object]:
        """What a benchmark record states of the codec: its library, bit depth and PSNR ceiling (codecs add settings)."""
        return {"library": self.library, "bit_depth": self.bit_depth, "psnr_ceiling": round(self.psnr_ceiling, 2)}

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

    if codec.rate_model is not None and codec.integer_quality:
        return _guided_search(codec, attempt, target_bpp=target_bpp, counted=lambda: trials)
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


def _guided_search(codec: Codec, attempt: Callable[[float], tuple[bytes, float]], *, target_bpp: float,
                   counted: Callable[[], int]) -> RateMatch:  # fmt: skip
    """The answer of the bisection (the highest integer quality within the budget, the next one over it), found from
    :attr:`Codec.rate_model`'s prediction by secants of ``log2(bpp)`` against quality. Each trial lies strictly inside
    the qualities not yet settled, so the search ends; after six trials it bisects them."""
    q_ref, bpp_ref, per_halving = codec.rate_model  # type: ignore[misc]
    lo, hi = int(codec.quality_range[0]), int(codec.quality_range[1])
    tried: dict[int, tuple[bytes, float]] = {}
    best: int | None = None  # highest quality tried within the budget
    over: int | None = None  # lowest quality tried over it
    q = min(hi, max(lo, round(q_ref + per_halving * math.log2(target_bpp / bpp_ref))))
    while True:
        tried[q] = attempt(q)
        if tried[q][1] <= target_bpp:
            best = q if best is None else max(best, q)
        else:
            over = q if over is None else min(over, q)
        low, high = (lo if best is None else best + 1), (hi if over is None else over - 1)  # not yet settled
        if low > high:
            break
        if len(tried) >= 6:
            q = (low + high) // 2
            continue
        # Secant through the two trials nearest the target's log-rate (one trial: the model's slope).
        near = sorted(tried, key=lambda t: abs(math.log2(tried[t][1] / target_bpp)))[:2]
        a = near[0]
        slope = per_halving
        if len(near) == 2 and tried[near[1]][1] != tried[a][1]:
            slope = (near[1] - a) / math.log2(tried[near[1]][1] / tried[a][1])
        estimate = a + slope * math.log2(target_bpp / tried[a][1])
        q = min(high, max(low, math.floor(estimate) if math.isfinite(estimate) else (low + high) // 2))
    if best is None:  # even the lowest quality is over the budget
        return RateMatch(data=tried[lo][0], quality=lo, bpp=tried[lo][1], within_budget=False, trials=counted())
    return RateMatch(data=tried[best][0], quality=best, bpp=tried[best][1], within_budget=True, trials=counted())
