"""``sinco compress`` (one slice, or the slices of a volume) and ``sinco compress-batch`` (an archive on Dask)."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from sinco.cli import options
from sinco.cli.common import EXIT_OK, EXIT_SLICES_FAILED, json_text, write_sidecar
from sinco.errors import InputError

#: ``--bpp`` when neither it nor --lossless / --max-error is given.
DEFAULT_BPP = 1.2


def add_parsers(sub: Any) -> None:
    """Register ``compress`` and ``compress-batch``."""
    p = sub.add_parser("compress", help="fit a neural codec to a 2-D image (or the slices of a volume) and store it as a .sinco file")
    p.add_argument("input", metavar="INPUT",
                   help="NIfTI (.nii/.nii.gz), .npy, PNG or TIFF image, or DICOM: a file or a folder holding one series")  # fmt: skip
    options.add_output(p, metavar="OUT.sinco", help="output file (a JSON record goes to OUT.sinco.json)")
    options.add_rate(p, arch_help=True)
    p.set_defaults(bpp=None)  # given or not: --lossless and --max-error refuse a target rate
    p.add_argument("--lossless", action="store_true",
                   help="store the image's grey levels exactly (integer images; floats on an integer lattice), no --bpp [grid]")  # fmt: skip
    p.add_argument("--max-error", type=int, default=None, metavar="K",
                   help="near-lossless: every decoded pixel within K grey levels of the input (JPEG-LS's NEAR), no --bpp [grid]")  # fmt: skip
    p.add_argument("--slice", type=int, default=None, metavar="K", help="slice index of a 3-D/4-D volume")
    p.add_argument("--slices", default=None, metavar="all|A:B",
                   help="compress consecutive slices (A:B half-open, 0-based) of a volume into one volume file")  # fmt: skip
    p.add_argument("--batch-slices", type=int, default=None, metavar="N",
                   help="with --slices: slices fitted together as one batch (default: 1 on the CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis (default: 2, axial)")
    p.add_argument("--channel", type=int, default=0, metavar="C", help="channel of a 4-D volume (default: 0, FLAIR)")
    options.add_device(p)
    p.add_argument("--seg-model", default=None, action="append", metavar="SEG.pt",
                   help="segmentation checkpoint from 'sinco train-seg': enables the SINCO regularizer and Dice metrics; "
                        "repeat it for an ensemble (the regularizer averaged over the networks)")  # fmt: skip
    p.add_argument("--mask", default=None, metavar="LABELS", help="label file of INPUT (same slice is read; label > 0 = tumour)")
    options.add_regularizer(p, benchmark=False)
    p.add_argument("--roi", default=None, metavar="MASK",
                   help="region of interest for psnr_roi/ssim_roi, e.g. a brain mask (same slice is read; default: the head found "
                        "automatically)")  # fmt: skip
    options.add_json(p, what="the result")
    options.add_quiet(p)
    options.add_fit_options(p, lam_help="regularizer weight lambda (default: 1; 0 = plain fitting)")
    options.add_codec_options(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("compress-batch", help="compress many scans, one Dask task per slice (per slab with --arch grid3d), resumably "
                                             "(needs sinco[cluster])")  # fmt: skip
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (their image files) or globs ('data/*/flair.nii.gz')")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: one .sinco file per input, manifest.json, .sinco-work/ records")
    options.add_rate(p, arch_help=False)
    options.add_device(p)
    options.add_fit_options(p, lam_help="regularizer weight lambda (default: 1; 0 = plain fitting)")
    options.add_codec_options(p)
    options.add_slicing(p, volumes=True, slices_default="all")
    p.add_argument("--seg-model", default=None, metavar="SEG.pt", help="segmentation checkpoint: enables the SINCO regularizer")
    p.add_argument("--mask-glob", default=None, metavar="PATTERN",
                   help="each input's label file, a pattern in its folder; {stem} = the input's name without suffix")  # fmt: skip
    p.add_argument("--scheduler", default="local", metavar="local|tcp://HOST:PORT",
                   help="local: a LocalCluster on this machine (default); or the address of a running Dask scheduler")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, metavar="N", help="local worker processes (default: cores / K, or one per GPU)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="K",
                   help="torch threads of each fit; each worker fits one slice at a time (default: 1)")  # fmt: skip
    options.add_json(p, what="the counts")
    options.add_quiet(p)
    p.add_argument("--force", action="store_true", help="replace existing output files made with other settings")
    p.set_defaults(func=cmd_compress_batch)


def _check_regularizer_flags(args: argparse.Namespace, *, mask_optional: bool = False) -> None:
    if (args.seg_model is None) != (args.mask is None) and not mask_optional:
        given, missing = ("--mask", "--seg-model") if args.seg_model is None else ("--seg-model", "--mask")
        raise InputError(f"{given} needs {missing}: the regularizer segments the reconstruction and compares it with the mask")


def cmd_compress(args: argparse.Namespace) -> int:
    """``sinco compress``: fit, store, decode, measure."""
    from sinco.compression.image import compress_images
    from sinco.compression.records import sidecar_record
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import load_slice
    from sinco.regularizer.judge import load_networks
    from sinco.utils.atomic import atomic_write_bytes, check_output_path
    from sinco.utils.device import resolve_device

    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    sidecar = out.with_name(out.name + ".json")
    if args.lossless or args.max_error is not None:
        return _compress_exact(args, out=out, sidecar=sidecar)
    args.bpp = DEFAULT_BPP if args.bpp is None else args.bpp
    codec, fit_config = options.codec_and_fit_config(args)
    if codec.family.codes_slabs and args.slices is None:
        raise InputError(f"--arch {args.arch} codes volumes: give --slices A:B (or all) of a volume; a single image: --arch grid")
    regularizer = options.regularizer_options(args, seed=fit_config.seed)
    # With --seg-target self the loss network's own mask is the target: --mask only adds ground-truth metrics.
    _check_regularizer_flags(args, mask_optional=regularizer.target == "self" and args.seg_model is not None)
    if args.slices is not None:
        if len(args.seg_model or []) > 1 or args.eval_seg_model or regularizer.target != "mask" or regularizer.perturb:
            raise InputError("--slices: an ensemble, --seg-target self, --seg-perturb and --eval-seg-model work on single slices only")
        if codec.family.codes_slabs:
            return _compress_slabs(args, out=out, sidecar=sidecar, codec=codec, fit_config=fit_config)
    device = resolve_device(args.device)
    if args.slices is not None:
        return _compress_volume(args, out=out, sidecar=sidecar, codec=codec, fit_config=fit_config, device=device)
    if args.batch_slices is not None:
        raise InputError("--batch-slices: only with --slices (a single slice is one fit)")
    raw = load_slice(args.input, slice_index=args.slice, axis=args.axis, channel=args.channel)
    image, vmin, vmax = normalize_minmax(raw, name=f"INPUT {args.input!r}")
    seg_models, judge = load_networks(args.seg_model, args.eval_seg_model)
    seg_model = seg_models[0] if seg_models else None
    mask = None if args.mask is None else load_slice(args.mask, slice_index=args.slice, axis=args.axis, arg="--mask") > 0
    roi = None
    if args.roi is not None:
        roi = load_slice(args.roi, slice_index=args.slice, axis=args.axis, arg="--roi") > 0
        if roi.shape != image.shape:
            raise InputError(f"--roi {args.roi!r}: shape {roi.shape} differs from INPUT's {image.shape}")
    result = compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit_config=fit_config, device=device, seg_model=seg_model,
        masks=None if mask is None else [mask], rois=[roi], progress=not args.quiet,
        regularizer_options=regularizer if seg_model is not None else None, ensemble=seg_models[1:], eval_seg_model=judge,
    )[0]  # fmt: skip
    atomic_write_bytes(out, result.data)
    if result.report.divergences:
        print(f"sinco: warning: the fit diverged {result.report.divergences} time(s); the best state was restored "
              f"and the learning rate lowered to {result.report.details['lr_final']:g}", file=sys.stderr)  # fmt: skip
    summary = {"output": str(out), **result.to_dict(), "device": str(device)}
    if hasattr(fit_config, "data_term"):
        summary["data_term"] = fit_config.data_term
    regularizer_record = None if seg_model is None else {
        "seg_model": str(args.seg_model[0]), "mask": None if args.mask is None else str(args.mask),
        "seg_training": seg_model.training.get("summary"), "ensemble": [str(p) for p in args.seg_model[1:]],
        "seg_target": regularizer.target, "seg_perturb": regularizer.perturb, "perturb_scale": regularizer.scale,
        "perturb_noise": regularizer.noise,
    }  # fmt: skip
    record = sidecar_record(
        input={"path": str(args.input), "slice": args.slice, "axis": args.axis, "channel": args.channel, "shape": list(raw.shape),
               "vmin": vmin, "vmax": vmax, "roi": args.roi},
        codec=codec, fit_config=fit_config, device=args.device, result=summary, regularizer=regularizer_record)  # fmt: skip
    record["eval_seg_model"] = None if judge is None else {"path": str(args.eval_seg_model), "seg_training": judge.training.get("summary")}
    write_sidecar(sidecar, record)
    if args.json:
        print(json_text(summary))
        return EXIT_OK
    m = result.metrics
    seg = f" dice={m['dice']:.4f} (uncompressed {m['dice_reference']:.4f}) lam={result.report.lam:g}" if "dice" in m else ""
    seg += f" dice_eval={m['dice_eval']:.4f}" if "dice_eval" in m else ""
    params = f" bpp_params={m['bpp_params']:.4f}" if "bpp_params" in m else ""
    print(f"{out}: psnr={m['psnr']:.2f} dB ssim={m['ssim']:.4f}{seg}{params} bpp_file={m['bpp_file']:.4f} "
          f"({m['file_bytes']} bytes){rate_search_phrase(result.report.details, file_bytes=m['file_bytes'])} "
          f"seconds={result.seconds:.1f}")  # fmt: skip
    return EXIT_OK


def _exact_flags(args: argparse.Namespace) -> tuple[int, str]:
    """The bound of ``--lossless`` / ``--max-error`` and the mode's name, or a one-line refusal of what goes against them."""
    mode = "--lossless" if args.lossless else "--max-error"
    if args.max_error is not None and args.max_error < 0:
        raise InputError(f"--max-error {args.max_error}: must be a non-negative integer (grey levels of error allowed)")
    if args.lossless and args.max_error not in (None, 0):
        raise InputError(f"--lossless and --max-error {args.max_error}: give one (--lossless is --max-error 0)")
    if args.bpp is not None:
        raise InputError(f"{mode} and --bpp: the file's size follows from the image (and the error bound); give one")
    if args.arch != "grid":
        raise InputError(f"{mode}: --arch grid only (its context coder), not --arch {args.arch}")
    for flag, value in (("--seg-model", args.seg_model), ("--mask", args.mask), ("--roi", args.roi), ("--preset", args.preset),
                        ("--lambda-rd", getattr(args, "lambda_rd", None)), ("--batch-slices", args.batch_slices)):  # fmt: skip
        if value is not None:
            raise InputError(f"{mode} and {flag}: {flag} applies to lossy fits only")
    return (0 if args.max_error is None else args.max_error), mode


def _compress_exact(args: argparse.Namespace, *, out: Path, sidecar: Path) -> int:
    """``sinco compress --lossless`` / ``--max-error K``: the image's levels by the context coder, checked by decoding."""
    import torch

    from sinco.codec.grid.context_fit import ContextFitConfig
    from sinco.codec.grid.lossless import compress_exact, compress_exact_volume
    from sinco.data.io import load_array, load_slice, select_slices
    from sinco.utils.atomic import atomic_write_bytes
    from sinco.version import __version__

    max_error, mode = _exact_flags(args)
    config = ContextFitConfig(seed=args.seed, **({} if args.steps is None else {"steps": args.steps}))
    if args.slices is not None:
        if args.slice is not None:
            raise InputError("--slice and --slices: give one (--slice K for one slice, --slices all|A:B for a volume)")
        from sinco.data.io import load_affine

        stack, indices = select_slices(load_array(args.input), slices=args.slices, axis=args.axis, channel=args.channel)
        result = compress_exact_volume(stack, max_error=max_error, config=config, first_index=indices.start, axis=args.axis,
                                       affine=load_affine(args.input))  # fmt: skip
        pixels, what = stack.size, f"{stack.shape[0]} slices ({result.fitted_slices} fitted)"
    else:
        raw = load_slice(args.input, slice_index=args.slice, axis=args.axis, channel=args.channel)
        result = compress_exact(raw, max_error=max_error, config=config, name=f"INPUT {args.input!r}")
        pixels, what = raw.size, f"{raw.shape[0]}x{raw.shape[1]}"
    atomic_write_bytes(out, result.data)
    summary = {"output": str(out), "mode": "lossless" if max_error == 0 else "near-lossless", "max_error": max_error,
               "measured_max_error": result.measured_error, "file_bytes": len(result.data), "bpp_file": 8 * len(result.data) / pixels,
               "encode_seconds": result.encode_seconds, "decode_seconds": result.decode_seconds}  # fmt: skip
    # The context model is fitted on the CPU; its floating-point order, so the file's bytes, depends on the thread count.
    write_sidecar(sidecar, {"sinco_version": __version__, "input": {"path": str(args.input), "slice": args.slice, "slices": args.slices, "axis": args.axis,
                                          "channel": args.channel}, "coder": {"mode": mode, **config.__dict__}, "device": "cpu",
                            "torch_threads": torch.get_num_threads(), "result": summary})  # fmt: skip
    if args.json:
        print(json_text(summary))
        return EXIT_OK
    bound = "exact" if max_error == 0 else f"max error {result.measured_error} <= {max_error} levels"
    print(f"{out}: {what} {bound}, bpp_file={summary['bpp_file']:.4f} ({len(result.data)} bytes) "
          f"encode={result.encode_seconds:.1f}s decode={result.decode_seconds:.2f}s")  # fmt: skip
    return EXIT_OK


def lattice_phrase(levels: int, *, step: int) -> str:
    """A grid residual layer's lattice in words (``levels`` 2^16: the fine one; else the image's own grey levels)."""
    if levels == 1 << 16:
        return "2^-16 of the range"
    return f"1/{levels}: the image's levels" + (", lossless" if step == 1 else "")


def rate_search_phrase(details: dict[str, Any], *, file_bytes: int) -> str:
    """How a rate search ended (the grid family's), for the one-line report; empty for other families."""
    if details.get("within_band") is None:
        return f" lambda_rd={details['lambda_rd']:.3g}" if "lambda_rd" in details else ""
    band = "within 3% below the target" if details["within_band"] else "below the 3% band: the best file within the target"
    if details.get("network_rate_weight", 1.0) > 1.0:
        band += f", networks coarsened (rate weight x{details['network_rate_weight']:.3g}) to fit"
    if details.get("context_coded"):
        near = (details["residual_step"] - 1) // 2
        band += "; context-coded levels" + (" on the grid's prediction" if details.get("grid_prediction") else "") + ", "
        band += "lossless" if near == 0 else f"every pixel within {near} of {details['residual_levels']} levels"
    elif details.get("residual_step") is not None:
        step, lattice = details["residual_step"], lattice_phrase(details["residual_levels"], step=details["residual_step"])
        band += f"; residual layer {details['residual_bits'] / file_bytes / 8:.0%} of the file, step {step} x {lattice}"
    return f" lambda_rd={details['lambda_rd']:.3g} ({details['rate_trials']} trials, {band})"


def _compress_volume(args: argparse.Namespace, *, out: Path, sidecar: Path, codec: Any, fit_config: Any, device: Any) -> int:
    """``sinco compress --slices``: every slice of a range, fitted in batches, into one volume file."""
    from sinco.compression.records import finite, sidecar_record
    from sinco.compression.volume import compress_volume, default_batch_slices
    from sinco.data.io import load_affine, load_array, select_slices
    from sinco.seg.network import load_seg_model
    from sinco.utils.atomic import atomic_write_bytes

    if args.slice is not None:
        raise InputError("--slice and --slices: give one (--slice K for one slice, --slices all|A:B for a volume)")
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    stack, indices = select_slices(load_array(args.input), slices=args.slices, axis=args.axis, channel=args.channel)
    _check_regularizer_flags(args)
    seg_model = None if args.seg_model is None else load_seg_model(args.seg_model[0])
    masks = None if args.mask is None else _read_labels(args, args.mask, arg="--mask", shape=stack.shape)
    rois = None if args.roi is None else _read_labels(args, args.roi, arg="--roi", shape=stack.shape)
    result = compress_volume(
        stack, first_index=indices.start, axis=args.axis, affine=load_affine(args.input), codec=codec, fit_config=fit_config,
        device=device, batch_slices=batch, seg_model=seg_model, masks=masks, rois=rois, progress=not args.quiet,
    )  # fmt: skip
    atomic_write_bytes(out, result.data)
    m = result.metrics
    if m["divergences"]:
        print(f"sinco: warning: {m['divergences']} divergence(s) across the slices; see {sidecar}", file=sys.stderr)
    summary = {"output": str(out), **{k: finite(v) for k, v in m.items()}, "seconds": result.seconds, "device": str(device),
               "slice_range": [indices.start, indices.stop]}  # fmt: skip
    regularizer = None if seg_model is None else {"seg_model": str(args.seg_model[0]), "mask": str(args.mask)}
    write_sidecar(sidecar, sidecar_record(
        input={"path": str(args.input), "slices": args.slices, "axis": args.axis, "channel": args.channel, "roi": args.roi},
        codec=codec, fit_config=fit_config, device=args.device, result=summary, regularizer=regularizer, slices=result.slices))  # fmt: skip
    if args.json:
        print(json_text(summary))
        return EXIT_OK
    fitted = f"mean psnr={m['psnr_mean']:.2f} dB mean ssim={m['ssim_mean']:.4f} " if m["fitted_slices"] else "nothing to fit, "
    speed = f" {m['slices_per_minute']:.2f} slices/min (batches of {batch})" if m["fitted_slices"] else ""
    print(f"{out}: {m['slices']} slices {indices.start}..{indices.stop - 1} ({m['fitted_slices']} fitted, {m['constant_slices']} "
          f"constant) {fitted}bpp_file={m['bpp_file']:.4f} ({m['file_bytes']} bytes){speed} seconds={result.seconds:.1f}")  # fmt: skip
    return EXIT_OK


def _read_labels(args: argparse.Namespace, path: str, *, arg: str, shape: tuple[int, ...]) -> Any:
    """The slices ``--slices`` of a label volume (``--mask``, ``--roi``) along ``--axis``, nonzero = inside, ``(S, H, W)``.

    Raises:
        InputError: naming ``arg`` when the file cannot be read or its slices differ in shape from INPUT's ``shape``.
    """
    from sinco.data.io import load_array, select_slices

    labels, _ = select_slices(load_array(path, arg=arg), slices=args.slices, axis=args.axis, arg=arg)
    if labels.shape != shape:
        raise InputError(f"{arg}: slices of shape {labels.shape[1:]} differ from INPUT's {shape[1:]}")
    return labels > 0


def _compress_slabs(args: argparse.Namespace, *, out: Path, sidecar: Path, codec: Any, fit_config: Any) -> int:
    """``sinco compress --slices A:B --arch grid3d``: the slices as slabs, each a 3-D fit, into one volume file of slabs
    (with ``--seg-model`` and ``--mask``, the regularizer on each slab's slices)."""
    from sinco.compression.records import finite, sidecar_record
    from sinco.compression.volume import compress_volume_slabs
    from sinco.data.io import load_affine, load_array, select_slices
    from sinco.seg.network import load_seg_model
    from sinco.utils.atomic import atomic_write_bytes
    from sinco.utils.device import resolve_device

    for flag, value in (("--slice", args.slice), ("--roi", args.roi), ("--batch-slices", args.batch_slices)):
        if value is not None:
            raise InputError(f"{flag}: does not apply to --arch {args.arch} (it codes --slices as slabs)")
    device = resolve_device(args.device)
    stack, indices = select_slices(load_array(args.input), slices=args.slices, axis=args.axis, channel=args.channel)
    seg_model = None if args.seg_model is None else load_seg_model(args.seg_model[0])
    masks = None if args.mask is None else _read_labels(args, args.mask, arg="--mask", shape=stack.shape)
    result = compress_volume_slabs(stack, first_index=indices.start, axis=args.axis, affine=load_affine(args.input), codec=codec,
                                   fit_config=fit_config, device=device, seg_model=seg_model, masks=masks, progress=not args.quiet)  # fmt: skip
    atomic_write_bytes(out, result.data)
    m = result.metrics
    summary = {"output": str(out), **{k: finite(v) for k, v in m.items()}, "seconds": result.seconds, "device": str(device),
               "slice_range": [indices.start, indices.stop]}  # fmt: skip
    regularizer = None if seg_model is None else {
        "seg_model": str(args.seg_model[0]), "mask": str(args.mask), "seg_training": seg_model.training.get("summary"),
        "lam": m["lam"], "data_term": m["data_term"], "regularized_slices": m["regularized_slices"],
    }  # fmt: skip
    write_sidecar(sidecar, sidecar_record(
        input={"path": str(args.input), "slices": args.slices, "axis": args.axis, "channel": args.channel},
        codec=codec, fit_config=fit_config.resolved(regularized=seg_model is not None), device=args.device, result=summary,
        regularizer=regularizer, slices=result.slices))  # fmt: skip
    if args.json:
        print(json_text(summary))
        return EXIT_OK
    seg = "" if seg_model is None else f" dice={m['dice_mean']:.4f} (uncompressed {m['dice_reference_mean']:.4f}) lam={m['lam']:g}"  # fmt: skip
    print(f"{out}: {m['slices']} slices {indices.start}..{indices.stop - 1} in {m['slabs']} slab(s) of at most {m['slab_size']} "
          f"({m['constant_slabs']} constant) mean psnr={m['psnr_mean']:.2f} dB volume psnr={m['psnr_volume']:.2f} dB{seg} "
          f"bpp_file={m['bpp_file']:.4f} ({m['file_bytes']} bytes, bits per voxel) seconds={result.seconds:.1f}")  # fmt: skip
    return EXIT_OK


def cmd_compress_batch(args: argparse.Namespace) -> int:
    """``sinco compress-batch``: every slice (or slab) of every input is a Dask task; one volume file per input."""
    from sinco.compression.batch import BatchConfig, ClusterConfig, plan_batch, run_batch
    from sinco.errors import DeviceError
    from sinco.utils.device import resolve_device

    codec, fit_config = options.codec_and_fit_config(args)
    cluster = ClusterConfig(scheduler=args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker)
    # Absolute, so that workers started elsewhere (a remote cluster sharing the file system) find it.
    seg_model = None if args.seg_model is None else str(Path(args.seg_model).resolve())
    config = BatchConfig(codec=codec, fit_config=fit_config, slices=args.slices, axis=args.axis, channel=args.channel,
                         device=args.device, torch_threads=args.threads_per_worker, seg_model=seg_model, mask_glob=args.mask_glob)  # fmt: skip
    try:
        resolve_device(args.device)
    except DeviceError:
        if args.scheduler == "local":
            raise  # a remote cluster's workers may have the GPU this machine lacks
    plans = plan_batch(args.inputs, config=config, out_dir=args.out, force=args.force)
    result = run_batch(plans, config=config, cluster=cluster, out_dir=args.out, progress=not args.quiet, argv=sys.argv)
    counts = result.manifest["counts"]
    for (path, _, error), unit in zip(result.failed, result.failed_units, strict=True):
        print(f"sinco: error: {path} {unit}: {error}", file=sys.stderr)
    summary = (f"{args.out}: {counts['outputs_written']} of {counts['inputs']} files written, {counts['done']} of {counts['slices']} "
               f"slices done ({result.fitted} fitted now, {result.skipped} before), {counts['failed']} failed; see {args.out}/manifest.json")  # fmt: skip
    print(json.dumps(counts) if args.json else summary)
    return EXIT_SLICES_FAILED if result.failed else EXIT_OK
