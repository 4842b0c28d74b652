"""Training latent grids and their decoder on images (one fit at a fixed ``lambda_rd``), and encoding the result."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.forward import GridState, flatten_latents, latent_bits, reconstruct, split_latents
from sinco.codec.grid.networks import init_tensors
from sinco.codec.grid.payload import HEAD_BYTES, build_payload, synthesize
from sinco.codec.grid.quantizer import choose_network_steps, network_bits, round_latents, soft_round
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.warm_start import load_warm_start
from sinco.errors import InputError
from sinco.utils.progress import progress_bar

Regularizer = Callable[[torch.Tensor], torch.Tensor]
# Range-coder flush (up to two words) and the network block's byte padding, added to the estimate.
_CODER_OVERHEAD_BITS = 32 + 4


@dataclass
class TrainCheckpoint:
    """The training state at one step of the soft phase, from which rate-search trials branch.

    Args:
        step: the step the next update would be.
        state: the float parameters at that step.
        optimizer: Adam's state dict (moments), deep-copied.
        generator: the noise generator's state.
        candidate_seed: the seed of the candidate the fit went on with, where it chose among candidates.
    """

    step: int
    state: GridState
    optimizer: dict
    generator: torch.Tensor
    candidate_seed: int | None = None


@dataclass(frozen=True)
class GridFitResult:
    """One image's fit.

    Args:
        payload: the entropy-coded payload (quantized networks and latents).
        spec: the decoder spec.
        config: the fit settings (``lambda_rd`` the one used for this payload).
        reconstruction: the decoder's output ``(H, W)`` float32, exactly what ``decode_grid(payload)`` returns.
        estimated_bits: the model's estimate of the payload size (latent bits from the float entropy model,
            exact network bits, coder overhead).
        payload_bits: ``8 * len(payload)``.
        latent_bits_estimate: the latent part of ``estimated_bits``.
        network_bits: the bits of the quantized networks.
        loss: best training loss (hard-rounded latents).
        mse: MSE of ``reconstruction`` against the target.
        steps: optimization steps run for this result (all trials of a rate search).
        seconds: wall time of the fit(s).
        trials: fits run (1 unless from a rate search).
        network_rate_weight: the factor on ``lambda_rd`` with which the network step sizes were chosen (1; larger
            when the rate search coarsened the networks of a file slightly above its target to fit it).
        target_bpp: the rate target of a rate search, else None.
        within_band: for a rate search, whether the file landed within the band below the target (False: the
            file of least MSE within the target that the trials found, further below); None otherwise.
        residual_levels: the residual layer's lattice ``K`` (the image's own grey levels, or ``2^16``), None without one.
        residual_step: the residual layer's step in levels of that lattice, None without one.
        residual_bits: the bits the residual layer adds to the payload (0 without one).
        candidate_seed: the seed of the candidate the fit went on with (``config.candidates > 1``), else None.
        state: the float parameters of the result.
        checkpoint: the training state at ``config.branch_at`` of the soft phase, when asked for.
    """

    payload: bytes
    spec: GridSpec
    config: GridFitConfig
    reconstruction: np.ndarray
    estimated_bits: float
    payload_bits: int
    latent_bits_estimate: float
    network_bits: int
    loss: float
    mse: float
    steps: int
    seconds: float
    trials: int = 1
    network_rate_weight: float = 1.0
    target_bpp: float | None = None
    within_band: bool | None = None
    residual_levels: int | None = None
    residual_step: int | None = None
    residual_bits: int = 0
    candidate_seed: int | None = None
    state: GridState | None = field(default=None, repr=False, compare=False)
    checkpoint: TrainCheckpoint | None = field(default=None, repr=False, compare=False)

    def to_dict(self) -> dict:
        """JSON-ready figures and settings (no payload, no arrays)."""
        return {
            "payload_bytes": len(self.payload), "estimated_bits": self.estimated_bits, "payload_bits": self.payload_bits,
            "latent_bits_estimate": self.latent_bits_estimate, "network_bits": self.network_bits, "loss": self.loss,
            "mse": self.mse, "steps": self.steps, "seconds": self.seconds, "trials": self.trials,
            "network_rate_weight": self.network_rate_weight, "residual_levels": self.residual_levels,
            "residual_step": self.residual_step, "residual_bits": self.residual_bits, "candidate_seed": self.candidate_seed,
            "target_bpp": self.target_bpp, "within_band": self.within_band, "config": self.config.to_dict(), "spec": asdict(self.spec),
        }  # fmt: skip


def _init_state(spec: GridSpec, shape: tuple[int, int], seed: int, device: torch.device) -> GridState:
    """Zero latents and the decoder's starting weights: the spec's warm start, or a random draw from ``seed``."""
    latents = [torch.zeros(s, device=device) for s in spec.grid_shapes(*shape)]
    warm = load_warm_start(spec)
    tensors = warm.floats() if warm is not None else init_tensors(spec, torch.Generator().manual_seed(seed))
    return GridState(latents, [t.to(device) for t in tensors])


# ---------------------------------------------------------------------------------------------- training
@dataclass
class _TrainOutcome:
    """What :func:`_train` returns: the best hard-rounded state and its loss (``inf`` and the last parameters, rounded,
    when no straight-through step ran), the checkpoint asked for (or None), and, when it stopped early (``stop_at``),
    the mean training loss of its last :data:`_RECENT_STEPS` steps (what candidates are compared on; else nan)."""

    best: GridState
    best_loss: float
    kept: TrainCheckpoint | None
    recent_loss: float


#: Steps whose mean training loss ranks the candidates of a fit (:func:`_best_candidate`).
_RECENT_STEPS = 100


def rounded_latents(clamped: torch.Tensor, *, step: int, soft_steps: int, config: GridFitConfig, optimizer: torch.optim.Optimizer,
                    base_lrs: Sequence[float], generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """The latents of one training step, ``(coded, synthesis input)``, and the step's learning rates.

    In the soft phase (``step < soft_steps``): soft rounding at a temperature annealed along ``config.temperature``
    plus uniform noise of ``config.noise``, the learning rates on a cosine from ``base_lrs`` down to 5%. After it:
    straight-through rounding, at ``config.lr_ste`` from its first step. The schedule of ``grid`` and ``grid3d``.
    """
    if step < soft_steps:
        frac = step / max(soft_steps, 1)
        temperature = config.temperature[0] + (config.temperature[1] - config.temperature[0]) * frac
        for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
            group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
        noise = torch.rand(clamped.shape, generator=generator, device=clamped.device) - 0.5
        coded = soft_round(clamped, temperature) + config.noise * noise
        return coded, soft_round(coded, temperature)
    if step == soft_steps:
        for group in optimizer.param_groups:
            group["lr"] = config.lr_ste
    coded = clamped + (torch.round(clamped) - clamped).detach()
    return coded, coded


def _train(
    target: torch.Tensor, state: GridState, *, spec: GridSpec, config: GridFitConfig, regularizer: Regularizer | None,
    lam: float, progress: bool, start: TrainCheckpoint | None = None, keep_at: int | None = None, stop_at: int | None = None,
) -> _TrainOutcome:  # fmt: skip
    """Optimize ``state``'s parameters (its network tensors in place, its latents as one flat copy) from step 0, or
    from ``start`` (whose parameters ``state`` holds), up to the end of the schedule or to ``stop_at``; with
    ``stop_at``, the checkpoint returned is the one there (training resumes from it as it would have gone on).
    """
    steps, ste_steps = config.steps, config.ste_steps
    end = steps if stop_at is None else stop_at
    shape = tuple(target.shape)
    shapes = spec.grid_shapes(*shape)
    pixels = target.numel()
    # All grids as one flat parameter: one elementwise kernel per operation instead of one per grid (the GPU's
    # step is bound by kernel launches).
    latents = flatten_latents(state.latents).requires_grad_(True)
    tensors = [t.requires_grad_(True) for t in state.tensors]
    optimizer = torch.optim.Adam(
        [{"params": [latents], "lr": config.lr_latent}, {"params": tensors, "lr": config.lr_network}], fused=True
    )
    base_lrs = [g["lr"] for g in optimizer.param_groups]
    generator = torch.Generator(device=target.device).manual_seed(config.seed + 1)
    if start is not None:
        optimizer.load_state_dict(copy.deepcopy(start.optimizer))
        generator.set_state(start.generator.clone())
    soft_steps = steps - ste_steps
    bound = spec.latent_bound
    best, best_loss, kept = state.clone(), math.inf, None
    begin = start.step if start is not None else 0
    recent = torch.zeros((), device=target.device)  # summed on the device: no read-back in the soft phase
    bar = progress_bar(total=end - begin, desc="grid fit", unit="step") if progress else None
    for step in range(begin, end):
        if bar is not None:
            bar.update(1)
        if step == keep_at:
            kept = _checkpoint(step, latents, tensors, optimizer, generator, shapes)
        clamped = latents.clamp(-bound, bound)
        coded, synth_in = rounded_latents(clamped, step=step, soft_steps=soft_steps, config=config, optimizer=optimizer,
                                          base_lrs=base_lrs, generator=generator)  # fmt: skip
        recon = reconstruct(split_latents(synth_in, shapes), tensors, spec, shape)
        mse = torch.mean((recon[0, 0] - target) ** 2)
        loss = mse + config.lambda_rd * latent_bits(coded, shapes, tensors, spec) / pixels
        if regularizer is not None and lam:
            loss = loss + lam * regularizer(recon).sum()
        if stop_at is not None and step >= end - _RECENT_STEPS:  # only a candidate's loss is compared
            recent += loss.detach()
        value = loss.item() if step >= soft_steps else math.inf  # one device read-back a straight-through step
        if value < best_loss:
            # Snapshot before the update: these are the parameters the loss was measured on.
            best_loss = value
            best = GridState(split_latents(coded.detach().clone(), shapes), [p.detach().clone() for p in tensors])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if stop_at is not None:  # the state before step stop_at, from which the schedule resumes
        kept = _checkpoint(stop_at, latents, tensors, optimizer, generator, shapes)
    if best_loss == math.inf:  # no straight-through step: keep the final parameters
        best = GridState(split_latents(torch.round(latents.detach().clamp(-bound, bound)), shapes), [p.detach().clone() for p in tensors])
    for t in tensors:
        t.requires_grad_(False)
    ran = min(_RECENT_STEPS, end - begin) if stop_at is not None else 0
    return _TrainOutcome(best, best_loss, kept, recent_loss=float(recent) / ran if ran > 0 else math.nan)


def _checkpoint(
    step: int, latents: torch.Tensor, tensors: list[torch.Tensor], optimizer: torch.optim.Optimizer, generator: torch.Generator,
    shapes: list[tuple[int, int]],
) -> TrainCheckpoint:  # fmt: skip
    state = GridState(split_latents(latents.detach().clone(), shapes), [p.detach().clone() for p in tensors])
    return TrainCheckpoint(step, state, copy.deepcopy(optimizer.state_dict()), generator.get_state())


def _best_candidate(
    target: torch.Tensor, *, spec: GridSpec, config: GridFitConfig, regularizer: Regularizer | None, lam: float, progress: bool,
) -> tuple[TrainCheckpoint, int]:  # fmt: skip
    """Train ``config.candidates`` fits from scratch (seeds ``config.seed + c``) for ``config.candidate_steps`` steps of
    the schedule and return the checkpoint of the one with the least mean training loss over its last steps, and
    its seed.

    Fits of one image from different seeds end far apart (BraTS s85, ``quality``, lambda_rd 3e-3: 36.4-37.5 dB at
    0.213-0.230 bpp over six seeds), and the order of their losses after a few hundred steps is, nearly, the order of
    their final files (docs/grid-codec.md), as Cool-chic's encoder uses in its warm-up.
    """
    best: tuple[float, TrainCheckpoint, int] | None = None
    for c in range(config.candidates):
        seed = config.seed + c
        state = _init_state(spec, tuple(target.shape), seed, target.device)
        outcome = _train(target, state, spec=spec, config=replace(config, seed=seed), regularizer=regularizer, lam=lam,
                         progress=progress, stop_at=config.candidate_steps)  # fmt: skip
        if best is None or outcome.recent_loss < best[0]:
            best = (outcome.recent_loss, outcome.kept, seed)
    assert best is not None and best[1] is not None
    return best[1], best[2]


# ------------------------------------------------------------------------------------------------ encoding
def encode_state(
    target: torch.Tensor, best: GridState, *, spec: GridSpec, config: GridFitConfig, loss: float, steps: int, started: float,
    network_rate_weight: float = 1.0,
) -> GridFitResult:  # fmt: skip
    warm = load_warm_start(spec)
    decoder, latent_estimate = choose_network_steps(target, best, spec=spec, lambda_rd=config.lambda_rd * network_rate_weight, warm=warm)
    latents = [g.cpu().numpy().astype(np.int64) for g in round_latents(best.latents, spec.latent_bound)]
    payload = build_payload(latents, decoder, spec)
    height, width = target.shape
    reconstruction = synthesize(latents, decoder, spec, height, width)
    net_bits = network_bits(decoder, warm=warm)
    estimated = latent_estimate + net_bits + 8 * HEAD_BYTES + _CODER_OVERHEAD_BITS
    mse = float(np.mean((reconstruction.astype(np.float64) - target.cpu().double().numpy()) ** 2))
    return GridFitResult(
        payload=payload, spec=spec, config=config, reconstruction=reconstruction, estimated_bits=estimated,
        payload_bits=8 * len(payload), latent_bits_estimate=latent_estimate, network_bits=net_bits, loss=loss, mse=mse,
        steps=steps, seconds=time.perf_counter() - started, network_rate_weight=network_rate_weight, state=best,
    )  # fmt: skip


# ---------------------------------------------------------------------------------------------- public
def check_targets(targets: torch.Tensor, spec: GridSpec, lam: torch.Tensor | None) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 3 or targets.shape[0] < 1:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise InputError(f"targets: expected a float tensor (S, H, W) with S >= 1, got {shape}")
    if not torch.isfinite(targets).all() or targets.min() < 0 or targets.max() > 1:
        raise InputError("targets: values must be finite and in [0, 1]")
    spec.validate_for(targets.shape[1], targets.shape[2])
    if lam is not None and (lam.shape != (targets.shape[0],) or not torch.isfinite(lam).all() or (lam < 0).any()):
        raise InputError(f"--lam: expected {targets.shape[0]} finite values >= 0, got {lam.tolist()}")


def per_image(regularizer: Regularizer | None, index: int, count: int) -> Regularizer | None:
    if regularizer is None or count == 1:
        return regularizer
    if not hasattr(regularizer, "subset"):
        raise InputError("regularizer: several images need a regularizer with subset(index) (StructuralRegularizer)")
    return regularizer.subset(index)


def fit_grid(
    targets: torch.Tensor, *, spec: GridSpec, config: GridFitConfig, device: torch.device,
    regularizer: Regularizer | None = None, lam: torch.Tensor | None = None, progress: bool = False,
    branch_from: list[TrainCheckpoint] | None = None, keep_checkpoint: bool = False,
) -> list[GridFitResult]:  # fmt: skip
    """Fit latent grids and a decoder to each image, quantize, and entropy-code them.

    Args:
        targets: float32 ``(S, H, W)`` in ``[0, 1]``; one independent fit per image.
        spec: the decoder spec.
        config: the fit settings.
        device: where to train (the payload and reconstruction are computed on the CPU).
        regularizer: maps reconstructions ``(S, 1, H, W)`` to values ``(S,)``; gradients reach the latents and
            networks only (the project's ``StructuralRegularizer`` freezes its U-Net).
        lam: ``(S,)`` regularizer weights (required with ``regularizer``).
        progress: show a progress bar.
        branch_from: optional checkpoints per image: each fit resumes there (same schedule, this ``config``'s
            ``lambda_rd``) instead of starting from scratch; what the rate search's later trials do.
        keep_checkpoint: return each fit from scratch with its checkpoint at ``config.branch_at`` of its soft phase.

    Returns:
        One :class:`GridFitResult` per image.

    Raises:
        InputError: on targets of the wrong shape or range, a geometry the spec cannot code, or bad ``lam``.
    """
    check_targets(targets, spec, lam)
    if regularizer is not None and lam is None:
        raise InputError("--lam: a regularizer needs its weights")
    results = []
    for index in range(targets.shape[0]):
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        target = targets[index].to(device=device, dtype=torch.float32)
        image_regularizer = per_image(regularizer, index, targets.shape[0])
        image_lam = float(lam[index]) if lam is not None else 0.0
        start = branch_from[index] if branch_from is not None else None
        fresh, steps = start is None, 0
        seed = None if start is None else start.candidate_seed
        # Candidates differ by their random starting weights: from a warm start they would all begin alike.
        if fresh and config.candidates > 1 and not spec.warm_start:
            start, seed = _best_candidate(target, spec=spec, config=config, regularizer=image_regularizer, lam=image_lam,
                                          progress=progress)  # fmt: skip
            steps = config.candidates * config.candidate_steps
        if start is None:
            state = _init_state(spec, tuple(target.shape), config.seed, device)
        else:
            state = GridState([g.to(device) for g in start.state.latents], [t.to(device) for t in start.state.tensors]).clone()
        outcome = _train(
            target, state, spec=spec, config=config, regularizer=image_regularizer, lam=image_lam, progress=progress,
            start=start, keep_at=branch_step(config) if keep_checkpoint and fresh else None,
        )  # fmt: skip
        steps += config.steps - (start.step if start is not None else 0)
        result = encode_state(target, outcome.best, spec=spec, config=config, loss=outcome.best_loss, steps=steps, started=started)
        kept = replace(outcome.kept, candidate_seed=seed) if outcome.kept is not None else None
        results.append(replace(result, checkpoint=kept, candidate_seed=seed))
    return results


def branch_step(config: GridFitConfig) -> int:
    """The step at which rate-search trials branch: ``config.branch_at`` of the soft phase."""
    return int(round(config.branch_at * (config.steps - config.ste_steps)))




def train_warm_start(
    images: Sequence[np.ndarray], *, spec: GridSpec, config: GridFitConfig, lambdas: Sequence[float], step_size: float = 1.0,
    device: torch.device, progress: bool = False,
) -> list[torch.Tensor]:  # fmt: skip
    """Decoder weights fitted to several images one after another: a warm start (:mod:`sinco.codec.grid.warm_start`).

    Each image is fitted with fresh zero latents from the current weights, with ``config`` at the next of
    ``lambdas`` (cycled, so the weights serve several rates); the current weights then move ``step_size`` of the
    way to the fitted ones (1: sequential fine-tuning; below 1: Reptile's interpolation).

    Args:
        images: ``(H, W)`` arrays in ``[0, 1]`` (any sizes).
        spec: the decoder spec, ``warm_start`` 0 (the first image starts from a random draw from ``config.seed``).
        config: the fit of each image.
        lambdas: the rate weights, one per image, cycled.
        step_size: in ``(0, 1]``.
        device: where to fit.
        progress: progress bars.

    Returns:
        The float decoder tensors.

    Raises:
        InputError: for a spec that names a warm start, no images or lambdas, or a step size outside ``(0, 1]``.
    """
    if spec.warm_start or not images or not lambdas or not 0 < step_size <= 1:
        raise InputError(f"train_warm_start: needs a spec without a warm start, images, lambdas and 0 < step_size <= 1 (got "
                         f"warm_start {spec.warm_start}, {len(images)} images, {len(lambdas)} lambdas, step_size {step_size})")  # fmt: skip
    current: list[torch.Tensor] | None = None
    for index, image in enumerate(images):
        target = torch.from_numpy(np.asarray(image, dtype=np.float32)).to(device)
        check_targets(target[None], spec, None)
        state = _init_state(spec, tuple(target.shape), config.seed, device)
        if current is not None:
            state = GridState(state.latents, [t.clone() for t in current])
        image_config = replace(config, lambda_rd=float(lambdas[index % len(lambdas)]))
        outcome = _train(target, state, spec=spec, config=image_config, regularizer=None, lam=0.0, progress=progress)
        fitted = [t.detach() for t in outcome.best.tensors]
        current = fitted if current is None else [c + step_size * (f - c) for c, f in zip(current, fitted, strict=True)]
    assert current is not None
    return [t.cpu() for t in current]
