"""The synthesis network: upsampled latents ``(1, L, H, W)`` to the image, float in training, fixed point in the decoder."""

from __future__ import annotations

import torch

from sinco.codec.grid.numerics import FRAC_BITS, apply_layer, layer_tuples
from sinco.codec.grid.spec import GridSpec


def run_synthesis(
    tensors: list[torch.Tensor], planes: torch.Tensor, spec: GridSpec, *, exact: bool, exps: list[int] | None = None
) -> torch.Tensor:
    """Synthesis: upsampled latents ``(1, L, H, W)`` -> image ``(1, 1, H, W)`` (not yet clipped to [0, 1])."""
    exps = exps if exps is not None else [0] * len(tensors)
    n_layers = len(tensors) - int(spec.linear_skip)
    layers = layer_tuples(tensors[:n_layers], exps)
    n_1x1 = len(spec.synthesis_widths)
    x = planes
    for layer in layers[:n_1x1]:
        x = torch.relu(apply_layer(x, layer, exact=exact))
    if not exact:
        x = x.contiguous(memory_format=torch.channels_last)  # mkldnn's 4-channel convolutions: 2-3x faster so stored
    for layer in layers[n_1x1:-1]:
        x = torch.relu(x + apply_layer(x, layer, exact=exact))
    out = apply_layer(x, layers[-1], exact=exact)
    if spec.linear_skip:
        out = out + apply_layer(planes, (tensors[-1], None, exps[-1], 0), exact=exact)
    return out


def fixed_image(output: torch.Tensor) -> torch.Tensor:
    """Fixed-point synthesis output ``(1, 1, H, W)`` -> float32 image ``(H, W)`` clipped to ``[0, 1]`` (exact)."""
    return (output[0, 0] * 2.0**-FRAC_BITS).clamp(0.0, 1.0).to(torch.float32)
