"""Fitting latent grids and their decoder to images, and the rate search."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace

import numpy as np
import torch

from sinco.codec.grid import payload as payload_io
from sinco.codec.grid import residual
from sinco.codec.grid.config import FAST_RATE_PRIOR, GridFitConfig
from sinco.codec.grid.entropy import flat_contexts, laplace_bits, mean_log2_scale
from sinco.codec.grid.networks import (
    arm_tensor_count,
    init_tensors,
    run_arm,
    run_synthesis,
    split_tensors,
    upsampling_tensor_count,
)
from sinco.codec.grid.numerics import MAX_EXPONENT, upsample_grids
from sinco.codec.grid.payload import HEAD_BYTES, QuantizedDecoder, build_payload, network_bits, quantize_tensor, synthesize
from sinco.codec.grid.spec import GridSpec
from sinco.errors import InputError, RateUnreachableError

Regularizer = Callable[[torch.Tensor], torch.Tensor]
# Range-coder flush (up to two words) and the network block's byte padding, added to the estimate.
_CODER_OVERHEAD_BITS = 32 + 4


@dataclass
class GridState:
    """Float parameters of a fit: latents ``(h_l, w_l)`` finest first and the network tensors."""

    latents: list[torch.Tensor]
    tensors: list[torch.Tensor]

    def clone(self) -> GridState:
        """A detached copy."""
        return GridState([t.detach().clone() for t in self.latents], [t.detach().clone() for t in self.tensors])


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
        payload: the entropy-coded payload (quantised networks and latents).
        spec: the decoder spec.
        config: the fit settings (``lambda_rd`` the one used for this payload).
        reconstruction: the decoder's output ``(H, W)`` float32, exactly what ``decode_grid(payload)`` returns.
        estimated_bits: the model's estimate of the payload size (latent bits from the float entropy model,
            exact network bits, coder overhead).
        payload_bits: ``8 * len(payload)``.
        latent_bits_estimate: the latent part of ``estimated_bits``.
        network_bits: the bits of the quantised networks.
        loss: best training loss (hard-rounded latents).
        mse: MSE of ``reconstruction`` against the target.
        steps: optimisation steps run for this result (all trials of a rate search).
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


# ---------------------------------------------------------------------------------------------- pieces
def soft_round(x: torch.Tensor, temperature: float) -> torch.Tensor:
    """Differentiable rounding (Agustsson & Theis 2020): identity as temperature grows, rounding as it shrinks."""
    floor = torch.floor(x)
    alpha = 1.0 / temperature
    return floor + 0.5 + torch.tanh(alpha * (x - floor - 0.5)) / (2.0 * math.tanh(alpha / 2.0))


def _reconstruct(latents: list[torch.Tensor], tensors: list[torch.Tensor], spec: GridSpec, shape: tuple[int, int]) -> torch.Tensor:
    gain = 2.0**-spec.input_shift
    _, synthesis, upsampling = split_tensors(tensors, spec)
    planes = upsample_grids([g[None, None] * gain for g in latents], spec.grid_shapes(*shape), exact=False, deltas=upsampling or None)
    out = run_synthesis(synthesis, planes, spec, exact=False)
    # Clamp with a straight-through gradient: a plain clamp would leave pixels that start below 0 without gradient.
    return out + (out.clamp(0.0, 1.0) - out).detach()


def _latent_bits(values: torch.Tensor, shapes: list[tuple[int, int]], tensors: list[torch.Tensor], spec: GridSpec) -> torch.Tensor:
    """Estimated bits of the latents ``values (N,)``: the grids of ``shapes`` flattened, finest first."""
    contexts = flat_contexts(values, shapes, spec)
    mean, log2_scale = mean_log2_scale(run_arm(tensors[: arm_tensor_count(spec)], contexts, exact=False), spec.latent_bound)
    return laplace_bits(values, mean, log2_scale).sum()


def _flat(latents: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([g.reshape(-1) for g in latents])


def _unflat(values: torch.Tensor, shapes: list[tuple[int, int]]) -> list[torch.Tensor]:
    return [part.view(shape) for part, shape in zip(values.split([h * w for h, w in shapes]), shapes, strict=True)]


def _hard(latents: list[torch.Tensor], bound: int) -> list[torch.Tensor]:
    return [torch.round(g.detach().clamp(-bound, bound)) for g in latents]


def _init_state(spec: GridSpec, shape: tuple[int, int], seed: int, device: torch.device) -> GridState:
    generator = torch.Generator().manual_seed(seed)
    latents = [torch.zeros(s, device=device) for s in spec.grid_shapes(*shape)]
    return GridState(latents, [t.to(device) for t in init_tensors(spec, generator)])


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


def _train(
    target: torch.Tensor, state: GridState, *, spec: GridSpec, config: GridFitConfig, regularizer: Regularizer | None,
    lam: float, progress: bool, start: TrainCheckpoint | None = None, keep_at: int | None = None, stop_at: int | None = None,
) -> _TrainOutcome:  # fmt: skip
    """Optimise ``state``'s parameters (its network tensors in place, its latents as one flat copy) from step 0, or
    from ``start`` (whose parameters ``state`` holds), up to the end of the schedule or to ``stop_at``; with
    ``stop_at``, the checkpoint returned is the one there (training resumes from it as it would have gone on).
    """
    steps, ste_steps, temperature = config.steps, config.ste_steps, config.temperature
    end = steps if stop_at is None else stop_at
    shape = tuple(target.shape)
    shapes = spec.grid_shapes(*shape)
    pixels = target.numel()
    # All grids as one flat parameter: one elementwise kernel per operation instead of one per grid (the GPU's
    # step is bound by kernel launches).
    latents = _flat(state.latents).requires_grad_(True)
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
    iterator = range(begin, end)
    if progress:
        from tqdm import tqdm

        iterator = tqdm(iterator, desc="grid fit", leave=False)
    for step in iterator:
        if step == keep_at:
            kept = _checkpoint(step, latents, tensors, optimizer, generator, shapes)
        clamped = latents.clamp(-bound, bound)
        if step < soft_steps:
            frac = step / max(soft_steps, 1)
            t = temperature[0] + (temperature[1] - temperature[0]) * frac
            for group, lr in zip(optimizer.param_groups, base_lrs, strict=True):
                group["lr"] = lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * frac)))
            noise = torch.rand(clamped.shape, generator=generator, device=clamped.device) - 0.5
            coded = soft_round(clamped, t) + config.noise * noise
            synth_in = soft_round(coded, t)
        else:
            if step == soft_steps:
                for group in optimizer.param_groups:
                    group["lr"] = config.lr_ste
            coded = clamped + (torch.round(clamped) - clamped).detach()
            synth_in = coded
        recon = _reconstruct(_unflat(synth_in, shapes), tensors, spec, shape)
        mse = torch.mean((recon[0, 0] - target) ** 2)
        loss = mse + config.lambda_rd * _latent_bits(coded, shapes, tensors, spec) / pixels
        if regularizer is not None and lam:
            loss = loss + lam * regularizer(recon).sum()
        if stop_at is not None and step >= end - _RECENT_STEPS:  # only a candidate's loss is compared
            recent += loss.detach()
        value = loss.item() if step >= soft_steps else math.inf  # one device read-back a straight-through step
        if value < best_loss:
            # Snapshot before the update: these are the parameters the loss was measured on.
            best_loss = value
            best = GridState(_unflat(coded.detach().clone(), shapes), [p.detach().clone() for p in tensors])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if stop_at is not None:  # the state before step stop_at, from which the schedule resumes
        kept = _checkpoint(stop_at, latents, tensors, optimizer, generator, shapes)
    if best_loss == math.inf:  # no straight-through step: keep the final parameters
        best = GridState(_unflat(torch.round(latents.detach().clamp(-bound, bound)), shapes), [p.detach().clone() for p in tensors])
    for t in tensors:
        t.requires_grad_(False)
    ran = min(_RECENT_STEPS, end - begin) if stop_at is not None else 0
    return _TrainOutcome(best, best_loss, kept, recent_loss=float(recent) / ran if ran > 0 else math.nan)


def _checkpoint(
    step: int, latents: torch.Tensor, tensors: list[torch.Tensor], optimizer: torch.optim.Optimizer, generator: torch.Generator,
    shapes: list[tuple[int, int]],
) -> TrainCheckpoint:  # fmt: skip
    state = GridState(_unflat(latents.detach().clone(), shapes), [p.detach().clone() for p in tensors])
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


# ------------------------------------------------------------------------------------------ quantisation
def _quantize_networks(
    target: torch.Tensor, state: GridState, *, spec: GridSpec, lambda_rd: float
) -> tuple[QuantizedDecoder, float]:
    """Choose a step exponent per tensor by a greedy descent on ``MSE + lambda_rd * bits / pixels``.

    Entropy-model tensors change only the latent rate, synthesis and upsampling tensors only the distortion, so
    each is scored on its own term (plus its own exact exp-Golomb bits). Returns the decoder and the latent-bit
    estimate.
    """
    pixels = target.numel()
    shape = tuple(target.shape)
    latents = [g.cpu() for g in _hard(state.latents, spec.latent_bound)]
    floats = [t.detach().cpu().float() for t in state.tensors]
    n_arm = arm_tensor_count(spec)
    exps = [8] * len(floats)
    target = target.cpu()
    shapes = spec.grid_shapes(*shape)
    values = _flat(latents)
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
        bits = QuantizedDecoder((quantize_tensor(floats[index], exponent),), (exponent,))
        own = network_bits(bits)
        with torch.no_grad():
            if index < n_arm:
                term = lambda_rd * float(_latent_bits(values, shapes, tensors, spec)) / pixels
            else:
                # The upsampling stages come last: the synthesis tensors are scored on planes upsampled with the
                # stages at their starting step (2^-8).
                grid_planes = planes_of(tensors) if index >= first_upsampling else planes
                recon = run_synthesis(tensors[n_arm:first_upsampling], grid_planes, spec, exact=False).clamp(0.0, 1.0)
                term = float(torch.mean((recon[0, 0] - target) ** 2))
        return term + lambda_rd * own / pixels

    planes = planes_of(current(0, exps[0]))
    for index in range(len(floats)):
        best_e, best = exps[index], score(index, exps[index])
        for direction in (-1, 1):
            e = best_e + direction
            while 0 <= e <= MAX_EXPONENT:
                value = score(index, e)
                if value >= best:
                    break
                best_e, best = e, value
                e += direction
        exps[index] = best_e
    decoder = QuantizedDecoder(tuple(quantize_tensor(t, e) for t, e in zip(floats, exps, strict=True)), tuple(exps))
    with torch.no_grad():
        estimate = float(_latent_bits(values, shapes, current(0, exps[0]), spec))
    return decoder, estimate


def _finish(
    target: torch.Tensor, best: GridState, *, spec: GridSpec, config: GridFitConfig, loss: float, steps: int, started: float,
    network_rate_weight: float = 1.0,
) -> GridFitResult:  # fmt: skip
    decoder, latent_estimate = _quantize_networks(target, best, spec=spec, lambda_rd=config.lambda_rd * network_rate_weight)
    latents = [g.cpu().numpy().astype(np.int64) for g in _hard(best.latents, spec.latent_bound)]
    payload = build_payload(latents, decoder, spec)
    height, width = target.shape
    reconstruction = synthesize(latents, decoder, spec, height, width)
    net_bits = network_bits(decoder)
    estimated = latent_estimate + net_bits + 8 * HEAD_BYTES + _CODER_OVERHEAD_BITS
    mse = float(np.mean((reconstruction.astype(np.float64) - target.cpu().double().numpy()) ** 2))
    return GridFitResult(
        payload=payload, spec=spec, config=config, reconstruction=reconstruction, estimated_bits=estimated,
        payload_bits=8 * len(payload), latent_bits_estimate=latent_estimate, network_bits=net_bits, loss=loss, mse=mse,
        steps=steps, seconds=time.perf_counter() - started, network_rate_weight=network_rate_weight, state=best,
    )  # fmt: skip


#: Factors on lambda_rd tried, in order, to coarsen the networks of a file slightly above its target (wide: at the
#: tiny lambdas of high rates, x16 left a demo slice 2.6% above 1.2 bpp).
_TRIM_WEIGHTS = (4.0, 16.0, 64.0, 256.0, 1024.0, 4096.0)
#: Factor on the next lambda of a rescue trial (one beyond ``max_rate_trials``, when every trial was too big).
_RESCUE_FACTOR = 4.0
#: Bisection steps between the last weight too small and the first that fits.
_TRIM_BISECTIONS = 3
#: Files at most this fraction above the target are worth trimming (the networks are 10-35% of a file).
_TRIM_REACH = 0.10


def _trim_to_budget(target: torch.Tensor, result: GridFitResult, *, budget_bits: float, header_bytes: int) -> GridFitResult | None:
    """The same latents with coarser network weights (step sizes chosen with a larger rate weight), if that
    brings the file within ``budget_bits``; None otherwise. The weight is the smallest that fits among
    :data:`_TRIM_WEIGHTS`, then narrowed by bisection in log scale (the less coarse, the less distortion).
    Costs a quantisation and a coding per weight tried."""
    if result.state is None or result.payload_bits + 8 * header_bytes > (1 + _TRIM_REACH) * budget_bits:
        return None

    def trimmed(weight: float) -> GridFitResult | None:
        candidate = _finish(target, result.state, spec=result.spec, config=result.config, loss=result.loss, steps=0,
                            started=time.perf_counter(), network_rate_weight=weight)  # fmt: skip
        fits = candidate.payload_bits + 8 * header_bytes <= budget_bits
        return replace(candidate, candidate_seed=result.candidate_seed) if fits else None

    low, found = 1.0, None
    for weight in _TRIM_WEIGHTS:
        found = trimmed(weight)
        if found is not None:
            break
        low = weight
    for _ in range(_TRIM_BISECTIONS if found is not None else 0):
        middle = math.sqrt(low * found.network_rate_weight)
        candidate = trimmed(middle)
        low, found = (low, candidate) if candidate is not None else (middle, found)
    return found


# ---------------------------------------------------------------------------------------------- public
def _check_targets(targets: torch.Tensor, spec: GridSpec, lam: torch.Tensor | None) -> None:
    if not isinstance(targets, torch.Tensor) or targets.dim() != 3 or targets.shape[0] < 1:
        shape = tuple(targets.shape) if isinstance(targets, torch.Tensor) else type(targets).__name__
        raise InputError(f"targets: expected a float tensor (S, H, W) with S >= 1, got {shape}")
    if not torch.isfinite(targets).all() or targets.min() < 0 or targets.max() > 1:
        raise InputError("targets: values must be finite and in [0, 1]")
    spec.validate_for(targets.shape[1], targets.shape[2])
    if lam is not None and (lam.shape != (targets.shape[0],) or not torch.isfinite(lam).all() or (lam < 0).any()):
        raise InputError(f"--lam: expected {targets.shape[0]} finite values >= 0, got {lam.tolist()}")


def _per_image(regularizer: Regularizer | None, index: int, count: int) -> Regularizer | None:
    if regularizer is None or count == 1:
        return regularizer
    if not hasattr(regularizer, "subset"):
        raise InputError("regularizer: several images need a regulariser with subset(index) (StructuralRegularizer)")
    return regularizer.subset(index)


def fit_grid(
    targets: torch.Tensor, *, spec: GridSpec, config: GridFitConfig, device: torch.device,
    regularizer: Regularizer | None = None, lam: torch.Tensor | None = None, progress: bool = False,
    branch_from: list[TrainCheckpoint] | None = None, keep_checkpoint: bool = False,
) -> list[GridFitResult]:  # fmt: skip
    """Fit latent grids and a decoder to each image, quantise, and entropy-code them.

    Args:
        targets: float32 ``(S, H, W)`` in ``[0, 1]``; one independent fit per image.
        spec: the decoder spec.
        config: the fit settings.
        device: where to train (the payload and reconstruction are computed on the CPU).
        regularizer: maps reconstructions ``(S, 1, H, W)`` to values ``(S,)``; gradients reach the latents and
            networks only (the project's ``StructuralRegularizer`` freezes its U-Net).
        lam: ``(S,)`` regulariser weights (required with ``regularizer``).
        progress: show a progress bar.
        branch_from: optional checkpoints per image: each fit resumes there (same schedule, this ``config``'s
            ``lambda_rd``) instead of starting from scratch; what the rate search's later trials do.
        keep_checkpoint: return each fit from scratch with its checkpoint at ``config.branch_at`` of its soft phase.

    Returns:
        One :class:`GridFitResult` per image.

    Raises:
        InputError: on targets of the wrong shape or range, a geometry the spec cannot code, or bad ``lam``.
    """
    _check_targets(targets, spec, lam)
    if regularizer is not None and lam is None:
        raise InputError("--lam: a regulariser needs its weights")
    results = []
    for index in range(targets.shape[0]):
        started = time.perf_counter()
        torch.manual_seed(config.seed)
        target = targets[index].to(device=device, dtype=torch.float32)
        image_regularizer = _per_image(regularizer, index, targets.shape[0])
        image_lam = float(lam[index]) if lam is not None else 0.0
        start = branch_from[index] if branch_from is not None else None
        fresh, steps = start is None, 0
        seed = None if start is None else start.candidate_seed
        if fresh and config.candidates > 1:
            start, seed = _best_candidate(target, spec=spec, config=config, regularizer=image_regularizer, lam=image_lam,
                                          progress=progress)  # fmt: skip
            steps = config.candidates * config.candidate_steps
        if start is None:
            state = _init_state(spec, tuple(target.shape), config.seed, device)
        else:
            state = GridState([g.to(device) for g in start.state.latents], [t.to(device) for t in start.state.tensors]).clone()
        outcome = _train(
            target, state, spec=spec, config=config, regularizer=image_regularizer, lam=image_lam, progress=progress,
            start=start, keep_at=_branch_step(config) if keep_checkpoint and fresh else None,
        )  # fmt: skip
        steps += config.steps - (start.step if start is not None else 0)
        result = _finish(target, outcome.best, spec=spec, config=config, loss=outcome.best_loss, steps=steps, started=started)
        kept = replace(outcome.kept, candidate_seed=seed) if outcome.kept is not None else None
        results.append(replace(result, checkpoint=kept, candidate_seed=seed))
    return results


def _branch_step(config: GridFitConfig) -> int:
    """The step at which rate-search trials branch: ``config.branch_at`` of the soft phase."""
    return int(round(config.branch_at * (config.steps - config.ste_steps)))


def _next_lambda(
    lam: float, bits: float, fits: tuple[float, float] | None, too_big: tuple[float, float] | None, *, aim: float,
    previous: tuple[float, float] | None = None, bisect: bool = False,
) -> float:  # fmt: skip
    """Next lambda_rd of the rate search: interpolate log(bits) against log(lambda) inside a bracket, else jump.

    With ``bisect`` (the last two trials fell on the same side of the target) the bracket is halved in log(lambda)
    instead: a secant on a curved rate-lambda relation moves one end only, a little each time (an LGG slice at
    2 bpp: 2.36, 2.24, 2.13 bpp from a bracket of 0.99 to 2.36).

    Outside a bracket, the jump follows the slope of log(bits) against log(lambda) measured between ``previous``
    and this trial (kept within -2 .. -0.05: the rate of a fit at high rates barely moves with lambda), or a
    slope of -1/5 before two trials (what branches at 0.6 of the soft phase showed on a BraTS slice); a factor of at most 64 per jump.
    """
    lam = max(lam, 1e-9)
    if fits is not None and too_big is not None:
        (l_fit, b_fit), (l_big, b_big) = fits, too_big
        if bisect or b_big <= b_fit or l_fit <= l_big:
            return math.sqrt(l_fit * l_big)
        # Secant in log-log space, kept inside the middle 80% of the bracket so the bracket always shrinks.
        t = (math.log(b_big) - math.log(aim)) / (math.log(b_big) - math.log(b_fit))
        t = min(max(t, 0.1), 0.9)
        return math.exp(math.log(l_big) + t * (math.log(l_fit) - math.log(l_big)))
    slope = -0.2
    if previous is not None and previous[0] > 0 and previous[0] != lam and previous[1] > 0:
        slope = (math.log(bits) - math.log(previous[1])) / (math.log(lam) - math.log(previous[0]))
        slope = min(max(slope, -2.0), -0.05)
    return lam * min(max(math.exp((math.log(aim) - math.log(bits)) / slope), 1 / 64), 64)


def first_lambda(image: torch.Tensor, *, target_bpp: float, config: GridFitConfig) -> float:
    """The rate search's first ``lambda_rd`` for ``image (H, W)``: ``config.prior_slope_factor`` times JPEG 2000's
    distortion-rate slope on it (:mod:`sinco.codec.grid.prior`), else :func:`initial_lambda` of ``config.rate_prior``."""
    if config.prior_slope_factor > 0:
        from sinco.codec.grid.prior import classical_slope

        slope = classical_slope(image.detach().cpu().numpy(), target_bpp=target_bpp)
        if slope is not None:
            return min(max(config.prior_slope_factor * slope, _LAMBDA_RANGE[0]), _LAMBDA_RANGE[1])
    return initial_lambda(target_bpp, config.rate_prior)


#: Bounds of an image's own first lambda (beyond them the rate no longer moves with lambda).
_LAMBDA_RANGE = (1e-9, 1.0)


def initial_lambda(target_bpp: float, prior: tuple[tuple[float, float], ...] = FAST_RATE_PRIOR) -> float:
    """The rate search's first ``lambda_rd`` for ``target_bpp``: log-log interpolation in ``prior`` (``(bpp,
    lambda_rd)`` pairs, a preset's :attr:`GridFitConfig.rate_prior`), clamped to its ends."""
    rates = np.log([r for r, _ in prior])
    lambdas = np.log([lam for _, lam in prior])
    return float(np.exp(np.interp(math.log(target_bpp), rates, lambdas)))


def fit_grid_at_bpp(
    targets: torch.Tensor, *, spec: GridSpec, config: GridFitConfig, target_bpp: float, header_bytes: int,
    device: torch.device, regularizer: Regularizer | None = None, lam: torch.Tensor | None = None, progress: bool = False,
    band: float = 0.03, start_lambda: float | None = None,
) -> list[GridFitResult]:  # fmt: skip
    """Search ``lambda_rd`` per image so that the file (payload + ``header_bytes``) is at most ``target_bpp``.

    The first trial is a full fit at ``start_lambda`` (default: :func:`first_lambda`, the image's own guess from
    JPEG 2000's slope or ``config.rate_prior``); later trials
    branch from it at ``config.branch_at`` of its soft phase (parameters, Adam moments and noise as they were
    there) and finish the same schedule with their own ``lambda_rd``. Every trial is thus a fit of the same
    length and file size falls steadily as lambda grows (warm restarts of a finished fit, the former design,
    added training with every trial, and their rates barely followed lambda). ``lambda_rd`` jumps along the
    measured slope of log(bits) against log(lambda) until the target is bracketed, then by a secant step inside
    the bracket (:func:`_next_lambda`). The search stops at a file within ``band`` below the target or after
    ``config.max_rate_trials`` trials (one more, at 4x the next lambda, if every file was too big). Then, unless
    a file is within the band, the trial file closest above the target (at most 10% above) gets its networks
    coarsened (:func:`_trim_to_budget`) until it fits, if it can. With ``config.residual``, a trial below the band
    whose grids are past the balance with a residual layer moves the next trial there and ends the search after it
    (:func:`_residual_pivot`; after the first trial as a fit from scratch at ``config.pivot_refit`` times the
    estimate), and every file below the target is offered again with a residual layer that spends the bits left
    (:func:`_with_residual`). It returns the file of least MSE within the target.

    Args:
        targets: ``(S, H, W)`` in ``[0, 1]``.
        spec: decoder spec.
        config: fit settings (its ``lambda_rd`` is not used: the search sets it).
        target_bpp: bits per pixel of the whole file.
        header_bytes: bytes of the file outside the payload (header, family block, lengths, CRC).
        device: training device.
        regularizer: see :func:`fit_grid`.
        lam: see :func:`fit_grid`.
        progress: progress bars.
        band: accepted shortfall below the target (fraction).
        start_lambda: the first trial's ``lambda_rd`` (default: :func:`first_lambda`).

    Returns:
        One result per image with ``trials``, ``target_bpp``, ``within_band`` and the summed ``steps`` and ``seconds``
        of its search.

    Raises:
        InputError: if ``target_bpp`` is not positive.
        RateUnreachableError: (an ``InputError``) if no trial reaches the target; the message gives the smallest file found.
    """
    if not (math.isfinite(target_bpp) and target_bpp > 0):
        raise InputError(f"--bpp {target_bpp}: must be a positive number")
    if header_bytes < 0:
        raise InputError(f"header_bytes {header_bytes}: must be >= 0")
    if start_lambda is not None and not (math.isfinite(start_lambda) and start_lambda > 0):
        raise InputError(f"start_lambda {start_lambda}: must be a positive number")
    _check_targets(targets, spec, lam)
    pixels = targets.shape[1] * targets.shape[2]
    results = []
    for index in range(targets.shape[0]):
        started = time.perf_counter()
        search = _RateSearch(budget=target_bpp * pixels, header_bytes=header_bytes, band=band)
        steps, trials = _search_image(
            targets[index : index + 1], search, spec=spec, config=config, device=device, progress=progress,
            start_lambda=first_lambda(targets[index], target_bpp=target_bpp, config=config) if start_lambda is None else start_lambda,
            regularizer=_per_image(regularizer, index, targets.shape[0]), lam=lam[index : index + 1] if lam is not None else None,
        )  # fmt: skip
        if search.best is None:  # then every trial was too big, and the closest above is the smallest file
            smallest = search.closest_above
            raise RateUnreachableError(
                f"--bpp {target_bpp}: unreachable for this image with this grid spec; the smallest file found in "
                f"{trials} trials is {search.bits(smallest) / pixels:.3f} bpp, its decoder networks alone "
                f"{smallest.network_bits / pixels:.3f} (a fixed cost: small images need a higher --bpp)"
            )
        # The checkpoint (Adam's moments too) served the search: not kept for every slice of a volume.
        results.append(replace(search.best, trials=trials, target_bpp=target_bpp, steps=steps, checkpoint=None,
                               seconds=time.perf_counter() - started, within_band=search.in_band()))  # fmt: skip
    return results


def _search_image(
    target: torch.Tensor, search: _RateSearch, *, spec: GridSpec, config: GridFitConfig, device: torch.device,
    progress: bool, start_lambda: float, regularizer: Regularizer | None, lam: torch.Tensor | None,
) -> tuple[int, int]:  # fmt: skip
    """One image's trials (``target`` ``(1, H, W)``) into ``search``; returns the steps and trials run."""
    checkpoint: TrainCheckpoint | None = None
    steps = trials = 0

    def trial(lam_rd: float, *, fresh: bool = False) -> GridFitResult:
        nonlocal checkpoint, steps, trials
        branch = checkpoint is not None and not fresh
        result = fit_grid(
            target, spec=spec, config=config.with_lambda(lam_rd), device=device, regularizer=regularizer, lam=lam,
            progress=progress, branch_from=[checkpoint] if branch else None, keep_checkpoint=checkpoint is None,
        )[0]  # fmt: skip
        if checkpoint is None:
            checkpoint = result.checkpoint
        steps, trials = steps + result.steps, trials + 1
        return result

    # With a residual layer, a trial below the band that is past the pivot (_residual_pivot) moves the search there,
    # whose file the residual then fills, and ends it (a second pivot gained 0.1 dB, BraTS s85). After the first
    # trial, the move is a fit from scratch at config.pivot_refit times the pivot (a lower bound of the balance):
    # it sheds bits, which branches do badly.
    image = target[0].cpu().numpy()
    lam_rd, pivoted, refit = start_lambda, False, False
    while trials < config.max_rate_trials:
        latest = trial(lam_rd, fresh=refit)
        if search.add(lam_rd, latest) or pivoted:
            break
        pivot = _residual_pivot(image, latest, search) if config.residual else None
        pivoted = pivot is not None
        refit = pivoted and trials == 1 and config.pivot_refit > 0
        if pivot is None:
            lam_rd = search.next_lambda(lam_rd)
        else:
            lam_rd = pivot * config.pivot_refit if refit else pivot
    if search.best is None and trials > 1:
        # Every trial was above the target: one more branch, further out, rather than hard-trimmed networks
        # (a demo slice: trimming 1.22 bpp down to 1.19 cost 10 dB).
        lam_rd *= _RESCUE_FACTOR
        search.add(lam_rd, trial(lam_rd))
    if not search.in_band() and search.closest_above is not None:
        trimmed = _trim_to_budget(target[0].to(device), search.closest_above, budget_bits=search.budget, header_bytes=search.header_bytes)
        if trimmed is not None:
            search.offer(trimmed)
    if config.residual:
        levels = residual.image_levels(image)
        candidates = {id(r): r for r in (*search.tried, search.best) if r is not None and search.bits(r) < search.budget}
        for result in candidates.values():
            hybrid = _with_residual(image, result, budget_bits=search.budget - search.bits(result), levels=levels)
            if hybrid is not None:
                search.offer(hybrid)
    return steps, trials


def _residual_pivot(image: np.ndarray, result: GridFitResult, search: _RateSearch) -> float | None:
    """The ``lambda_rd`` beyond which a residual layer codes the image more cheaply than the grids, when ``result``
    (a trial below the band) is past it; else None.

    With a residual layer the grids' error costs about ``f / 2 log2(MSE)`` bits per pixel, ``f`` the share of pixels
    whose error exceeds the residual's step, so the grids pay while ``-dMSE/dbpp`` of their own file exceeds
    ``2 ln 2 MSE / f``. ``f`` is measured on the residual that would fill this trial's file (bits per halving of
    its step). The pivot is that slope at this trial's MSE: a lower bound of the balance point, since a file at a
    larger ``lambda_rd`` has more error (``GridFitConfig.pivot_refit``).
    """
    spare = search.budget - search.bits(result)
    if spare < search.band * search.budget:
        return None
    layer = residual.fit_to_budget(image, result.reconstruction, budget_bits=spare - 8 * payload_io.RESIDUAL_HEAD_BYTES)
    if layer is None or layer.step < 2:
        return None
    share = residual.halving_cost(image, result.reconstruction, step=layer.step) / image.size
    pivot = 2 * math.log(2) * result.mse / max(share, 1e-3)
    return pivot if pivot > result.config.lambda_rd else None


def _with_residual(image: np.ndarray, result: GridFitResult, *, budget_bits: float, levels: int) -> GridFitResult | None:
    """``result``'s file with a residual layer that spends at most ``budget_bits`` more, or None if none fits.

    Args:
        image: the target ``(H, W)`` in ``[0, 1]``.
        result: a grid file without a residual layer.
        budget_bits: bits the layer may add to the payload.
        levels: the image's lattice (:func:`~sinco.codec.grid.residual.image_levels`).
    """
    budget_bits -= 8 * payload_io.RESIDUAL_HEAD_BYTES
    layer = residual.fit_to_budget(image, result.reconstruction, budget_bits=budget_bits, levels=levels)
    if layer is None:
        return None
    payload = payload_io.with_residual(result.payload, layer)
    reconstruction = layer.apply(result.reconstruction)
    added = 8 * (len(payload) - len(result.payload))
    mse = float(np.mean((reconstruction.astype(np.float64) - image.astype(np.float64)) ** 2))
    return replace(result, payload=payload, payload_bits=8 * len(payload), reconstruction=reconstruction, mse=mse,
                   estimated_bits=result.estimated_bits + added, residual_levels=layer.levels,
                   residual_step=layer.step, residual_bits=added)  # fmt: skip


@dataclass
class _RateSearch:
    """The bookkeeping of one image's rate search: the files found, the bracket, and the best file within the target."""

    budget: float
    header_bytes: int
    band: float
    best: GridFitResult | None = None
    closest_above: GridFitResult | None = None
    fits: tuple[float, float] | None = None  # (lambda, bits) of the smallest lambda whose file fits
    too_big: tuple[float, float] | None = None  # (lambda, bits) of the largest lambda whose file is too big
    previous: tuple[float, float] | None = None  # (lambda, bits) of the trial before the latest
    latest: tuple[float, float] | None = None
    tried: list[GridFitResult] = field(default_factory=list)  # every trial's file, in order

    def bits(self, result: GridFitResult) -> int:
        return result.payload_bits + 8 * self.header_bytes

    def offer(self, result: GridFitResult) -> None:
        """Keep ``result`` if it is within the target with less distortion than the best so far."""
        if self.bits(result) <= self.budget and (self.best is None or result.mse < self.best.mse):
            self.best = result

    def in_band(self) -> bool:
        return self.best is not None and self.bits(self.best) >= (1 - self.band) * self.budget

    def add(self, lam_rd: float, result: GridFitResult) -> bool:
        """Record a trial; True when its file is within the band (the search can stop)."""
        bits = self.bits(result)
        self.previous, self.latest = self.latest, (lam_rd, bits)
        self.tried.append(result)
        self.offer(result)
        if bits <= self.budget:
            if bits >= (1 - self.band) * self.budget:
                return True
            self.fits = (lam_rd, bits) if self.fits is None or lam_rd < self.fits[0] else self.fits
        else:
            self.too_big = (lam_rd, bits) if self.too_big is None or lam_rd > self.too_big[0] else self.too_big
            if self.closest_above is None or bits < self.bits(self.closest_above):
                self.closest_above = result
        return False

    def next_lambda(self, lam_rd: float) -> float:
        assert self.latest is not None
        aim = (1 - self.band / 2) * self.budget
        same_side = self.previous is not None and (self.previous[1] > self.budget) == (self.latest[1] > self.budget)
        return _next_lambda(lam_rd, self.latest[1], self.fits, self.too_big, aim=aim, previous=self.previous, bisect=same_side)
