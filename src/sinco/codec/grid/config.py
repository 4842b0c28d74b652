"""Fitting settings of the latent-grid family, and its presets."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from sinco.errors import InputError

#: Whole-file bpp against lambda_rd of single fits of the ``fast`` preset's 900 steps (BraTS 2013 pat0003 FLAIR,
#: slice 85, 240 x 240; docs/grid-codec.md). Other images land elsewhere (a 256 x 256 LGG slice with little
#: background took 1.6 bpp at 1e-5 in 1,500 steps); the later trials correct it. Below 1e-6 the rate hardly grows:
#: the fit, not lambda, limits it there.
FAST_RATE_PRIOR: tuple[tuple[float, float], ...] = (
    (0.174, 1e-2), (0.281, 3e-3), (0.438, 1e-3), (0.605, 3e-4), (0.789, 1e-4), (0.994, 1e-5), (1.08, 1e-6),
)  # fmt: skip
#: The same for the ``quality`` preset's 6,000 steps (same slice): longer fits spend fewer bits at a given lambda
#: below about 1 bpp.
QUALITY_RATE_PRIOR: tuple[tuple[float, float], ...] = ((0.313, 1e-3), (0.637, 1e-4), (1.061, 1e-5))


#: Share of a fit's steps each of its candidates trains before the choice (the ``quality`` preset's 400 of 6,000).
CANDIDATE_SHARE = 1 / 15


@dataclass(frozen=True)
class GridFitConfig:
    """How ``fit_grid`` trains one image.

    Args:
        steps: total optimization steps of a fit from scratch (soft-rounding phase then straight-through phase).
        ste_steps: the final straight-through (hard rounding) steps, part of ``steps``.
        lr_latent: Adam learning rate of the latents (cosine-decayed in the soft phase).
        lr_network: Adam learning rate of the synthesis and entropy networks.
        lr_ste: learning rate of the straight-through phase (all parameters).
        temperature: soft-rounding temperature at the start and end of the soft phase (linear).
        noise: amplitude of the uniform noise added to the soft-rounded latents (1.0 = U(-0.5, 0.5)).
        lambda_rd: rate weight: loss = MSE + lambda_rd * bits / pixels (+ lam * regularizer).
        seed: seed of the initialization and of the noise.
        branch_at: where in the soft phase (fraction) the rate search's later trials branch from the first fit:
            each resumes the first fit's training there with its own ``lambda_rd``, so every trial is a fit of the
            same schedule (0: every trial from scratch).
        max_rate_trials: most fits the rate search runs.
        rate_prior: ``(bpp, lambda_rd)`` pairs, rate increasing and lambda decreasing, measured with this schedule:
            the rate search's first lambda (log-log interpolation, clamped to the ends) where the image's own
            guess is off or unavailable.
        prior_slope_factor: the rate search's first lambda is this times JPEG 2000's ``-dMSE/dbpp`` on the same
            image around the target (:func:`~sinco.codec.grid.prior.classical_slope`); 0: ``rate_prior`` alone.
        residual: the rate search may add a residual layer (:mod:`sinco.codec.grid.residual`) to a trial's file,
            coding the grid's error with the bits the grids left below the target; the file of least MSE wins.
        context: the rate search may code the image's levels by the context coder alone
            (:func:`sinco.codec.grid.lossless.fit_to_budget`): exact when the target reaches the lossless rate, else
            within the smallest error bound that fits; the file of least MSE wins.
        hybrid: the rate search may code the image's levels by the context coder reading a grid trial's decoded image
            as a side plane (payload version 3 with a grid prediction; :func:`sinco.codec.grid.lossless.fit_to_budget`),
            within the smallest error bound that fits what the grid file leaves of the target; tried on the
            ``hybrid_grids`` largest grid files below the target, the file of least MSE wins.
        hybrid_grids: how many grid trials the hybrid is tried on (each costs a context fit of the image).
        pivot_refit: where the first trial's grids are past the balance with a residual layer, the second trial is
            a fit from scratch at this times the balance estimated from the first (a lower bound: the grids' error
            grows as they shed bits; offline on a BraTS slice the best grid file lay at 4-6 times it); 0: a branch
            at the estimate, as after a later trial (branches shed bits badly: at 4 times the estimate they lost
            0.05-0.34 dB at 0.3 bpp, and a third full fit would cost a `fast` search a third more time).
        candidates: a fit from random weights first trains this many candidates (seeds ``seed``, ``seed + 1``, ...)
            for ``candidate_steps`` steps of its schedule and goes on with the one of least mean training loss over its
            last 100 of them (1: one fit from ``seed``). Seeds alone moved a ``quality`` fit from random weights by
            about 1 dB at equal rate, and the early loss ranks them nearly as their files (docs/grid-codec.md). A fit
            from a warm start (the default) has no candidates: they would all start from the same weights.
        candidate_steps: how far each candidate trains before the choice; within the soft phase, and before the
            rate search's branch point (``branch_at``) where there is one.

    Raises:
        InputError: on construction, naming the option and value.
    """

    steps: int = 1500
    ste_steps: int = 300
    lr_latent: float = 0.25
    lr_network: float = 1e-2
    lr_ste: float = 1e-3
    temperature: tuple[float, float] = (0.5, 0.1)
    noise: float = 1.0
    lambda_rd: float = 1e-3
    seed: int = 0
    branch_at: float = 0.5
    max_rate_trials: int = 8
    rate_prior: tuple[tuple[float, float], ...] = FAST_RATE_PRIOR
    prior_slope_factor: float = 0.0
    residual: bool = True
    context: bool = True
    hybrid: bool = False
    hybrid_grids: int = 2
    pivot_refit: float = 4.0
    candidates: int = 1
    candidate_steps: int = 0

    def __post_init__(self) -> None:
        if not (math.isfinite(self.lambda_rd) and self.lambda_rd >= 0):
            raise InputError(f"--lambda-rd {self.lambda_rd}: must be a finite number >= 0")
        if self.steps < 1 or not 0 <= self.ste_steps <= self.steps:
            raise InputError(f"--steps {self.steps}: must be >= 1 and at least the {self.ste_steps} straight-through steps")
        for name in ("lr_latent", "lr_network", "lr_ste"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value > 0):
                raise InputError(f"{name} {value}: must be a positive number")
        if len(self.temperature) != 2 or not all(math.isfinite(t) and t > 0 for t in self.temperature):
            raise InputError(f"temperature {self.temperature}: expected two positive numbers (start, end)")
        if not (math.isfinite(self.noise) and 0 <= self.noise <= 1):
            raise InputError(f"noise {self.noise}: expected 0..1")
        if not (math.isfinite(self.branch_at) and 0 <= self.branch_at < 1):
            raise InputError(f"branch_at {self.branch_at}: expected 0 <= branch_at < 1")
        if not (math.isfinite(self.prior_slope_factor) and self.prior_slope_factor >= 0):
            raise InputError(f"prior_slope_factor {self.prior_slope_factor}: must be a finite number >= 0")
        if not (math.isfinite(self.pivot_refit) and (self.pivot_refit == 0 or self.pivot_refit >= 1)):
            raise InputError(f"pivot_refit {self.pivot_refit}: must be 0 (off) or a finite number >= 1")
        if not isinstance(self.residual, bool):
            raise InputError(f"--residual {self.residual!r}: expected on or off")
        if not isinstance(self.context, bool):
            raise InputError(f"--context {self.context!r}: expected on or off")
        if not isinstance(self.hybrid, bool):
            raise InputError(f"--hybrid {self.hybrid!r}: expected on or off")
        if not (isinstance(self.hybrid_grids, int) and 1 <= self.hybrid_grids <= 8):
            raise InputError(f"hybrid_grids {self.hybrid_grids!r}: expected an integer 1..8")
        if not (isinstance(self.candidates, int) and 1 <= self.candidates <= 16):
            raise InputError(f"candidates {self.candidates!r}: expected an integer 1..16")
        if self.candidates > 1 and not 1 <= self.candidate_steps < self._candidate_limit():
            raise InputError(f"candidate_steps {self.candidate_steps}: expected 1..{self._candidate_limit() - 1} "
                             f"(within the soft phase, before the branch point) with {self.candidates} candidates")  # fmt: skip
        if self.max_rate_trials < 1:
            raise InputError(f"max_rate_trials {self.max_rate_trials}: must be >= 1")
        if not _is_prior(self.rate_prior):
            raise InputError(f"rate_prior {self.rate_prior}: expected >= 2 positive (bpp, lambda) pairs, bpp rising and lambda falling")

    def _candidate_limit(self) -> int:
        soft = self.steps - self.ste_steps
        return round(self.branch_at * soft) if self.branch_at > 0 else soft  # the branch step of the rate search

    def with_candidates(self, count: int) -> GridFitConfig:
        """A copy with ``count`` candidates, each trained for :data:`CANDIDATE_SHARE` of the steps.

        Raises:
            InputError: if ``count`` is not an integer 1..16, or the schedule has no room for candidates.
        """
        if not isinstance(count, int) or not 1 <= count <= 16:
            raise InputError(f"--candidates {count}: expected an integer 1..16")
        steps = max(1, round(self.steps * CANDIDATE_SHARE)) if count > 1 else 0
        try:
            return replace(self, candidates=count, candidate_steps=steps)
        except InputError:
            raise InputError(f"--candidates {count}: --steps {self.steps} leaves no room for candidates (each trains "
                             f"1/{round(1 / CANDIDATE_SHARE)} of the steps)") from None  # fmt: skip

    def with_lambda(self, lambda_rd: float) -> GridFitConfig:
        """A copy with another ``lambda_rd``."""
        return replace(self, lambda_rd=lambda_rd)

    def with_steps(self, steps: int) -> GridFitConfig:
        """A copy with another step count; the straight-through steps keep their share.

        Raises:
            InputError: if ``steps`` is not a positive integer.
        """
        if not isinstance(steps, int) or steps < 1:
            raise InputError(f"--steps {steps}: must be a positive integer")
        scaled = replace(self, candidates=1, steps=steps, ste_steps=min(steps, round(self.ste_steps * steps / self.steps)))
        if self.candidates == 1:
            return scaled
        # The candidates keep their share of the schedule; too short a schedule for them leaves one fit.
        share = round(self.candidate_steps * steps / self.steps)
        return replace(scaled, candidates=self.candidates, candidate_steps=share) if 1 <= share < scaled._candidate_limit() else scaled

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready settings (saved with every result)."""
        return asdict(self)


def _is_prior(prior: object) -> bool:
    try:
        pairs = [(float(r), float(lam)) for r, lam in prior]  # type: ignore[union-attr]
    except (TypeError, ValueError):
        return False
    ok = len(pairs) >= 2 and all(math.isfinite(r) and math.isfinite(lam) and r > 0 and lam > 0 for r, lam in pairs)
    return ok and all(a[0] < b[0] and a[1] > b[1] for a, b in zip(pairs[:-1], pairs[1:], strict=True))


# candidates: four seeds for 400 steps each, +1,200 steps per fit from scratch (about 46 s at the idle 38 ms step) (docs/grid-codec.md).
_QUALITY = GridFitConfig(
    steps=6000, ste_steps=800, branch_at=0.7, max_rate_trials=4, rate_prior=QUALITY_RATE_PRIOR, prior_slope_factor=4.0,
).with_candidates(4)

GRID_PRESETS: dict[str, GridFitConfig] = {
    # Sized for about a minute per 240 x 240 slice on 2 CPU cores, rate search included (see docs/grid-codec.md).
    # prior_slope_factor: about twice the median ratio of the lambdas that landed in the band to JPEG 2000's slope,
    # so that most first trials land below the target: branches that spend more bits than the first fit follow the
    # fresh fits' curve, branches that must spend fewer lose 1-2 dB (docs/grid-codec.md).
    "fast": GridFitConfig(steps=900, ste_steps=150, branch_at=0.6, max_rate_trials=3, prior_slope_factor=8.0),
    # Sized for at most 10 minutes per slice on a CPU thread of its own.
    "quality": _QUALITY,
    # Twice the quality schedule (1,600 straight-through steps, four candidates of 800), no time target: 13-25 minutes
    # a search on this 2-core CPU, about 4.5 on an H200 by the step time (docs/grid-codec.md).
    "long": _QUALITY.with_steps(12000),
}
