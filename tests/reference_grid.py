"""An independent integer reference of the grid family's decoder, written from docs/format.md ("Grid payload versions
1 and 2: the fixed-point decoder"), in numpy int64 only: no torch, no float arithmetic on the decoder's values, and
nothing imported from ``sinco.codec.grid`` but the two things it does not re-implement:

- the range coder (constriction's ``queue.RangeDecoder``, driven here with the reference's own coding order,
  contexts and entropy-model parameters) and the probability table those parameters index (``laplace_table``,
  computed with ``decimal``);
- the residual layer's range-coded symbols (decoded by the library); the reference recomputes the lattice, the
  context buckets (every symbol within its bucket's coded reach) and the correction.

Every step the decoder computes is here as integer arithmetic on int64, whose range (2^63) is far beyond the 2^53 the
decoder's float64 arithmetic must stay below: if the decoder ever lost a bit, the two would differ.
"""

from __future__ import annotations

import json
import struct
import zlib
from dataclasses import dataclass
from importlib.resources import files

import numpy as np

FRAC_BITS = 16
ACT_LIMIT = 1 << 24
WEIGHT_LIMIT = (1 << 15) - 1
BICUBIC = (-3, -9, 29, 111)  # u0..u3 over 2^7
OFFSETS = ((0, -1), (-1, 0), (-1, -1), (-1, 1), (0, -2), (-2, 0), (-1, -2), (-2, -1), (-2, 1))
MEAN_STEPS, SCALE_STEPS, LOG2_SCALE_MIN, N_SCALES = 16, 8, -4, 81


class ReferenceError(Exception):
    """The reference found the payload invalid (it refuses what the format forbids)."""


@dataclass(frozen=True)
class Spec:
    """The family block's fields (docs/format.md)."""

    levels: int
    learned: bool
    widths: tuple[int, ...]
    residual_layers: int
    kernel: int
    context: int
    hidden: tuple[int, ...]
    bound: int
    shift: int
    skip: bool
    warm: int


def parse_spec(block: bytes) -> Spec:
    """The grid family block: version, L, upsampling kind, n, widths, residual layers, kernel, context, m, hidden,
    bound, shift, then (version >= 2) the skip flag and (version 3) the warm start id."""
    b = list(block)
    version, levels, kind, n = b[:4]
    widths = tuple(b[4 : 4 + n])
    residual, kernel, context, m = b[4 + n : 8 + n]
    hidden = tuple(b[8 + n : 8 + n + m])
    bound, shift = b[8 + n + m : 10 + n + m]
    tail = b[10 + n + m :]
    skip = bool(tail[0]) if version >= 2 else False
    warm = tail[1] if version == 3 else 0
    if len(tail) != {1: 0, 2: 1, 3: 2}[version]:
        raise ReferenceError("spec block length")
    return Spec(levels, kind == 1, widths, residual, kernel, context, hidden, bound, shift, skip, warm)


def shapes_of(spec: Spec) -> list[tuple[int, ...]]:
    """Tensor shapes in payload order: entropy model, synthesis (1x1 layers, residual convolutions, output, skip),
    learned upsampling stages."""
    out: list[tuple[int, ...]] = []
    arm = (spec.context + 1, *spec.hidden, 2)
    for a, b in zip(arm[:-1], arm[1:], strict=True):
        out += [(b, a), (b,)]
    syn = (spec.levels, *spec.widths)
    for a, b in zip(syn[:-1], syn[1:], strict=True):
        out += [(b, a, 1, 1), (b,)]
    w, k = syn[-1], spec.kernel
    out += [(w, w, k, k), (w,)] * spec.residual_layers + [(1, w, k, k), (1,)]
    out += [(1, spec.levels, 1, 1)] if spec.skip else []
    return out + [(4,)] * (spec.levels - 1 if spec.learned else 0)


def warm_integers(spec: Spec) -> list[np.ndarray] | None:
    """The packaged warm start's integers (at step 2^-12), read from its asset file, or None."""
    if not spec.warm:
        return None
    data = json.loads((files("sinco") / "assets" / f"grid_warm_start_{spec.warm}.json").read_text())
    assert data["stored_exponent"] == 12
    return [np.asarray(t, np.int64) for t in data["tensors"]]


def read_network(block: bytes, spec: Spec) -> tuple[list[np.ndarray], list[int]]:
    """The network block: per tensor a 4-bit exponent, a 3-bit order k, then signed exp-Golomb codes of order k
    (zig-zag: 0, -1, 1, -2, ...), MSB first; the warm start's integers at the same step added back."""
    bits = np.unpackbits(np.frombuffer(block, np.uint8)).astype(np.int64)
    pos = 0

    def take(count: int) -> int:
        nonlocal pos
        if pos + count > len(bits):
            raise ReferenceError("network block truncated")
        value = 0
        for bit in bits[pos : pos + count]:
            value = 2 * value + int(bit)
        pos += count
        return value

    warm = warm_integers(spec)
    tensors, exps = [], []
    for index, shape in enumerate(shapes_of(spec)):
        e, k = take(4), take(3)
        if e > 12:
            raise ReferenceError("exponent above 12")
        values = []
        for _ in range(int(np.prod(shape))):
            zeros = 0
            while take(1) == 0:
                zeros += 1
                if zeros > 24:
                    raise ReferenceError("exp-Golomb prefix too long")
            x = (1 << (zeros + k)) + take(zeros + k) - (1 << k)
            values.append(x // 2 if x % 2 == 0 else -(x + 1) // 2)
        ints = np.asarray(values, np.int64).reshape(shape)
        if warm is not None:
            shift = 12 - e
            stored = warm[index].reshape(shape)
            ref = (stored + (1 << (shift - 1))) >> shift if shift > 0 else stored
            ints = ints + np.clip(ref, -WEIGHT_LIMIT, WEIGHT_LIMIT)
        if np.abs(ints).max(initial=0) > WEIGHT_LIMIT:
            raise ReferenceError("weight beyond the limit")
        tensors.append(ints)
        exps.append(e)
    if len(bits) - pos >= 8 or bits[pos:].any():
        raise ReferenceError("data after the network block")
    return tensors, exps


# ----------------------------------------------------------------------------------------------- arithmetic
def rshift_round(x: np.ndarray, bits: int) -> np.ndarray:
    """floor(x / 2^bits + 1/2) on int64."""
    return (x + (1 << (bits - 1))) >> bits if bits > 0 else x


def clamp(x: np.ndarray, low: int = -ACT_LIMIT) -> np.ndarray:
    return np.clip(x, low, ACT_LIMIT)


def layer(x: np.ndarray, weight: np.ndarray, bias: np.ndarray | None, e: int, eb: int) -> np.ndarray:
    """One fixed-point layer on ``(C, H, W)`` activations at 2^-16: a k x k correlation with replicated borders,
    plus the bias brought to scale 2^-(16 + e), rounded back by e bits, clamped to +-2^24."""
    out_c, in_c, k, _ = weight.shape
    pad = k // 2
    padded = np.pad(x, ((0, 0), (pad, pad), (pad, pad)), mode="edge")
    h, w = x.shape[1:]
    y = np.zeros((out_c, h, w), np.int64)
    for dy in range(k):
        for dx in range(k):
            window = padded[:, dy : dy + h, dx : dx + w].reshape(in_c, -1)
            y += (weight[:, :, dy, dx] @ window).reshape(out_c, h, w)
    if bias is not None:
        y += (bias << (FRAC_BITS + e - eb))[:, None, None]
    return clamp(rshift_round(y, e))


def taps_of(delta: np.ndarray | None, e: int) -> tuple[np.ndarray, int]:
    """A stage's taps (u0..u3) and their exponent: bicubic over 2^7, plus a learned delta at 2^-e, at 2^-max(7, e)."""
    bicubic = np.asarray(BICUBIC, np.int64)
    if delta is None:
        return bicubic, 7
    s = max(7, e)
    return (bicubic << (s - 7)) + (delta << (s - e)), s


def upsample_matrix(size: int, length: int, taps: np.ndarray) -> np.ndarray:
    """``(size, length)``: output 2n reads inputs n-2..n+1 with (u0, u2, u3, u1), output 2n+1 reads n-1..n+2 with
    (u1, u3, u2, u0), indices clamped to the borders."""
    m = np.zeros((size, length), np.int64)
    for r in range(size):
        n = r // 2
        first, order = (n - 2, (0, 2, 3, 1)) if r % 2 == 0 else (n - 1, (1, 3, 2, 0))
        for j, t in enumerate(order):
            m[r, min(max(first + j, 0), length - 1)] += taps[t]
    return m


def upsample(x: np.ndarray, height: int, width: int, taps: np.ndarray, s: int) -> np.ndarray:
    """2x along columns (rounded by s bits, clamped), then along rows (the same), ``(C, h, w) -> (C, height, width)``."""
    cols = upsample_matrix(width, x.shape[2], taps)
    rows = upsample_matrix(height, x.shape[1], taps)
    half = clamp(rshift_round(np.einsum("chw,vw->chv", x, cols), s))
    return clamp(rshift_round(np.einsum("uh,chv->cuv", rows, half), s))


def grid_shapes(spec: Spec, height: int, width: int) -> list[tuple[int, int]]:
    return [(-(-height // 2**level), -(-width // 2**level)) for level in range(spec.levels)]


def planes(
    latents: list[np.ndarray], spec: Spec, tensors: list[np.ndarray], exps: list[int], height: int, width: int
) -> np.ndarray:
    """Latents (finest first) at 2^-(16 - shift) brought to full resolution: ``(L, H, W)``, grid l through l stages."""
    shapes = grid_shapes(spec, height, width)
    n_ups = spec.levels - 1 if spec.learned else 0
    ups, ups_exps = tensors[len(tensors) - n_ups :], exps[len(exps) - n_ups :]
    grids = [g.astype(np.int64) << (FRAC_BITS - spec.shift) for g in latents]
    x = grids[-1][None]
    for level in range(spec.levels - 2, -1, -1):
        taps, s = taps_of(ups[level] if n_ups else None, ups_exps[level] if n_ups else 0)
        x = np.concatenate([grids[level][None], upsample(x, *shapes[level], taps, s)])
    return x


def synthesis(p: np.ndarray, spec: Spec, tensors: list[np.ndarray], exps: list[int]) -> np.ndarray:
    """1x1 layers (ReLU), residual k x k layers ``relu(x + f(x))``, output layer, plus the linear skip of the planes;
    returns the output at 2^-16 ``(H, W)``."""
    n_arm = 2 * (len(spec.hidden) + 1)
    n_ups = spec.levels - 1 if spec.learned else 0
    t, e = tensors[n_arm : len(tensors) - n_ups], exps[n_arm : len(exps) - n_ups]
    x, i = p, 0
    for _ in spec.widths:
        x = np.maximum(layer(x, t[i], t[i + 1], e[i], e[i + 1]), 0)
        i += 2
    for _ in range(spec.residual_layers):
        x = np.maximum(x + layer(x, t[i], t[i + 1], e[i], e[i + 1]), 0)
        i += 2
    out = layer(x, t[i], t[i + 1], e[i], e[i + 1])[0]
    if spec.skip:
        out = out + layer(p, t[i + 2], None, e[i + 2], 0)[0]
    return out


def to_image(out: np.ndarray) -> np.ndarray:
    """clip(out, 0, 2^16) / 2^16 as float32 (exact: 17-bit integers over a power of two)."""
    return (np.clip(out, 0, 1 << FRAC_BITS).astype(np.float64) / (1 << FRAC_BITS)).astype(np.float32)


# ------------------------------------------------------------------------------------------- entropy model
def contexts(latents: list[np.ndarray], spec: Spec) -> np.ndarray:
    """``(N, context + 1)`` per latent (finest grid first, row-major): the causal neighbours (0 outside the grid),
    then the coarser grid's latent at (i // 2, j // 2) (0 for the coarsest grid)."""
    rows = []
    for level, g in enumerate(latents):
        h, w = g.shape
        padded = np.pad(g.astype(np.int64), 2)
        i, j = np.divmod(np.arange(h * w), w)
        cols = [padded[i + 2 + dy, j + 2 + dx] for dy, dx in OFFSETS[: spec.context]]
        cols.append(
            latents[level + 1][i // 2, j // 2].astype(np.int64) if level + 1 < len(latents) else np.zeros(h * w, np.int64)
        )
        rows.append(np.stack(cols, axis=1))
    return np.concatenate(rows)


def arm(ctx: np.ndarray, spec: Spec, tensors: list[np.ndarray], exps: list[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The entropy model in fixed point and its snapping: integer mean m, mean fraction f (of 16) and scale index q."""
    x = ctx << FRAC_BITS
    n_layers = len(spec.hidden) + 1
    for index in range(n_layers):
        w, b, e, eb = tensors[2 * index], tensors[2 * index + 1], exps[2 * index], exps[2 * index + 1]
        x = rshift_round(x @ w.T + (b << (FRAC_BITS + e - eb)), e)
        x = clamp(x, 0 if index < n_layers - 1 else -ACT_LIMIT)
    half = 1 << (FRAC_BITS - 1)
    mean_q = (x[:, 0] * MEAN_STEPS + half) >> FRAC_BITS
    m = (mean_q + MEAN_STEPS // 2) // MEAN_STEPS
    f = mean_q + MEAN_STEPS // 2 - m * MEAN_STEPS
    q = np.clip(((x[:, 1] - (LOG2_SCALE_MIN << FRAC_BITS)) * SCALE_STEPS + half) >> FRAC_BITS, 0, N_SCALES - 1)
    return np.clip(m, -spec.bound, spec.bound), f, q


def coding_order(shapes: list[tuple[int, int]]) -> np.ndarray:
    """Latent indices (finest-first flat) in coding order: step s runs wave t = s - (L - 1 - l) of every grid l,
    coarsest first; a wave is the positions 2 i + j = t, i ascending."""
    offsets = np.cumsum([0] + [h * w for h, w in shapes])
    n_levels = len(shapes)
    order = []
    steps = max(2 * (h - 1) + w + n_levels - 1 - level for level, (h, w) in enumerate(shapes))
    for step in range(steps):
        for level in range(n_levels - 1, -1, -1):
            t = step - (n_levels - 1 - level)
            h, w = shapes[level]
            for i in range(h):
                j = t - 2 * i
                if 0 <= j < w:
                    order.append(offsets[level] + i * w + j)
    return np.asarray(order, np.int64)


def decode_latents(
    stream: bytes, spec: Spec, tensors: list[np.ndarray], exps: list[int], shapes: list[tuple[int, int]]
) -> list[np.ndarray]:
    """Decode the latents step by step in the coding order (see :func:`coding_order`): per step, the contexts of its
    positions from the latents decoded so far, the entropy model, then one symbol per position from the range decoder
    (constriction's queue decoder, ``u32`` words) with row ``(f, q)`` of the table; latent = m + symbol - 2 b."""
    import constriction

    from sinco.codec.grid.entropy import laplace_table

    if len(stream) % 4:
        raise ReferenceError("latent stream not whole words")
    table = laplace_table(spec.bound)
    family = constriction.stream.model.Categorical(perfect=False)
    try:
        decoder = constriction.stream.queue.RangeDecoder(np.frombuffer(stream, "<u4").astype(np.uint32))
    except Exception as exc:
        raise ReferenceError(f"range decoder: {exc}") from None
    grids = [np.zeros(shape, np.int64) for shape in shapes]
    n_levels = len(shapes)
    steps = max(2 * (h - 1) + w + n_levels - 1 - level for level, (h, w) in enumerate(shapes))
    for step in range(steps):
        parts, rows = [], []
        for level in range(n_levels - 1, -1, -1):
            t = step - (n_levels - 1 - level)
            h, w = shapes[level]
            i = np.arange(h)
            i = i[(t - 2 * i >= 0) & (t - 2 * i < w)]
            if not len(i):
                continue
            j = t - 2 * i
            padded = np.pad(grids[level], 2)
            cols = [padded[i + 2 + dy, j + 2 + dx] for dy, dx in OFFSETS[: spec.context]]
            cols.append(grids[level + 1][i // 2, j // 2] if level + 1 < n_levels else np.zeros(len(i), np.int64))
            rows.append(np.stack(cols, axis=1))
            parts.append((level, i, j))
        m, f, q = arm(np.concatenate(rows), spec, tensors, exps)
        try:
            symbols = decoder.decode(family, table[f, q]).astype(np.int64)
        except Exception as exc:
            raise ReferenceError(f"range decoder: {exc}") from None
        values = m + symbols - 2 * spec.bound
        if np.abs(values).max() > spec.bound:
            raise ReferenceError("latent outside the bound")
        start = 0
        for level, i, j in parts:
            grids[level][i, j] = values[start : start + len(i)]
            start += len(i)
    return grids


# ---------------------------------------------------------------------------------------------- residual
def on_lattice(out: np.ndarray, levels: int) -> np.ndarray:
    """B = floor((K P + 2^15) / 2^16), P the grid's output clipped to 0..2^16."""
    return (np.clip(out, 0, 1 << FRAC_BITS) * levels + (1 << 15)) >> 16


def buckets(base: np.ndarray, levels: int, step: int) -> np.ndarray:
    """min(bit_length(4 * range3x3(B) // step), 15) * 2 + (B > (1311 K) >> 16), borders replicated."""
    padded = np.pad(base, 1, mode="edge")
    h, w = base.shape
    windows = np.stack([padded[dy : dy + h, dx : dx + w] for dy in range(3) for dx in range(3)])
    ratio = (4 * (windows.max(0) - windows.min(0))) // step
    bit_length = np.zeros_like(ratio)
    for bit in range(63):
        bit_length = np.where(ratio >> bit > 0, bit + 1, bit_length)
    return np.minimum(bit_length, 15) * 2 + (base > ((1311 * levels) >> 16))


def residual_reaches(section: bytes, bucket_ids: np.ndarray) -> tuple[int, int, dict[int, int]]:
    """K, the step and every present bucket's largest |q| (LEB128), in bucket order."""
    k_minus_one, step = struct.unpack_from("<HH", section)
    pos, reaches = 4, {}
    for bucket in np.unique(bucket_ids):
        value, shift = 0, 0
        while True:
            byte = section[pos]
            value |= (byte & 0x7F) << shift
            pos, shift = pos + 1, shift + 7
            if not byte & 0x80:
                break
        reaches[int(bucket)] = value
        pos += 1 if value else 0
    return k_minus_one + 1, step, reaches


# --------------------------------------------------------------------------------------------------- decode
@dataclass(frozen=True)
class Decoded:
    """The reference's result: the image and its intermediate values."""

    image: np.ndarray
    output: np.ndarray  # the synthesis output at 2^-16, (H, W) int64
    latents: list[np.ndarray]
    tensors: list[np.ndarray]
    exps: list[int]


def decode(payload: bytes, block: bytes, height: int, width: int) -> Decoded:
    """Decode a version-1 or version-2 grid payload (see the module's docstring for what is not re-implemented)."""
    from sinco.codec.grid.residual import decode as decode_residual_symbols

    spec = parse_spec(block)
    version = payload[0]
    if version == 1:
        _, checksum, n_net = struct.unpack_from("<BII", payload)
        head, n_lat = 9, len(payload) - 9 - n_net
    elif version == 2:
        _, checksum, n_net, n_lat = struct.unpack_from("<BIII", payload)
        head = 13
    else:
        raise ReferenceError(f"payload version {version}")
    network = payload[head : head + n_net]
    stream = payload[head + n_net : head + n_net + n_lat]
    tensors, exps = read_network(network, spec)
    latents = decode_latents(stream, spec, tensors, exps, grid_shapes(spec, height, width))
    crc = zlib.crc32(b"".join(g.astype(np.int8).tobytes() for g in reversed(latents)), zlib.crc32(network))
    out = synthesis(planes(latents, spec, tensors, exps, height, width), spec, tensors, exps)
    image = to_image(out)
    if version == 2:
        section = payload[head + n_net + n_lat :]
        levels, step, reaches = residual_reaches(section, np.zeros(1, np.int64))  # K and the step only
        base = on_lattice(out, levels)
        ids = buckets(base, levels, step)
        _, _, reaches = residual_reaches(section, ids)
        symbols = decode_residual_symbols(section, image).symbols.astype(np.int64)
        for bucket, reach in reaches.items():
            # The encoder writes each bucket's largest |q|; a decoder needs it only as the model's support.
            if np.abs(symbols[ids == bucket]).max() > reach:
                raise ReferenceError("a residual beyond its bucket's coded reach (bucket mismatch)")
        crc = zlib.crc32(symbols.astype("<i4").tobytes(), crc)
        image = (np.clip(base + symbols * step, 0, levels).astype(np.float64) / levels).astype(np.float32)
    if crc != checksum:
        raise ReferenceError("checksum mismatch")
    return Decoded(image=image, output=out, latents=latents, tensors=tensors, exps=exps)
