"""Training-step time of the latent-grid family on a real 240 x 240 BraTS slice.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid_step_time.py [--steps 200] [--device cpu|cuda] [--image FLAIR.nii.gz]
        [--upsampling bicubic|learned]

The step's cost depends on the geometry and the spec, not on the content, so short fits at a fixed
``lambda_rd`` are enough. Prints milliseconds per step (soft-rounding and straight-through steps in the
``fast`` preset's proportion) for the default spec (or another upsampling) from two fits of N and 2N steps (their difference over
N steps, so quantization and coding cancel), with the torch thread count and the load average: what the
``fast`` preset's 60-second budget buys.

``--count-ops`` also counts the operations dispatched per step (views excluded), the same difference of two
fits: on a GPU each is at least one kernel launch, and the step of this small model is bound by launches
(docs/grid-codec.md), so the count is a machine-independent proxy for GPU step time.
"""

from __future__ import annotations

import argparse
import os
import time

import nibabel as nib
import torch

from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.spec import UPSAMPLING_KINDS, GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.data.intensity import normalize_minmax

IMAGE = "/work/shared/data/brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--device", default="cpu", choices=("cpu", "cuda"))
    parser.add_argument("--image", default=IMAGE, help="a BraTS FLAIR volume; its slice 85 is fitted (default: pat0003's)")
    parser.add_argument("--count-ops", action="store_true", help="also count dispatched operations per step")
    parser.add_argument("--upsampling", default=GridSpec().upsampling, choices=UPSAMPLING_KINDS, help="the spec's upsampling")
    args = parser.parse_args()
    if args.steps < 1:
        parser.error(f"--steps {args.steps}: must be >= 1")
    image = torch.from_numpy(normalize_minmax(nib.load(args.image).get_fdata()[:, :, 85])[0]).float()[None]
    fast = GRID_PRESETS["fast"]
    device = torch.device(args.device)
    spec = GridSpec(upsampling=args.upsampling)
    fit_grid(image, spec=spec, config=fast.with_steps(10), device=device)  # warm-up
    seconds = {}
    for steps in (args.steps, 2 * args.steps):
        config = fast.with_steps(steps).with_lambda(1e-4)
        started = time.perf_counter()
        fit_grid(image, spec=spec, config=config, device=device)
        seconds[steps] = time.perf_counter() - started
    per_step = (seconds[2 * args.steps] - seconds[args.steps]) / args.steps
    print(
        f"grid training step {tuple(image.shape[1:])}, {args.upsampling} upsampling: {1000 * per_step:.1f} ms (fits of {args.steps} and {2 * args.steps} "
        f"steps: {seconds[args.steps]:.1f} s and {seconds[2 * args.steps]:.1f} s); device {args.device}; "
        f"torch threads {torch.get_num_threads()}; load average {os.getloadavg()}"
    )
    if args.count_ops:
        counts = {steps: _count_ops(image, spec, fast.with_steps(steps).with_lambda(1e-4), device) for steps in (args.steps, 2 * args.steps)}
        print(f"operations dispatched per step (views excluded): {(counts[2 * args.steps] - counts[args.steps]) / args.steps:.1f}")


_VIEWS = frozenset(
    "view reshape _unsafe_view detach alias slice select narrow t transpose permute squeeze unsqueeze expand as_strided "
    "split split_with_sizes".split()
)


def _count_ops(image: torch.Tensor, spec: GridSpec, config: object, device: torch.device) -> int:
    """Operations (aten overloads, views excluded) dispatched by one fit, forward, backward and optimizer."""
    from torch.utils._python_dispatch import TorchDispatchMode

    class Counter(TorchDispatchMode):
        count = 0

        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if func.__name__.split(".")[0] not in _VIEWS:
                Counter.count += 1
            return func(*args, **(kwargs or {}))

    with Counter():
        fit_grid(image, spec=spec, config=config, device=device)
    return Counter.count


if __name__ == "__main__":
    main()
