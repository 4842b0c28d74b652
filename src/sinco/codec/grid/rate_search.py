"""The rate search: ``lambda_rd`` per image so that the whole file lands just below a target rate."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from sinco.codec.grid import payload as payload_io
from sinco.codec.grid import residual
from sinco.codec.grid.config import FAST_RATE_PRIOR, GridFitConfig
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import (
    GridFitResult,
    Regularizer,
    TrainCheckpoint,
    check_targets,
    encode_state,
    fit_grid,
    per_image,
)
from sinco.errors import InputError, RateUnreachableError

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
    Costs a quantization and a coding per weight tried."""
    if result.state is None or result.payload_bits + 8 * header_bytes > (1 + _TRIM_REACH) * budget_bits:
        return None

    def trimmed(weight: float) -> GridFitResult | None:
        candidate = encode_state(target, result.state, spec=result.spec, config=result.config, loss=result.loss, steps=0,
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


def _next_lambda(
    lambda_rd: float, bits: float, fits: tuple[float, float] | None, too_big: tuple[float, float] | None, *, aim: float,
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
    lambda_rd = max(lambda_rd, 1e-9)
    if fits is not None and too_big is not None:
        (l_fit, b_fit), (l_big, b_big) = fits, too_big
        if bisect or b_big <= b_fit or l_fit <= l_big:
            return math.sqrt(l_fit * l_big)
        # Secant in log-log space, kept inside the middle 80% of the bracket so the bracket always shrinks.
        t = (math.log(b_big) - math.log(aim)) / (math.log(b_big) - math.log(b_fit))
        t = min(max(t, 0.1), 0.9)
        return math.exp(math.log(l_big) + t * (math.log(l_fit) - math.log(l_big)))
    slope = -0.2
    if previous is not None and previous[0] > 0 and previous[0] != lambda_rd and previous[1] > 0:
        slope = (math.log(bits) - math.log(previous[1])) / (math.log(lambda_rd) - math.log(previous[0]))
        slope = min(max(slope, -2.0), -0.05)
    return lambda_rd * min(max(math.exp((math.log(aim) - math.log(bits)) / slope), 1 / 64), 64)


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
    lambdas = np.log([weight for _, weight in prior])
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
    check_targets(targets, spec, lam)
    pixels = targets.shape[1] * targets.shape[2]
    results = []
    for index in range(targets.shape[0]):
        started = time.perf_counter()
        search = _RateSearch(budget=target_bpp * pixels, header_bytes=header_bytes, band=band)
        steps, trials = _search_image(
            targets[index : index + 1], search, spec=spec, config=config, device=device, progress=progress,
            start_lambda=first_lambda(targets[index], target_bpp=target_bpp, config=config) if start_lambda is None else start_lambda,
            regularizer=per_image(regularizer, index, targets.shape[0]), lam=lam[index : index + 1] if lam is not None else None,
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

    def trial(lambda_rd: float, *, fresh: bool = False) -> GridFitResult:
        nonlocal checkpoint, steps, trials
        branch = checkpoint is not None and not fresh
        result = fit_grid(
            target, spec=spec, config=config.with_lambda(lambda_rd), device=device, regularizer=regularizer, lam=lam,
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
    lambda_rd, pivoted, refit = start_lambda, False, False
    while trials < config.max_rate_trials:
        latest = trial(lambda_rd, fresh=refit)
        if search.add(lambda_rd, latest) or pivoted:
            break
        pivot = _residual_pivot(image, latest, search) if config.residual else None
        pivoted = pivot is not None
        refit = pivoted and trials == 1 and config.pivot_refit > 0
        if pivot is None:
            lambda_rd = search.next_lambda(lambda_rd)
        else:
            lambda_rd = pivot * config.pivot_refit if refit else pivot
    if search.best is None and trials > 1:
        # Every trial was above the target: one more branch, further out, rather than hard-trimmed networks
        # (a demo slice: trimming 1.22 bpp down to 1.19 cost 10 dB).
        lambda_rd *= _RESCUE_FACTOR
        search.add(lambda_rd, trial(lambda_rd))
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
    if config.hybrid:
        # The largest grid files first: offline on BraTS pat0003 slice 96 a grid of 0.40 bpp made better hybrids at 0.6 and
        # 1.2 bpp than grids of 0.14 and 0.23 (the grid codes the image's structure for fewer bits than the context coder).
        grids = sorted((r for r in search.tried if search.bits(r) < search.budget and r.residual_step is None), key=search.bits, reverse=True)
        for result in grids[: config.hybrid_grids]:
            coded = _hybrid_coded(image, result, budget_bits=search.budget - 8 * search.header_bytes, seed=config.seed,
                                  error_to_beat=None if search.best is None else search.best.mse)  # fmt: skip
            if coded is not None:
                search.offer(coded)
    if config.context:
        template = search.best or search.closest_above
        if template is not None:
            coded = _context_coded(image, template, budget_bits=search.budget - 8 * search.header_bytes, seed=config.seed,
                                   error_to_beat=None if search.best is None else search.best.mse)
            if coded is not None:
                search.offer(coded)
    return steps, trials


def _context_coded(
    image: np.ndarray, template: GridFitResult, *, budget_bits: float, seed: int, error_to_beat: float | None
) -> GridFitResult | None:
    """The image's levels by the context coder alone (:func:`~sinco.codec.grid.lossless.fit_to_budget`) within
    ``budget_bits``, as a result of the search (``template`` lends its spec and settings): exact when the budget
    reaches the lossless rate, else within the smallest bound that fits.

    At high rates this beats grids plus a residual layer by far (on an 8-bit LGG slice the lossless file is about
    1.8 bpp): the search keeps whichever file has the least MSE.
    """
    from sinco.codec.grid.lossless import fit_to_budget

    coded = fit_to_budget(image, budget_bits=budget_bits, seed=seed, error_to_beat=error_to_beat)
    if coded is None:
        return None
    reconstruction = (coded.levels / coded.top).astype(np.float32)
    mse = float(np.mean((reconstruction.astype(np.float64) - image.astype(np.float64)) ** 2))
    bits = 8 * len(coded.payload)
    return replace(template, payload=coded.payload, payload_bits=bits, reconstruction=reconstruction, mse=mse, estimated_bits=float(bits),
                   latent_bits_estimate=0.0, network_bits=0, residual_levels=coded.top, residual_step=2 * coded.max_error + 1,
                   residual_bits=bits, network_rate_weight=1.0, state=None, checkpoint=None)  # fmt: skip


def _hybrid_coded(
    image: np.ndarray, grid: GridFitResult, *, budget_bits: float, seed: int, error_to_beat: float | None
) -> GridFitResult | None:
    """``grid``'s file as the side plane of the image's context-coded levels (a hybrid,
    :func:`~sinco.codec.grid.lossless.fit_to_budget` with a prediction) within ``budget_bits`` of payload, at the
    smallest error bound that fits; None when none fits or none can beat ``error_to_beat``."""
    from sinco.codec.grid.lossless import fit_to_budget

    coded = fit_to_budget(image, budget_bits=budget_bits, seed=seed, error_to_beat=error_to_beat, grid_payload=grid.payload,
                          prediction=grid.reconstruction)  # fmt: skip
    if coded is None:
        return None
    reconstruction = (coded.levels / coded.top).astype(np.float32)
    mse = float(np.mean((reconstruction.astype(np.float64) - image.astype(np.float64)) ** 2))
    bits = 8 * len(coded.payload)
    return replace(grid, payload=coded.payload, payload_bits=bits, reconstruction=reconstruction, mse=mse,
                   estimated_bits=grid.estimated_bits + bits - grid.payload_bits, residual_levels=coded.top,
                   residual_step=2 * coded.max_error + 1, residual_bits=bits - grid.payload_bits, state=None, checkpoint=None)  # fmt: skip


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
        """Keep ``result`` if it is within the target with less distortion than the best so far (or as much, and smaller)."""
        if self.bits(result) > self.budget:
            return
        # Equal error (two exact files: a residual at step 1, context-coded levels): the smaller file.
        if self.best is None or result.mse < self.best.mse or (result.mse == self.best.mse and self.bits(result) < self.bits(self.best)):
            self.best = result

    def in_band(self) -> bool:
        return self.best is not None and self.bits(self.best) >= (1 - self.band) * self.budget

    def add(self, lambda_rd: float, result: GridFitResult) -> bool:
        """Record a trial; True when its file is within the band (the search can stop)."""
        bits = self.bits(result)
        self.previous, self.latest = self.latest, (lambda_rd, bits)
        self.tried.append(result)
        self.offer(result)
        if bits <= self.budget:
            if bits >= (1 - self.band) * self.budget:
                return True
            self.fits = (lambda_rd, bits) if self.fits is None or lambda_rd < self.fits[0] else self.fits
        else:
            self.too_big = (lambda_rd, bits) if self.too_big is None or lambda_rd > self.too_big[0] else self.too_big
            if self.closest_above is None or bits < self.bits(self.closest_above):
                self.closest_above = result
        return False

    def next_lambda(self, lambda_rd: float) -> float:
        assert self.latest is not None
        aim = (1 - self.band / 2) * self.budget
        same_side = self.previous is not None and (self.previous[1] > self.budget) == (self.latest[1] > self.budget)
        return _next_lambda(lambda_rd, self.latest[1], self.fits, self.too_big, aim=aim, previous=self.previous, bisect=same_side)
