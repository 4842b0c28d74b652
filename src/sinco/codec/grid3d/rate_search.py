"""The rate search of a slab: ``lambda_rd`` so that its payload lands just below its share of the volume's bits.

The trials are ``grid``'s (:func:`sinco.codec.grid.rate_search.fit_grid_at_bpp`): the first a full fit, the later ones
branches from it at ``config.branch_at`` of its soft phase with their own ``lambda_rd``, which moves along the measured
slope (by a factor of at least 4) until the target is bracketed, then by secant or bisection steps (``grid``'s
``_next_lambda``).
"""

from __future__ import annotations

import math
import time
from dataclasses import replace

import numpy as np
import torch

from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.rate_search import _next_lambda, first_lambda
from sinco.codec.grid.training import Regularizer
from sinco.codec.grid3d.spec import Grid3dSpec
from sinco.codec.grid3d.training import SlabFitResult, fit_slab
from sinco.errors import InputError, RateUnreachableError

#: Least factor on lambda between trials before the target is bracketed.
_MIN_JUMP = 4.0
#: Factor on lambda of a rescue trial (one beyond ``max_rate_trials``, when every trial was too big).
_RESCUE_FACTOR = 8.0


def fit_slab_at_bits(
    target: torch.Tensor, *, spec: Grid3dSpec, config: GridFitConfig, budget_bits: float, device: torch.device,
    progress: bool = False, band: float = 0.03, start_lambda: float | None = None, regularizer: Regularizer | None = None,
    lam: torch.Tensor | None = None,
) -> SlabFitResult:  # fmt: skip
    """Search ``lambda_rd`` so that the slab's payload is at most ``budget_bits`` (and within ``band`` below it, if the
    trials find such a file); returns the file of least MSE within the budget.

    Args:
        target: ``(D, H, W)`` in ``[0, 1]``.
        spec: decoder spec.
        config: fit settings (its ``lambda_rd`` is not used).
        budget_bits: the payload's bits at most.
        device: training device.
        progress: progress bars.
        band: accepted shortfall below the budget (fraction).
        start_lambda: the first trial's ``lambda_rd`` (default: ``grid``'s :func:`~sinco.codec.grid.rate_search.first_lambda`
            of the middle slice at the budget's bits per voxel: ``config.prior_slope_factor`` times JPEG 2000's slope
            there, else the preset's rate prior).
        regularizer: the structural regularizer of every trial (see :func:`~sinco.codec.grid3d.training.fit_slab`).
        lam: its weights ``(D,)``.

    Returns:
        The chosen :class:`~sinco.codec.grid3d.training.SlabFitResult`, with ``trials``, ``steps`` and ``seconds`` of
        the whole search.

    Raises:
        InputError: for a non-positive budget.
        RateUnreachableError: if no trial fits the budget; the message gives the smallest file found.
    """
    if not (math.isfinite(budget_bits) and budget_bits > 0):
        raise InputError(f"--bpp: a slab budget of {budget_bits} bits; the rate must leave room for the file's header")
    started = time.perf_counter()
    voxels = target.numel()
    if start_lambda is None:
        # The middle slice's own guess (JPEG 2000's distortion-rate slope there, as grid's first trial), else the prior.
        start_lambda = first_lambda(target[target.shape[0] // 2], target_bpp=budget_bits / voxels, config=config)
    lambda_rd = start_lambda
    checkpoint = None
    tried: list[SlabFitResult] = []
    fits = too_big = previous = latest = None
    aim = (1 - band / 2) * budget_bits

    def trial(weight: float) -> SlabFitResult:
        nonlocal checkpoint
        result = fit_slab(target, spec=spec, config=config.with_lambda(weight), device=device, progress=progress,
                          branch_from=checkpoint, keep_checkpoint=checkpoint is None, regularizer=regularizer, lam=lam)  # fmt: skip
        checkpoint = checkpoint or result.checkpoint
        tried.append(result)
        return result

    while len(tried) < config.max_rate_trials:
        bits = trial(lambda_rd).payload_bits
        previous, latest = latest, (lambda_rd, bits)
        if bits <= budget_bits:
            if bits >= (1 - band) * budget_bits:
                break
            fits = (lambda_rd, bits) if fits is None or lambda_rd < fits[0] else fits
        else:
            too_big = (lambda_rd, bits) if too_big is None or lambda_rd > too_big[0] else too_big
        same_side = previous is not None and (previous[1] > budget_bits) == (bits > budget_bits)
        proposed = _next_lambda(lambda_rd, bits, fits, too_big, aim=aim, previous=previous, bisect=same_side)
        if fits is None or too_big is None:
            # Before a bracket, at least x4 (or /4): a slab's search has few trials, and where its rate hardly moves with
            # lambda (high rates, short fits) grid's slope-led jumps of a few percent never reach the target.
            proposed = max(proposed, _MIN_JUMP * lambda_rd) if bits > budget_bits else min(proposed, lambda_rd / _MIN_JUMP)
        lambda_rd = proposed
    within = [r for r in tried if r.payload_bits <= budget_bits]
    if not within:
        rescue = trial(max(too_big[0] if too_big else lambda_rd, lambda_rd) * _RESCUE_FACTOR)
        within = [rescue] if rescue.payload_bits <= budget_bits else []
    if not within:
        smallest = min(r.payload_bits for r in tried)
        raise RateUnreachableError(f"--bpp: unreachable for this slab with the grid3d spec; the smallest slab payload found in "
                                   f"{len(tried)} trials is {smallest / voxels:.4f} bits per voxel against a budget of "
                                   f"{budget_bits / voxels:.4f} (its decoder networks are a fixed cost: small slabs need a higher --bpp)")  # fmt: skip
    best = min(within, key=lambda r: (r.mse, r.payload_bits))
    return replace(best, trials=len(tried), steps=sum(r.steps for r in tried), seconds=time.perf_counter() - started, checkpoint=None)


def slab_budgets(slab_voxels: list[int], *, target_bpp: float, header_bytes: int) -> list[float]:
    """Each slab's payload budget in bits: ``target_bpp`` per voxel less the file's header bits, shared in proportion
    to the voxels; the budgets and the header add up to at most ``target_bpp`` per voxel of the whole file.

    Raises:
        InputError: if the header alone takes the whole rate.
    """
    total = sum(slab_voxels)
    spare = target_bpp * total - 8 * header_bytes
    if spare <= 0:
        raise InputError(f"--bpp {target_bpp:g}: below the {8 * header_bytes / total:.4f} bits per voxel of the volume file's header")
    return [float(np.floor(spare * v / total)) for v in slab_voxels]
