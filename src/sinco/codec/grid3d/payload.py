"""The payload of one slab: quantized decoder networks (exp-Golomb) and range-coded latents, with their checksum.

Layout (little-endian), version 1, as ``grid``'s version-1 payload (:mod:`sinco.codec.grid.payload`)::

    u8   payload version (1)
    u32  CRC-32 of the network block then the decoded latents (int8, coarsest grid first, each (d, h, w) row-major)
    u32  n, length of the network block
    n    network block (:func:`sinco.codec.grid.quantizer.pack_network`, tensors of
         :func:`sinco.codec.grid3d.networks.tensor_shapes`)
    ...  range-coded latents (constriction RangeEncoder, u32 words), in the order of
         :func:`sinco.codec.grid3d.arm.decode_steps`

The slab's geometry (slices, rows, columns) and intensity range are in the volume file's slab table
(:mod:`sinco.codec.volume`).
"""

from __future__ import annotations

import struct

import constriction
import numpy as np
import torch

from sinco.codec.grid.arm import fixed_arm_layers, fixed_arm_params
from sinco.codec.grid.entropy import laplace_table
from sinco.codec.grid.networks import QuantizedDecoder
from sinco.codec.grid.numerics import FRAC_BITS
from sinco.codec.grid.payload import decode_step, payload_checksum
from sinco.codec.grid.quantizer import pack_network, unpack_tensors
from sinco.codec.grid.synthesis import fixed_image, run_synthesis
from sinco.codec.grid3d.arm import context_index, decode_contexts, decode_steps
from sinco.codec.grid3d.networks import split_tensors, tensor_shapes
from sinco.codec.grid3d.spec import Grid3dSpec
from sinco.codec.grid3d.upsampling import upsample_volume
from sinco.codec.grid3d.warm_start import load_warm_start
from sinco.errors import BitstreamError

SLAB_PAYLOAD_VERSION = 1
_HEAD = struct.Struct("<BII")
HEAD_BYTES = _HEAD.size
_CHUNK = 8192


def _symbols_table(decoder: QuantizedDecoder, spec: Grid3dSpec) -> tuple:
    return fixed_arm_layers(decoder, spec.plane), laplace_table(spec.plane.latent_bound), constriction.stream.model.Categorical(perfect=False)


def encode_latents(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: Grid3dSpec) -> bytes:
    """Range-code integer latents (finest grid first, each ``(d_l, h_l, w_l)``) with the fixed-point entropy model."""
    shapes = [tuple(int(n) for n in g.shape) for g in latents]
    values = np.concatenate([g.reshape(-1) for g in latents]).astype(np.int64)
    padded = np.concatenate([values, [0]])
    arm, table, family = _symbols_table(decoder, spec)
    m, f, q = fixed_arm_params(padded[context_index(shapes, spec)].T, arm, spec.plane)
    order, _ = decode_steps(shapes)
    symbols = (values - m + 2 * spec.plane.latent_bound)[order].astype(np.int32)
    f, q = f[order], q[order]
    encoder = constriction.stream.queue.RangeEncoder()
    for start in range(0, len(symbols), _CHUNK):
        part = slice(start, start + _CHUNK)
        encoder.encode(symbols[part], family, table[f[part], q[part]])
    return encoder.get_compressed().astype("<u4").tobytes()


def decode_latents(data: bytes, decoder: QuantizedDecoder, spec: Grid3dSpec, shapes: list[tuple[int, int, int]]) -> list[np.ndarray]:
    """Decode the latents step by step (:func:`~sinco.codec.grid3d.arm.decode_steps`); returns them finest first.

    Raises:
        BitstreamError: if the stream decodes to a latent outside the spec's range or cannot be decoded.
    """
    if len(data) % 4:
        raise BitstreamError(f"grid3d payload: latent stream of {len(data)} bytes is not whole 32-bit words")
    arm, table, family = _symbols_table(decoder, spec)
    try:
        rc = constriction.stream.queue.RangeDecoder(np.frombuffer(data, "<u4").astype(np.uint32))
    except Exception as exc:  # constriction raises plain exceptions on malformed input
        raise BitstreamError(f"grid3d payload: latent stream rejected by the range decoder ({exc})") from None
    order, bounds = decode_steps(shapes)
    contexts = decode_contexts(shapes, spec)
    # The decoded latents as float64 (what the entropy model reads), one zero cell past the end for outside contexts.
    buffer = np.zeros(len(order) + 1, np.float64)
    flat_table = table.reshape(-1, table.shape[-1])
    n_scales = table.shape[1]
    for start, stop in zip(bounds[:-1].tolist(), bounds[1:].tolist(), strict=True):
        if start == stop:
            continue
        buffer[order[start:stop]] = decode_step(rc, np.take(buffer, contexts[start:stop]), arm=arm, spec=spec.plane, family=family,
                                                flat_table=flat_table, n_scales=n_scales, what="grid3d payload")  # fmt: skip
    buffer = buffer[:-1].astype(np.int64)
    sizes = np.cumsum([0] + [d * h * w for d, h, w in shapes])
    return [buffer[sizes[k] : sizes[k + 1]].reshape(shape) for k, shape in enumerate(shapes)]


def synthesize(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: Grid3dSpec, shape: tuple[int, int, int],
               slices: range | None = None) -> np.ndarray:  # fmt: skip
    """Fixed-point reconstruction of the ``slices`` (default: all; ascending) of a slab ``shape = (D, H, W)``: float32
    ``(len(slices), H, W)`` in ``[0, 1]``. The upsampling runs on the slices of each grid that ``slices`` read only;
    the synthesis on the slices asked for, one at a time (memory of one slice)."""
    slices = range(shape[0]) if slices is None else slices
    grids = [torch.from_numpy(g.astype(np.float64) * float(1 << (FRAC_BITS - spec.plane.input_shift)))[None] for g in latents]
    _, synthesis, plane, depth = split_tensors(decoder.as_torch(), spec)
    _, synthesis_exps, plane_exps, depth_exps = split_tensors(list(decoder.exponents), spec)
    planes = upsample_volume(grids, spec.grid_shapes(*shape), depth_stages=spec.depth_stages, exact=True, plane_deltas=plane or None,
                             depth_deltas=depth or None, plane_exponents=plane_exps, depth_exponents=depth_exps,
                             slices=None if len(slices) == shape[0] else slices)  # fmt: skip
    out = np.empty((len(slices), shape[1], shape[2]), np.float32)
    for k in range(len(slices)):
        out[k] = fixed_image(run_synthesis(synthesis, planes[:, k][None], spec.plane, exact=True, exps=synthesis_exps)).numpy()
    return out


def build_payload(latents: list[np.ndarray], decoder: QuantizedDecoder, spec: Grid3dSpec) -> bytes:
    """The complete slab payload for integer latents (finest first) and a quantized decoder."""
    network = pack_network(decoder, warm=load_warm_start(spec))
    stream = encode_latents(latents, decoder, spec)
    return _HEAD.pack(SLAB_PAYLOAD_VERSION, payload_checksum(network, latents), len(network)) + network + stream


def decode_slab(payload: bytes, *, spec: Grid3dSpec, shape: tuple[int, int, int], slices: range | None = None) -> np.ndarray:
    """Decode a slab payload to its slices.

    Deterministic and bit-exact on any machine and thread count (integer arithmetic throughout).

    Args:
        payload: the bytes written by :func:`build_payload`.
        spec: the family block's spec.
        shape: the slab's ``(D, H, W)`` (from the volume file's slab table).
        slices: the slab's slices to synthesize (default: all); the latents are always decoded whole.

    Returns:
        ``(len(slices), H, W)`` float32 in ``[0, 1]``.

    Raises:
        BitstreamError: on a payload that is truncated, corrupted, or whose networks and latents fail the checksum.
    """
    spec.validate_for(*shape, error=BitstreamError)
    payload = bytes(payload)
    if len(payload) < HEAD_BYTES or payload[0] != SLAB_PAYLOAD_VERSION:
        found = payload[0] if payload else "missing"
        raise BitstreamError(f"grid3d payload: version {found} or a head shorter than {HEAD_BYTES} bytes (expected version {SLAB_PAYLOAD_VERSION})")
    _, checksum, n_network = _HEAD.unpack_from(payload)
    if n_network > len(payload) - HEAD_BYTES:
        raise BitstreamError(f"grid3d payload: network block of {n_network} bytes runs past the end ({len(payload)} bytes)")
    network = payload[HEAD_BYTES : HEAD_BYTES + n_network]
    tensors, exponents = unpack_tensors(network, tensor_shapes(spec), what="grid3d payload", warm=load_warm_start(spec))
    decoder = QuantizedDecoder(tensors=tuple(tensors), exponents=tuple(exponents))
    latents = decode_latents(payload[HEAD_BYTES + n_network :], decoder, spec, spec.grid_shapes(*shape))
    if payload_checksum(network, latents) != checksum:
        raise BitstreamError("grid3d payload: checksum mismatch of networks and latents (corrupted file or decoder disagreement)")
    return synthesize(latents, decoder, spec, shape, slices)


def payload_layout(payload: bytes) -> dict:
    """The payload's version and the sizes of its parts (for ``sinco info``).

    Raises:
        BitstreamError: if the head is malformed.
    """
    if len(payload) < HEAD_BYTES or payload[0] != SLAB_PAYLOAD_VERSION:
        raise BitstreamError("grid3d payload: malformed head")
    _, _, n_network = _HEAD.unpack_from(payload)
    return {"payload_version": payload[0], "network_bytes": n_network, "latent_bytes": max(len(payload) - HEAD_BYTES - n_network, 0)}
