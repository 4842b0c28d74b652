"""The grid decoder's tensors as one flat list, in payload order: the entropy model's ``[w0, b0, w1, b1, ...]``, the
synthesis network's, then the learned upsampling stages. The trainer (float) and the decoder (integer-valued float64,
per-tensor step exponents) run the same graph on such a list (:mod:`~sinco.codec.grid.arm`,
:mod:`~sinco.codec.grid.synthesis`, :mod:`~sinco.codec.grid.upsampling`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from sinco.codec.grid.numerics import WEIGHT_LIMIT
from sinco.codec.grid.spec import GridSpec


def tensor_shapes(spec: GridSpec) -> list[tuple[int, ...]]:
    """Shapes of the decoder's tensors in payload order: entropy model ``(O, I)``, synthesis ``(O, I, k, k)``, then
    with learned upsampling one ``(4,)`` per 2x stage (finest stage first)."""
    shapes: list[tuple[int, ...]] = []
    arm = (spec.arm_context + 1, *spec.arm_hidden, 2)  # the causal neighbours and the coarser-grid latent
    for fan_in, fan_out in zip(arm[:-1], arm[1:], strict=True):
        shapes += [(fan_out, fan_in), (fan_out,)]
    synth = (spec.levels, *spec.synthesis_widths)
    for fan_in, fan_out in zip(synth[:-1], synth[1:], strict=True):
        shapes += [(fan_out, fan_in, 1, 1), (fan_out,)]
    width, k = synth[-1], spec.kernel
    for _ in range(spec.residual_layers):
        shapes += [(width, width, k, k), (width,)]
    shapes += [(1, width, k, k), (1,)]
    shapes += [(1, spec.levels, 1, 1)] if spec.linear_skip else []
    return shapes + [(4,)] * upsampling_tensor_count(spec)


def arm_tensor_count(spec: GridSpec) -> int:
    """How many of :func:`tensor_shapes` belong to the entropy model."""
    return 2 * (len(spec.arm_hidden) + 1)


def upsampling_tensor_count(spec: GridSpec) -> int:
    """How many of :func:`tensor_shapes` are learned upsampling stages (the last ones)."""
    return spec.levels - 1 if spec.upsampling == "learned" else 0


def split_tensors(tensors: list[torch.Tensor], spec: GridSpec) -> tuple[list[torch.Tensor], list[torch.Tensor], list[torch.Tensor]]:
    """The decoder's tensors (payload order) as ``(entropy model, synthesis, upsampling)``."""
    n_arm, n_ups = arm_tensor_count(spec), upsampling_tensor_count(spec)
    return tensors[:n_arm], tensors[n_arm : len(tensors) - n_ups], tensors[len(tensors) - n_ups :]


def init_tensors(spec: GridSpec, generator: torch.Generator) -> list[torch.Tensor]:
    """Initial float tensors: uniform +-1/sqrt(fan-in) (biases positive); residual, linear-skip and entropy-model
    output layers zero; learned upsampling stages zero (bicubic: they hold the taps' difference from it)."""
    tensors = []
    shapes = tensor_shapes(spec)
    shapes = shapes[: len(shapes) - upsampling_tensor_count(spec)]
    n_arm = arm_tensor_count(spec)
    n_synth = len(shapes) - int(spec.linear_skip)
    zero_from = n_synth - 2 - 2 * spec.residual_layers
    for index, shape in enumerate(shapes):
        fan_in = math.prod(shape[1:]) if len(shape) > 1 else math.prod(shapes[index - 1][1:])
        bound = 1.0 / math.sqrt(fan_in)
        tensor = (torch.rand(shape, generator=generator) * 2 - 1) * bound
        if index in (n_arm - 2, n_arm - 1) or zero_from <= index < n_synth - 2 or index >= n_synth:
            tensor = torch.zeros(shape)
        elif len(shape) == 1:
            # Positive biases: with latents starting at zero, ReLUs fed by negative biases would never wake up.
            tensor = tensor.abs()
        tensors.append(tensor)
    return tensors + [torch.zeros(4) for _ in range(upsampling_tensor_count(spec))]


@dataclass(frozen=True)
class QuantizedDecoder:
    """The decoder's networks as integers: ``tensors[i] * 2^-exponents[i]``, in :func:`tensor_shapes` order."""

    tensors: tuple[np.ndarray, ...]
    exponents: tuple[int, ...]

    def as_torch(self) -> list[torch.Tensor]:
        """Integer-valued float64 tensors for the fixed-point networks."""
        return [torch.from_numpy(t.astype(np.float64)) for t in self.tensors]


def quantize_tensor(values: torch.Tensor, exponent: int) -> np.ndarray:
    """``round(values * 2^exponent)`` clamped to ``+-WEIGHT_LIMIT``, int64."""
    scaled = torch.round(values.detach().double() * 2.0**exponent).clamp(-WEIGHT_LIMIT, WEIGHT_LIMIT)
    return scaled.numpy().astype(np.int64)
