"""The residual layer: the grid's prediction error, scalar-quantized and range-coded, for rates the grids cannot reach.

Latent grids stop spending bits near 1 bpp on BraTS slices (the synthesis, not lambda, limits them) while JPEG 2000
keeps gaining ~16 dB per bpp. Above that ceiling the file codes ``x - p``, the error of the grid's decoded image
``p``, with a uniform step: at high rate each halving of the step adds one bit per pixel whose error is not already
below it, ~6 dB for the pixels that carry the error (docs/grid-codec.md, "A residual layer").

The residual lives on a lattice ``k / K`` of the unit range: ``K = 2^16`` in general, or the image's own number of
grey levels minus one when the image takes only such values (integer scans scaled to ``[0, 1]``: 223 for an
LGG FLAIR slice, 656 for a BraTS slice). On its own lattice a step of one level is lossless.

Everything the decoder computes here is integer arithmetic on ``B = round(K P / 2^16)``, ``P = 2^16 p`` the grid's
fixed-point output, so it is bit-exact like the latents. The residual ``q = round((K x - B) / step)`` is coded
with a discretized Laplace of mean 0 whose scale depends on a context bucket the decoder derives from ``B`` alone
(local activity of the prediction relative to the step, and whether the prediction is background-dark): the
bucket's scale is sent, and symbols are coded bucket by bucket, so decoding is a few vectorized range-coder calls.
The image is ``clip(B + q step, 0, K) / K``.

Section layout (little-endian; it ends the payload)::

    u16      K - 1 (K in 1..65536)
    u16      step, in levels of the lattice (1..min(K, 65535))
    per bucket that holds a pixel (in bucket order, known to the decoder from B):
      varint  M, the largest |q| in the bucket (LEB128, at most K // step + 1)
      u8      scale index (only when M > 0): Laplace scale 2^(index / SCALE_STEPS + LOG2_SCALE_MIN)
    ...      range-coded symbols q + M of the buckets with M > 0, bucket by bucket, row-major (u32 words)
"""

from __future__ import annotations

import functools
import math
import struct
from dataclasses import dataclass
from decimal import Decimal, localcontext

import constriction
import numpy as np

from sinco.errors import BitstreamError

#: Fixed-point scale of the grid's output, and the lattice of images that have no coarser one.
ONE = 1 << 16
MAX_STEP = ONE - 1
#: Lattice steps tried besides the 2^-16 lattice's bisection on an image with its own lattice (finer on the 2^-16
#: lattice does better beyond these: the prediction falls between levels).
LATTICE_STEPS = (1, 2, 3, 4)
#: Rounding offsets the encoder tries on the 2^-16 lattice: a dead zone (0.4) gained 0.5 dB where the layer's step
#: is coarse (BraTS slice 85 at 1.2 bpp) and lost 0.2 dB where it is fine (2 bpp).
ROUNDINGS = (0.5, 0.4)
ACTIVITY_BUCKETS = 16
#: Predictions above this (2% of the range) are not background: a second set of buckets.
DARK_LIMIT = 1311
SCALE_STEPS = 8
LOG2_SCALE_MIN = -4
N_SCALES = 16 * SCALE_STEPS + 1
_HEAD = struct.Struct("<HH")
_LOG2E = 1.4426950408889634
_MIN_PROB = 2.0**-24


@dataclass(frozen=True)
class ResidualLayer:
    """A coded residual: its lattice ``K`` (levels), step (in levels), the integer residual ``(H, W)``, the section."""

    levels: int
    step: int
    symbols: np.ndarray
    section: bytes

    def apply(self, prediction: np.ndarray) -> np.ndarray:
        """The corrected image ``(H, W)`` float32 in ``[0, 1]`` for the grid's ``prediction`` ``(H, W)``."""
        return correct(on_lattice(prediction, levels=self.levels), self.symbols, levels=self.levels, step=self.step)


def on_lattice(prediction: np.ndarray, *, levels: int) -> np.ndarray:
    """``B = round(K P / 2^16)`` int64 ``(H, W)``, ``P = 2^16 p`` (exact: the grid's output is a multiple of ``2^-16``)."""
    fixed = np.rint(prediction.astype(np.float64) * ONE).astype(np.int64)
    return (fixed * levels + (ONE >> 1)) >> 16


def correct(base: np.ndarray, symbols: np.ndarray, *, levels: int, step: int) -> np.ndarray:
    """``clip(B + q step, 0, K) / K`` as float32 ``(H, W)`` (an IEEE float64 division, then rounding to float32: the
    same everywhere)."""
    return (np.clip(base + symbols * step, 0, levels) / levels).astype(np.float32)


def buckets(base: np.ndarray, *, levels: int, step: int) -> np.ndarray:
    """Context bucket ``(H, W)`` of every pixel: ``bit_length(4 range3x3(B) // step)`` capped, doubled, plus 1 where
    the prediction is above 2% of the range. The 3x3 range uses replicated borders."""
    padded = np.pad(base, 1, mode="edge")
    h, w = base.shape
    windows = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    spread = np.maximum.reduce(windows) - np.minimum.reduce(windows)
    ratio = (4 * spread) // step
    # bit_length of a non-negative int64 array: frexp's exponent is exact for integers below 2^53.
    activity = np.where(ratio > 0, np.frexp(ratio.astype(np.float64))[1], 0)
    return np.minimum(activity, ACTIVITY_BUCKETS - 1) * 2 + (base > (DARK_LIMIT * levels) >> 16)


def quantize(target: np.ndarray, base: np.ndarray, *, levels: int, step: int, rounding: float = 0.5) -> np.ndarray:
    """Residual symbols ``sign(e) floor(|e| + rounding)``, ``e = (K x - B) / step``, int64 ``(H, W)``, clipped to
    :func:`max_reach`, of ``x`` in ``[0, 1]``. ``rounding`` 0.5 rounds to nearest; below it widens the zero bin
    (a dead zone: fewer bits for errors just above half a step, an encoder's choice the decoder does not see)."""
    reach = max_reach(levels=levels, step=step)
    scaled = (target.astype(np.float64) * levels - base) / step
    return np.clip(np.sign(scaled) * np.floor(np.abs(scaled) + rounding), -reach, reach).astype(np.int64)


def image_levels(target: np.ndarray, *, tolerance: float = 1e-3) -> int:
    """The lattice ``K`` of an image ``(H, W)`` in ``[0, 1]``: ``1 / (smallest gap between its values)``, or the first
    of its multiples up to 8x, below 65536, with every ``K x`` within ``tolerance`` (in levels) of an integer; else
    ``ONE`` (no coarser lattice than the grid's own)."""
    values = np.unique(target.astype(np.float64))
    if values.size < 2 or values.size > ONE:
        return ONE
    first = round(1.0 / float(np.diff(values).min()))
    for levels in (first * m for m in range(1, 9)):
        if 1 <= levels < ONE and np.abs(values * levels - np.rint(values * levels)).max() <= tolerance:
            return levels
    return ONE


# ----------------------------------------------------------------------------------------------- model
def _scales() -> np.ndarray:
    return 2.0 ** (np.arange(N_SCALES) / SCALE_STEPS + LOG2_SCALE_MIN)


def _best_scale(magnitudes: np.ndarray) -> tuple[int, float]:
    """The scale index of least code length for symbols of these ``|q|`` (largest ``M``) under :func:`_table`'s
    model, and that length in bits: closed forms over all scales at once (the table's floor left out)."""
    b = _scales()
    reach = int(magnitudes.max())
    zeros = float(np.count_nonzero(magnitudes == 0))
    middle = magnitudes[(magnitudes > 0) & (magnitudes < reach)]
    ends = float(np.count_nonzero(magnitudes == reach))
    bits = -zeros * np.log2(-np.expm1(-0.5 / b))
    bits = bits - len(middle) * np.log2(-0.5 * np.expm1(-1.0 / b)) + float(np.sum(middle - 0.5)) * _LOG2E / b
    # The largest magnitude holds the folded tail: P(|X| > M - 1/2) / 2 per sign.
    bits = bits + ends * (1.0 + (reach - 0.5) * _LOG2E / b)
    index = int(np.argmin(bits))
    return index, float(bits[index])


@functools.lru_cache(maxsize=32)  # at most 1 MB each (step 1)
def _table(scale_index: int, reach: int) -> np.ndarray:
    """Probabilities of ``q`` in ``[-reach, reach]`` (index ``q + reach``): discretized Laplace, tails folded into the
    ends. Computed with correctly rounded ``decimal`` exponentials and IEEE products only: the same on every machine."""
    with localcontext() as ctx:
        ctx.prec = 40
        inv_b = (-(Decimal(scale_index) / SCALE_STEPS + LOG2_SCALE_MIN) * Decimal(2).ln()).exp()
        ratio = float((-inv_b).exp())
        half = float((-inv_b / 2).exp())
    tail = 0.5 * half * np.cumprod(np.concatenate([[1.0], np.full(reach, ratio)]))  # tail[k] = P(X > k + 1/2)
    probs = np.empty(2 * reach + 1)
    probs[reach] = 1.0 - 2.0 * tail[0]
    side = tail[:-1] - tail[1:]
    side[-1] += tail[-1]
    probs[reach + 1 :] = side
    probs[:reach] = side[::-1]
    return np.maximum(probs, _MIN_PROB)


# ------------------------------------------------------------------------------------------- encoding
def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def max_reach(*, levels: int, step: int) -> int:
    """The largest ``|q|`` a residual with this lattice and step can need (the error is within the unit range)."""
    return levels // step + 1


def estimate_bits(symbols: np.ndarray, contexts: np.ndarray) -> float:
    """Estimated section size in bits (model code lengths plus parameters and the coder's flush)."""
    bits = 8.0 * _HEAD.size + 64
    for bucket in np.unique(contexts):
        magnitudes = np.abs(symbols[contexts == bucket])
        reach = int(magnitudes.max())
        bits += 8 * len(_varint(reach))
        if reach:
            bits += 8 + _best_scale(magnitudes)[1]
    return bits


def encode(target: np.ndarray, prediction: np.ndarray, *, levels: int, step: int, rounding: float = 0.5) -> ResidualLayer:
    """Code the residual of ``prediction`` (the grid's decoded image) against ``target``, both ``(H, W)`` in ``[0, 1]``.

    Args:
        target: the image.
        prediction: the grid's reconstruction, a multiple of ``2^-16``.
        levels: the lattice ``K``, ``1..ONE`` (:func:`image_levels`, or ``ONE``).
        step: quantization step in levels, ``1..min(K, MAX_STEP)``.
        rounding: the quantizer's rounding offset (:func:`quantize`).

    Returns:
        The :class:`ResidualLayer`.

    Raises:
        ValueError: on a lattice or step out of range.
    """
    if not (1 <= levels <= ONE and 1 <= step <= min(levels, MAX_STEP)):
        raise ValueError(f"levels {levels}, step {step}: expected 1 <= levels <= {ONE}, 1 <= step <= min(levels, {MAX_STEP})")
    base = on_lattice(prediction, levels=levels)
    symbols = quantize(target, base, levels=levels, step=step, rounding=rounding)
    contexts = buckets(base, levels=levels, step=step)
    head = [_HEAD.pack(levels - 1, step)]
    encoder = constriction.stream.queue.RangeEncoder()
    for bucket in np.unique(contexts):
        values = symbols[contexts == bucket]
        reach = int(np.abs(values).max())
        head.append(_varint(reach))
        if reach:
            scale, _ = _best_scale(np.abs(values))
            head.append(bytes([scale]))
            model = constriction.stream.model.Categorical(_table(scale, reach), perfect=False)
            encoder.encode((values + reach).astype(np.int32), model)
    section = b"".join(head) + encoder.get_compressed().astype("<u4").tobytes()
    return ResidualLayer(levels=levels, step=step, symbols=symbols, section=section)


def decode(section: bytes, prediction: np.ndarray) -> ResidualLayer:
    """Parse and decode a residual section for the grid's decoded ``prediction`` ``(H, W)``.

    Args:
        section: the bytes after the latent stream of a version-2 payload.
        prediction: the grid's decoded image (the decoder's own, bit-exact).

    Returns:
        The :class:`ResidualLayer` (its ``apply(prediction)`` is the decoded image).

    Raises:
        BitstreamError: on a truncated or corrupted section (bad step, reach beyond the step's range, scale index
            out of range, stream that does not decode or whose words are not whole).
    """
    data = bytes(section)
    lattice = section_lattice(data)
    if lattice is None:
        raise BitstreamError(f"grid payload: residual section of {len(data)} bytes is truncated")
    levels, step = lattice
    if not 1 <= step <= levels:
        raise BitstreamError(f"grid payload: residual step {step} outside 1..{levels}")
    base = on_lattice(prediction, levels=levels)
    contexts = buckets(base, levels=levels, step=step)
    pos, plan = _HEAD.size, []
    for bucket in np.unique(contexts):
        reach, pos = _read_varint(data, pos, limit=max_reach(levels=levels, step=step))
        scale = None
        if reach:
            if pos >= len(data) or data[pos] >= N_SCALES:
                raise BitstreamError("grid payload: residual section truncated or with a scale index out of range")
            scale, pos = data[pos], pos + 1
        plan.append((bucket, reach, scale))
    stream = data[pos:]
    if len(stream) % 4:
        raise BitstreamError(f"grid payload: residual stream of {len(stream)} bytes is not whole 32-bit words")
    symbols = np.zeros(base.shape, np.int64)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(stream, "<u4").astype(np.uint32))
        for bucket, reach, scale in plan:
            if reach:
                where = contexts == bucket
                model = constriction.stream.model.Categorical(_table(scale, reach), perfect=False)
                symbols[where] = decoder.decode(model, int(np.count_nonzero(where))).astype(np.int64) - reach
    except Exception as exc:  # constriction raises plain exceptions on malformed input
        raise BitstreamError(f"grid payload: residual stream cannot be decoded ({exc})") from None
    return ResidualLayer(levels=levels, step=step, symbols=symbols, section=data)


def section_lattice(section: bytes) -> tuple[int, int] | None:
    """``(K, step)`` from a residual section's head (unchecked), or None if the section is shorter than the head."""
    if len(section) < _HEAD.size:
        return None
    levels, step = _HEAD.unpack_from(section)
    return levels + 1, step


def _read_varint(data: bytes, pos: int, *, limit: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if pos >= len(data) or shift > 21:
            raise BitstreamError("grid payload: residual section truncated or with a malformed length")
        byte = data[pos]
        value |= (byte & 0x7F) << shift
        pos, shift = pos + 1, shift + 7
        if not byte & 0x80:
            break
    if value > limit:
        raise BitstreamError(f"grid payload: residual reach {value} beyond {limit} for its step")
    return value, pos


# ----------------------------------------------------------------------------------------- rate search
def _estimate_at(target: np.ndarray, base: np.ndarray, *, levels: int, step: int, rounding: float = 0.5) -> float:
    symbols = quantize(target, base, levels=levels, step=step, rounding=rounding)
    return estimate_bits(symbols, buckets(base, levels=levels, step=step))


def halving_cost(target: np.ndarray, prediction: np.ndarray, *, step: int) -> float:
    """Estimated bits a residual layer on the ``2^-16`` lattice gains when its step halves from ``step`` (``>= 2``)."""
    base = on_lattice(prediction, levels=ONE)
    return _estimate_at(target, base, levels=ONE, step=step // 2) - _estimate_at(target, base, levels=ONE, step=step)


def fit_to_budget(target: np.ndarray, prediction: np.ndarray, *, budget_bits: float, levels: int = ONE) -> ResidualLayer | None:
    """The residual of least error whose section fits ``budget_bits``, or None if none does.

    On the ``2^-16`` lattice, for each of :data:`ROUNDINGS`: the smallest step that fits, by bisection on
    ``log(step)`` with the estimated size, then real coding, coarser while the bytes do not fit. On an image's own
    lattice (``levels`` < ``ONE``) also the finest of :data:`LATTICE_STEPS` that fits (step 1: lossless). The
    candidate of least squared error wins.

    Args:
        target: the image ``(H, W)`` in ``[0, 1]``.
        prediction: the grid's decoded image ``(H, W)``.
        budget_bits: bits the section may take.
        levels: the image's lattice (:func:`image_levels`).

    Returns:
        The layer, or None when even the coarsest step does not fit.
    """
    fine = (_fine_to_budget(target, prediction, budget_bits=budget_bits, rounding=r) for r in ROUNDINGS)
    candidates = [layer for layer in fine if layer is not None]
    for step in (s for s in LATTICE_STEPS if s <= levels < ONE):
        layer = encode(target, prediction, levels=levels, step=step)
        if 8 * len(layer.section) <= budget_bits:
            candidates.append(layer)
            break
    if not candidates:
        return None
    errors = [float(np.sum((c.apply(prediction).astype(np.float64) - target) ** 2)) for c in candidates]
    return candidates[int(np.argmin(errors))]


def _fine_to_budget(target: np.ndarray, prediction: np.ndarray, *, budget_bits: float, rounding: float) -> ResidualLayer | None:
    base = on_lattice(prediction, levels=ONE)

    def estimate(step: int) -> float:
        return _estimate_at(target, base, levels=ONE, step=step, rounding=rounding)

    if estimate(MAX_STEP) > budget_bits:
        return None
    low, high = 0.0, math.log(MAX_STEP)  # log steps: high fits, low (step 1) maybe not
    if estimate(1) <= budget_bits:
        high = low
    for _ in range(14 if high > low else 0):
        middle = (low + high) / 2
        low, high = (low, middle) if estimate(round(math.exp(middle))) <= budget_bits else (middle, high)
    step = round(math.exp(high))
    while step <= MAX_STEP:
        layer = encode(target, prediction, levels=ONE, step=step, rounding=rounding)
        if 8 * len(layer.section) <= budget_bits:
            return layer
        step = max(step + 1, round(step * 1.02))
    return None
