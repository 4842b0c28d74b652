"""The fitting loop: full-image Adam on the MSE (plus the SINCO regulariser), keeping the best state."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from sinco.errors import InputError
from sinco.fit.config import FitConfig
from sinco.inr.encodings import make_coordinates

Regularizer = Callable[[torch.Tensor], torch.Tensor]
# A step whose objective exceeds the best one by this factor (20 dB) has diverged, not wobbled:
# SIREN recovers from smaller spikes on its own.
DIVERGENCE_FACTOR = 100.0


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_inr`.

    Args:
        best_objective: lowest objective seen, ``mse + lam * regulariser`` (``mse`` when unregularised),
            fp32 weights before quantisation.
        best_mse: the MSE of that state.
        best_step: number of Adam updates applied to that state.
        steps: Adam steps run.
        lam: regulariser weight used (0 when none).
        reg_every: the regulariser ran every ``reg_every``-th step.
        lr_final: learning rate at the end (lower than the configured one after a divergence).
        divergences: times a non-finite loss forced a restore of the best state.
        seconds: wall-clock time of the loop.
        compiled: whether the steps ran through ``torch.compile``.
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

    @property
    def best_psnr(self) -> float:
        """PSNR in dB of the kept fp32 state (data range 1)."""
        return _psnr(self.best_mse)


def use_compile(model: nn.Module, config: FitConfig) -> bool:
    """Whether :func:`fit_inr` compiles this fit (see :attr:`FitConfig.compile`)."""
    from sinco.fit.config import COMPILE_MIN_STEPS

    if config.compile != "auto":
        return config.compile == "on"
    return getattr(getattr(model, "spec", None), "arch", None) == "siren" and config.steps >= COMPILE_MIN_STEPS


def compiled_forward(model: nn.Module) -> Callable[[torch.Tensor], torch.Tensor]:
    """``model.forward_features`` through ``torch.compile``, with its kernels cached on disk.

    Inductor fuses SIREN's bias, ``w0`` scaling and sine (and the cosine of the backward pass) into
    single loops, which halves a CPU step. The cache (``$TORCHINDUCTOR_CACHE_DIR``, default
    ``~/.cache/sinco/torchinductor``) makes the next fit of the same shape start at once.
    """
    import os

    os.environ.setdefault("TORCHINDUCTOR_CACHE_DIR", os.path.join(os.path.expanduser("~"), ".cache", "sinco", "torchinductor"))
    return torch.compile(model.forward_features, dynamic=False)


def _psnr(mse: float) -> float:
    return -10.0 * math.log10(mse) if mse > 0 else math.inf


def fit_inr(
    model: nn.Module,
    *,
    target: torch.Tensor,
    config: FitConfig,
    device: torch.device,
    regularizer: Regularizer | None = None,
    progress: bool = True,
    desc: str = "fit",
) -> FitResult:
    """Fit ``model`` to one image by full-batch Adam; leave it in the best state seen.

    The objective is ``mse(x_hat, x)``, plus ``config.lam * regularizer(x_hat)`` on every
    ``config.reg_every``-th step when a regulariser is given and ``lam > 0``. The best state is
    judged on the steps that evaluate the whole objective. A diverging fit (a non-finite objective,
    or one :data:`DIVERGENCE_FACTOR` times the best) restores the best state, halves the learning
    rate, resets Adam's moments and goes on; the result counts these events.

    Args:
        model: a :class:`~sinco.inr.models.Siren` or :class:`~sinco.inr.models.PEMLP`; it is moved
            to ``device`` and updated in place.
        target: image ``(H, W)`` with values in ``[0, 1]``.
        config: steps, learning rate, regulariser weight and period.
        device: where to fit.
        regularizer: maps the reconstruction ``(1, 1, H, W)`` to a scalar, e.g.
            :class:`~sinco.fit.losses.StructuralRegularizer`.
        progress: show a progress bar (stderr) with the step and PSNR.
        desc: label of the progress bar.

    Returns:
        A :class:`FitResult`; ``model`` holds the best state (on ``device``).

    Raises:
        InputError: if ``target`` is not a finite 2-D tensor.
    """
    if target.ndim != 2:
        raise InputError(f"target: expected shape (H, W), got {tuple(target.shape)}")
    if not torch.isfinite(target).all():
        raise InputError("target: contains NaN or Inf")
    start = time.perf_counter()
    height, width = target.shape
    lam = config.lam if regularizer is not None else 0.0
    reg_every = config.reg_every if lam > 0 else 1
    model.to(device).train()
    # The coordinate features never change, so they are computed once, outside the loop.
    with torch.no_grad():
        feats = model.features(make_coordinates(height, width, device=device))
    target_flat = target.reshape(-1, 1).to(device=device, dtype=torch.float32)
    params = list(model.parameters())
    lr_scale = 1.0  # halved at each divergence, on top of the schedule
    optimizer = torch.optim.Adam(params, lr=config.lr_at(0))
    best_state = [p.detach().clone() for p in params]
    best_objective, best_mse, best_step, divergences = math.inf, math.inf, 0, 0

    forward = model.forward_features
    compiled = use_compile(model, config)
    if compiled:
        forward = compiled_forward(model)

    def objective(full: bool) -> tuple[torch.Tensor, torch.Tensor]:
        pred = forward(feats)
        mse = torch.nn.functional.mse_loss(pred, target_flat)
        if full and lam > 0:
            return mse + lam * regularizer(pred.reshape(1, 1, height, width)), mse
        return mse, mse

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5, leave=False)
    for step in range(config.steps):
        full = step % reg_every == 0
        if config.schedule != "constant":
            for group in optimizer.param_groups:
                group["lr"] = lr_scale * config.lr_at(step)
        optimizer.zero_grad(set_to_none=True)
        try:
            # The first step compiles forward and backward (for this shape only: probing another
            # shape would compile twice).
            loss, mse = objective(full)
            loss.backward()
        except Exception as exc:  # noqa: BLE001 - no compiler, unsupported platform: fall back, say so
            if not (compiled and step == 0):
                raise
            print(f"sinco: warning: torch.compile unavailable ({type(exc).__name__}); fitting in eager mode", file=sys.stderr)
            forward, compiled = model.forward_features, False
            optimizer.zero_grad(set_to_none=True)
            loss, mse = objective(full)
            loss.backward()
        value = loss.item()
        if not math.isfinite(value) or value > DIVERGENCE_FACTOR * max(best_objective, 1e-12):
            divergences += 1
            with torch.no_grad():
                for p, b in zip(params, best_state, strict=True):
                    p.copy_(b)
            lr_scale /= 2.0
            optimizer = torch.optim.Adam(params, lr=lr_scale * config.lr_at(step))
            continue
        if full and value < best_objective:
            # The loss belongs to the weights before this step's update: keep those.
            best_objective, best_mse, best_step = value, mse.item(), step
            with torch.no_grad():
                for p, b in zip(params, best_state, strict=True):
                    b.copy_(p)
        optimizer.step()
        if bar is not None and (step + 1) % config.log_every == 0:
            bar.update(config.log_every)
            bar.set_postfix(psnr=f"{_psnr(mse.item()):.2f}", best=f"{_psnr(best_mse):.2f}", refresh=False)

    # The state after the last update has not been scored yet.
    with torch.no_grad():
        final, final_mse = objective(True)
        if math.isfinite(final.item()) and final.item() < best_objective:
            best_objective, best_mse, best_step = final.item(), final_mse.item(), config.steps
        else:
            for p, b in zip(params, best_state, strict=True):
                p.copy_(b)
    if bar is not None:
        bar.update(config.steps - bar.n)
        bar.set_postfix(best=f"{_psnr(best_mse):.2f}")
        bar.close()
    return FitResult(
        best_objective=best_objective, best_mse=best_mse, best_step=best_step, steps=config.steps, lam=lam,
        reg_every=reg_every, lr_final=lr_scale * config.lr_at(max(config.steps - 1, 0)), divergences=divergences, seconds=time.perf_counter() - start, compiled=compiled,
    )  # fmt: skip
