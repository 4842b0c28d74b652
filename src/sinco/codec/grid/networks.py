"""The grid decoder's two small networks (synthesis and entropy model), float and fixed point.

Both are written once as functions of a flat list of tensors ``[w0, b0, w1, b1, ...]`` (entropy-model
layers first, then synthesis layers), so the trainer (float) and the decoder (integer-valued float64,
per-tensor step exponents) run the same graph.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from sinco.codec.grid.entropy import context_width
from sinco.codec.grid.numerics import FRAC_BITS, fixed_conv
from sinco.codec.grid.spec import GridSpec


def tensor_shapes(spec: GridSpec) -> list[tuple[int, ...]]:
    """Shapes of the decoder's tensors in payload order: entropy model ``(O, I)``, synthesis ``(O, I, k, k)``, then
    with learned upsampling one ``(4,)`` per 2x stage (finest stage first)."""
    shapes: list[tuple[int, ...]] = []
    arm = (context_width(spec), *spec.arm_hidden, 2)
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


def _layers(tensors: list[torch.Tensor], exps: list[int]) -> list[tuple[torch.Tensor, torch.Tensor, int, int]]:
    return [(tensors[i], tensors[i + 1], exps[i], exps[i + 1]) for i in range(0, len(tensors), 2)]


def _apply(x: torch.Tensor, layer: tuple[torch.Tensor, torch.Tensor | None, int, int], *, exact: bool) -> torch.Tensor:
    weight, bias, w_exp, b_exp = layer
    if exact:
        return fixed_conv(x, weight, bias, w_exp=w_exp, b_exp=b_exp)
    if x.dim() == 4 and weight.shape[-1] == 1:
        # 1x1 layers as one matrix product on channels-first pixels (C, H W): no permute, and the backward's
        # products keep the long axis contiguous (twice as fast as a channels-last linear layer).
        _, channels, height, width = x.shape
        return _affine(weight[:, :, 0, 0], bias, x.reshape(channels, height * width)).reshape(1, -1, height, width)
    if x.dim() == 2:
        return _affine(weight, bias, x)
    pad = weight.shape[-1] // 2
    return F.conv2d(F.pad(x, (pad,) * 4, mode="replicate") if pad else x, weight, bias)


def _affine(weight: torch.Tensor, bias: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
    """``weight (O, C) @ x (C, N) + bias (O,)``."""
    return weight @ x if bias is None else torch.addmm(bias[:, None], weight, x)


def run_arm(tensors: list[torch.Tensor], contexts: torch.Tensor, *, exact: bool, exps: list[int] | None = None) -> torch.Tensor:
    """Entropy model: contexts ``(C, N)`` (channels first) -> ``(2, N)`` (mean, log2-scale); in fixed point when ``exact``.

    With ``exact``, ``tensors`` and ``contexts`` are integer-valued float64, contexts at scale ``2^-FRAC_BITS``.
    """
    layers = _layers(tensors, exps if exps is not None else [0] * len(tensors))
    x = contexts  # ReLU as torch.relu: its backward is one fused kernel, clamp_min's a comparison and a select
    for layer in layers[:-1]:
        x = torch.relu(_apply(x, layer, exact=exact))
    return _apply(x, layers[-1], exact=exact)


def run_synthesis(
    tensors: list[torch.Tensor], planes: torch.Tensor, spec: GridSpec, *, exact: bool, exps: list[int] | None = None
) -> torch.Tensor:
    """Synthesis: upsampled latents ``(1, L, H, W)`` -> image ``(1, 1, H, W)`` (not yet clipped to [0, 1])."""
    exps = exps if exps is not None else [0] * len(tensors)
    n_layers = len(tensors) - int(spec.linear_skip)
    layers = _layers(tensors[:n_layers], exps)
    n_1x1 = len(spec.synthesis_widths)
    x = planes
    for layer in layers[:n_1x1]:
        x = torch.relu(_apply(x, layer, exact=exact))
    if not exact:
        x = x.contiguous(memory_format=torch.channels_last)  # mkldnn's 4-channel convolutions: 2-3x faster so stored
    for layer in layers[n_1x1:-1]:
        x = torch.relu(x + _apply(x, layer, exact=exact))
    out = _apply(x, layers[-1], exact=exact)
    if spec.linear_skip:
        out = out + _apply(planes, (tensors[-1], None, exps[-1], 0), exact=exact)
    return out


def fixed_image(output: torch.Tensor) -> torch.Tensor:
    """Fixed-point synthesis output ``(1, 1, H, W)`` -> float32 image ``(H, W)`` clipped to ``[0, 1]`` (exact)."""
    return (output[0, 0] * 2.0**-FRAC_BITS).clamp(0.0, 1.0).to(torch.float32)
