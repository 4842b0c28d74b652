"""The volume decoder's tensors as one flat list, in payload order: the entropy model's ``[w0, b0, w1, b1, ...]`` (its
inputs: the same-slice neighbours, the coarser grid's latent, the previous slice's latents), then ``grid``'s synthesis
network and in-plane upsampling stages, then one ``(4,)`` slice-axis stage per stage that halves the slice axis.

Everything after the entropy model is ``grid``'s own layout (:func:`sinco.codec.grid.networks.tensor_shapes`), so the
synthesis and upsampling code of ``grid`` runs on it unchanged.
"""

from __future__ import annotations

import math

import torch

from sinco.codec.grid import networks as grid_networks
from sinco.codec.grid3d.spec import Grid3dSpec


def arm_inputs(spec: Grid3dSpec) -> int:
    """Inputs of the entropy model: same-slice neighbours, the coarser-grid latent, previous-slice latents."""
    return spec.plane.arm_context + 1 + spec.arm_previous


def depth_tensor_count(spec: Grid3dSpec) -> int:
    """Learned slice-axis stages: one per stage that halves the slice axis (none with bicubic upsampling)."""
    return sum(spec.depth_stages) if spec.plane.upsampling == "learned" else 0


def tensor_shapes(spec: Grid3dSpec) -> list[tuple[int, ...]]:
    """Shapes of the decoder's tensors in payload order (see the module's docstring)."""
    arm = (arm_inputs(spec), *spec.plane.arm_hidden, 2)
    shapes: list[tuple[int, ...]] = []
    for fan_in, fan_out in zip(arm[:-1], arm[1:], strict=True):
        shapes += [(fan_out, fan_in), (fan_out,)]
    plane = grid_networks.tensor_shapes(spec.plane)[grid_networks.arm_tensor_count(spec.plane) :]
    return shapes + plane + [(4,)] * depth_tensor_count(spec)


def split_tensors(tensors: list, spec: Grid3dSpec) -> tuple[list, list, list, list]:
    """The decoder's tensors (payload order) as ``(entropy model, synthesis, in-plane stages, slice-axis stages)``."""
    n_arm = grid_networks.arm_tensor_count(spec.plane)
    n_depth = depth_tensor_count(spec)
    n_plane = grid_networks.upsampling_tensor_count(spec.plane)
    end = len(tensors) - n_depth
    return tensors[:n_arm], tensors[n_arm : end - n_plane], tensors[end - n_plane : end], tensors[end:]


def init_tensors(spec: Grid3dSpec, generator: torch.Generator) -> list[torch.Tensor]:
    """Initial float tensors: ``grid``'s initialization of the synthesis and stages
    (:func:`sinco.codec.grid.networks.init_tensors`), an entropy model drawn the same way for its wider input (uniform
    +-1/sqrt(fan-in), positive biases, output layer zero), slice-axis stages zero (bicubic)."""
    n_arm = grid_networks.arm_tensor_count(spec.plane)
    arm = []
    shapes = tensor_shapes(spec)[:n_arm]
    for index, shape in enumerate(shapes):
        fan_in = shape[1] if len(shape) > 1 else shapes[index - 1][1]
        tensor = (torch.rand(shape, generator=generator) * 2 - 1) / math.sqrt(fan_in)
        arm.append(torch.zeros(shape) if index >= n_arm - 2 else (tensor.abs() if len(shape) == 1 else tensor))
    plane = grid_networks.init_tensors(spec.plane, generator)[n_arm:]
    return arm + plane + [torch.zeros(4) for _ in range(depth_tensor_count(spec))]
