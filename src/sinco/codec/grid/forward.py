"""The float forward pass the encoder trains: latents to image, and latents to their estimated code length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sinco.codec.grid.arm import flat_contexts, run_arm
from sinco.codec.grid.entropy import laplace_bits, mean_log2_scale
from sinco.codec.grid.networks import arm_tensor_count, split_tensors
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.synthesis import run_synthesis
from sinco.codec.grid.upsampling import upsample_grids


@dataclass
class GridState:
    """Float parameters of a fit: latents ``(h_l, w_l)`` finest first and the network tensors."""

    latents: list[torch.Tensor]
    tensors: list[torch.Tensor]

    def clone(self) -> GridState:
        """A detached copy."""
        return GridState([t.detach().clone() for t in self.latents], [t.detach().clone() for t in self.tensors])


def reconstruct(latents: list[torch.Tensor], tensors: list[torch.Tensor], spec: GridSpec, shape: tuple[int, int]) -> torch.Tensor:
    """The float decoder: latents ``(h_l, w_l)`` (finest first) and network tensors -> image ``(1, 1, H, W)``, clamped to
    ``[0, 1]`` with a straight-through gradient."""
    gain = 2.0**-spec.input_shift
    _, synthesis, upsampling = split_tensors(tensors, spec)
    planes = upsample_grids([g[None, None] * gain for g in latents], spec.grid_shapes(*shape), exact=False, deltas=upsampling or None)
    out = run_synthesis(synthesis, planes, spec, exact=False)
    # Clamp with a straight-through gradient: a plain clamp would leave pixels that start below 0 without gradient.
    return out + (out.clamp(0.0, 1.0) - out).detach()


def latent_bits(values: torch.Tensor, shapes: list[tuple[int, int]], tensors: list[torch.Tensor], spec: GridSpec) -> torch.Tensor:
    """Estimated bits of the latents ``values (N,)``: the grids of ``shapes`` flattened, finest first."""
    contexts = flat_contexts(values, shapes, spec)
    mean, log2_scale = mean_log2_scale(run_arm(tensors[: arm_tensor_count(spec)], contexts, exact=False), spec.latent_bound)
    return laplace_bits(values, mean, log2_scale).sum()


def flatten_latents(latents: list[torch.Tensor]) -> torch.Tensor:
    """The grids as one flat tensor ``(N,)``, finest first, row-major."""
    return torch.cat([g.reshape(-1) for g in latents])


def split_latents(values: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    """The inverse of :func:`flatten_latents`: views ``(h_l, w_l)`` of ``values`` for the grids of ``shapes``."""
    return [part.view(shape) for part, shape in zip(values.split([h * w for h, w in shapes]), shapes, strict=True)]
