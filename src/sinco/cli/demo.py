"""``sinco demo``: a short benchmark on the MNI152 template that nilearn ships (nothing downloaded)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from sinco.cli import options
from sinco.cli.common import EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register ``demo``."""
    p = sub.add_parser("demo", help="short benchmark on embedded real brain MRI (no download): the default codec against the "
                                    "classical ones and a few slices as one volume, or the paper's methods (--paper)")  # fmt: skip
    p.add_argument("--out", default="sinco-demo", metavar="DIR", help="output folder (default: ./sinco-demo)")
    p.add_argument("--paper", action="store_true",
                   help="the SINCO paper's four methods (SIREN and PE-MLP, plain and regularized) at 1.2 bpp instead, 500 steps")  # fmt: skip
    p.add_argument("--steps", type=int, default=None,
                   help="the neural codecs' steps (default: the fast preset's, 100 in the volume section; --paper 500)")  # fmt: skip
    p.add_argument("--images", type=int, default=None, help="test slices (default: 1; --paper 2)")
    options.add_device(p)
    p.add_argument("--export-data", default=None, metavar="DIR", help="only write the demo dataset to DIR and exit")
    options.add_quiet(p)
    p.set_defaults(func=cmd_demo)


def cmd_demo(args: argparse.Namespace) -> int:
    """``sinco demo``: write the embedded dataset, run the demo's benchmark, print its table and what it shows."""
    from sinco.benchmark.demo import check_demo_counts, plan_demo
    from sinco.benchmark.runner import run_benchmark
    from sinco.cli.benchmark import print_summary
    from sinco.data.demo import IMAGE_NAME, LABEL_NAME, write_demo_dataset
    from sinco.utils.device import resolve_device

    check_demo_counts(images=args.images, steps=args.steps)  # before anything is written
    if args.export_data:
        root = write_demo_dataset(args.export_data)
        print(f"{root}: demo dataset (folders layout: --image-glob {IMAGE_NAME} --label-glob {LABEL_NAME})")
        return EXIT_OK
    out = Path(args.out)
    plan = plan_demo(write_demo_dataset(out / "data"), paper=args.paper, images=args.images, steps=args.steps)
    device = resolve_device(args.device)
    print_summary(run_benchmark(plan.config, outdir=out, device=device, progress=not args.quiet))
    print(plan.caption)
    if plan.volume is not None:
        from sinco.benchmark.volumes import run_volume_benchmark

        print()
        print_summary(run_volume_benchmark(plan.volume, outdir=out / "volume", device=device, progress=not args.quiet))
        print(plan.volume_caption)
    return EXIT_OK
