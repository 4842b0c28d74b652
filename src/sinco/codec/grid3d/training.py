"""Training a slab's latent grids and decoder (one fit at a fixed ``lambda_rd``), and encoding the result."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.networks import QuantizedDecoder, arm_tensor_count, quantize_tensor
from sinco.codec.grid.quantizer import best_order, coded_values, descend_exponents, network_bits, round_latents
from sinco.codec.grid.training import Regularizer, rounded_latents
from sinco.codec.grid3d.forward import VolumeState, latent_bits, reconstruct, split_latents
from sinco.codec.grid3d.networks import init_tensors
from sinco.codec.grid3d.payload import build_payload, decode_slab
from sinco.codec.grid3d.spec import Grid3dSpec
from sinco.codec.grid3d.warm_start import load_warm_start
from sinco.errors import InputError
from sinco.utils.progress import progress_bar


@dataclass
class SlabCheckpoint:
    """The training state at one step of the soft phase, from which rate-search trials branch."""

    step: int
    state: VolumeState
    optimizer: dict
    generator: torch.Tensor


@dataclass(frozen=True)
class SlabFitResult:
    """One slab's fit.

    Args:
        payload: the slab payload (:mod:`sinco.codec.grid3d.payload`).
        reconstruction: ``(D, H, W)`` float32, what decoding the payload gives (it is decoded from it).
        mse: of ``reconstruction`` against the target.
        lambda_rd: the rate weight of the fit.
        network_bits: bits of the quantized networks.
        steps: optimization steps run for this result (all trials of a rate search).
        seconds: wall time.
        trials: fits run.
        checkpoint: the branch point of the soft phase, when asked for.
    """

    payload: bytes
    reconstruction: np.ndarray = field(repr=False)
    mse: float
    lambda_rd: float
    network_bits: int
    steps: int
    seconds: float
    trials: int = 1
    checkpoint: SlabCheckpoint | None = field(default=None, repr=False, compare=False)

    @property
    def payload_bits(self) -> int:
        """``8 * len(payload)``."""
        return 8 * len(self.payload)


def branch_step(config: GridFitConfig) -> int:
    """The step at which rate-search trials branch: ``config.branch_at`` of the soft phase."""
    return int(round(config.branch_at * (config.steps - config.ste_steps)))


def _train(target: torch.Tensor, state: VolumeState, *, spec: Grid3dSpec, config: GridFitConfig, progress: bool,
           start: SlabCheckpoint | None, keep_at: int | None, regularizer: Regularizer | None = None,
           lam: torch.Tensor | None = None) -> tuple[VolumeState, float, SlabCheckpoint | None]:  # fmt: skip
    """``grid``'s schedule (:func:`sinco.codec.grid.training._train`: soft rounding with noise, then straight-through
    steps) on a slab ``target (D, H, W)``, the loss plus ``sum(lam * regularizer(slices))`` with a regularizer; returns
    the best hard-rounded state, its loss and the checkpoint at ``keep_at``."""
    shape = tuple(target.shape)
    shapes = spec.grid_shapes(*shape)
    voxels = target.numel()
    latents = torch.cat([g.reshape(-1) for g in state.latents]).requires_grad_(True)
    tensors = [t.requires_grad_(True) for t in state.tensors]
    optimizer = torch.optim.Adam([{"params": [latents], "lr": config.lr_latent}, {"params": tensors, "lr": config.lr_network}])
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    generator = torch.Generator(device=target.device).manual_seed(config.seed + 1)
    if start is not None:
        optimizer.load_state_dict(copy.deepcopy(start.optimizer))
        generator.set_state(start.generator.clone())
    soft_steps = config.steps - config.ste_steps
    bound = spec.plane.latent_bound
    best, best_loss, kept = state.clone(), math.inf, None
    begin = start.step if start is not None else 0
    bar = progress_bar(total=config.steps - begin, desc="grid3d fit", unit="step") if progress else None
    for step in range(begin, config.steps):
        if bar is not None:
            bar.update(1)
        if step == keep_at:
            kept = SlabCheckpoint(step, VolumeState(split_latents(latents.detach().clone(), shapes), [p.detach().clone() for p in tensors]),
                                  copy.deepcopy(optimizer.state_dict()), generator.get_state())  # fmt: skip
        clamped = latents.clamp(-bound, bound)
        coded, synth_in = rounded_latents(clamped, step=step, soft_steps=soft_steps, config=config, optimizer=optimizer,
                                          base_lrs=base_lrs, generator=generator)  # fmt: skip
        recon = reconstruct(split_latents(synth_in, shapes), tensors, spec, shape)
        loss = torch.mean((recon[:, 0] - target) ** 2) + config.lambda_rd * latent_bits(coded, shapes, tensors, spec) / voxels
        if regularizer is not None:
            loss = loss + (lam * regularizer(recon)).sum()
        value = loss.item() if step >= soft_steps else math.inf
        if value < best_loss:
            best_loss = value
            best = VolumeState(split_latents(coded.detach().clone(), shapes), [p.detach().clone() for p in tensors])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if bar is not None:
        bar.close()
    if best_loss == math.inf:
        best = VolumeState(split_latents(torch.round(latents.detach().clamp(-bound, bound)), shapes), [p.detach().clone() for p in tensors])
    return best, best_loss, kept


def choose_network_steps(target: torch.Tensor, state: VolumeState, *, spec: Grid3dSpec, lambda_rd: float) -> QuantizedDecoder:
    """A step exponent per tensor by ``grid``'s greedy descent (:func:`sinco.codec.grid.quantizer.choose_network_steps`)
    on ``MSE + lambda_rd * bits / voxels``: entropy-model tensors scored on the latent rate, the others on the slab's
    distortion, each with its own exp-Golomb bits."""
    shape = tuple(target.shape)
    shapes = spec.grid_shapes(*shape)
    voxels = target.numel()
    latents = [g.cpu() for g in round_latents(state.latents, spec.plane.latent_bound)]
    values = torch.cat([g.reshape(-1) for g in latents])
    floats = [t.detach().cpu().float() for t in state.tensors]
    warm = load_warm_start(spec)
    n_arm = arm_tensor_count(spec.plane)
    exps = [8] * len(floats)
    target = target.cpu()

    def quantized(index: int, exponent: int) -> torch.Tensor:
        return torch.from_numpy(quantize_tensor(floats[index], exponent)).float() * 2.0**-exponent

    chosen = [quantized(i, e) for i, e in enumerate(exps)]

    def score(index: int, exponent: int) -> float:
        tensors = list(chosen)
        tensors[index] = quantized(index, exponent)
        own = 7 + best_order(coded_values(quantize_tensor(floats[index], exponent), index=index, exponent=exponent, warm=warm))[1]
        with torch.no_grad():
            if index < n_arm:
                term = lambda_rd * float(latent_bits(values, shapes, tensors, spec)) / voxels
            else:
                term = float(torch.mean((reconstruct(latents, tensors, spec, shape)[:, 0] - target) ** 2))
        return term + lambda_rd * own / voxels

    def settle(index: int, exponent: int) -> None:
        chosen[index] = quantized(index, exponent)

    descend_exponents(exps, score, chosen=settle)
    return QuantizedDecoder(tuple(quantize_tensor(t, e) for t, e in zip(floats, exps, strict=True)), tuple(exps))


def check_slab(target: torch.Tensor, spec: Grid3dSpec) -> None:
    """Refuse a slab that is not a finite ``(D, H, W)`` tensor in ``[0, 1]`` the spec can code.

    Raises:
        InputError: naming the problem.
    """
    if not isinstance(target, torch.Tensor) or target.dim() != 3:
        shape = tuple(target.shape) if isinstance(target, torch.Tensor) else type(target).__name__
        raise InputError(f"slab: expected a float tensor (D, H, W), got {shape}")
    if not torch.isfinite(target).all() or target.min() < 0 or target.max() > 1:
        raise InputError("slab: values must be finite and in [0, 1]")
    spec.validate_for(*target.shape)


def check_weights(lam: torch.Tensor | None, *, depth: int) -> torch.Tensor:
    """The regularizer's weights of a slab of ``depth`` slices as a float tensor ``(depth,)``.

    Raises:
        InputError: naming ``--lam`` unless they are ``depth`` finite values >= 0.
    """
    weights = None if lam is None else torch.as_tensor(lam, dtype=torch.float32)
    if weights is None or weights.shape != (depth,) or not torch.isfinite(weights).all() or (weights < 0).any():
        raise InputError(f"--lam: a regularizer on a slab of {depth} slices needs {depth} finite weights >= 0, got "
                         f"{None if weights is None else weights.tolist()}")  # fmt: skip
    return weights


def fit_slab(target: torch.Tensor, *, spec: Grid3dSpec, config: GridFitConfig, device: torch.device, progress: bool = False,
             branch_from: SlabCheckpoint | None = None, keep_checkpoint: bool = False, regularizer: Regularizer | None = None,
             lam: torch.Tensor | None = None) -> SlabFitResult:  # fmt: skip
    """Fit latent grids and a decoder to a slab, quantize, entropy-code, and decode the payload back.

    Args:
        target: ``(D, H, W)`` in ``[0, 1]``.
        spec: the decoder spec.
        config: the fit settings (``lambda_rd`` is the fit's rate weight).
        device: where to train (coding and decoding run on the CPU).
        progress: a progress bar.
        branch_from: resume this checkpoint's training with ``config``'s ``lambda_rd`` (a rate-search trial).
        keep_checkpoint: return the checkpoint at :func:`branch_step` of a fit from scratch.
        regularizer: maps the slab's reconstructions ``(D, 1, H, W)`` to values ``(D,)`` (the structural regularizer on
            its slices); gradients reach the latents and networks only.
        lam: ``(D,)`` weights of the regularizer's values in the loss (required with ``regularizer``).

    Returns:
        A :class:`SlabFitResult` whose reconstruction is the payload's decode.

    Raises:
        InputError: for a slab of the wrong shape or range, a geometry the spec cannot code, or weights that are not
            ``D`` finite values >= 0.
    """
    check_slab(target, spec)
    if regularizer is not None:
        lam = check_weights(lam, depth=target.shape[0]).to(device)
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    target = target.to(device=device, dtype=torch.float32)
    shape = tuple(target.shape)
    warm = load_warm_start(spec)
    if branch_from is None:
        tensors = warm.floats() if warm is not None else init_tensors(spec, torch.Generator().manual_seed(config.seed))
        state = VolumeState([torch.zeros(s, device=device) for s in spec.grid_shapes(*shape)], [t.to(device) for t in tensors])
    else:
        state = VolumeState([g.to(device) for g in branch_from.state.latents], [t.to(device) for t in branch_from.state.tensors]).clone()
    keep_at = branch_step(config) if keep_checkpoint and branch_from is None else None
    best, _, kept = _train(target, state, spec=spec, config=config, progress=progress, start=branch_from, keep_at=keep_at,
                           regularizer=regularizer, lam=lam)  # fmt: skip
    decoder = choose_network_steps(target, best, spec=spec, lambda_rd=config.lambda_rd)
    latents = [g.cpu().numpy().astype(np.int64) for g in round_latents(best.latents, spec.plane.latent_bound)]
    payload = build_payload(latents, decoder, spec)
    reconstruction = decode_slab(payload, spec=spec, shape=shape)
    mse = float(np.mean((reconstruction.astype(np.float64) - target.cpu().double().numpy()) ** 2))
    steps = config.steps - (branch_from.step if branch_from is not None else 0)
    return SlabFitResult(payload=payload, reconstruction=reconstruction, mse=mse, lambda_rd=config.lambda_rd,
                         network_bits=network_bits(decoder, warm=warm), steps=steps, seconds=time.perf_counter() - started, checkpoint=kept)  # fmt: skip
