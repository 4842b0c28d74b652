"""The residual layer: the grid's prediction error, scalar-quantised and range-coded, for rates the grids cannot reach.

Latent grids stop spending bits near 1 bpp on BraTS slices (the synthesis, not lambda, limits them) while JPEG 2000
keeps gaining ~16 dB per bpp. Above that ceiling the file codes ``x - p``, the error of the grid's decoded image
``p``, with a uniform step: at high rate each halving of the step adds one bit per pixel whose error is not already
below it, ~6 dB for the pixels that carry the error (docs/grid-codec.md, "A residual layer").

Everything the decoder computes here is integer arithmetic on ``P = 2^16 p`` (the grid's fixed-point output), so
it is bit-exact like the latents. The residual ``q = round((2^16 x - P) / step)`` is coded with a discretised
Laplace of mean 0 whose scale depends on a context bucket the decoder derives from ``P`` alone (local activity of
the prediction relative to the step, and whether the prediction is background-dark): the bucket's scale is sent,
and symbols are coded bucket by bucket, so decoding is a few vectorised range-coder calls.

Section layout (little-endian; it ends the payload)::

    u16      step, in units of 2^-16 of the intensity range (1..65535)
    per bucket that holds a pixel (in bucket order, known to the decoder from P):
      varint  M, the largest |q| in the bucket (LEB128, at most 65536 // step + 1)
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

#: Fixed-point scale of the grid's output and of the residual step.
ONE = 1 << 16
MAX_STEP = ONE - 1
ACTIVITY_BUCKETS = 16
#: Predictions above this (2% of the range) are not background: a second set of buckets.
DARK_LIMIT = 1311
N_BUCKETS = 2 * ACTIVITY_BUCKETS
SCALE_STEPS = 8
LOG2_SCALE_MIN = -4
N_SCALES = 16 * SCALE_STEPS + 1
_STEP = struct.Struct("<H")
_LOG2E = 1.4426950408889634
_MIN_PROB = 2.0**-24


@dataclass(frozen=True)
class ResidualLayer:
    """A coded residual: its step, the integer residual ``(H, W)``, and the section's bytes."""

    step: int
    symbols: np.ndarray
    section: bytes

    def apply(self, prediction: np.ndarray) -> np.ndarray:
        """The corrected image ``(H, W)`` float32 in ``[0, 1]`` for the grid's ``prediction`` ``(H, W)``."""
        return correct(fixed_prediction(prediction), self.symbols, step=self.step)


def fixed_prediction(prediction: np.ndarray) -> np.ndarray:
    """``P = 2^16 p`` as int64 ``(H, W)`` (exact: the grid's output is a multiple of ``2^-16``)."""
    return np.rint(prediction.astype(np.float64) * ONE).astype(np.int64)


def correct(fixed: np.ndarray, symbols: np.ndarray, *, step: int) -> np.ndarray:
    """``clip(P + q step, 0, 2^16) / 2^16`` as float32 ``(H, W)`` (exact)."""
    return (np.clip(fixed + symbols * step, 0, ONE) / ONE).astype(np.float32)


def buckets(fixed: np.ndarray, *, step: int) -> np.ndarray:
    """Context bucket ``(H, W)`` of every pixel: ``bit_length(4 range3x3(P) // step)`` capped, doubled, plus 1 where
    ``P > DARK_LIMIT``. The 3x3 range uses replicated borders."""
    padded = np.pad(fixed, 1, mode="edge")
    h, w = fixed.shape
    windows = [padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)]
    spread = np.maximum.reduce(windows) - np.minimum.reduce(windows)
    ratio = (4 * spread) // step
    # bit_length of a non-negative int64 array: frexp's exponent is exact for integers below 2^53.
    activity = np.where(ratio > 0, np.frexp(ratio.astype(np.float64))[1], 0)
    return np.minimum(activity, ACTIVITY_BUCKETS - 1) * 2 + (fixed > DARK_LIMIT)


def quantize(target: np.ndarray, fixed: np.ndarray, *, step: int) -> np.ndarray:
    """Residual symbols ``round((2^16 x - P) / step)`` int64 ``(H, W)`` of the image ``x`` in ``[0, 1]``."""
    return np.rint((target.astype(np.float64) * ONE - fixed) / step).astype(np.int64)


# ----------------------------------------------------------------------------------------------- model
def _scales() -> np.ndarray:
    return 2.0 ** (np.arange(N_SCALES) / SCALE_STEPS + LOG2_SCALE_MIN)


def _best_scale(magnitudes: np.ndarray) -> tuple[int, float]:
    """The scale index of least code length for symbols of these ``|q|``, and that length in bits (tails not folded)."""
    b = _scales()
    zeros = float(np.count_nonzero(magnitudes == 0))
    nonzero = magnitudes[magnitudes > 0]
    excess = float(np.sum(nonzero - 0.5))
    bits = (-zeros * np.log2(-np.expm1(-0.5 / b)) - len(nonzero) * np.log2(-0.5 * np.expm1(-1.0 / b)) + excess * _LOG2E / b)
    index = int(np.argmin(bits))
    return index, float(bits[index])


@functools.lru_cache(maxsize=64)
def _table(scale_index: int, reach: int) -> np.ndarray:
    """Probabilities of ``q`` in ``[-reach, reach]`` (index ``q + reach``): discretised Laplace, tails folded into the
    ends. Computed with correctly rounded ``decimal`` exponentials and IEEE products only: the same on every machine."""
    with localcontext() as ctx:
        ctx.prec = 40
        inv_b = (-(Decimal(scale_index) / SCALE_STEPS + LOG2_SCALE_MIN) * Decimal(2).ln()).exp()
        ratio = float((-inv_b).exp())
        half = float((-inv_b / 2).exp())
    tail = 0.5 * half * np.cumprod(np.concatenate([[1.0], np.full(reach, ratio)]))  # P(q > k - 1/2 ... ) for k = 1..
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


def max_reach(step: int) -> int:
    """The largest ``|q|`` a residual with this step can need (the error is within the unit range)."""
    return ONE // step + 1


def estimate_bits(symbols: np.ndarray, contexts: np.ndarray) -> float:
    """Estimated section size in bits (model code lengths plus parameters and the coder's flush)."""
    bits = 8.0 * _STEP.size + 64
    for bucket in np.unique(contexts):
        magnitudes = np.abs(symbols[contexts == bucket])
        reach = int(magnitudes.max())
        bits += 8 * len(_varint(reach))
        if reach:
            bits += 8 + _best_scale(magnitudes)[1]
    return bits


def encode(target: np.ndarray, prediction: np.ndarray, *, step: int) -> ResidualLayer:
    """Code the residual of ``prediction`` (the grid's decoded image) against ``target``, both ``(H, W)`` in ``[0, 1]``.

    Args:
        target: the image.
        prediction: the grid's reconstruction, a multiple of ``2^-16``.
        step: quantisation step in units of ``2^-16``, ``1..MAX_STEP``.

    Returns:
        The :class:`ResidualLayer`.
    """
    if not 1 <= step <= MAX_STEP:
        raise ValueError(f"step {step}: expected 1..{MAX_STEP}")
    fixed = fixed_prediction(prediction)
    symbols = np.clip(quantize(target, fixed, step=step), -max_reach(step), max_reach(step))
    contexts = buckets(fixed, step=step)
    head = [_STEP.pack(step)]
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
    return ResidualLayer(step=step, symbols=symbols, section=section)


def decode(section: bytes, prediction: np.ndarray) -> ResidualLayer:
    """Parse and decode a residual section for the grid's decoded ``prediction`` ``(H, W)``.

    Raises:
        BitstreamError: on a truncated or corrupted section (bad step, reach beyond the step's range, scale index
            out of range, stream that does not decode or whose words are not whole).
    """
    data = bytes(section)
    if len(data) < _STEP.size:
        raise BitstreamError(f"grid payload: residual section of {len(data)} bytes is truncated")
    (step,) = _STEP.unpack_from(data)
    if step < 1:
        raise BitstreamError("grid payload: residual step 0")
    fixed = fixed_prediction(prediction)
    contexts = buckets(fixed, step=step)
    pos, plan = _STEP.size, []
    for bucket in np.unique(contexts):
        reach, pos = _read_varint(data, pos, limit=max_reach(step))
        scale = None
        if reach:
            if pos >= len(data) or data[pos] >= N_SCALES:
                raise BitstreamError("grid payload: residual section truncated or with a scale index out of range")
            scale, pos = data[pos], pos + 1
        plan.append((bucket, reach, scale))
    stream = data[pos:]
    if len(stream) % 4:
        raise BitstreamError(f"grid payload: residual stream of {len(stream)} bytes is not whole 32-bit words")
    symbols = np.zeros(fixed.shape, np.int64)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(stream, "<u4").astype(np.uint32))
        for bucket, reach, scale in plan:
            if reach:
                where = contexts == bucket
                model = constriction.stream.model.Categorical(_table(scale, reach), perfect=False)
                symbols[where] = decoder.decode(model, int(np.count_nonzero(where))).astype(np.int64) - reach
    except Exception as exc:  # constriction raises plain exceptions on malformed input
        raise BitstreamError(f"grid payload: residual stream cannot be decoded ({exc})") from None
    return ResidualLayer(step=step, symbols=symbols, section=data)


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
def _estimate_at(target: np.ndarray, fixed: np.ndarray, *, step: int) -> float:
    symbols = np.clip(quantize(target, fixed, step=step), -max_reach(step), max_reach(step))
    return estimate_bits(symbols, buckets(fixed, step=step))


def halving_cost(target: np.ndarray, prediction: np.ndarray, *, step: int) -> float:
    """Estimated bits a residual layer gains when its step halves from ``step`` (``step >= 2``)."""
    fixed = fixed_prediction(prediction)
    return _estimate_at(target, fixed, step=step // 2) - _estimate_at(target, fixed, step=step)


def fit_to_budget(target: np.ndarray, prediction: np.ndarray, *, budget_bits: float) -> ResidualLayer | None:
    """The residual with the smallest step whose section fits ``budget_bits``, or None if none does.

    Bisection on ``log(step)`` with the estimated size, then real coding, coarser while the bytes do not fit.

    Args:
        target: the image ``(H, W)`` in ``[0, 1]``.
        prediction: the grid's decoded image ``(H, W)``.
        budget_bits: bits the section may take.
    """
    fixed = fixed_prediction(prediction)

    def estimate(step: int) -> float:
        return _estimate_at(target, fixed, step=step)

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
        layer = encode(target, prediction, step=step)
        if 8 * len(layer.section) <= budget_bits:
            return layer
        step = max(step + 1, round(step * 1.02))
    return None
