"""The grid family's hybrid (the context coder reading a grid file's image) against the residual layer on the same
grid file and against the context coder alone, at fixed grid fits and target rates.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid_hybrid.py [--lambdas 3e-3,3e-4] [--bpp 0.6,1.2]

For each slice (BraTS 2013 pat0003 slice 96, LGG TCGA_CS_4942 slice 10): one grid fit of the `fast` preset per
lambda_rd; then per target rate (whole file, header included) the context coder alone at the least error bound that
fits, and for each grid file below the target the residual layer that spends the bits left and the hybrid at the
least bound that fits (no gate: every candidate is coded). Prints each file's bpp, the PSNR of what it decodes to,
the bound and the seconds it took; the hybrid's decoding is checked against the encoder's levels.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np
import torch

from sinco.codec.format import OVERHEAD_BYTES
from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.family import GridFamily
from sinco.codec.grid.lossless import fit_to_budget
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.rate_search import _with_residual
from sinco.codec.grid.residual import image_levels
from sinco.codec.grid.training import fit_grid
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice

DATA = os.environ.get("SINCO_SHARED_DATA", "../shared/data")
SLICES = {"brats pat0003 s96": ("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz", 96),
          "lgg TCGA_CS_4942 s10": ("lgg/TCGA_CS_4942_19970222/flair.nii.gz", 10)}  # fmt: skip


def _psnr(decoded: np.ndarray, image: np.ndarray) -> float:
    mse = float(np.mean((decoded.astype(np.float64) - image.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else -10 * math.log10(mse)


def report(name: str, kind: str, target: float, **fields: object) -> None:
    """One JSON line: the slice, the target rate, the kind of file and its figures."""
    print(json.dumps({"slice": name, "target_bpp": target, "kind": kind, **fields}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lambdas", default="3e-3,3e-4")
    parser.add_argument("--bpp", default="0.6,1.2")
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    rates = [float(v) for v in args.bpp.split(",")]
    spec = GridFamily().make_spec({})
    header = OVERHEAD_BYTES + len(spec.to_bytes())
    print(f"# fast preset grids; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name, (path, index) in SLICES.items():
        image, _, _ = normalize_minmax(load_slice(os.path.join(DATA, path), slice_index=index))
        image = image.astype(np.float32)
        height, width = image.shape
        levels = image_levels(image)
        grids = [fit_grid(torch.from_numpy(image)[None], spec=spec, config=GRID_PRESETS["fast"].with_lambda(lam),
                          device=torch.device("cpu"))[0] for lam in lambdas]  # fmt: skip

        for bpp in rates:
            budget = bpp * image.size - 8 * header
            started = time.perf_counter()
            alone = fit_to_budget(image, budget_bits=budget)
            if alone is not None:
                report(name, "context alone", bpp, bound=alone.max_error, bpp=round(8 * (len(alone.payload) + header) / image.size, 4),
                       psnr=round(_psnr(alone.levels / alone.top, image), 2), seconds=round(time.perf_counter() - started, 1))  # fmt: skip
            for lam, grid in zip(lambdas, grids, strict=True):
                if grid.payload_bits >= budget:
                    continue
                grid_bpp = round(8 * (len(grid.payload) + header) / image.size, 4)
                layer = _with_residual(image, grid, budget_bits=budget - grid.payload_bits, levels=levels)
                if layer is not None:
                    report(name, "residual layer", bpp, lambda_rd=lam, grid_bpp=grid_bpp, bpp=round(8 * (len(layer.payload) + header) / image.size, 4),
                           psnr=round(_psnr(layer.reconstruction, image), 2))  # fmt: skip
                started = time.perf_counter()
                hybrid = fit_to_budget(image, budget_bits=budget, grid_payload=grid.payload, prediction=grid.reconstruction)
                seconds = round(time.perf_counter() - started, 1)
                if hybrid is None:
                    report(name, "hybrid", bpp, lambda_rd=lam, grid_bpp=grid_bpp, fits=False, seconds=seconds)
                    continue
                decoded = decode_grid(hybrid.payload, spec=spec, height=height, width=width)
                assert np.array_equal(decoded, (hybrid.levels / hybrid.top).astype(np.float32))
                report(name, "hybrid", bpp, lambda_rd=lam, grid_bpp=grid_bpp, bound=hybrid.max_error,
                       bpp=round(8 * (len(hybrid.payload) + header) / image.size, 4), psnr=round(_psnr(decoded, image), 2), seconds=seconds)  # fmt: skip


if __name__ == "__main__":
    main()
