"""The latent-grid codec family (Cool-chic / C3 style): multi-resolution integer latents, a small synthesis
network and an auto-regressive entropy model, all coded into one payload that decodes bit-exactly."""

from sinco.codec.grid.config import GRID_PRESETS, GridFitConfig
from sinco.codec.grid.fit import GridFitResult, GridState, fit_grid, fit_grid_at_bpp
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.spec import GridSpec

__all__ = ["GRID_PRESETS", "GridFitConfig", "GridFitResult", "GridSpec", "GridState", "decode_grid", "fit_grid", "fit_grid_at_bpp"]
