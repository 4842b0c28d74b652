"""The float forward pass the encoder trains: a slab's latents to its slices, and to their estimated code length."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from sinco.codec.grid.arm import run_arm
from sinco.codec.grid.entropy import laplace_bits, mean_log2_scale
from sinco.codec.grid.synthesis import run_synthesis
from sinco.codec.grid3d.arm import flat_contexts
from sinco.codec.grid3d.networks import split_tensors
from sinco.codec.grid3d.spec import Grid3dSpec
from sinco.codec.grid3d.upsampling import upsample_volume


@dataclass
class VolumeState:
    """Float parameters of a slab's fit: latents ``(d_l, h_l, w_l)`` finest first and the network tensors."""

    latents: list[torch.Tensor]
    tensors: list[torch.Tensor]

    def clone(self) -> VolumeState:
        """A detached copy."""
        return VolumeState([t.detach().clone() for t in self.latents], [t.detach().clone() for t in self.tensors])


def float_planes(latents: list[torch.Tensor], tensors: list[torch.Tensor], spec: Grid3dSpec, shape: tuple[int, int, int]) -> torch.Tensor:
    """Upsampled latents of every slice, ``(D, L, H, W)`` (float; the synthesis's input)."""
    gain = 2.0**-spec.plane.input_shift
    _, _, plane, depth = split_tensors(tensors, spec)
    planes = upsample_volume([g[None] * gain for g in latents], spec.grid_shapes(*shape), depth_stages=spec.depth_stages,
                             exact=False, plane_deltas=plane or None, depth_deltas=depth or None)  # fmt: skip
    return planes.transpose(0, 1)


def reconstruct(latents: list[torch.Tensor], tensors: list[torch.Tensor], spec: Grid3dSpec, shape: tuple[int, int, int]) -> torch.Tensor:
    """The float decoder: latents and network tensors -> slices ``(D, 1, H, W)``, clamped to ``[0, 1]`` with a
    straight-through gradient (the slab's slices are one batch of ``grid``'s synthesis network)."""
    _, synthesis, _, _ = split_tensors(tensors, spec)
    out = run_synthesis(synthesis, float_planes(latents, tensors, spec, shape), spec.plane, exact=False)
    return out + (out.clamp(0.0, 1.0) - out).detach()


def latent_bits(values: torch.Tensor, shapes: list[tuple[int, int, int]], tensors: list[torch.Tensor], spec: Grid3dSpec) -> torch.Tensor:
    """Estimated bits of the latents ``values (N,)``: the grids of ``shapes`` flattened, finest first."""
    arm, _, _, _ = split_tensors(tensors, spec)
    mean, log2_scale = mean_log2_scale(run_arm(arm, flat_contexts(values, shapes, spec), exact=False), spec.plane.latent_bound)
    return laplace_bits(values, mean, log2_scale).sum()


def split_latents(values: torch.Tensor, shapes: list[tuple[int, int, int]]) -> list[torch.Tensor]:
    """Views ``(d_l, h_l, w_l)`` of the flat latents ``values`` for the grids of ``shapes`` (finest first)."""
    return [part.view(shape) for part, shape in zip(values.split([d * h * w for d, h, w in shapes]), shapes, strict=True)]
