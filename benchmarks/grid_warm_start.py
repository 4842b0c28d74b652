"""The grid family's warm start against random starting weights: fixed-lambda fits on real slices, and their BD-rate.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid_warm_start.py [--preset fast] [--lambdas 1e-3,3e-4,1e-4] [--seeds 0,1]

For each slice (BraTS 2013 pat0003 slice 85, LGG TCGA_CS_4942 slice 10), lambda and seed: one fit with the packaged
warm start (`--warm-start on`) and one from random weights (`--warm-start off`, one candidate, so both arms train the
same steps), each encoded to a real payload; prints the whole file's bpp and the PSNR of what it decodes to, then per
slice and seed the BD-rate / BD-PSNR of the warm curve against the random one (sinco.benchmark.bjontegaard).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

import numpy as np
import torch

from sinco.benchmark.bjontegaard import bd_psnr, bd_rate
from sinco.codec.format import OVERHEAD_BYTES
from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.spec import DEFAULT_WARM_START, GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice

DATA = os.environ.get("SINCO_SHARED_DATA", "../shared/data")
SLICES = {"brats pat0003 s85": ("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz", 85),
          "lgg TCGA_CS_4942 s10": ("lgg/TCGA_CS_4942_19970222/flair.nii.gz", 10)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--lambdas", default="1e-3,3e-4,1e-4")
    parser.add_argument("--seeds", default="0,1")
    args = parser.parse_args()
    lambdas = [float(v) for v in args.lambdas.split(",")]
    seeds = [int(v) for v in args.seeds.split(",")]
    preset = GRID_PRESETS[args.preset].with_candidates(1)
    print(f"# {args.preset} preset, {preset.steps} steps, one candidate; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name, (path, index) in SLICES.items():
        image, _, _ = normalize_minmax(load_slice(os.path.join(DATA, path), slice_index=index))
        target = torch.from_numpy(image.astype(np.float32))[None]
        curves: dict[tuple[str, int], list[tuple[float, float]]] = {}
        for seed in seeds:
            for arm, warm in (("warm", DEFAULT_WARM_START), ("random", 0)):
                spec = GridSpec(warm_start=warm)
                for lam in lambdas:
                    config = dataclasses.replace(preset, lambda_rd=lam, seed=seed)
                    result = fit_grid(target, spec=spec, config=config, device=torch.device("cpu"))[0]
                    bpp = 8 * (len(result.payload) + OVERHEAD_BYTES + len(spec.to_bytes())) / image.size
                    psnr = -10 * np.log10(result.mse)
                    curves.setdefault((arm, seed), []).append((bpp, psnr))
                    print(json.dumps({"slice": name, "arm": arm, "seed": seed, "lambda_rd": lam, "bpp": round(bpp, 4),
                                      "psnr": round(psnr, 3), "network_bits": result.network_bits}), flush=True)  # fmt: skip
            warm_curve, random_curve = curves[("warm", seed)], curves[("random", seed)]
            kwargs = dict(anchor_rate=[p[0] for p in random_curve], anchor_psnr=[p[1] for p in random_curve],
                          test_rate=[p[0] for p in warm_curve], test_psnr=[p[1] for p in warm_curve])  # fmt: skip
            print(f"# {name}, seed {seed}: warm against random BD-rate {bd_rate(**kwargs).value:+.1f}%, "
                  f"BD-PSNR {bd_psnr(**kwargs).value:+.2f} dB", flush=True)


if __name__ == "__main__":
    main()
