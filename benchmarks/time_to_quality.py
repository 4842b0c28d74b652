"""Time to quality: does a learning-rate schedule reach, in few steps, the PSNR of the paper's plain Adam?

Usage (from the repository root, after scripts/setup-venv):

    .venv/bin/python benchmarks/time_to_quality.py --case brats_2013_pat0006_1 --images 1

For test slices of a case that the defaults were not tuned on, it fits each architecture at
1.2 bpp with plain Adam at lr 1e-3 for ``--ref-steps`` (the reference) and with the cosine schedule
for ``--fast-steps`` at each ``--fast-lr``, and prints the decoded-file PSNR and the seconds of each.
"""

from __future__ import annotations

import argparse
import os

import torch

from sinco.codec.inr_codec import CodecConfig, compress_image
from sinco.data.datasets import discover_cases
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice
from sinco.eval.selection import select_test_slices
from sinco.fit.config import FitConfig


def main() -> None:
    """Run the comparison and print one row per fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--case", default="brats_2013_pat0006_1")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--arch", nargs="+", default=["siren", "pe-mlp"])
    parser.add_argument("--ref-steps", type=int, default=20_000)
    parser.add_argument("--fast-steps", type=int, default=4_000)
    parser.add_argument("--fast-lr", type=float, nargs="+", default=[1e-3, 3e-3])
    parser.add_argument("--warmup", type=int, default=200)
    args = parser.parse_args()
    cases = [c for c in discover_cases(args.data) if c.case_id == args.case]
    device = torch.device("cpu")
    print(f"{'slice':26} {'arch':7} {'schedule':9} {'lr':>7} {'steps':>6} {'psnr':>7} {'seconds':>8}")
    for ref in select_test_slices(cases, n_images=args.images):
        image, vmin, vmax = normalize_minmax(load_slice(ref.case.image, slice_index=ref.index))
        for arch in args.arch:
            runs = [FitConfig(steps=args.ref_steps, lr=1e-3)]
            runs += [FitConfig(steps=args.fast_steps, lr=lr, schedule="cosine", warmup=args.warmup) for lr in args.fast_lr]
            for fit in runs:
                result = compress_image(image, vmin=vmin, vmax=vmax, codec=CodecConfig(arch=arch, bpp=1.2), fit=fit, device=device)
                print(f"{ref.image_id:26} {arch:7} {fit.schedule:9} {fit.lr:7.0e} {fit.steps:6d} {result.metrics['psnr']:7.2f} "
                      f"{result.seconds:8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
