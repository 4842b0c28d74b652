"""Slices per minute when several slices are fitted as one batched computation.

Usage (from the repository root, after scripts/setup-venv):

    .venv/bin/python benchmarks/batch_speed.py [--batches 1,2,4,8] [--steps 20] [--device cpu]

For each architecture at 1.2 bpp on real 240 x 240 BraTS slices (consecutive slices of one case)
it times :meth:`sinco.codec.inr.training.StackedFit.step` (the step every fit runs) for batches of 1, 2, 4,
8 slices, with the compile mode a 50,000-step fit picks, and prints milliseconds per step, per
slice, and the slices per minute that the paper's 50,000 steps and the 4,000-step fast preset
would give.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np
import torch
from step_speed import median_ms

from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.networks import build_inr
from sinco.codec.inr.training import StackedFit
from sinco.codec.registry import get_family
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_array, select_slices


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--batches", default="1,2,4,8")
    parser.add_argument("--steps", type=int, default=20, help="timed steps per batch size (after 5 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    batches = [int(b) for b in args.batches.split(",")]
    volume = load_array(Path(args.data) / "brats_2013_pat0003_1" / "Flair_subtrMeanDivStd.nii.gz")
    stack, _ = select_slices(volume, slices=f"80:{80 + max(batches)}")
    images = np.stack([normalize_minmax(s)[0] for s in stack]).astype(np.float32)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}")
    print(f"{'arch':7} {'batch':>5} {'ms/step':>8} {'ms/slice':>9} {'vs batch 1':>10} {'slices/min @50k':>15} {'slices/min @4k':>14}")
    for arch in ("siren", "pe-mlp"):
        spec = get_family(arch).make_spec(bpp=1.2, height=240, width=240, options={})
        single = None
        for batch in batches:
            models = []
            for _ in range(batch):
                torch.manual_seed(0)
                models.append(build_inr(spec))
            fit = StackedFit(models, targets=torch.from_numpy(images[:batch]), config=INRFitConfig(steps=50_000), device=device,
                             compile_when_auto=get_family(arch).compile_when_auto)
            counter = iter(range(10**9))

            def step(fit: StackedFit = fit, counter=counter) -> None:
                fit.step(next(counter))
                sync()

            ms = median_ms(step, steps=args.steps)
            per_slice = ms / batch
            single = single or per_slice
            print(f"{arch:7} {batch:5d} {ms:8.1f} {per_slice:9.2f} {single / per_slice:9.2f}x {60_000 / (per_slice * 50_000):15.3f} "
                  f"{60_000 / (per_slice * 4_000):14.2f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
