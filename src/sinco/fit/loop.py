"""The fitting loop: full-image Adam on the MSE, keeping the best state seen."""

from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass

import torch
from torch import nn

from sinco.errors import InputError
from sinco.fit.config import FitConfig
from sinco.inr.encodings import make_coordinates


@dataclass(frozen=True)
class FitResult:
    """Outcome of :func:`fit_inr`.

    Args:
        best_loss: lowest training MSE seen (fp32 weights, before quantisation).
        best_step: number of Adam updates applied to the state that reached it.
        steps: Adam steps run.
        lr_final: learning rate at the end (lower than the configured one after a divergence).
        divergences: times a non-finite loss forced a restore of the best state.
        seconds: wall-clock time of the loop.
    """

    best_loss: float
    best_step: int
    steps: int
    lr_final: float
    divergences: int
    seconds: float

    @property
    def best_psnr(self) -> float:
        """PSNR in dB of the best fp32 state (data range 1)."""
        return -10.0 * math.log10(self.best_loss) if self.best_loss > 0 else math.inf


def _mse_psnr(loss: float) -> float:
    return -10.0 * math.log10(loss) if loss > 0 else math.inf


def fit_inr(
    model: nn.Module,
    *,
    target: torch.Tensor,
    config: FitConfig,
    device: torch.device,
    progress: bool = True,
    desc: str = "fit",
) -> FitResult:
    """Fit ``model`` to one image by full-batch Adam on the MSE; leave it in the best state seen.

    A non-finite loss (a diverging fit) restores the best state, halves the learning rate and
    resets Adam's moments; the count is reported in the result.

    Args:
        model: a :class:`~sinco.inr.models.Siren` or :class:`~sinco.inr.models.PEMLP`; it is moved
            to ``device`` and updated in place.
        target: image of shape ``(H, W)``, values in ``[0, 1]``.
        config: steps, learning rate, logging.
        device: where to fit.
        progress: show a progress bar (on stderr) with the step and the current PSNR.
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
    model.to(device).train()
    # The coordinate features never change, so they are computed once, outside the loop.
    with torch.no_grad():
        feats = model.features(make_coordinates(height, width, device=device))
    target_flat = target.reshape(-1, 1).to(device=device, dtype=torch.float32)
    params = list(model.parameters())
    lr = config.lr
    optimizer = torch.optim.Adam(params, lr=lr)
    best_state = [p.detach().clone() for p in params]
    best_loss, best_step, divergences = math.inf, 0, 0

    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=config.steps, desc=desc, unit="step", file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
    for step in range(config.steps):
        optimizer.zero_grad(set_to_none=True)
        loss = torch.nn.functional.mse_loss(model.forward_features(feats), target_flat)
        loss.backward()
        value = loss.item()
        if not math.isfinite(value):
            divergences += 1
            with torch.no_grad():
                for p, b in zip(params, best_state, strict=True):
                    p.copy_(b)
            lr /= 2.0
            optimizer = torch.optim.Adam(params, lr=lr)
            continue
        if value < best_loss:
            # The loss belongs to the weights before this step's update: keep those.
            best_loss, best_step = value, step
            with torch.no_grad():
                for p, b in zip(params, best_state, strict=True):
                    b.copy_(p)
        optimizer.step()
        if bar is not None and (step + 1) % config.log_every == 0:
            bar.update(config.log_every)
            bar.set_postfix(psnr=f"{_mse_psnr(value):.2f}", best=f"{_mse_psnr(best_loss):.2f}", refresh=False)

    # The state after the last update has not been scored yet.
    with torch.no_grad():
        final = torch.nn.functional.mse_loss(model.forward_features(feats), target_flat).item()
        if math.isfinite(final) and final < best_loss:
            best_loss, best_step = final, config.steps
        else:
            for p, b in zip(params, best_state, strict=True):
                p.copy_(b)
    if bar is not None:
        bar.update(config.steps - bar.n)
        bar.set_postfix(best=f"{_mse_psnr(best_loss):.2f}")
        bar.close()
    return FitResult(
        best_loss=best_loss,
        best_step=best_step,
        steps=config.steps,
        lr_final=lr,
        divergences=divergences,
        seconds=time.perf_counter() - start,
    )
