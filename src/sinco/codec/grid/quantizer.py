"""Quantization: rounding the latents (soft in training, hard in the file) and the decoder's weights (a step
exponent per tensor, chosen by rate-distortion descent), and the exp-Golomb coding of those weights."""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import torch

from sinco.codec.grid.forward import GridState, flatten_latents, latent_bits
from sinco.codec.grid.networks import QuantizedDecoder, arm_tensor_count, quantize_tensor, tensor_shapes, upsampling_tensor_count
from sinco.codec.grid.numerics import MAX_EXPONENT, WEIGHT_LIMIT
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.synthesis import run_synthesis
from sinco.codec.grid.upsampling import upsample_grids
from sinco.codec.grid.warm_start import WarmStart
from sinco.errors import BitstreamError

_MAX_ZEROS = 24  # exp-Golomb prefix cap: values stay below WEIGHT_LIMIT anyway


# ------------------------------------------------------------------------------------------------ latents
def soft_round(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable rounding (Agustsson & Theis 2020): identity as temperature grows, rounding as it shrinks."""
    floor = torch.floor(x)
    alpha = 1.0 / temperature
    return floor + 0.5 + torch.tanh(alpha * (x - floor - 0.5)) / (2.0 * math.tanh(alpha / 2.0))


def round_latents(latents: list[torch.Tensor], bound: int) -> list[torch.Tensor]:
    """The latents clamped to ``[-bound, bound]`` and rounded to integers (detached): what the file stores."""
    return [torch.round(g.detach().clamp(-bound, bound)) for g in latents]


# ------------------------------------------------------------------------------------------------ weights
def descend_exponents(exps: list[int], score: Callable[[int, int], float], *, lowest: int = 0,
                      chosen: Callable[[int, int], None] | None = None) -> list[int]:
    """Greedy descent on each tensor's step exponent in turn: from its current value, step down then up while
    ``score(index, exponent)`` falls.

    Args:
        exps: the starting exponents, one per tensor; updated in place (``score`` may read them).
        score: the cost of tensor ``index`` at ``exponent``, the others at ``exps``.
        lowest: the smallest exponent tried (the largest is :data:`~sinco.codec.grid.numerics.MAX_EXPONENT`).
        chosen: called with ``(index, exponent)`` once a tensor's exponent is settled.

    Returns:
        ``exps``.
    """
    for index in range(len(exps)):
        best_e, best = exps[index], score(index, exps[index])
        for direction in (-1, 1):
            e = best_e + direction
            while lowest <= e <= MAX_EXPONENT:
                value = score(index, e)
                if value >= best:
                    break
                best_e, best = e, value
                e += direction
        exps[index] = best_e
        if chosen is not None:
            chosen(index, best_e)
    return exps


def choose_network_steps(
    target: torch.Tensor, state: GridState, *, spec: GridSpec, lambda_rd: float, warm: WarmStart | None = None
) -> tuple[QuantizedDecoder, float]:
    """Choose a step exponent per tensor of the float ``state`` by a greedy descent on ``MSE + lambda_rd * bits / pixels``.

    Entropy-model tensors change only the latent rate, synthesis and upsampling tensors only the distortion, so
    each is scored on its own term (plus its own exact exp-Golomb bits, as differences from ``warm``'s integers when
    the spec names a warm start). Returns the decoder and the latent-bit estimate.
    """
    pixels = target.numel()
    shape = tuple(target.shape)
    latents = [g.cpu() for g in round_latents(state.latents, spec.latent_bound)]
    floats = [t.detach().cpu().float() for t in state.tensors]
    n_arm = arm_tensor_count(spec)
    exps = [8] * len(floats)
    target = target.cpu()
    shapes = spec.grid_shapes(*shape)
    values = flatten_latents(latents)
    inputs = [g[None, None] * 2.0**-spec.input_shift for g in latents]
    first_upsampling = len(floats) - upsampling_tensor_count(spec)

    def planes_of(tensors: list[torch.Tensor]) -> torch.Tensor:
        return upsample_grids(inputs, shapes, exact=False, deltas=tensors[first_upsampling:] or None)

    def current(index: int, exponent: int) -> list[torch.Tensor]:
        chosen = [torch.from_numpy(quantize_tensor(t, e)).float() * 2.0**-e for t, e in zip(floats, exps, strict=True)]
        chosen[index] = torch.from_numpy(quantize_tensor(floats[index], exponent)).float() * 2.0**-exponent
        return chosen

    def score(index: int, exponent: int) -> float:
        tensors = current(index, exponent)
        own = 7 + best_order(coded_values(quantize_tensor(floats[index], exponent), index=index, exponent=exponent, warm=warm))[1]
        with torch.no_grad():
            if index < n_arm:
                term = lambda_rd * float(latent_bits(values, shapes, tensors, spec)) / pixels
            else:
                # The upsampling stages come last: the synthesis tensors are scored on planes upsampled with the
                # stages at their starting step (2^-8).
                grid_planes = planes_of(tensors) if index >= first_upsampling else planes
                recon = run_synthesis(tensors[n_arm:first_upsampling], grid_planes, spec, exact=False).clamp(0.0, 1.0)
                term = float(torch.mean((recon[0, 0] - target) ** 2))
        return term + lambda_rd * own / pixels

    planes = planes_of(current(0, exps[0]))
    descend_exponents(exps, score)
    decoder = QuantizedDecoder(tuple(quantize_tensor(t, e) for t, e in zip(floats, exps, strict=True)), tuple(exps))
    with torch.no_grad():
        estimate = float(latent_bits(values, shapes, current(0, exps[0]), spec))
    return decoder, estimate


# ------------------------------------------------------------------------------------------ exp-Golomb
def _zigzag(values: np.ndarray) -> np.ndarray:
    return np.where(values >= 0, 2 * values, -2 * values - 1)


def golomb_bits(values: np.ndarray, order: int) -> int:
    """Bits of signed exp-Golomb codes of order ``order`` for ``values``."""
    x = (_zigzag(values.reshape(-1)) + (1 << order)).astype(np.float64)
    return int(np.sum(2 * np.frexp(x)[1] - order - 1))


def best_order(values: np.ndarray) -> tuple[int, int]:
    """The exp-Golomb order (0..7) with the fewest bits, and that many bits."""
    costs = [golomb_bits(values, k) for k in range(8)]
    order = int(np.argmin(costs))
    return order, costs[order]


def coded_values(tensor: np.ndarray, *, index: int, exponent: int, warm: WarmStart | None) -> np.ndarray:
    """What the network block codes for tensor ``index`` at step ``2^-exponent``: its integers, less the warm start's."""
    return tensor if warm is None else tensor - warm.reference(index, exponent)


def network_bits(decoder: QuantizedDecoder, *, warm: WarmStart | None = None) -> int:
    """Exact size in bits of the network block's content (before byte padding)."""
    return sum(7 + best_order(coded_values(t, index=i, exponent=e, warm=warm))[1]
               for i, (t, e) in enumerate(zip(decoder.tensors, decoder.exponents, strict=True)))  # fmt: skip


def pack_network(decoder: QuantizedDecoder, *, warm: WarmStart | None = None) -> bytes:
    """The network block (each tensor's integers less ``warm``'s, when the spec names a warm start)."""
    parts = []
    for index, (tensor, exponent) in enumerate(zip(decoder.tensors, decoder.exponents, strict=True)):
        values = coded_values(tensor, index=index, exponent=exponent, warm=warm)
        order, _ = best_order(values)
        parts.append(f"{exponent:04b}{order:03b}")
        for u in _zigzag(values.reshape(-1)).tolist():
            x = u + (1 << order)
            parts.append("0" * (x.bit_length() - order - 1) + format(x, "b"))
    bits = "".join(parts)
    bits += "0" * (-len(bits) % 8)
    return int(bits, 2).to_bytes(len(bits) // 8, "big") if bits else b""


def unpack_network(block: bytes, spec: GridSpec, *, warm: WarmStart | None = None) -> QuantizedDecoder:
    """Parse a network block for ``spec`` (adding ``warm``'s integers back when the spec names a warm start).

    Raises:
        BitstreamError: if it is truncated, has an exponent or value out of range, or trailing data.
    """
    tensors, exponents = unpack_tensors(block, tensor_shapes(spec), warm=warm)
    return QuantizedDecoder(tensors=tuple(tensors), exponents=tuple(exponents))


def unpack_tensors(
    block: bytes, shapes: list[tuple[int, ...]], *, what: str = "grid payload", warm: WarmStart | None = None
) -> tuple[list[np.ndarray], list[int]]:
    """Parse a block of :func:`pack_network` holding tensors of ``shapes``: ``(tensors, step exponents)`` (with ``warm``'s
    integers added back when the block codes differences from a warm start).

    Raises:
        BitstreamError: (naming ``what``) if it is truncated, has an exponent or value out of range, or trailing data.
    """
    bits = "".join(format(b, "08b") for b in block)
    pos = 0
    tensors, exponents = [], []
    for index, shape in enumerate(shapes):
        if pos + 7 > len(bits):
            raise BitstreamError(f"{what}: network block truncated")
        exponent, order = int(bits[pos : pos + 4], 2), int(bits[pos + 4 : pos + 7], 2)
        pos += 7
        if exponent > MAX_EXPONENT:
            raise BitstreamError(f"{what}: network step exponent {exponent} above {MAX_EXPONENT}")
        count = int(np.prod(shape))
        values = np.empty(count, np.int64)
        for n in range(count):
            one = bits.find("1", pos, pos + _MAX_ZEROS + 1)
            if one < 0:
                raise BitstreamError(f"{what}: network block truncated or corrupted (bad exp-Golomb code)")
            width = one - pos + order + 1
            end = one + width
            if end > len(bits):
                raise BitstreamError(f"{what}: network block truncated")
            u = int(bits[one:end], 2) - (1 << order)
            pos = end
            values[n] = u // 2 if u % 2 == 0 else -(u + 1) // 2
        if warm is not None:
            values = values + warm.reference(index, exponent).reshape(-1)
        if np.abs(values).max(initial=0) > WEIGHT_LIMIT:
            raise BitstreamError(f"{what}: network weight beyond +-{WEIGHT_LIMIT}")
        tensors.append(values.reshape(shape))
        exponents.append(exponent)
    if len(bits) - pos >= 8 or "1" in bits[pos:]:
        raise BitstreamError(f"{what}: unexpected data after the network block")
    return tensors, exponents
