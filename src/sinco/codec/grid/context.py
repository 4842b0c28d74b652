"""The context coder: integer grey levels coded exactly, or within ``+-N`` levels, by an overfitted pixel ARM.

Each pixel's level ``x`` in ``0..top`` is predicted from its causal neighbours (:data:`NEIGHBOURS`) by two small
fixed-point networks fitted to the image and sent with it (a pixel auto-regressive model, as the latents' ARM in
:mod:`sinco.codec.grid.arm`):

- stage 1 maps the neighbours (relative to the LOCO-I median predictor ``ref``), the intensity ``ref / top`` and the
  side planes (3 x 3 of each, relative to ``ref``) to a first mean ``mu1``;
- stage 2 sees the same inputs plus stage 1's errors ``x - mu1`` at the first :data:`ERROR_NEIGHBOURS` neighbours
  (their signs and sizes: the local error energy of CALIC and JPEG XL's weighted predictor) and gives the mean
  ``mu`` and the log2-scale of a discretized Laplace.

With ``N > 0`` the residual is quantized with step ``2N + 1`` inside the causal loop (JPEG-LS's NEAR): every context
reads reconstructed levels, so ``|x - x_hat| <= N`` holds by construction. Wide distributions are split: the
residual's high part is coded with a table of scale at most ``2^3`` and its ``k`` low bits uniformly; a high part
beyond the table's reach escapes to an Elias-gamma code. Every probability comes from
:func:`~sinco.codec.grid.entropy.laplace_table` (integer counts computed with correctly rounded arithmetic) or is
uniform, and every network runs in integer arithmetic (:mod:`sinco.codec.grid.numerics`): decoding is bit-exact on
any machine. Pixels are coded in anti-diagonal waves ``2 i + j = t`` (every neighbour lies in an earlier wave), so
decoding is ``2 H + W`` vectorized steps.

Section layout (little-endian)::

    u8   coder version (1)
    u16  top: the largest level (levels are 0..top, top >= 1)
    u16  N: the largest error allowed (0: lossless)
    u8   scale shift s (the networks' unit is 2^s levels)
    u8   hidden width of both networks
    u8   side planes P (0..MAX_PLANES)
    u32  CRC-32 of the decoded levels (uint32, row-major)
    u32  n, length of the network block (0: the networks of the volume's first context-coded slice)
    n    network block (exp-Golomb, :func:`~sinco.codec.grid.quantizer.pack_network`): stage 1 then stage 2
    ...  range-coded symbols, wave by wave (u32 words)
"""

from __future__ import annotations

import functools
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal, localcontext

import constriction
import numpy as np

from sinco.codec.grid.arm import wave_positions
from sinco.codec.grid.entropy import LOG2_SCALE_MIN, MEAN_STEPS, N_SCALES, SCALE_STEPS, laplace_table
from sinco.codec.grid.networks import QuantizedDecoder
from sinco.codec.grid.numerics import ACT_LIMIT, FRAC_BITS, MAX_EXPONENT, WEIGHT_LIMIT
from sinco.codec.grid.quantizer import pack_network, unpack_tensors
from sinco.errors import BitstreamError

CODER_VERSION = 1
#: Causal neighbours ``(dy, dx)``: every one lies in an earlier wave ``2 i + j``.
NEIGHBOURS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-2, -1), (-2, 1), (-1, -2), (-2, -2), (-2, 2))
#: Stage 1's errors at these first neighbours feed stage 2.
ERROR_NEIGHBOURS = 6
MAX_PLANES = 2
MAX_TOP = (1 << 16) - 1
MAX_HIDDEN = 64
#: The table's reach (high parts in ``-REACH..REACH``; the ends escape) and its largest scale (log2).
TABLE_BOUND = 32
REACH = 2 * TABLE_BOUND
SPLIT_LOG2 = 3
#: Escape lengths ``n`` of the Elias-gamma code of ``|h| - REACH + 1`` (a high part is below 2^17).
MAX_ESCAPE_BITS = 20
#: The most low bits a residual's split sends uniformly (levels are below 2^16).
MAX_SPLIT = 16
_HEAD = struct.Struct("<BHHBBBII")
_PAD = 2
_ONE = 1 << FRAC_BITS
_HALF = 1 << (FRAC_BITS - 1)
#: Stage 1's inputs besides the planes: the neighbours and the intensity.
_BASE_INPUTS = len(NEIGHBOURS) + 1


def stage_inputs(planes: int) -> tuple[int, int]:
    """Inputs of stage 1 and stage 2 with ``planes`` side planes."""
    first = _BASE_INPUTS + 9 * planes
    return first, first + 2 * ERROR_NEIGHBOURS


def network_shapes(*, hidden: int, planes: int) -> list[tuple[int, ...]]:
    """Tensor shapes of both networks in block order: stage 1 ``[w0, b0, w1, b1, w2, b2]`` (one output), then stage 2
    (two outputs: mean and log2-scale)."""
    shapes: list[tuple[int, ...]] = []
    for fan_in, outputs in zip(stage_inputs(planes), (1, 2), strict=True):
        widths = (fan_in, hidden, hidden, outputs)
        for a, b in zip(widths[:-1], widths[1:], strict=True):
            shapes += [(b, a), (b,)]
    return shapes


def scale_shift(top: int) -> int:
    """The networks' unit ``2^s`` levels: about an eighth of the range's 255th part times 32 (a noise-sized step)."""
    return max(0, min(FRAC_BITS, round(np.log2(max(32.0 * top / 255.0, 1.0)))))


@dataclass(frozen=True)
class ContextModel:
    """A fitted context model: the lattice, the error bound, and the two networks as integers.

    Args:
        top: the largest level (``1..MAX_TOP``).
        near: the largest error allowed (``0``: lossless).
        shift: the networks' unit ``2^shift`` levels (:func:`scale_shift`).
        hidden: the hidden width of both networks.
        planes: how many side planes (a prediction, a previous slice) the networks read.
        networks: integer tensors and step exponents in :func:`network_shapes` order.
    """

    top: int
    near: int
    shift: int
    hidden: int
    planes: int
    networks: QuantizedDecoder

    @property
    def step(self) -> int:
        """The residual's quantization step ``2 N + 1``."""
        return 2 * self.near + 1

    def layers(self) -> tuple[list[tuple[np.ndarray, np.ndarray, int]], list[tuple[np.ndarray, np.ndarray, int]]]:
        """Both networks' fixed-point layers ``(weight (O, I), bias at scale 2^-(FRAC_BITS + e), e)``, float64."""
        tensors, exps = self.networks.tensors, self.networks.exponents
        layers = [
            (tensors[i].astype(np.float64), tensors[i + 1].astype(np.float64) * float(2 ** (FRAC_BITS + exps[i] - exps[i + 1])), exps[i])
            for i in range(0, len(tensors), 2)
        ]
        return layers[:3], layers[3:]


def check_levels(levels: np.ndarray, *, top: int, near: int) -> None:
    """Refuse levels or bounds the coder cannot take (``ValueError`` naming the value)."""
    if not 1 <= top <= MAX_TOP:
        raise ValueError(f"top {top}: the context coder takes levels 0..top with 1 <= top <= {MAX_TOP}")
    if not 0 <= near <= top // 2:
        raise ValueError(f"near {near}: the largest error allowed must be in 0..{top // 2} for levels 0..{top}")
    if levels.ndim != 2 or levels.dtype.kind not in "iu" or levels.size == 0:
        raise ValueError(f"levels: expected a non-empty 2-D integer array, got {levels.dtype} {levels.shape}")
    if int(levels.min()) < 0 or int(levels.max()) > top:
        raise ValueError(f"levels: values {int(levels.min())}..{int(levels.max())} outside 0..{top}")


# ---------------------------------------------------------------------------------------------- network
def _mlp(x: np.ndarray, layers: list[tuple[np.ndarray, np.ndarray, int]]) -> np.ndarray:
    """Fixed-point MLP on ``(N, I)`` integer-valued float64 activations at ``2^-FRAC_BITS``: ReLU between layers, every
    activation clamped to ``+-ACT_LIMIT`` (sums stay below ``2^53``: exact whatever the summation order)."""
    for index, (weight, bias, exponent) in enumerate(layers):
        x = np.floor((x @ weight.T + bias) * 2.0**-exponent + 0.5)
        x = np.minimum(np.maximum(x, 0.0 if index < len(layers) - 1 else -ACT_LIMIT), ACT_LIMIT)
    return x


def _clamped(values: np.ndarray) -> np.ndarray:
    return np.minimum(np.maximum(values, -ACT_LIMIT), ACT_LIMIT)


def median_predictor(west: np.ndarray, north: np.ndarray, north_west: np.ndarray) -> np.ndarray:
    """LOCO-I's median edge detector (JPEG-LS): the reference the networks' inputs are taken against."""
    high, low = np.maximum(west, north), np.minimum(west, north)
    return np.where(north_west >= high, low, np.where(north_west <= low, high, west + north - north_west))


@dataclass
class _Buffers:
    """The decoded levels and stage 1's errors, padded by ``_PAD`` above, left and right (zeros), and the side
    planes padded by one (replicated edges)."""

    levels: np.ndarray
    errors: np.ndarray
    planes: list[np.ndarray]

    @classmethod
    def empty(cls, height: int, width: int, planes: Sequence[np.ndarray]) -> _Buffers:
        shape = (height + _PAD, width + 2 * _PAD)
        padded = [np.pad(np.asarray(p, np.int64), 1, mode="edge") for p in planes]
        return cls(levels=np.zeros(shape, np.int64), errors=np.zeros(shape, np.int64), planes=padded)


@functools.lru_cache(maxsize=8)
def _offsets(width: int, count: int) -> np.ndarray:
    """Flat offsets of the first ``count`` neighbours in a padded buffer of ``width + 2 _PAD`` columns."""
    return np.array([dy * (width + 2 * _PAD) + dx for dy, dx in NEIGHBOURS[:count]])


def _stage1_inputs(buffers: _Buffers, i: np.ndarray, j: np.ndarray, *, model: ContextModel) -> tuple[np.ndarray, np.ndarray]:
    """``(ref (N,), stage 1 inputs (N, I))`` of the pixels ``(i, j)``, inputs integer-valued float64 at ``2^-FRAC_BITS``."""
    width = buffers.levels.shape[1]
    flat = (i + _PAD) * width + j + _PAD
    neighbours = buffers.levels.reshape(-1)[flat[:, None] + _offsets(width - 2 * _PAD, len(NEIGHBOURS))]
    ref = median_predictor(neighbours[:, 0], neighbours[:, 1], neighbours[:, 2])
    unit = FRAC_BITS - model.shift
    columns = [(neighbours - ref[:, None]) << unit, (((ref << FRAC_BITS) // model.top) - _HALF)[:, None]]
    for plane in buffers.planes:
        columns.append(np.stack([plane[i + 1 + dy, j + 1 + dx] for dy in (-1, 0, 1) for dx in (-1, 0, 1)], axis=1) - ref[:, None] << unit)
    return ref, _clamped(np.concatenate(columns, axis=1).astype(np.float64))


def _stage2_inputs(buffers: _Buffers, i: np.ndarray, j: np.ndarray, first: np.ndarray) -> np.ndarray:
    width = buffers.errors.shape[1]
    flat = (i + _PAD) * width + j + _PAD
    errors = buffers.errors.reshape(-1)[flat[:, None] + _offsets(width - 2 * _PAD, ERROR_NEIGHBOURS)].astype(np.float64)
    return np.concatenate([first, errors, np.abs(errors)], axis=1)


@dataclass(frozen=True)
class _Prediction:
    """Per pixel: stage 1's mean (levels at ``2^-FRAC_BITS``), the integer mean ``m``, and the table's mean fraction
    ``f``, scale index ``q`` and split ``k`` (low bits coded uniformly)."""

    first_mean: np.ndarray
    mean: np.ndarray
    fraction: np.ndarray
    scale: np.ndarray
    split: np.ndarray


@functools.lru_cache(maxsize=64)
def log2_fixed(value: int) -> int:
    """``round(log2(value) 2^FRAC_BITS)`` with correctly rounded ``decimal`` arithmetic (the same on every machine)."""
    with localcontext() as ctx:
        ctx.prec = 40
        return int((Decimal(value).ln() / Decimal(2).ln() * _ONE).to_integral_value())


def _predict(buffers: _Buffers, i: np.ndarray, j: np.ndarray, *, model: ContextModel,
             layers: tuple[list, list]) -> _Prediction:  # fmt: skip
    """The coding parameters of pixels ``(i, j)`` whose contexts are decoded."""
    ref, inputs = _stage1_inputs(buffers, i, j, model=model)
    first = _mlp(inputs, layers[0])[:, 0].astype(np.int64)
    first_mean = (ref << FRAC_BITS) + (first << model.shift)
    out = _mlp(_stage2_inputs(buffers, i, j, inputs), layers[1]).astype(np.int64)
    mean = first_mean + (out[:, 0] << model.shift)
    # At most the range (as the fit's model): a wider Laplace would only spend uniform low bits on levels that cannot occur.
    log2_scale = np.minimum(((model.shift - 4) << FRAC_BITS) + out[:, 1], log2_fixed(model.top + 1)) - log2_fixed(model.step)
    m = np.minimum(np.maximum((mean + _HALF) >> FRAC_BITS, 0), model.top)
    offset = np.minimum(np.maximum(mean - (m << FRAC_BITS), -_HALF), _HALF)
    fraction = np.minimum(np.maximum((((offset * MEAN_STEPS) // model.step + _HALF) >> FRAC_BITS) + MEAN_STEPS // 2, 0), MEAN_STEPS - 1)
    total = ((log2_scale - (LOG2_SCALE_MIN << FRAC_BITS)) * SCALE_STEPS + _HALF) >> FRAC_BITS
    top_index = (SPLIT_LOG2 - LOG2_SCALE_MIN) * SCALE_STEPS
    split = np.minimum(np.maximum(0, -((top_index - total) // SCALE_STEPS)), MAX_SPLIT)
    scale = np.minimum(np.maximum(total - SCALE_STEPS * split, 0), N_SCALES - 1)
    return _Prediction(first_mean=first_mean, mean=m, fraction=np.where(split > 0, MEAN_STEPS // 2, fraction), scale=scale, split=split)


def _store(buffers: _Buffers, i: np.ndarray, j: np.ndarray, values: np.ndarray, first_mean: np.ndarray, shift: int) -> None:
    rows, cols = i + _PAD, j + _PAD
    buffers.levels[rows, cols] = values
    buffers.errors[rows, cols] = np.minimum(np.maximum(((values << FRAC_BITS) - first_mean) >> shift, -int(ACT_LIMIT)), int(ACT_LIMIT))


# ---------------------------------------------------------------------------------------------- symbols
@functools.lru_cache(maxsize=1)
def _escape_table() -> np.ndarray:
    """Probabilities of an escape's length ``n`` in ``0..MAX_ESCAPE_BITS``: ``2^-(n + 1)``, the last one doubled."""
    probs = 0.5 ** np.arange(1, MAX_ESCAPE_BITS + 2, dtype=np.float64)
    probs[-1] *= 2
    return probs


def _split_symbols(values: np.ndarray, split: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(high, low)`` of residuals ``v`` in step units: ``v + 2^(k - 1) = high 2^k + low`` (centred bins)."""
    shifted = values + np.where(split > 0, np.left_shift(1, np.maximum(split - 1, 0)), 0)
    high = shifted >> split
    return high, shifted - (high << split)


@functools.lru_cache(maxsize=1)
def _cumulative_table() -> np.ndarray:
    """Running sums of every row of the symbol table (integer counts in float64: exact), for folding rows' ends."""
    return np.cumsum(laplace_table(TABLE_BOUND), axis=-1)


class _Coder:
    """The symbols of one wave, in stream order: table symbols, escape lengths, escape bits, low bits."""

    family = constriction.stream.model.Categorical(perfect=False)
    uniform = constriction.stream.model.Uniform()

    def __init__(self) -> None:
        self.table = laplace_table(TABLE_BOUND)
        self.cumulative = _cumulative_table()
        self.escape = constriction.stream.model.Categorical(_escape_table(), perfect=False)

    def rows(self, p: _Prediction, *, top: int, near: int) -> np.ndarray:
        """The table's rows ``(N, 2 REACH + 1)`` with the mass of high parts no level can have folded into the first
        and last possible ones (a mean below level 0 or above ``top``: the background of a scan). Integer counts:
        the sums are exact."""
        step = 2 * near + 1
        rows = self.table[p.fraction, p.scale]
        lowest, _ = _split_symbols(-((p.mean + near) // step), p.split)
        highest, _ = _split_symbols((top - p.mean + near) // step, p.split)
        first = np.minimum(np.maximum(lowest + REACH, 0), 2 * REACH)
        last = np.minimum(np.maximum(highest + REACH, 0), 2 * REACH)
        fold = np.flatnonzero((first > 0) | (last < 2 * REACH))
        if fold.size:
            part, first, last = rows[fold], first[fold], last[fold]
            cumulative = self.cumulative[p.fraction[fold], p.scale[fold]]
            index = np.arange(2 * REACH + 1)[None, :]
            kept = np.where((index >= first[:, None]) & (index <= last[:, None]), part, 0.0)
            lines = np.arange(fold.size)
            kept[lines, first] += np.where(first > 0, cumulative[lines, np.maximum(first - 1, 0)], 0.0)
            kept[lines, last] += cumulative[:, -1] - cumulative[lines, last]
            rows[fold] = kept
        return rows

    def encode(self, encoder: constriction.stream.queue.RangeEncoder, values: np.ndarray, p: _Prediction, *, top: int, near: int) -> None:
        high, low = _split_symbols(values, p.split)
        encoder.encode((np.clip(high, -REACH, REACH) + REACH).astype(np.int32), self.family, self.rows(p, top=top, near=near))
        escaped = np.abs(high) >= REACH
        if escaped.any():
            excess = np.abs(high[escaped]) - REACH + 1
            lengths = np.frexp(excess.astype(np.float64))[1] - 1
            if lengths.max() > MAX_ESCAPE_BITS:
                raise ValueError(f"residual beyond the escape code's {MAX_ESCAPE_BITS} bits")
            encoder.encode(lengths.astype(np.int32), self.escape)
            long = lengths > 0
            if long.any():
                encoder.encode((excess[long] - (1 << lengths[long])).astype(np.int32), self.uniform, (1 << lengths[long]).astype(np.int32))
        wide = p.split > 0
        if wide.any():
            encoder.encode(low[wide].astype(np.int32), self.uniform, (1 << p.split[wide]).astype(np.int32))

    def decode(self, decoder: constriction.stream.queue.RangeDecoder, p: _Prediction, *, top: int, near: int) -> np.ndarray:
        high = decoder.decode(self.family, self.rows(p, top=top, near=near)).astype(np.int64) - REACH
        escaped = np.abs(high) >= REACH
        if escaped.any():
            lengths = decoder.decode(self.escape, int(escaped.sum())).astype(np.int64)
            excess = np.ones_like(lengths)
            long = lengths > 0
            if long.any():
                excess[long] = (1 << lengths[long]) + decoder.decode(self.uniform, (1 << lengths[long]).astype(np.int32)).astype(np.int64)
            high[escaped] = np.sign(high[escaped]) * (REACH - 1 + excess)
        wide = p.split > 0
        low = np.zeros_like(high)
        if wide.any():
            low[wide] = decoder.decode(self.uniform, (1 << p.split[wide]).astype(np.int32)).astype(np.int64)
        return (high << p.split) + low - np.where(p.split > 0, np.left_shift(1, np.maximum(p.split - 1, 0)), 0)


def quantize_residual(residual: np.ndarray, *, near: int) -> np.ndarray:
    """JPEG-LS's near-lossless quantizer: ``sign(r) floor((|r| + N) / (2 N + 1))`` (``|r - v (2N + 1)| <= N``)."""
    return np.sign(residual) * ((np.abs(residual) + near) // (2 * near + 1))


# ---------------------------------------------------------------------------------------------- coding
def levels_checksum(levels: np.ndarray) -> int:
    """CRC-32 of the levels as uint32, row-major."""
    return zlib.crc32(np.ascontiguousarray(levels, dtype="<u4").tobytes())


def encode(levels: np.ndarray, model: ContextModel, *, planes: Sequence[np.ndarray] = (),
           with_networks: bool = True) -> tuple[bytes, np.ndarray]:  # fmt: skip
    """Code integer levels with a fitted model.

    Args:
        levels: ``(H, W)`` integers in ``0..model.top``.
        model: the fitted :class:`ContextModel` (its networks quantized).
        planes: ``model.planes`` side planes ``(H, W)`` of integers the decoder has too.
        with_networks: write the networks (False: an empty block; the decoder gets them from an earlier section of
            the same volume, :func:`decode`'s ``shared``).

    Returns:
        ``(section, reconstruction)``: the section's bytes and the decoded levels ``(H, W)`` int64 (``levels`` itself
        when ``model.near`` is 0; else within ``model.near`` of it).

    Raises:
        ValueError: on levels outside the model's range or planes that do not match.
    """
    check_levels(levels, top=model.top, near=model.near)
    _check_planes(planes, levels.shape, model.planes, error=ValueError)
    height, width = levels.shape
    buffers = _Buffers.empty(height, width, planes)
    layers = model.layers()
    coder, encoder = _Coder(), constriction.stream.queue.RangeEncoder()
    source = levels.astype(np.int64)
    for i, j in wave_positions(height, width):
        p = _predict(buffers, i, j, model=model, layers=layers)
        values = quantize_residual(source[i, j] - p.mean, near=model.near)
        coder.encode(encoder, values, p, top=model.top, near=model.near)
        _store(buffers, i, j, np.minimum(np.maximum(p.mean + values * model.step, 0), model.top), p.first_mean, model.shift)
    decoded = buffers.levels[_PAD:, _PAD : _PAD + width].copy()
    network = pack_network(model.networks) if with_networks else b""
    head = _HEAD.pack(CODER_VERSION, model.top, model.near, model.shift, model.hidden, model.planes, levels_checksum(decoded), len(network))
    return head + network + encoder.get_compressed().astype("<u4").tobytes(), decoded


def decode(section: bytes, *, height: int, width: int, planes: Sequence[np.ndarray] = (),
           shared: QuantizedDecoder | None = None) -> tuple[np.ndarray, ContextModel]:  # fmt: skip
    """Decode a section to its levels ``(H, W)`` int64, checked against the section's CRC-32.

    Args:
        section: the bytes :func:`encode` wrote.
        height: image rows.
        width: image columns.
        planes: the side planes the encoder used (as many as the section announces).
        shared: the networks of an earlier section of the same volume, for a section written without them.

    Returns:
        ``(levels, model)``.

    Raises:
        BitstreamError: on a truncated or corrupted section: a head out of range, a network block that does not
            parse, a stream that does not decode or decodes outside the levels, or a checksum mismatch.
    """
    data = bytes(section)
    model, checksum, stream = parse_section(data, shared=shared)
    _check_planes(planes, (height, width), model.planes, error=BitstreamError)
    if len(stream) % 4:
        raise BitstreamError(f"context section: stream of {len(stream)} bytes is not whole 32-bit words")
    buffers = _Buffers.empty(height, width, planes)
    layers = model.layers()
    coder = _Coder()
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(stream, "<u4").astype(np.uint32))
        for i, j in wave_positions(height, width):
            p = _predict(buffers, i, j, model=model, layers=layers)
            values = p.mean + coder.decode(decoder, p, top=model.top, near=model.near) * model.step
            if model.near == 0 and (values.min() < 0 or values.max() > model.top):
                raise BitstreamError(f"context section: a decoded level outside 0..{model.top} (corrupted stream)")
            _store(buffers, i, j, np.minimum(np.maximum(values, 0), model.top), p.first_mean, model.shift)
    except BitstreamError:
        raise
    except Exception as exc:  # constriction raises plain exceptions on malformed input
        raise BitstreamError(f"context section: stream cannot be decoded ({exc})") from None
    levels = buffers.levels[_PAD:, _PAD : _PAD + width].copy()
    if levels_checksum(levels) != checksum:
        raise BitstreamError("context section: checksum mismatch of the decoded levels (corrupted file or decoder disagreement)")
    return levels, model


def parse_section(section: bytes, *, shared: QuantizedDecoder | None = None) -> tuple[ContextModel, int, bytes]:
    """``(model, checksum, stream)`` of a section, every head field checked; an empty network block takes ``shared``.

    Raises:
        BitstreamError: on a truncated head, a field out of range, a network block that does not parse, or an empty
            one without ``shared`` networks of its shapes.
    """
    if len(section) < _HEAD.size:
        raise BitstreamError(f"context section: {len(section)} bytes, shorter than its {_HEAD.size}-byte head")
    version, top, near, shift, hidden, planes, checksum, n_network = _HEAD.unpack_from(section)
    if version != CODER_VERSION:
        raise BitstreamError(f"context section: coder version {version} is not supported (expected {CODER_VERSION})")
    if not (1 <= top and 0 <= near <= top // 2 and shift <= FRAC_BITS and 1 <= hidden <= MAX_HIDDEN and planes <= MAX_PLANES):
        raise BitstreamError(f"context section: head out of range (top {top}, near {near}, shift {shift}, hidden {hidden}, planes {planes})")
    if n_network > len(section) - _HEAD.size:
        raise BitstreamError(f"context section: network block of {n_network} bytes runs past the end ({len(section)} bytes)")
    shapes = network_shapes(hidden=hidden, planes=planes)
    if n_network == 0:
        if shared is None or [t.shape for t in shared.tensors] != shapes:
            raise BitstreamError("context section: its networks are those of an earlier slice of its volume; decode the volume file")
        networks = shared
    else:
        tensors, exponents = unpack_tensors(section[_HEAD.size : _HEAD.size + n_network], shapes, what="context section")
        networks = QuantizedDecoder(tensors=tuple(tensors), exponents=tuple(exponents))
    model = ContextModel(top=top, near=near, shift=shift, hidden=hidden, planes=planes, networks=networks)
    return model, checksum, section[_HEAD.size + n_network :]


def section_summary(section: bytes) -> dict[str, int]:
    """The head's figures (``top``, ``max_error``, ``planes``, ``network_bytes``), unchecked beyond the head's length.

    Raises:
        BitstreamError: if the section is shorter than its head.
    """
    if len(section) < _HEAD.size:
        raise BitstreamError(f"context section: {len(section)} bytes, shorter than its {_HEAD.size}-byte head")
    _, top, near, _, hidden, planes, _, n_network = _HEAD.unpack_from(section)
    return {"top": top, "max_error": near, "hidden": hidden, "planes": planes, "network_bytes": n_network}


def _check_planes(planes: Sequence[np.ndarray], shape: tuple[int, int], count: int, *, error: type[Exception]) -> None:
    if count and not planes:
        raise error(f"context coder: the section reads {count} side plane(s) (the previous slice of its volume); decode the volume file")
    if len(planes) != count or any(np.shape(p) != tuple(shape) for p in planes):
        raise error(f"context coder: {count} side planes of shape {tuple(shape)} expected, got {[np.shape(p) for p in planes]}")


def quantize_networks(tensors: Sequence[np.ndarray], exponents: Sequence[int]) -> QuantizedDecoder:
    """``round(t 2^e)`` clamped to ``+-WEIGHT_LIMIT`` per tensor (exponents ``0..MAX_EXPONENT``)."""
    if any(not 0 <= e <= MAX_EXPONENT for e in exponents):
        raise ValueError(f"exponents {list(exponents)}: expected 0..{MAX_EXPONENT}")
    values = [np.clip(np.rint(np.asarray(t, np.float64) * 2.0**e), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int64)
              for t, e in zip(tensors, exponents, strict=True)]  # fmt: skip
    return QuantizedDecoder(tensors=tuple(values), exponents=tuple(int(e) for e in exponents))
