"""Time to quality: how close do 4,000 gradient evaluations get to the PSNR of 20,000 paper steps?

Usage (from the repository root, after scripts/setup-venv):

    .venv/bin/python benchmarks/time_to_quality.py --case brats_2013_pat0006_1 --images 1

For test slices of a case (choose one the settings were not tuned on), it fits each architecture
at 1.2 bpp with the paper's plain Adam at lr 1e-3 for ``--ref-steps`` (the reference; ``0``
skips it) and with each candidate of ``--runs`` for ``--fast-steps`` gradient evaluations, and
prints the PSNR of the decoded file, the fp32 PSNR before quantization, and the seconds of each.
Candidates: ``cosine`` (warm-up 200, cosine decay from 1e-3), ``lbfgs1000`` / ``lbfgs2000``
(Adam at 1e-3, then L-BFGS after 1,000 / 2,000 steps), ``fast`` (the ``fast`` preset).
"""

from __future__ import annotations

import argparse
import os

import torch

from sinco.benchmark.selection import select_test_slices
from sinco.codec.config import CodecConfig
from sinco.codec.inr.config import INRFitConfig
from sinco.codec.registry import get_family
from sinco.compression.image import compress_image
from sinco.data.datasets import discover_cases
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice


def candidates(arch: str, steps: int) -> dict[str, INRFitConfig]:
    """The fast schedules compared, by name."""
    return {
        "cosine": INRFitConfig(steps=steps, lr=1e-3, schedule="cosine", warmup=200),
        "lbfgs1000": INRFitConfig(steps=steps, lr=1e-3, optimizer="adam+lbfgs", lbfgs_after=1000),
        "lbfgs2000": INRFitConfig(steps=steps, lr=1e-3, optimizer="adam+lbfgs", lbfgs_after=2000),
        "fast": get_family(arch).fit_config("fast", {"steps": steps}),
    }


def main() -> None:
    """Run the comparison and print one row per fit."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--case", default="brats_2013_pat0006_1")
    parser.add_argument("--images", type=int, default=1)
    parser.add_argument("--arch", nargs="+", default=["siren", "pe-mlp"])
    parser.add_argument("--ref-steps", type=int, default=20_000)
    parser.add_argument("--fast-steps", type=int, default=4_000)
    parser.add_argument("--runs", nargs="+", default=["cosine", "lbfgs1000", "lbfgs2000"], choices=("cosine", "lbfgs1000", "lbfgs2000", "fast"))
    args = parser.parse_args()
    cases = [c for c in discover_cases(args.data) if c.case_id == args.case]
    device = torch.device("cpu")
    print(f"{'slice':26} {'arch':7} {'run':10} {'steps':>6} {'psnr':>7} {'fp32':>7} {'seconds':>8}  (cpu, {torch.get_num_threads()} threads)")
    for ref in select_test_slices(cases, n_images=args.images):
        image, vmin, vmax = normalize_minmax(load_slice(ref.case.image, slice_index=ref.index))
        for arch in args.arch:
            runs = {"paper": INRFitConfig(steps=args.ref_steps, lr=1e-3)} if args.ref_steps else {}
            runs.update({name: fit for name, fit in candidates(arch, args.fast_steps).items() if name in args.runs})
            for name, fit in runs.items():
                result = compress_image(image, vmin=vmin, vmax=vmax, codec=CodecConfig(arch=arch, bpp=1.2), fit_config=fit, device=device)
                print(f"{ref.image_id:26} {arch:7} {name:10} {fit.steps:6d} {result.metrics['psnr']:7.2f} {result.metrics['psnr_fp32']:7.2f} "
                      f"{result.seconds:8.1f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
