"""Decode time of the latent-grid family on a real 240 x 240 BraTS slice (geometry-bound, not content-bound).

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid_decode_time.py

A short fit (30 steps) gives a payload; decoding cost depends on the number of latents and decoding steps,
which the geometry fixes, so a short fit is enough to time it. Prints the first decode call and the best and
median of 5 further calls, with the load average. (The probability table, built once per process, already
exists here because the fit coded the payload; building it takes about 0.1-0.2 s.) Then the same with a residual
layer (payload version 2) of 1 bpp, and with the lossless residual on the slice's own grey levels.
"""

from __future__ import annotations

import os
import time

import nibabel as nib
import numpy as np
import torch

from sinco.codec.grid import residual as R
from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.payload import decode_grid, with_residual
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.data.intensity import normalize_minmax

IMAGE = "/work/shared/data/brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz"


def main() -> None:
    volume = np.asarray(nib.load(IMAGE).dataobj)
    image, _, _ = normalize_minmax(volume[:, :, 85])
    spec = GridSpec()
    config = GridFitConfig(steps=30, ste_steps=5, lambda_rd=1e-4, seed=0)
    result = fit_grid(torch.from_numpy(image)[None], spec=spec, config=config, device=torch.device("cpu"))[0]
    height, width = image.shape
    levels = R.image_levels(image)
    layers = {
        "no residual": None,
        "1 bpp residual": R.fit_to_budget(image, result.reconstruction, budget_bits=1.0 * image.size),
        f"lossless residual (1/{levels})": R.encode(image, result.reconstruction, levels=levels, step=1),
    }
    for name, layer in layers.items():
        payload = result.payload if layer is None else with_residual(result.payload, layer)
        expected = result.reconstruction if layer is None else layer.apply(result.reconstruction)
        _time(name, payload, expected, spec=spec, height=height, width=width)


def _time(name: str, payload: bytes, expected: np.ndarray, *, spec: GridSpec, height: int, width: int) -> None:
    started = time.perf_counter()
    decode_grid(payload, spec=spec, height=height, width=width)
    first = time.perf_counter() - started
    times = []
    for _ in range(5):
        started = time.perf_counter()
        decoded = decode_grid(payload, spec=spec, height=height, width=width)
        times.append(time.perf_counter() - started)
    print(
        f"{name}: decode {height}x{width} ({8 * len(payload) / (height * width):.2f} bpp payload): first call "
        f"{first * 1000:.0f} ms, best of 5 {min(times) * 1000:.0f} ms, median {sorted(times)[2] * 1000:.0f} ms; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}; "
        f"equals the encoder's reconstruction: {np.array_equal(decoded, expected)}"
    )


if __name__ == "__main__":
    main()
