"""The INR families' training loop: full-image Adam on the data term (plus the SINCO regularizer), keeping the best state.

One loop fits ``S >= 1`` images of one shape with ``S`` networks of one architecture as a single
batched computation: the networks' parameters are stacked along a leading slice dimension and
evaluated with ``torch.func.vmap``. Each slice keeps its own objective, best state, Adam moments,
step count and learning-rate scale, so a slice fitted in a batch follows the same trajectory as
when fitted alone (up to floating-point summation order). Fitting one image is the case ``S = 1``.

No step reads a value back to the host: divergence checks and best-state bookkeeping are tensor
operations, so CUDA runs without a per-step synchronization.
"""

from __future__ import annotations

import copy
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from sinco.codec.inr.blocked import pe_mlp_blocked
from sinco.codec.inr.config import COMPILE_MIN_STEPS, INRFitConfig
from sinco.codec.inr.encodings import make_coordinates
from sinco.codec.inr.networks import flatten_parameters
from sinco.errors import InputError
from sinco.regularizer.loss import data_term
from sinco.utils.progress import progress_bar

Regularizer = Callable[[torch.Tensor], torch.Tensor]
# A step whose objective exceeds the best one by this factor (20 dB) has diverged, not wobbled:
# SIREN recovers from smaller spikes on its own.
DIVERGENCE_FACTOR = 100.0
# torch.optim.Adam's defaults, which the paper uses.
ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8


@dataclass(frozen=True)
class INRTrainResult:
    """How the training loop ended for one image.

    Args:
        best_objective: lowest objective seen, ``data term + lam * regularizer`` (the data term,
            ``config.data_term``, when unregularized), fp32 weights before quantization.
        best_mse: the MSE of that state (of its fp16-rounded weights after a quantization tail).
        best_step: number of Adam updates applied to that state.
        steps: steps run.
        lam: regularizer weight used (0 when none).
        reg_every: the regularizer ran every ``reg_every``-th step.
        lr_final: learning rate at the end (lower than the configured one after a divergence).
        divergences: times a non-finite loss forced a restore of the best state.
        seconds: wall-clock time of the loop (of the whole batch when fitted in one).
        compiled: whether the steps ran through ``torch.compile``.
        batch: number of images fitted together in this loop.
        evaluations: gradient evaluations actually run (``steps``, or fewer when L-BFGS converged).
        phase_seconds: wall-clock seconds of each phase that ran (``adam``, ``lbfgs``, ``tail``), of the
            whole batch; the L-BFGS phase fits a batch's slices one after another.
    """

    best_objective: float
    best_mse: float
    best_step: int
    steps: int
    lam: float
    reg_every: int
    lr_final: float
    divergences: int
    seconds: float
    compiled: bool = False
    batch: int = 1
    evaluations: int | None = None
    phase_seconds: dict[str, float] | None = None

    @property
    def best_psnr(self) -> float:
        """PSNR in dB of the kept fp32 state (data range 1)."""
        return _psnr(self.best_mse)

    def details(self) -> dict[str, Any]:
        """The INR families' own figures for a :class:`~sinco.codec.family.FitReport`."""
        return {"best_step": self.best_step, "best_psnr": self.best_psnr, "divergences": self.divergences, "lr_final": self.lr_final, "reg_every": self.reg_every,
                "compiled": self.compiled, "batch_slices": self.batch, "phase_seconds": self.phase_seconds}  # fmt: skip


def use_compile(config: INRFitConfig, *, compile_when_auto: bool) -> bool:
    """Whether a fit compiles its steps: ``config.compile`` ``"on"``/``"off"``, or for ``"auto"`` the
    family's choice (``compile_when_auto``) for fits of at least :data:`~sinco.codec.inr.config.COMPILE_MIN_STEPS` steps."""
    if config.compile != "auto":
        return config.compile == "on"
    return compile_when_auto and config.steps >= COMPILE_MIN_STEPS


def _compile(fn: Callable) -> Callable:
    """``torch.compile`` with its kernels cached on disk.

    Inductor fuses SIREN's bias, ``w0`` scaling and sine (and the cosine of the backward pass) into
    single loops, which halves a CPU step. The cache (``$TORCHINDUCTOR_CACHE_DIR``, default
    ``~/.cache/sinco/torchinductor``) makes the next fit of the same shape start at once.
    """
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sinco", "torchinductor"))
    return torch.compile(fn, dynamic=False)


def _psnr(mse: float) -> float:
    return -10.0 * math.log10(mse) if mse > 0 else math.inf


class _Features(nn.Module):
    """Calls the wrapped network's ``forward_features``, so ``torch.func.functional_call`` can."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return self.model.forward_features(feats)


class StackedFit:
    """The state and the step of a batched fit: ``S`` networks of one architecture, ``S`` images.

    Args:
        models: ``S`` networks with the same architecture (their weights are the starting point).
        targets: images ``(S, H, W)`` with values in ``[0, 1]``.
        config: schedule, regularizer weight and period, compile mode.
        device: where to fit.
        regularizer: maps reconstructions ``(S, 1, H, W)`` to per-slice values ``(S,)``.
        lam: regularizer weight per slice ``(S,)`` (``None``: ``config.lam`` for every slice).
        compile_when_auto: compile the steps when ``config.compile`` is ``"auto"`` (the family's choice).

    Raises:
        InputError: if the shapes disagree, the targets are not finite, or the networks differ.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        *,
        targets: torch.Tensor,
        config: INRFitConfig,
        device: torch.device,
        regularizer: Regularizer | None = None,
        lam: torch.Tensor | None = None,
        compile_when_auto: bool = False,
    ) -> None:
        if targets.ndim != 3 or targets.shape[0] != len(models) or len(models) == 0:
            raise InputError(f"targets: expected shape (S, H, W) with S = {len(models)} networks, got {tuple(targets.shape)}")
        if not torch.isfinite(targets).all():
            raise InputError("target: contains NaN or Inf")
        specs = {getattr(m, "spec", None) for m in models}
        if len(specs) != 1:
            raise InputError("models: a batched fit needs networks of one architecture")
        # "auto" names no data term: resolve it here too, for callers that bypass the pipeline.
        self.config, self.device = config.resolved(regularized=regularizer is not None), device
        self.n_slices, self.height, self.width = targets.shape
        n = self.n_slices
        self.regularizer = regularizer
        if regularizer is None:
            self.lam = torch.zeros(n, device=device)
        else:
            self.lam = (torch.full((n,), float(config.lam)) if lam is None else lam.float()).to(device)
        self.regularized = regularizer is not None and bool((self.lam > 0).any())
        self.reg_every = config.reg_every if self.regularized else 1
        self.names = [name for name, _ in models[0].named_parameters()]
        self.shapes = [p.shape for _, p in models[0].named_parameters()]
        # All weights of a slice in one row of one tensor (S, P): the optimizer and the bookkeeping
        # are then a handful of whole-tensor operations per step instead of a handful per layer.
        self.flat = torch.stack([flatten_parameters(m) for m in models]).to(device).requires_grad_()
        self._call_names = ["model." + k for k in self.names]  # parameter names inside the shell
        # The coordinate features never change, so they are computed once, outside the loop.
        with torch.no_grad():
            self.feats = models[0].to(device).features(make_coordinates(self.height, self.width, device=device))
        self.targets = targets.reshape(n, -1, 1).to(device=device, dtype=torch.float32)
        # A parameter-free copy of the network's structure; functional_call supplies the weights.
        self._shell = _Features(copy.deepcopy(models[0]).to("meta"))
        self.compiled = use_compile(config, compile_when_auto=compile_when_auto)
        self._forward = _compile(self._forward_eager) if self.compiled else self._forward_eager
        spec = getattr(models[0], "spec", None)
        # One PE-MLP fitted eagerly on the CPU runs block by block (memory-bound otherwise: sinco.codec.inr.blocked).
        blocked = spec is not None and spec.arch == "pe-mlp" and device.type == "cpu" and n == 1 and not self.compiled
        self._blocked_skips = tuple(spec.skips) if blocked else None
        self.moments = torch.zeros_like(self.flat)
        self.squares = torch.zeros_like(self.flat)
        # Adam's bias-correction step count, per slice: it restarts when a slice's moments are reset.
        self.step_counts = torch.zeros(n, device=device)
        self.lr_scale = torch.ones(n, device=device)
        self.best = self.flat.detach().clone()
        self.best_objective = torch.full((n,), math.inf, device=device)
        self.best_mse = torch.full((n,), math.inf, device=device)
        self.best_step = torch.zeros(n, dtype=torch.long, device=device)
        self.divergences = torch.zeros(n, dtype=torch.long, device=device)
        self.last_mse = torch.full((n,), math.inf, device=device)
        self.rounded, self.lr_override = False, None

    def _unflatten(self, flat: torch.Tensor) -> list[torch.Tensor]:
        """Per-layer views ``(S, *shape)`` of the rows of ``flat`` ``(S, P)``."""
        views, offset = [], 0
        for shape in self.shapes:
            size = math.prod(shape)
            views.append(flat[:, offset : offset + size].unflatten(1, shape))
            offset += size
        return views

    def _forward_eager(self, flat: torch.Tensor, feats: torch.Tensor) -> torch.Tensor:
        names = self._call_names
        params = self._unflatten(flat)
        if self._blocked_skips is not None:
            return pe_mlp_blocked(feats, [p[0] for p in params], skips=self._blocked_skips)[None]
        if self.n_slices == 1:
            # No vmap for a single network: the plain (non-batched) kernels.
            return torch.func.functional_call(self._shell, dict(zip(names, [p[0] for p in params], strict=True)), (feats,))[None]

        def one(*weights: torch.Tensor) -> torch.Tensor:
            return torch.func.functional_call(self._shell, dict(zip(names, weights, strict=True)), (feats,))

        return torch.func.vmap(one)(*params)

    def reconstruct(self) -> torch.Tensor:
        """Current reconstructions ``(S, N, 1)`` (with gradients); of the fp16-rounded weights in the tail."""
        flat = self.flat
        if self.rounded:
            # Straight-through: the forward sees the weights the file will hold, the gradient
            # flows to the fp32 weights as if rounding were the identity.
            flat = flat + (flat.to(torch.float16).to(torch.float32) - flat).detach()
        return self._forward(flat, self.feats)

    def start_rounded_phase(self, *, lr: float) -> None:
        """Switch to the quantization tail: rounded forward, fresh Adam at ``lr``, best judged anew.

        The best state so far was judged on fp32 weights; from here on states are judged on
        their rounded weights, so the record restarts (the first tail step scores the start).
        """
        with torch.no_grad():
            self.rounded, self.lr_override = True, lr
            self.moments.zero_()
            self.squares.zero_()
            self.step_counts.zero_()
            self.best_objective.fill_(math.inf)
            self.best_mse.fill_(math.inf)

    def load_from(self, models: Sequence[nn.Module]) -> None:
        """Copy each network's weights into this fit's rows (the inverse of :meth:`load_into`)."""
        with torch.no_grad():
            for index, model in enumerate(models):
                self.flat[index] = flatten_parameters(model).to(self.device)

    def objective(self, *, full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-slice objective and MSE, both ``(S,)``; ``full`` adds the regularizer.

        The objective's data term is ``config.data_term`` (:func:`~sinco.regularizer.loss.data_term`); the
        MSE is returned beside it for PSNR and the best-state record.
        """
        pred = self.reconstruct()
        mse = (pred - self.targets).square().mean(dim=(1, 2))
        data = mse if self.config.data_term == "mse" else data_term(pred, self.targets, kind=self.config.data_term)
        if full and self.regularized:
            reg = self.regularizer(pred.reshape(self.n_slices, 1, self.height, self.width))
            return data + self.lam * reg, mse
        return data, mse

    def step(self, step: int) -> None:
        """Adam step ``step`` (0-based) on every slice, with best-state and divergence bookkeeping.

        The objective scored is that of the weights before this step's update; a slice whose
        objective is non-finite or :data:`DIVERGENCE_FACTOR` times its best gets its best state
        back, fresh Adam moments and half its learning rate.
        """
        full = step % self.reg_every == 0
        self.flat.grad = None
        objective, mse = self.objective(full=full)
        objective.sum().backward()
        with torch.no_grad():
            self.last_mse = mse.detach()
            diverged = ~torch.isfinite(objective) | (objective > DIVERGENCE_FACTOR * self.best_objective.clamp(min=1e-12))
            if full:
                improved = ~diverged & (objective < self.best_objective)
                self.best_objective = torch.where(improved, objective, self.best_objective)
                self.best_mse = torch.where(improved, mse, self.best_mse)
                self.best_step = torch.where(improved, step, self.best_step)
                torch.where(improved[:, None], self.flat, self.best, out=self.best)
            self._adam(step)
            # A diverged slice's update is discarded: best state back, fresh moments, half the lr.
            back = diverged[:, None]
            torch.where(back, self.best, self.flat, out=self.flat)
            self.moments.masked_fill_(back, 0.0)
            self.squares.masked_fill_(back, 0.0)
            self.step_counts.masked_fill_(diverged, 0.0)
            self.lr_scale = torch.where(diverged, self.lr_scale / 2, self.lr_scale)
            self.divergences += diverged.long()

    def _adam(self, step: int) -> None:
        # torch.optim.Adam's update, written out so each slice has its own step count and lr scale.
        beta1, beta2 = ADAM_BETAS
        self.step_counts += 1
        lr = self.config.lr_at(step) if self.lr_override is None else self.lr_override
        step_size = lr * self.lr_scale / (1 - beta1**self.step_counts)
        correction2 = (1 - beta2**self.step_counts).sqrt()
        g, m, v = self.flat.grad, self.moments, self.squares
        m.lerp_(g, 1 - beta1)
        v.mul_(beta2).addcmul_(g, g, value=1 - beta2)
        denom = (v.sqrt() / correction2[:, None]).add_(ADAM_EPS)
        self.flat.addcdiv_(m * (-step_size)[:, None], denom)

    def finish(self, *, steps_done: int) -> None:
        """Score the state after the last Adam update (``steps_done`` updates); leave every slice in its best state."""
        with torch.no_grad():
            objective, mse = self.objective(full=True)
            improved = torch.isfinite(objective) & (objective < self.best_objective)
            self.best_objective = torch.where(improved, objective, self.best_objective)
            self.best_mse = torch.where(improved, mse, self.best_mse)
            self.best_step = torch.where(improved, steps_done, self.best_step)
            torch.where(improved[:, None], self.flat, self.best, out=self.flat)

    def load_into(self, models: Sequence[nn.Module]) -> None:
        """Copy each slice's current weights into its network (moved to this fit's device)."""
        with torch.no_grad():
            for index, model in enumerate(models):
                model.to(self.device)
                named = dict(model.named_parameters())
                for name, p in zip(self.names, self._unflatten(self.flat), strict=True):
                    named[name].copy_(p[index])


def fit_inr_batch(
    models: Sequence[nn.Module],
    *,
    targets: torch.Tensor,
    config: INRFitConfig,
    device: torch.device,
    regularizer: Regularizer | None = None,
    lam: torch.Tensor | None = None,
    compile_when_auto: bool = False,
    progress: bool = True,
    desc: str = "fit",
) -> list[INRTrainResult]:
    """Fit ``S`` networks to ``S`` images as one batched computation; leave each in its best state.

    The objective of slice ``i`` is ``mse(x_hat_i, x_i)``, plus ``lam_i * regularizer(x_hat)_i``
    on every ``config.reg_every``-th step; the slices' objectives are summed, so each network
    gets the gradient of its own objective only. See :class:`StackedFit` for the bookkeeping.
    The phases run in order: Adam (:func:`_adam_phase`), L-BFGS (:func:`_lbfgs_phase`, with
    ``config.optimizer == "adam+lbfgs"``), the quantization tail (:func:`_quantize_tail`).

    Args:
        models: ``S`` networks of one architecture, updated in place (and moved to ``device``).
        targets: images ``(S, H, W)`` in ``[0, 1]``.
        config: steps, schedule, regularizer weight and period, compile mode.
        device: where to fit.
        regularizer: maps ``(S, 1, H, W)`` reconstructions to ``(S,)`` values, e.g.
            :class:`~sinco.regularizer.loss.StructuralRegularizer`.
        lam: per-slice regularizer weights ``(S,)`` (``None``: ``config.lam`` for all).
        compile_when_auto: compile the steps when ``config.compile`` is ``"auto"`` (the family's choice).
        progress: show a progress bar (stderr) with the step and mean PSNR.
        desc: label of the progress bar.

    Returns:
        One :class:`INRTrainResult` per slice.

    Raises:
        InputError: if the shapes disagree, the targets are not finite, or the networks differ.
    """
    if config.optimizer == "adam+lbfgs" and len(models) > 1 and regularizer is not None and not hasattr(regularizer, "subset"):
        raise InputError("regularizer: L-BFGS on a batch runs one slice at a time and needs a regularizer with subset(index)")
    start = time.perf_counter()

    def new_fit(*, eager: bool) -> StackedFit:
        fit = StackedFit(models, targets=targets, config=config, device=device, regularizer=regularizer, lam=lam,
                         compile_when_auto=compile_when_auto)  # fmt: skip
        if eager:
            fit._forward, fit.compiled = fit._forward_eager, False
        return fit

    fit = new_fit(eager=False)
    bar = progress_bar(total=config.steps, desc=desc, unit="step") if progress else None
    clock = _PhaseClock(device)
    fit = _adam_phase(fit, restart_eager=lambda: new_fit(eager=True), bar=bar)
    clock.lap("adam")
    evaluations = [config.adam_steps] * fit.n_slices
    if config.adam_steps < config.main_steps:
        used = _lbfgs_phase(fit, models, targets=targets, regularizer=regularizer, bar=bar)
        evaluations = [e + u for e, u in zip(evaluations, used, strict=True)]
        clock.lap("lbfgs")
    if config.quantize_tail:
        _quantize_tail(fit)
        evaluations = [e + config.quantize_tail for e in evaluations]
        clock.lap("tail")
    fit.load_into(models)
    if bar is not None:
        bar.update(config.steps - bar.n)
        bar.close()
    return _results(fit, evaluations=evaluations, seconds=time.perf_counter() - start, phase_seconds=clock.seconds)


class _PhaseClock:
    """Wall-clock seconds per phase; on CUDA it waits for the device at each lap (a few times per fit, not per step)."""

    def __init__(self, device: torch.device) -> None:
        self.device, self.seconds = device, {}
        self._last = time.perf_counter()

    def lap(self, name: str) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        now = time.perf_counter()
        self.seconds[name] = now - self._last
        self._last = now


def _adam_phase(fit: StackedFit, *, restart_eager: Callable[[], StackedFit], bar: Any) -> StackedFit:
    """Run the Adam steps; score the final state. Returns the fit (a new, eager one if compiling failed)."""
    config = fit.config
    for step in range(config.adam_steps):
        if step == 0 and fit.compiled:
            fit = _first_step_or_eager(fit, restart_eager)
        else:
            fit.step(step)
        if bar is not None and (step + 1) % config.log_every == 0:
            bar.update(config.log_every)
            bar.set_postfix(psnr=f"{_psnr(fit.last_mse.mean().item()):.2f}", refresh=False)
    fit.finish(steps_done=config.adam_steps)
    return fit


def _first_step_or_eager(fit: StackedFit, restart_eager: Callable[[], StackedFit]) -> StackedFit:
    """The first compiled step compiles forward and backward (for this shape only); without a
    working compiler (unsupported platform, no C compiler) the fit restarts in eager mode, saying so."""
    try:
        fit.step(0)
        return fit
    except Exception as exc:  # noqa: BLE001 - any compiler failure: fall back, say so
        print(f"sinco: warning: torch.compile unavailable ({type(exc).__name__}); fitting in eager mode", file=sys.stderr)
        eager = restart_eager()
        eager.step(0)
        return eager


def _lbfgs_phase(fit: StackedFit, models: Sequence[nn.Module], *, targets: torch.Tensor, regularizer: Regularizer | None,
                 bar: Any) -> list[int]:  # fmt: skip
    """Continue every slice with L-BFGS up to the main step budget; returns the evaluations per slice.

    Independent problems need independent line searches: in a batch, one slice at a time, each
    starting from its slice's best state so far.
    """
    config = fit.config
    budget = config.main_steps - config.adam_steps
    if fit.n_slices == 1:
        return [_lbfgs(fit, budget=budget, bar=bar)]
    used = []
    fit.load_into(models)
    for index, model in enumerate(models):
        sub = StackedFit([model], targets=targets[index : index + 1], config=config, device=fit.device,
                         regularizer=None if regularizer is None else regularizer.subset(index),
                         lam=fit.lam[index : index + 1])  # fmt: skip
        for name in ("best_objective", "best_mse", "best_step", "divergences", "lr_scale"):
            getattr(sub, name).copy_(getattr(fit, name)[index : index + 1])
        used.append(_lbfgs(sub, budget=budget, bar=bar if index == 0 else None))
        sub.load_into([model])
        for name in ("best_objective", "best_mse", "best_step", "divergences"):
            getattr(fit, name)[index] = getattr(sub, name)[0]
    fit.load_from(models)
    return used


def _quantize_tail(fit: StackedFit) -> None:
    """The last ``config.quantize_tail`` steps: Adam on the fp16-rounded weights (see :meth:`StackedFit.start_rounded_phase`)."""
    config = fit.config
    fit.start_rounded_phase(lr=config.quantize_lr)
    for step in range(config.main_steps, config.steps):
        fit.step(step)
    fit.finish(steps_done=config.steps)


def _results(fit: StackedFit, *, evaluations: list[int], seconds: float, phase_seconds: dict[str, float]) -> list[INRTrainResult]:
    config = fit.config
    lr_last = config.lr_at(max(config.steps - 1, 0))
    return [
        INRTrainResult(
            best_objective=obj, best_mse=mse, best_step=int(best), steps=config.steps, lam=lam_i if fit.regularized else 0.0,
            reg_every=fit.reg_every, lr_final=scale * lr_last, divergences=int(div), seconds=seconds, compiled=fit.compiled,
            batch=fit.n_slices, evaluations=used, phase_seconds=dict(phase_seconds),
        )
        for obj, mse, best, scale, div, lam_i, used in zip(
            fit.best_objective.tolist(), fit.best_mse.tolist(), fit.best_step.tolist(), fit.lr_scale.tolist(),
            fit.divergences.tolist(), fit.lam.tolist(), evaluations, strict=True,
        )
    ]  # fmt: skip


class _BudgetSpent(Exception):
    """Raised inside the L-BFGS closure once the evaluation budget is spent."""


def _lbfgs(fit: StackedFit, *, budget: int, bar: Any = None) -> int:
    """Continue a one-slice fit with L-BFGS for ``budget`` gradient evaluations; keep the best state.

    Every evaluation (line-search trials included) is scored on the full objective; the fit ends
    in its best state. A non-finite objective stops the phase and counts as a divergence.

    Returns:
        The gradient evaluations run.
    """
    config, offset = fit.config, fit.config.adam_steps
    optimizer = torch.optim.LBFGS([fit.flat], lr=1.0, max_iter=budget, max_eval=2 * budget, history_size=config.lbfgs_history,
                                  tolerance_grad=0.0, tolerance_change=0.0, line_search_fn="strong_wolfe")  # fmt: skip
    evaluations = 0

    def closure() -> torch.Tensor:
        nonlocal evaluations
        if evaluations >= budget:
            raise _BudgetSpent
        optimizer.zero_grad(set_to_none=True)
        objective, mse = fit.objective(full=True)
        objective.sum().backward()
        evaluations += 1
        value = float(objective.detach()[0])
        if not math.isfinite(value):
            fit.divergences += 1
            raise _BudgetSpent
        if value < float(fit.best_objective[0]):
            with torch.no_grad():
                fit.best_objective.fill_(value)
                fit.best_mse.copy_(mse.detach())
                fit.best_step.fill_(offset + evaluations - 1)
                fit.best.copy_(fit.flat)
        if bar is not None and evaluations % config.log_every == 0:
            bar.update(config.log_every)
            bar.set_postfix(psnr=f"{_psnr(float(fit.best_mse[0])):.2f}", refresh=False)
        return objective.sum()

    try:
        while evaluations < budget:
            before = evaluations
            optimizer.step(closure)
            if evaluations == before:  # converged: nothing left to improve
                break
    except _BudgetSpent:
        pass
    with torch.no_grad():
        fit.flat.copy_(fit.best)
    return evaluations


def fit_inr(
    model: nn.Module,
    *,
    target: torch.Tensor,
    config: INRFitConfig,
    device: torch.device,
    regularizer: Regularizer | None = None,
    compile_when_auto: bool = False,
    progress: bool = True,
    desc: str = "fit",
) -> INRTrainResult:
    """Fit ``model`` to one image by full-batch Adam; leave it in the best state seen.

    The objective is ``mse(x_hat, x)``, plus ``config.lam * regularizer(x_hat)`` on every
    ``config.reg_every``-th step when a regularizer is given and ``lam > 0``. The best state is
    judged on the steps that evaluate the whole objective. A diverging fit (a non-finite objective,
    or one :data:`DIVERGENCE_FACTOR` times the best) restores the best state, halves the learning
    rate, resets Adam's moments and goes on; the result counts these events.

    Args:
        model: a :class:`~sinco.codec.inr.networks.Siren` or :class:`~sinco.codec.inr.networks.PEMLP`; it is moved
            to ``device`` and updated in place.
        target: image ``(H, W)`` with values in ``[0, 1]``.
        config: steps, learning rate, regularizer weight and period.
        device: where to fit.
        regularizer: maps the reconstruction ``(1, 1, H, W)`` to a value ``(1,)``, e.g.
            :class:`~sinco.regularizer.loss.StructuralRegularizer`.
        compile_when_auto: compile the steps when ``config.compile`` is ``"auto"``.
        progress: show a progress bar (stderr) with the step and PSNR.
        desc: label of the progress bar.

    Returns:
        A :class:`INRTrainResult`; ``model`` holds the best state (on ``device``).

    Raises:
        InputError: if ``target`` is not a finite 2-D tensor.
    """
    if target.ndim != 2:
        raise InputError(f"target: expected shape (H, W), got {tuple(target.shape)}")
    return fit_inr_batch(
        [model], targets=target[None], config=config, device=device, regularizer=regularizer, compile_when_auto=compile_when_auto,
        progress=progress, desc=desc,
    )[0]  # fmt: skip
