"""``sinco benchmark``: neural and classical codecs on a dataset."""

from __future__ import annotations

import argparse
from typing import Any

from sinco.cli import options
from sinco.cli.common import EXIT_OK


def add_parsers(sub: Any) -> None:
    """Register ``benchmark``."""
    from sinco.benchmark.methods import DEFAULT_ANCHOR, DEFAULT_METHODS, SECOND_ANCHOR, all_methods, volume_methods

    p = sub.add_parser("benchmark", help="compare the neural codecs and classical codecs on a dataset (the paper's Table 1)")
    options.add_dataset(p)
    p.add_argument("--seg-model", default=None, action="append", metavar="SEG.pt",
                   help="checkpoint from 'sinco train-seg' (the loss network): adds Dice and the regularized methods (default: "
                        "none, no Dice); repeat it for an ensemble")  # fmt: skip
    options.add_regularizer(p, benchmark=True)
    p.add_argument("--cases", default=None,
                   help="test cases: val (the seg model's validation cases), all, or ID,ID (default: val with --seg-model, else all)")  # fmt: skip
    p.add_argument("--roi-glob", default=None, metavar="GLOB",
                   help="region of interest for PSNR/SSIM ROI: a mask in each case folder, e.g. brainmask.nii.gz (images layout: "
                        "paired by name); default: the head found automatically")  # fmt: skip
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from: {', '.join(all_methods())}; with --volumes also the volume codecs "
                        f"{', '.join(volume_methods()) or '(none installed)'} (default: {','.join(DEFAULT_METHODS)}; without "
                        "--seg-model the unregularized ones)")  # fmt: skip
    p.add_argument("--bpp", default=None, help="target rate(s), comma-separated (default: 1.2)")
    p.add_argument("--anchor", default=DEFAULT_ANCHOR, metavar="METHOD",
                   help="with several --bpp rates: the method of --methods every other is compared with by BD-rate and "
                        f"BD-PSNR in table.md and results.json; the tables add the deltas against {SECOND_ANCHOR} (default: "
                        f"{DEFAULT_ANCHOR}, or {SECOND_ANCHOR} where {DEFAULT_ANCHOR} is not among --methods)")  # fmt: skip
    p.add_argument("--images", type=int, default=10, help="test slices (default: 10)")
    p.add_argument("--min-tumour", type=float, default=0.01,
                   help="minimum tumour fraction of a test slice, with labels only (default: 0.01)")  # fmt: skip
    options.add_fit_options(p, lam_help="SINCO regularizer weight(s) of the regularized methods; a list (0,0.01,0.1,1,10) runs them "
                            "once per value (default: 1)")  # fmt: skip
    options.add_codec_options(p)
    options.add_device(p)
    p.add_argument("--batch-slices", type=int, default=None, metavar="N",
                   help="test slices of one INR method fitted together (default: 1 on the CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--volumes", action="store_true",
                   help="benchmark volumes as volumes: each case's volume (or --slices slab) coded as one whole by every "
                        "method, volume codecs included; --images and --min-tumour do not apply")  # fmt: skip
    p.add_argument("--slices", default=None, metavar="all|A:B",
                   help="with --volumes: the axial slices of each volume (A:B 0-based, half-open; default: all)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder; rerunning resumes an interrupted run")
    lossless = p.add_argument_group("lossless and near-lossless comparison")
    lossless.add_argument("--lossless", action="store_true",
                          help="compare lossless coding instead: sinco's own (grid) against JPEG-LS, reversible JPEG 2000 and "
                               "HTJ2K, lossless JPEG XL and FFV1 on each test slice's integer grey levels (with --volumes: on each "
                               "volume or --slices slab, coded as one whole); prints bits per pixel (voxel), the ratio against the "
                               "stored bit depth, encode and decode seconds, and checks every decode")  # fmt: skip
    lossless.add_argument("--max-error", default=None, metavar="K[,K...]",
                          help="with --lossless: near-lossless bounds too (every decoded level within K; sinco and JPEG-LS)")  # fmt: skip
    options.add_quiet(p)
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("report", help="redraw benchmark tables and a rate-distortion figure from results.json files alone")
    p.add_argument("results", nargs="+", metavar="RESULTS", help="results.json files (or benchmark output folders)")
    p.add_argument("--anchor", default=None, metavar="METHOD", help="the Bjontegaard anchor of every table (default: each run's)")
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder: NAME.md per run and rate_distortion.png")
    p.set_defaults(func=cmd_report)


def print_summary(result: dict) -> None:
    """The table, then where the results and figures are."""
    print(result["table"])
    print(f"results: {result['outdir']}/results.json, {result['outdir']}/table.md")
    for path in result["figures"]:
        print(f"figure: {path}")


def _codec_options_by_family(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each family's codec options among the flags given (a flag applies to every family that reads it)."""
    from sinco.codec.registry import all_families

    return {f.name: {o.dest: getattr(args, o.dest) for o in f.options if getattr(args, o.dest) is not None} for f in all_families()}


def _methods(args: argparse.Namespace) -> tuple[str, ...]:
    """``--methods``, or the default: without ``--seg-model``, the default methods that need none."""
    from sinco.benchmark.methods import DEFAULT_METHODS, is_regularized

    if args.methods is not None:
        return tuple(m for m in args.methods.split(",") if m)
    if args.seg_model is not None:
        return DEFAULT_METHODS
    return tuple(m for m in DEFAULT_METHODS if not is_regularized(m))


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``sinco benchmark``: the paper's comparison on a dataset (``--volumes``: on whole volumes)."""
    from sinco.errors import InputError

    if args.lossless or args.max_error is not None:
        return _cmd_lossless(args)
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.runner import run_benchmark
    from sinco.benchmark.volumes import VolumeBenchmarkConfig, run_volume_benchmark
    from sinco.codec.family import COMMON_FIT_OPTIONS
    from sinco.compression.volume import default_batch_slices
    from sinco.utils.device import resolve_device

    device = resolve_device(args.device)
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    overrides = options.fit_overrides(args, lam_list=True)
    lams = options.parse_lams(args.lam, allow_list=True)
    image_glob, label_glob = options.dataset_globs(args)
    cases = args.cases if args.cases is not None else ("val" if args.seg_model is not None else "all")
    if args.slices is not None and not args.volumes:
        raise InputError(f"--slices {args.slices!r}: a slab of each volume is benchmarked with --volumes")
    kind, extra = (VolumeBenchmarkConfig, {"slices": args.slices or "all"}) if args.volumes else (BenchmarkConfig, {})
    if args.volumes and args.label_glob is None:
        label_glob = None  # the volume benchmark reads no labels: a dataset without them needs no --label-glob none
    config = kind(
        data=str(args.data), seg_model=None if args.seg_model is None else str(args.seg_model[0]), layout=args.layout,
        image_glob=image_glob, label_glob=label_glob, channel=args.channel, cases=cases, roi_glob=args.roi_glob,
        methods=_methods(args), bpps=options.parse_list(args.bpp or "1.2", arg="--bpp"), images=args.images,
        min_tumour=args.min_tumour, preset=args.preset, steps=args.steps, lr=args.lr, lam=lams[0],
        lams=lams if len(lams) > 1 else None, eval_seg_model=args.eval_seg_model,
        ensemble=tuple(str(p) for p in (args.seg_model or [])[1:]), seg_target=args.seg_target, seg_perturb=args.seg_perturb,
        reg_every=args.reg_every, seed=args.seed, batch_slices=batch,
        fit_options={k: v for k, v in overrides.items() if k not in COMMON_FIT_OPTIONS and v is not None},
        codec_options={k: v for k, v in _codec_options_by_family(args).items() if v},
        anchor=args.anchor, **extra,
    )  # fmt: skip
    run = run_volume_benchmark if args.volumes else run_benchmark
    print_summary(run(config, outdir=args.out, device=device, progress=not args.quiet))
    return EXIT_OK


def _cmd_lossless(args: argparse.Namespace) -> int:
    """``sinco benchmark --lossless [--max-error K,...] [--volumes [--slices A:B]]``: the lossless and near-lossless
    comparison, on test slices or on whole volumes."""
    from sinco.benchmark.lossless import LosslessConfig, run_lossless_benchmark
    from sinco.errors import InputError

    if not args.lossless:
        raise InputError("--max-error: needs --lossless (the near-lossless bounds of the lossless comparison)")
    lossy = {"--seg-model": args.seg_model, "--eval-seg-model": args.eval_seg_model, "--bpp": args.bpp, "--preset": args.preset,
             "--roi-glob": args.roi_glob}  # fmt: skip
    given = [flag for flag, value in lossy.items() if value is not None]
    if given:
        raise InputError(f"--lossless: takes no {', '.join(given)} (lossless files have no target rate and no segmentation)")
    bounds = (0,) if args.max_error is None else options.parse_list(args.max_error, arg="--max-error", cast=int)
    if args.slices is not None and not args.volumes:
        raise InputError(f"--slices {args.slices!r}: a slab of each volume is benchmarked with --volumes")
    image_glob, label_glob = options.dataset_globs(args)
    if args.volumes and args.label_glob is None:
        label_glob = None  # volumes are taken whole: no tumour labels to select slices by
    config = LosslessConfig(
        data=str(args.data), layout=args.layout, image_glob=image_glob, label_glob=label_glob, channel=args.channel,
        cases=args.cases or "all", methods=tuple(m for m in (args.methods or "").split(",") if m),
        max_errors=tuple(sorted({0, *bounds})), images=args.images, min_tumour=args.min_tumour, steps=args.steps, seed=args.seed,
        slices=(args.slices or "all") if args.volumes else None,
    )  # fmt: skip
    result = run_lossless_benchmark(config, outdir=args.out, progress=not args.quiet)
    print(result["table"])
    print(f"results: {result['outdir']}/results.json, {result['outdir']}/table.md")
    return EXIT_OK


def cmd_report(args: argparse.Namespace) -> int:
    """``sinco report``: tables and the rate-distortion figure of saved benchmark runs."""
    from sinco.benchmark.report import write_report

    for path in write_report(args.results, outdir=args.out, anchor=args.anchor):
        print(path)
    return EXIT_OK
