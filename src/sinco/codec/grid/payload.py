"""The grid family's payload: quantized decoder networks (exp-Golomb) and range-coded latents.

Layout (little-endian), version 1::

    u8   payload version (1)
    u32  CRC-32 of the network block then the decoded latents (int8, coarsest grid first, row-major)
    u32  n, length of the network block
    n    network block: per tensor a 4-bit step exponent, a 3-bit exp-Golomb order, then the signed integers
    ...  range-coded latents (constriction RangeEncoder, u32 words)

Version 2 adds a residual layer (:mod:`sinco.codec.grid.residual`) after the latents::

    u8   payload version (2)
    u32  CRC-32 of the network block, the latents (as in version 1), then the residual (int32, row-major)
    u32  n, length of the network block
    u32  k, length of the latent stream
    n    network block
    k    range-coded latents
    ...  residual section

A payload without a residual is always written as version 1 (one spelling per file; older decoders read it).

Version 3 holds integer grey levels coded by the context coder (:mod:`sinco.codec.grid.context`): a lossless or
near-lossless file (:mod:`sinco.codec.grid.lossless`), or (``n > 0``) a *hybrid*: a grid payload whose decoded image
the context coder reads as a side plane, a prediction of every pixel::

    u8   payload version (3)
    u32  n, length of a grid payload whose decoded image the context coder reads as a side plane (0: none)
    n    that grid payload: version 1 (networks and latents, its own CRC-32), n > 0 only
    ...  context section (its own CRC-32 of the decoded levels); with n > 0 it reads exactly one side plane

The side plane is the grid's fixed-point image ``P = 2^16 p`` on the section's lattice ``0..top``:
``(P top + 2^15) >> 16`` (:func:`sinco.codec.grid.residual.on_lattice`), integer arithmetic, so the hybrid decodes
bit-exactly like its two parts.
"""

from __future__ import annotations

import functools
import struct
import zlib
from dataclasses import dataclass
from typing import Any

import constriction
import numpy as np
import torch

from sinco.codec.grid.arm import coding_order, fixed_arm_layers, fixed_arm_params, grid_contexts, schedule
from sinco.codec.grid.entropy import laplace_table
from sinco.codec.grid.networks import QuantizedDecoder, split_tensors
from sinco.codec.grid.numerics import FRAC_BITS
from sinco.codec.grid.quantizer import pack_network, unpack_network
from sinco.codec.grid.residual import ResidualLayer, on_lattice, section_lattice
from sinco.codec.grid.residual import decode as decode_residual
from sinco.codec.grid.spec import CONTEXT_OFFSETS, GridSpec
from sinco.codec.grid.synthesis import fixed_image, run_synthesis
from sinco.codec.grid.upsampling import upsample_grids
from sinco.codec.grid.warm_start import load_warm_start
from sinco.errors import BitstreamError

PAYLOAD_VERSION = 1
RESIDUAL_PAYLOAD_VERSION = 2
CONTEXT_PAYLOAD_VERSION = 3
_HEAD_V3 = struct.Struct("<BI")
_HEAD = struct.Struct("<BII")
_HEAD_V2 = struct.Struct("<BIII")
HEAD_BYTES = _HEAD.size
#: Bytes a residual layer adds to the payload besides its section (the latent stream's length).
RESIDUAL_HEAD_BYTES = _HEAD_V2.size - _HEAD.size
_CHUNK = 8192


# --------------------------------------------------------------------------------------------- latents
def payload_checksum(network: bytes, latents: list[np.ndarray]) -> int:
    """CRC-32 of the network block then the latents as int8, coarsest grid first."""
    return zlib.crc32(b"".join(g.astype(np.int8).tobytes() for g in reversed(latents)), zlib.crc32(network))


def encode_latents(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: GridSpec) -> bytes:
    """Range-code integer latents (finest grid first, each ``(h_l, w_l)``) with the fixed-point entropy model."""
    grids = [torch.from_numpy(g.astype(np.float64)) for g in latents]
    contexts = grid_contexts(grids, spec).T.numpy()
    m, f, q = fixed_arm_params(contexts, fixed_arm_layers(decoder, spec), spec)
    order = coding_order([g.shape for g in latents])
    values = np.concatenate([g.reshape(-1) for g in latents]).astype(np.int64)
    reach = 2 * spec.latent_bound
    symbols = (values - m + reach)[order].astype(np.int32)
    table = laplace_table(spec.latent_bound)
    family = constriction.stream.model.Categorical(perfect=False)
    encoder = constriction.stream.queue.RangeEncoder()
    f, q = f[order], q[order]
    for start in range(0, len(symbols), _CHUNK):
        part = slice(start, start + _CHUNK)
        encoder.encode(symbols[part], family, table[f[part], q[part]])
    return encoder.get_compressed().astype("<u4").tobytes()


@functools.lru_cache(maxsize=8)
def _decode_plan(shapes: tuple[tuple[int, int], ...], n_context: int) -> tuple[int, tuple[np.ndarray, ...], tuple[np.ndarray, ...]]:
    """Flat indices of every decoding step (:func:`~sinco.codec.grid.entropy.schedule`) into one buffer holding
    all padded grids (grid ``l`` as ``(h_l + 2, w_l + 4)``, row-major, then one cell that stays 0).

    Returns:
        ``(buffer size, contexts, targets)``: per step, the context indices ``(N, n_context + 1)`` (the causal
        neighbours, then the coarser grid's latent or the zero cell) and the indices ``(N,)`` its latents go to.
        Computed once per geometry (the slices of a volume share it).
    """
    widths = [w + 4 for _, w in shapes]
    bases = np.cumsum([0] + [(h + 2) * (w + 4) for h, w in shapes])
    zero_cell = int(bases[-1])
    offsets = np.array(CONTEXT_OFFSETS[:n_context])
    contexts, targets = [], []
    for parts in schedule(list(shapes)):
        ctx, dst = [], []
        for level, i, j in parts:
            rows, cols = i[:, None] + 2 + offsets[:, 0], j[:, None] + 2 + offsets[:, 1]
            parent = (bases[level + 1] + (i // 2 + 2) * widths[level + 1] + j // 2 + 2 if level + 1 < len(shapes)
                      else np.full(len(i), zero_cell))  # fmt: skip
            ctx.append(np.concatenate([bases[level] + rows * widths[level] + cols, parent[:, None]], axis=1))
            dst.append(bases[level] + (i + 2) * widths[level] + j + 2)
        contexts.append(np.concatenate(ctx) if len(ctx) > 1 else ctx[0])
        targets.append(np.concatenate(dst) if len(dst) > 1 else dst[0])
    return zero_cell + 1, tuple(contexts), tuple(targets)


def decode_step(rc: Any, contexts: np.ndarray, *, arm: list, spec: GridSpec, family: Any, flat_table: np.ndarray, n_scales: int,
                what: str) -> np.ndarray:  # fmt: skip
    """Decode one step's latents from the range decoder ``rc``, given their contexts ``(N, C)`` (decoded latents).

    Args:
        rc: constriction's ``RangeDecoder`` positioned at this step.
        contexts: float64 contexts of the step's latents, one row each.
        arm: the folded fixed-point entropy-model layers (:func:`~sinco.codec.grid.arm.fixed_arm_layers`).
        spec: the in-plane spec (latent bound, table size).
        family: the ``Categorical`` model family the rows are decoded with.
        flat_table: the probability table :func:`~sinco.codec.grid.entropy.laplace_table`, one row per (mean fraction,
            scale).
        n_scales: the table's scales per mean fraction.
        what: the payload's name in error messages.

    Returns:
        int64 latents ``(N,)``.

    Raises:
        BitstreamError: if the stream cannot be decoded or gives a latent outside the spec's range.
    """
    bound = spec.latent_bound
    m, f, q = fixed_arm_params(contexts, arm, spec)
    try:
        symbols = rc.decode(family, np.take(flat_table, f * n_scales + q, axis=0))
    except Exception as exc:  # constriction raises plain exceptions on a corrupted stream
        raise BitstreamError(f"{what}: latent stream cannot be decoded ({exc})") from None
    values = m + symbols.astype(np.int64) - 2 * bound
    if np.abs(values).max() > bound:
        raise BitstreamError(f"{what}: decoded latent outside +-{bound} (corrupted stream)")
    return values


def decode_latents(data: bytes, decoder: QuantizedDecoder, spec: GridSpec, shapes: list[tuple[int, int]]) -> list[np.ndarray]:
    """Decode the latents step by step (:func:`~sinco.codec.grid.entropy.schedule`); returns them finest first.

    Raises:
        BitstreamError: if the stream decodes to a latent outside the spec's range or cannot be decoded.
    """
    if len(data) % 4:
        raise BitstreamError(f"grid payload: latent stream of {len(data)} bytes is not whole 32-bit words")
    arm = fixed_arm_layers(decoder, spec)
    table = laplace_table(spec.latent_bound)
    family = constriction.stream.model.Categorical(perfect=False)
    try:
        rc = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    except Exception as exc:  # constriction raises plain exceptions on malformed input
        raise BitstreamError(f"grid payload: latent stream rejected by the range decoder ({exc})") from None
    size, contexts, targets = _decode_plan(tuple(shapes), spec.arm_context)
    buffer = np.zeros(size, np.float64)  # what the entropy model reads: no conversion per step
    flat_table, n_scales = table.reshape(-1, table.shape[-1]), table.shape[1]
    for context, target in zip(contexts, targets, strict=True):
        buffer[target] = decode_step(rc, np.take(buffer, context), arm=arm, spec=spec, family=family, flat_table=flat_table,
                                     n_scales=n_scales, what="grid payload")  # fmt: skip
    start, decoded = 0, []
    for h, w in shapes:
        decoded.append(buffer[start : start + (h + 2) * (w + 4)].reshape(h + 2, w + 4)[2:, 2 : w + 2].astype(np.int64))
        start += (h + 2) * (w + 4)
    return decoded


# ------------------------------------------------------------------------------------------- image
def synthesize(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: GridSpec, height: int, width: int) -> np.ndarray:
    """Fixed-point reconstruction ``(H, W)`` float32 in ``[0, 1]`` from integer latents (finest first)."""
    shapes = spec.grid_shapes(height, width)
    grids = [torch.from_numpy(g.astype(np.float64) * float(1 << (FRAC_BITS - spec.input_shift)))[None, None] for g in latents]
    _, synthesis, upsampling = split_tensors(decoder.as_torch(), spec)
    _, synthesis_exps, upsampling_exps = split_tensors(list(decoder.exponents), spec)
    planes = upsample_grids(grids, shapes, exact=True, deltas=upsampling or None, delta_exponents=upsampling_exps)
    out = run_synthesis(synthesis, planes, spec, exact=True, exps=synthesis_exps)
    return fixed_image(out).numpy()


def build_payload(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: GridSpec) -> bytes:
    """The complete payload for integer latents (finest first) and a quantized decoder."""
    network = pack_network(decoder, warm=load_warm_start(spec))
    stream = encode_latents(latents, decoder, spec)
    return _HEAD.pack(PAYLOAD_VERSION, payload_checksum(network, latents), len(network)) + network + stream


def with_residual(payload: bytes, layer: ResidualLayer) -> bytes:
    """A version-2 payload: a version-1 ``payload`` (from :func:`build_payload`) with the residual ``layer`` appended."""
    version, checksum, n_network = _HEAD.unpack_from(payload)
    if version != PAYLOAD_VERSION:
        raise ValueError(f"payload version {version}: a residual goes on a version-{PAYLOAD_VERSION} payload")
    body = payload[HEAD_BYTES:]
    checksum = zlib.crc32(_residual_bytes(layer.symbols), checksum)
    return _HEAD_V2.pack(RESIDUAL_PAYLOAD_VERSION, checksum, n_network, len(body) - n_network) + body + layer.section


@dataclass(frozen=True)
class _Head:
    """A parsed payload head: the version, the checksum, and where the network, latents and residual lie."""

    version: int
    checksum: int
    network: slice
    latents: slice
    residual: slice | None


def context_payload(section: bytes, *, grid_payload: bytes = b"") -> bytes:
    """A version-3 payload: a context section alone, or (a hybrid) after the ``grid_payload`` whose decoded image its
    one side plane is (:func:`grid_plane`).

    Raises:
        ValueError: if ``grid_payload`` is given and is not a version-1 payload (:func:`build_payload`).
    """
    if grid_payload and grid_payload[0] != PAYLOAD_VERSION:
        raise ValueError(f"grid payload version {grid_payload[0]}: a hybrid's prediction is a version-{PAYLOAD_VERSION} payload")
    return _HEAD_V3.pack(CONTEXT_PAYLOAD_VERSION, len(grid_payload)) + bytes(grid_payload) + section


#: Bytes a hybrid adds to its grid payload and context section (the version-3 head).
CONTEXT_HEAD_BYTES = _HEAD_V3.size


def context_parts(payload: bytes) -> tuple[bytes, bytes] | None:
    """``(grid payload, context section)`` of a version-3 payload (the grid payload empty without a prediction), or
    None for a payload of another version.

    Raises:
        BitstreamError: on a version-3 payload shorter than its head, whose grid payload runs past its end or is not
            of version 1.
    """
    payload = bytes(payload)
    if not payload or payload[0] != CONTEXT_PAYLOAD_VERSION:
        return None
    if len(payload) < _HEAD_V3.size:
        raise BitstreamError(f"grid payload: {len(payload)} bytes, shorter than its {_HEAD_V3.size}-byte head")
    _, n_grid = _HEAD_V3.unpack_from(payload)
    if n_grid > len(payload) - _HEAD_V3.size:
        raise BitstreamError(f"grid payload: a grid prediction of {n_grid} bytes runs past the end ({len(payload)} bytes)")
    grid = payload[_HEAD_V3.size : _HEAD_V3.size + n_grid]
    if grid and grid[0] != PAYLOAD_VERSION:
        raise BitstreamError(f"grid payload: the prediction of a version-3 payload is of version {grid[0]} (expected {PAYLOAD_VERSION})")
    return grid, payload[_HEAD_V3.size + n_grid :]


def context_section(payload: bytes) -> bytes | None:
    """The context section of a version-3 payload without a grid prediction (a lossless or near-lossless file), or
    None for any other payload (a hybrid included: its levels need the grid's image).

    Raises:
        BitstreamError: as :func:`context_parts`.
    """
    parts = context_parts(payload)
    return None if parts is None or parts[0] else parts[1]


def grid_plane(prediction: np.ndarray, *, top: int) -> np.ndarray:
    """The side plane of a hybrid: the grid's image ``(H, W)`` (multiples of ``2^-16`` in ``[0, 1]``) on the levels
    ``0..top``, int64 (:func:`~sinco.codec.grid.residual.on_lattice`)."""
    return np.clip(on_lattice(prediction, levels=top), 0, top)


def _parse_head(payload: bytes) -> _Head:
    """Parse a version-1 or version-2 head, every length checked against the payload's size.

    Raises:
        BitstreamError: if it is empty, of an unknown version, truncated, or a length runs past the end.
    """
    if not payload or payload[0] not in (PAYLOAD_VERSION, RESIDUAL_PAYLOAD_VERSION):
        found = payload[0] if payload else "missing"
        raise BitstreamError(f"grid payload: version {found} is not supported (expected {PAYLOAD_VERSION}, {RESIDUAL_PAYLOAD_VERSION} or {CONTEXT_PAYLOAD_VERSION})")
    head = _HEAD if payload[0] == PAYLOAD_VERSION else _HEAD_V2
    if len(payload) < head.size:
        raise BitstreamError(f"grid payload: {len(payload)} bytes, shorter than its {head.size}-byte head")
    version, checksum, n_network, *rest = head.unpack_from(payload)
    n_latents = rest[0] if rest else len(payload) - head.size - n_network
    if n_network > len(payload) - head.size or n_latents > len(payload) - head.size - n_network:
        raise BitstreamError(f"grid payload: network block of {n_network} bytes or latent stream of {n_latents} bytes "
                             f"runs past the end ({len(payload)} bytes)")  # fmt: skip
    stream_end = head.size + n_network + n_latents
    return _Head(version=version, checksum=checksum, network=slice(head.size, head.size + n_network),
                 latents=slice(head.size + n_network, stream_end), residual=slice(stream_end, len(payload)) if rest else None)  # fmt: skip


def payload_layout(payload: bytes) -> dict:
    """The payload's version and the sizes of its parts, and the residual layer's lattice and step if it has one.

    Raises:
        BitstreamError: if the head is malformed (:func:`_parse_head`).
    """
    payload = bytes(payload)
    parts = context_parts(payload)
    if parts is not None:
        from sinco.codec.grid.context import section_summary

        grid, section = parts
        layout = {"payload_version": CONTEXT_PAYLOAD_VERSION}
        if grid:
            layout["grid_prediction"] = {"bytes": len(grid), **_grid_layout(_parse_head(grid))}
        return {**layout, "context": {"bytes": len(section), **section_summary(section)}}
    head = _parse_head(payload)
    layout = {"payload_version": head.version, **_grid_layout(head)}
    lattice = None if head.residual is None else section_lattice(payload[head.residual])
    if lattice is not None:
        layout["residual"] = {"bytes": head.residual.stop - head.residual.start, "levels": lattice[0], "step": lattice[1]}
    return layout


def _grid_layout(head: _Head) -> dict[str, int]:
    return {"network_bytes": head.network.stop - head.network.start, "latent_bytes": head.latents.stop - head.latents.start}


def _residual_bytes(symbols: np.ndarray) -> bytes:
    return symbols.astype("<i4").tobytes()


def decode_grid(payload: bytes, *, spec: GridSpec, height: int, width: int) -> np.ndarray:
    """Decode a grid payload to the image.

    Deterministic and bit-exact on any machine and thread count (integer arithmetic throughout).

    Args:
        payload: the bytes written by :func:`build_payload` (via ``fit_grid``), :func:`with_residual` or
            :func:`context_payload`.
        spec: the family block's spec.
        height: image rows (from the file header).
        width: image columns.

    Returns:
        ``(H, W)`` float32 in ``[0, 1]``.

    Raises:
        BitstreamError: on a payload that is truncated, corrupted, or whose latents (and residual) fail the checksum.
    """
    spec.validate_for(height, width, error=BitstreamError)
    payload = bytes(payload)
    parts = context_parts(payload)
    if parts is not None:
        return _decode_context_payload(*parts, spec=spec, height=height, width=width)
    head = _parse_head(payload)
    network = payload[head.network]
    decoder = unpack_network(network, spec, warm=load_warm_start(spec))
    latents = decode_latents(payload[head.latents], decoder, spec, spec.grid_shapes(height, width))
    found = payload_checksum(network, latents)
    if head.residual is None:
        _check_sum(found, head.checksum)
        return synthesize(latents, decoder, spec, height, width)
    prediction = synthesize(latents, decoder, spec, height, width)
    layer = decode_residual(payload[head.residual], prediction)
    _check_sum(zlib.crc32(_residual_bytes(layer.symbols), found), head.checksum)
    return layer.apply(prediction)


def _decode_context_payload(grid: bytes, section: bytes, *, spec: GridSpec, height: int, width: int) -> np.ndarray:
    """The image of a version-3 payload: its context section's levels over ``top``, read with the grid payload's image
    as the side plane when there is one (a hybrid)."""
    from sinco.codec.grid.context import decode as decode_context
    from sinco.codec.grid.context import section_summary

    planes = []
    if grid:
        summary = section_summary(section)
        if summary["planes"] != 1:
            raise BitstreamError(f"grid payload: a hybrid's context section reads {summary['planes']} side planes (expected 1: the grid's image)")
        planes = [grid_plane(decode_grid(grid, spec=spec, height=height, width=width), top=summary["top"])]
    levels, model = decode_context(section, height=height, width=width, planes=planes)
    return (levels / model.top).astype(np.float32)


def _check_sum(found: int, stored: int) -> None:
    if found != stored:
        raise BitstreamError("grid payload: checksum mismatch of networks and latents (corrupted file or decoder disagreement)")
