"""Fitting settings of the volume latent-grid family: ``grid``'s :class:`~sinco.codec.grid.config.GridFitConfig` (one
fit of a slab is a fit of ``grid``'s schedule over all its voxels at once), and the presets."""

from __future__ import annotations

from sinco.codec.grid.config import GridFitConfig

#: Slices per slab when ``--slab`` is not given: the unit of random access and of a fit. 16 slices of 240 x 240 keep a
#: fit's working set near 1 GB on the CPU and decode one slice in a fraction of a second; longer slabs share the
#: networks over more slices (less rate per voxel) but cost a whole slab to decode any slice of it.
DEFAULT_SLAB = 16
MAX_SLAB = 64

#: File bits per voxel against lambda_rd of the first trial (a guess the later trials correct; a slab shares its
#: networks and reads the previous slice, so it lands below ``grid``'s rate at one lambda).
RATE_PRIOR: tuple[tuple[float, float], ...] = ((0.05, 3e-2), (0.15, 3e-3), (0.4, 3e-4), (0.8, 3e-5), (1.5, 1e-6))

# No residual layer, context coder or candidates: those are ``grid``'s per-slice refinements.
# The first lambda: this times JPEG 2000's slope on the middle slice (grid's fast preset uses 8 so that most first trials
# land below the target; a slab at the same lambda spends fewer bits per voxel than a slice).
_COMMON = dict(residual=False, context=False, rate_prior=RATE_PRIOR, prior_slope_factor=4.0)

GRID3D_PRESETS: dict[str, GridFitConfig] = {
    # Cheap: a slab of 16 slices in about the time grid's fast preset takes for a few slices.
    "fast": GridFitConfig(steps=600, ste_steps=100, branch_at=0.6, max_rate_trials=3, **_COMMON),
    # Longer fits, one more rate trial.
    "quality": GridFitConfig(steps=3000, ste_steps=400, branch_at=0.7, max_rate_trials=4, **_COMMON),
    # Twice quality's schedule, no time target: meant for GPUs.
    "long": GridFitConfig(steps=6000, ste_steps=800, branch_at=0.7, max_rate_trials=4, **_COMMON),
}
