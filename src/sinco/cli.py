"""The ``sinco`` command line: a thin layer over the library.

Heavy imports (torch, MONAI) happen inside the commands, so ``sinco --help`` is instant.

Exit status: 0 success; 1 an operating-system failure (disk full, permission denied); 2 bad
input, bad usage or an invalid ``.sinco`` file; 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import math
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from sinco import __version__
from sinco.errors import InputError, SincoError
from sinco.regularizer_cli import add_regularizer_arguments

EXIT_OK, EXIT_OS_ERROR, EXIT_BAD_INPUT, EXIT_INTERRUPTED = 0, 1, 2, 130


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_default(value: Any) -> Any:
    return str(value)


def _read_sinco(path: str) -> bytes:
    from sinco.codec.bitstream import read_file

    return read_file(path)


def _parse_skips(text: str | None) -> tuple[int, ...] | None:
    if text is None:
        return None
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--skips {text!r}: expected comma-separated layer indices or 'none'") from None


def cmd_compress(args: argparse.Namespace) -> int:
    """``sinco compress``: fit, store, decode, measure."""
    from sinco.codec.inr_codec import CodecConfig, compress_images
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import load_slice
    from sinco.fit.config import fit_config_from_preset
    from sinco.regularizer_cli import load_networks, parse_lams, regularizer_options
    from sinco.utils.atomic import atomic_write_bytes, check_output_path
    from sinco.utils.device import resolve_device

    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    sidecar = out.with_name(out.name + ".json")
    codec = CodecConfig(
        arch=args.arch, bpp=args.bpp, depth=args.depth, n_freqs=args.n_freqs, w0=args.w0, w0_first=args.w0,
        skips=_parse_skips(args.skips),
    )  # fmt: skip
    fit = fit_config_from_preset(
        args.preset, arch=args.arch, steps=args.steps, lr=args.lr, schedule=args.schedule, warmup=args.warmup, seed=args.seed,
        lam=parse_lams(args.lam, allow_list=False)[0], reg_every=args.reg_every, compile=args.compile, optimizer=args.optimizer,
        lbfgs_after=args.lbfgs_after, quantise_tail=args.quantise_tail, data_term=args.data_term,
    )  # fmt: skip
    options = regularizer_options(args, seed=fit.seed)
    # With --seg-target self the loss network's own mask is the target: --mask only adds ground-truth metrics.
    mask_optional = options.target == "self" and args.seg_model is not None
    if (args.seg_model is None) != (args.mask is None) and not mask_optional:
        given, missing = ("--mask", "--seg-model") if args.seg_model is None else ("--seg-model", "--mask")
        raise InputError(f"{given} needs {missing}: the regulariser segments the reconstruction and compares it with the mask")
    device = resolve_device(args.device)
    if args.slices is not None:
        if len(args.seg_model or []) > 1 or args.eval_seg_model or options.target != "mask" or options.perturb:
            raise InputError("--slices: an ensemble, --seg-target self, --seg-perturb and --eval-seg-model work on single slices only")
        args.seg_model = None if args.seg_model is None else args.seg_model[0]
        return _compress_volume(args, out=out, sidecar=sidecar, codec=codec, fit=fit, device=device)
    if args.batch_slices is not None:
        raise InputError("--batch-slices: only with --slices (a single slice is one fit)")
    raw = load_slice(args.input, slice_index=args.slice, axis=args.axis, channel=args.channel)
    image, vmin, vmax = normalize_minmax(raw, name=f"INPUT {args.input!r}")
    seg_models, judge = load_networks(args.seg_model, args.eval_seg_model)
    seg_model = seg_models[0] if seg_models else None
    mask = None if args.mask is None else load_slice(args.mask, slice_index=args.slice, axis=args.axis, arg="--mask") > 0
    result = compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit=fit, device=device, seg_model=seg_model,
        masks=None if mask is None else [mask], progress=not args.quiet, regularizer_options=options,
        ensemble=seg_models[1:], eval_seg_model=judge,
    )[0]  # fmt: skip
    atomic_write_bytes(out, result.data)
    if result.fit.divergences:
        print(
            f"sinco: warning: the fit diverged {result.fit.divergences} time(s); the best state was restored "
            f"and the learning rate lowered to {result.fit.lr_final:g}",
            file=sys.stderr,
        )
    m = result.metrics
    report = {
        "output": str(out),
        "psnr": _finite(m["psnr"]),
        "ssim": m["ssim"],
        "bpp_params": m["bpp_params"],
        "bpp_file": m["bpp_file"],
        "seconds": result.seconds,
        "file_bytes": m["file_bytes"],
        "n_params": m["n_params"],
        "arch": result.header.spec.to_dict(),
        "shape": [result.header.height, result.header.width],
        "psnr_fp32": _finite(m["psnr_fp32"]),
        "best_step": result.fit.best_step,
        "steps": result.fit.steps,
        "evaluations": result.fit.evaluations,
        "divergences": result.fit.divergences,
        "lr_final": result.fit.lr_final,
        "compiled": result.fit.compiled,
        "device": str(device),
        "lam": result.fit.lam,
        "reg_every": result.fit.reg_every,
    }
    report["data_term"] = fit.data_term
    for key in ("dice", "dice_reference", "dice_self", "dice_eval", "dice_eval_reference", "dice_eval_target"):
        if key in m:
            report[key] = m[key]
    record = {
        "sinco_version": __version__,
        "input": {"path": str(args.input), "slice": args.slice, "axis": args.axis, "channel": args.channel,
                  "shape": list(raw.shape), "vmin": vmin, "vmax": vmax},
        "codec": codec.to_dict(),
        "fit": fit.to_dict(),
        "regularizer": None if seg_model is None else {
            "seg_model": str(args.seg_model[0]), "mask": None if args.mask is None else str(args.mask),
            "seg_training": seg_model.training.get("summary"), "ensemble": [str(p) for p in args.seg_model[1:]],
            "seg_target": options.target, "seg_perturb": options.perturb, "perturb_scale": options.scale,
            "perturb_noise": options.noise},
        "eval_seg_model": None if judge is None else {"path": str(args.eval_seg_model), "seg_training": judge.training.get("summary")},
        "device": args.device,
        "result": report,
    }  # fmt: skip
    atomic_write_bytes(sidecar, (json.dumps(record, indent=2, default=_json_default) + "\n").encode())
    if args.json:
        print(json.dumps(report, default=_json_default))
    else:
        seg = f" dice={m['dice']:.4f} (uncompressed {m['dice_reference']:.4f}) lam={result.fit.lam:g}" if "dice" in m else ""
        seg += f" dice_eval={m['dice_eval']:.4f}" if "dice_eval" in m else ""
        print(
            f"{out}: psnr={m['psnr']:.2f} dB ssim={m['ssim']:.4f}{seg} bpp_params={m['bpp_params']:.4f} "
            f"bpp_file={m['bpp_file']:.4f} ({m['file_bytes']} bytes) seconds={result.seconds:.1f}"
        )
    return EXIT_OK


def _compress_volume(args: argparse.Namespace, *, out: Path, sidecar: Path, codec: Any, fit: Any, device: Any) -> int:
    """``sinco compress --slices``: every slice of a range, fitted in batches, into one volume file."""
    from sinco.codec.volume import compress_volume, default_batch_slices
    from sinco.data.io import load_affine, load_array, select_slices
    from sinco.utils.atomic import atomic_write_bytes

    if args.slice is not None:
        raise InputError("--slice and --slices: give one (--slice K for one slice, --slices all|A:B for a volume)")
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    stack, indices = select_slices(load_array(args.input), slices=args.slices, axis=args.axis, channel=args.channel)
    seg_model = masks = None
    if args.seg_model is not None:
        from sinco.seg.network import load_seg_model

        seg_model = load_seg_model(args.seg_model)
        masks, _ = select_slices(load_array(args.mask, arg="--mask"), slices=args.slices, axis=args.axis, arg="--mask")
        if masks.shape != stack.shape:
            raise InputError(f"--mask: slices of shape {masks.shape[1:]} differ from INPUT's {stack.shape[1:]}")
        masks = masks > 0
    result = compress_volume(
        stack, first_index=indices.start, axis=args.axis, affine=load_affine(args.input), codec=codec, fit=fit,
        device=device, batch_slices=batch, seg_model=seg_model, masks=masks, progress=not args.quiet,
    )  # fmt: skip
    atomic_write_bytes(out, result.data)
    m = result.metrics
    if m["divergences"]:
        print(f"sinco: warning: {m['divergences']} divergence(s) across the slices; see {sidecar}", file=sys.stderr)
    report = {"output": str(out), **{k: (_finite(v) if isinstance(v, float) else v) for k, v in m.items()},
              "seconds": result.seconds, "device": str(device), "slice_range": [indices.start, indices.stop]}  # fmt: skip
    record = {
        "sinco_version": __version__,
        "input": {"path": str(args.input), "slices": args.slices, "axis": args.axis, "channel": args.channel},
        "codec": codec.to_dict(),
        "fit": fit.to_dict(),
        "regularizer": None if seg_model is None else {"seg_model": str(args.seg_model), "mask": str(args.mask)},
        "device": args.device,
        "result": report,
        "slices": [{k: (_finite(v) if isinstance(v, float) else v) for k, v in row.items()} for row in result.slices],
    }  # fmt: skip
    atomic_write_bytes(sidecar, (json.dumps(record, indent=2, default=_json_default) + "\n").encode())
    if args.json:
        print(json.dumps(report, default=_json_default))
    else:
        fitted = (
            f"mean psnr={m['psnr_mean']:.2f} dB mean ssim={m['ssim_mean']:.4f} " if m["inr_slices"] else "nothing to fit, "
        )
        speed = f" {m['slices_per_minute']:.2f} slices/min (batches of {batch})" if m["inr_slices"] else ""
        print(
            f"{out}: {m['slices']} slices {indices.start}..{indices.stop - 1} ({m['inr_slices']} fitted, {m['constant_slices']} constant) "
            f"{fitted}bpp_file={m['bpp_file']:.4f} ({m['file_bytes']} bytes){speed} seconds={result.seconds:.1f}"
        )
    return EXIT_OK


def cmd_decompress(args: argparse.Namespace) -> int:
    """``sinco decompress``: decode a ``.sinco`` file to an image file."""
    from sinco.codec.inr_codec import decode
    from sinco.data.io import OUTPUT_SUFFIXES, image_suffix, save_image
    from sinco.utils.atomic import check_output_path

    if image_suffix(args.output) not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {args.output!r}: unsupported output format (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    data = _read_sinco(args.input)
    from sinco.codec.volume import decode_volume, is_volume_file

    if is_volume_file(data):
        from sinco.data.io import VOLUME_SUFFIXES, save_volume

        if image_suffix(args.output) not in VOLUME_SUFFIXES:
            raise InputError(f"-o {args.output!r}: {args.input!r} is a volume; write it as {', '.join(VOLUME_SUFFIXES)}")
        out = check_output_path(args.output, inputs=[args.input], force=args.force)
        vheader, volume, _ = decode_volume(data)
        what = save_volume(out, volume, axis=vheader.axis, affine=vheader.affine)
        print(f"{out}: {vheader.n_slices} slices of {vheader.height}x{vheader.width} ({what})")
        return EXIT_OK
    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    header, image = decode(data)
    what = save_image(out, scaled=image, vmin=header.vmin, vmax=header.vmax)
    print(f"{out}: {header.height}x{header.width} ({what})")
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """``sinco info``: print a ``.sinco`` header."""
    from sinco.codec.bitstream import FORMAT_VERSION, decode_header
    from sinco.inr.sizing import param_bpp

    data = _read_sinco(args.input)
    from sinco.codec.volume import VOLUME_VERSION, decode_volume_file, is_volume_file

    if is_volume_file(data):
        vheader, records = decode_volume_file(data)
        inner = [decode_header(r.data) for r in records if r.data is not None]
        info = {
            "format_version": VOLUME_VERSION, "kind": "volume", "axis": vheader.axis,
            "slices": [vheader.first_index, vheader.first_index + vheader.n_slices],
            "shape": [vheader.n_slices, vheader.height, vheader.width], "inr_slices": len(inner),
            "constant_slices": vheader.n_slices - len(inner), "arch": inner[0].spec.to_dict() if inner else None,
            "file_bytes": len(data), "bpp_file": 8 * len(data) / vheader.n_voxels,
        }  # fmt: skip
        if args.json:
            print(json.dumps(info))
        else:
            print(f"format      .sinco volume v{VOLUME_VERSION}")
            print(f"slices      {vheader.n_slices} ({len(inner)} fitted, {info['constant_slices']} constant), "
                  f"source indices {vheader.first_index}..{vheader.first_index + vheader.n_slices - 1} along axis {vheader.axis}")  # fmt: skip
            print(f"shape       {vheader.height} x {vheader.width} per slice")
            if inner:
                print(f"arch        {inner[0].spec.arch} ({', '.join(f'{k}={v}' for k, v in inner[0].spec.to_dict().items() if k != 'arch')})")
            print(f"file        {len(data)} bytes, {info['bpp_file']:.4f} bpp (file)")
        return EXIT_OK
    header = decode_header(data)
    spec = header.spec
    info = {
        "format_version": FORMAT_VERSION,
        "arch": spec.to_dict(),
        "shape": [header.height, header.width],
        "n_params": spec.n_params(),
        "file_bytes": len(data),
        "bpp_params": param_bpp(spec.n_params(), bits_per_param=16, n_pixels=header.n_pixels),
        "bpp_file": 8 * len(data) / header.n_pixels,
        "intensity_range": [header.vmin, header.vmax],
    }
    if args.json:
        print(json.dumps(info))
    else:
        arch = ", ".join(f"{k}={v}" for k, v in spec.to_dict().items() if k != "arch")
        print(f"format      .sinco v{FORMAT_VERSION}")
        print(f"arch        {spec.arch} ({arch})")
        print(f"shape       {header.height} x {header.width}")
        print(f"parameters  {spec.n_params()} (fp16)")
        print(f"file        {len(data)} bytes")
        print(f"bpp         {info['bpp_params']:.4f} (parameters), {info['bpp_file']:.4f} (file)")
        print(f"intensity   {header.vmin:.6g} .. {header.vmax:.6g}")
    return EXIT_OK


def _parse_ints(text: str, *, arg: str) -> tuple[int, ...]:
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"{arg} {text!r}: expected comma-separated integers") from None


def cmd_train_seg(args: argparse.Namespace) -> int:
    """``sinco train-seg``: train the tumour-segmentation U-Net."""
    from sinco.data.datasets import discover_cases, load_slices, split_cases
    from sinco.seg.network import UNetConfig, save_checkpoint
    from sinco.seg.train import TrainSegConfig, train_segmentation
    from sinco.utils.atomic import atomic_write_bytes, check_output_path
    from sinco.utils.device import resolve_device

    out = check_output_path(args.output, inputs=[], force=args.force)
    channels = _parse_ints(args.channels, arg="--channels")
    unet = UNetConfig(channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=args.res_units)
    config = TrainSegConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_cases=args.val_cases, seed=args.seed,
        negatives_per_positive=args.negatives_per_positive, flip=not args.no_flip, gamma=args.gamma, unet=unet,
    )  # fmt: skip
    device = resolve_device(args.device)
    cases = discover_cases(args.data, layout=args.layout, image_glob=args.image_glob, label_glob=args.label_glob, channel=args.channel)
    val_ids = tuple(v for v in (args.val_ids or "").split(",") if v)
    train_ids = tuple(t for t in (args.train_ids or "").split(",") if t)
    train_cases, val_cases = split_cases(cases, val_cases=config.val_cases, seed=config.seed, val_ids=val_ids, train_ids=train_ids)
    train, val = load_slices(train_cases), load_slices(val_cases)
    if not args.quiet:
        print(
            f"train: {len(train_cases)} cases, {len(train.ids)} slices ({int(train.has_tumour.sum())} with tumour); "
            f"val: {', '.join(c.case_id for c in val_cases)}, {len(val.ids)} slices ({int(val.has_tumour.sum())} with tumour)",
            file=sys.stderr,
        )
    result = train_segmentation(train, val, config=config, device=device, progress=not args.quiet)
    best = result.best
    summary = {
        "best_epoch": result.best_epoch, "val_dice_tumour": best["val_dice_tumour"],
        "val_dice_global": best["val_dice_global"], "minutes": result.seconds / 60,
    }  # fmt: skip
    training = {
        "sinco_version": __version__,
        "data": str(args.data), "layout": args.layout, "image_glob": args.image_glob, "label_glob": args.label_glob,
        "channel": args.channel, "train_cases": [c.case_id for c in train_cases],
        "val_cases": [c.case_id for c in val_cases], "train_slices": len(train.ids),
        "train_tumour_slices": int(train.has_tumour.sum()), "val_slices": len(val.ids),
        "val_tumour_slices": int(val.has_tumour.sum()), "config": config.to_dict(), "device": str(device),
        "history": result.history, "summary": summary,
    }  # fmt: skip
    save_checkpoint(out, net=result.net, config=unet, threshold=config.threshold, training=training)
    atomic_write_bytes(out.with_name(out.name + ".json"), (json.dumps(training, indent=2) + "\n").encode())
    n_params = sum(p.numel() for p in result.net.parameters())
    print(
        f"{out}: best epoch {result.best_epoch}/{config.epochs}, val dice {best['val_dice_tumour']:.4f} "
        f"(slices with tumour), {best['val_dice_global']:.4f} (pooled); {n_params} parameters, "
        f"{out.stat().st_size} bytes; {result.seconds / 60:.1f} min"
    )
    return EXIT_OK


def cmd_segment(args: argparse.Namespace) -> int:
    """``sinco segment``: predict the tumour mask of a slice."""
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import MASK_SUFFIXES, image_suffix, load_slice, save_mask
    from sinco.seg.network import load_seg_model
    from sinco.utils.atomic import check_output_path

    if image_suffix(args.output) not in MASK_SUFFIXES:
        raise InputError(f"-o {args.output!r}: unsupported mask format (expected one of {', '.join(MASK_SUFFIXES)})")
    out = check_output_path(args.output, inputs=[args.input, args.model], force=args.force)
    model = load_seg_model(args.model, arg="-m")
    raw = load_slice(args.input, slice_index=args.slice, axis=args.axis, channel=args.channel)
    image, _, _ = normalize_minmax(raw, name=f"INPUT {args.input!r}")
    mask = model.predict(image)
    save_mask(out, mask)
    print(f"{out}: {mask.shape[0]}x{mask.shape[1]} mask, {int(mask.sum())} tumour pixels")
    return EXIT_OK


def _benchmark_summary(result: dict) -> None:
    print(result["table"])
    print(f"results: {result['outdir']}/results.json, {result['outdir']}/table.md")
    for path in result["figures"]:
        print(f"figure: {path}")


def _parse_bpps(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--bpp {text!r}: expected comma-separated numbers") from None


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``sinco benchmark``: the paper's comparison on a dataset."""
    from sinco.codec.volume import default_batch_slices
    from sinco.eval.benchmark import BenchmarkConfig, run_benchmark
    from sinco.regularizer_cli import parse_lams
    from sinco.utils.device import resolve_device

    device = resolve_device(args.device)
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    lams = parse_lams(args.lam, allow_list=True)
    config = BenchmarkConfig(
        data=str(args.data), seg_model=str(args.seg_model[0]), layout=args.layout, image_glob=args.image_glob,
        label_glob=args.label_glob, channel=args.channel, cases=args.cases,
        methods=tuple(m for m in args.methods.split(",") if m), bpps=_parse_bpps(args.bpp), images=args.images,
        min_tumour=args.min_tumour, preset=args.preset, steps=args.steps, lr=args.lr, schedule=args.schedule,
        warmup=args.warmup, optimizer=args.optimizer, lam=lams[0],
        reg_every=args.reg_every, seed=args.seed, batch_slices=batch, lams=lams if len(lams) > 1 else None,
        data_term=args.data_term or "mse", eval_seg_model=args.eval_seg_model, ensemble=tuple(args.seg_model[1:]),
        seg_target=args.seg_target, seg_perturb=args.seg_perturb,
    )  # fmt: skip
    result = run_benchmark(config, outdir=args.out, device=device, progress=not args.quiet)
    _benchmark_summary(result)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``sinco demo``: a short benchmark of every method on the embedded MNI152 data."""
    from importlib.resources import files

    from sinco.data.demo import IMAGE_NAME, LABEL_NAME, write_demo_dataset
    from sinco.eval.benchmark import ALL_METHODS, BenchmarkConfig, run_benchmark
    from sinco.utils.device import resolve_device

    if args.export_data:
        root = write_demo_dataset(args.export_data)
        print(f"{root}: demo dataset (folders layout: --image-glob {IMAGE_NAME} --label-glob {LABEL_NAME})")
        return EXIT_OK
    out = Path(args.out)
    data = write_demo_dataset(out / "data")
    steps = args.steps if args.steps is not None else (150 if args.quick else 500)
    images = args.images if args.images is not None else (1 if args.quick else 2)
    config = BenchmarkConfig(
        data=str(data), seg_model=str(files("sinco") / "assets" / "demo_seg.pt"), layout="folders", image_glob=IMAGE_NAME,
        label_glob=LABEL_NAME, cases="val", methods=ALL_METHODS, bpps=(1.2,), images=images, min_tumour=0.01, steps=steps,
        reg_every=1,
    )  # fmt: skip
    result = run_benchmark(config, outdir=out, device=resolve_device(args.device), progress=not args.quiet)
    _benchmark_summary(result)
    return EXIT_OK


def _add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR", help="dataset folder (Decathlon Task01 or one folder per case)")
    p.add_argument("--layout", choices=("auto", "decathlon", "folders"), default="auto", help="dataset layout (default: auto)")
    p.add_argument("--image-glob", default="Flair*.nii.gz", help="folders layout: image file pattern (default: Flair*.nii.gz)")
    p.add_argument("--label-glob", default="OTMultiClass.nii.gz", help="folders layout: label file pattern (default: OTMultiClass.nii.gz)")
    p.add_argument("--channel", type=int, default=0, help="modality of 4-D volumes (default: 0, FLAIR)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sinco`` command."""
    parser = argparse.ArgumentParser(prog="sinco", description="Compress medical images with implicit neural representations.")
    parser.add_argument("--version", action="version", version=f"sinco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("compress", help="fit an INR to a 2-D image and store it as a .sinco file")
    p.add_argument("input", metavar="INPUT", help="NIfTI (.nii/.nii.gz), .npy, PNG or TIFF image")
    p.add_argument("-o", "--output", required=True, metavar="OUT.sinco", help="output file (a JSON record goes to OUT.sinco.json)")
    p.add_argument("--arch", choices=("siren", "pe-mlp"), default="siren", help="network (default: siren)")
    p.add_argument("--bpp", type=float, default=1.2, help="target parameter bits per pixel (default: 1.2)")
    p.add_argument("--depth", type=int, default=None, help="hidden layers (default: 8 for siren, 6 for pe-mlp)")
    p.add_argument("--skips", default=None, metavar="I,J", help="pe-mlp layers fed the encoding again, or 'none' (default: depth // 2)")
    p.add_argument("--n-freqs", type=int, default=12, help="pe-mlp encoding frequencies Lf (default: 12)")
    p.add_argument("--w0", type=float, default=30.0, help="siren frequency w0 (default: 30)")
    p.add_argument("--preset", choices=("paper", "fast"), default="paper",
                   help="fitting schedule: paper = 50000 Adam steps, constant lr 1e-3 (default); fast = 4000 gradient evaluations: "
                        "Adam at 1e-3 for 2000 (siren) or 1000 (pe-mlp) steps, then L-BFGS")
    p.add_argument("--steps", type=int, default=None, help="Adam steps (default: the preset's)")
    p.add_argument("--lr", type=float, default=None, help="Adam (peak) learning rate (default: the preset's)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None, help="learning-rate schedule (default: the preset's)")
    p.add_argument("--warmup", type=int, default=None, help="warm-up steps of the cosine schedule (default: the preset's)")
    p.add_argument("--optimizer", choices=("adam", "adam+lbfgs"), default=None, help="optimiser (default: the preset's)")
    p.add_argument("--lbfgs-after", type=int, default=None, metavar="N", help="adam+lbfgs: Adam steps before L-BFGS (default: 1000)")
    p.add_argument("--quantise-tail", type=int, default=None, metavar="N",
                   help="last N steps: Adam on the fp16-rounded weights, lr 3e-6 (default: the preset's; fast siren 200)")  # fmt: skip
    p.add_argument("--slice", type=int, default=None, metavar="K", help="slice index of a 3-D/4-D volume")
    p.add_argument("--slices", default=None, metavar="all|A:B",
                   help="compress consecutive slices (A:B half-open) of a volume into one volume file")  # fmt: skip
    p.add_argument("--batch-slices", type=int, default=None, metavar="N",
                   help="with --slices: slices fitted together as one batch (default: 1 on the CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis (default: 2, axial)")
    p.add_argument("--channel", type=int, default=0, metavar="C", help="channel of a 4-D volume (default: 0, FLAIR)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seg-model", default=None, action="append", metavar="SEG.pt",
                   help="segmentation checkpoint from 'sinco train-seg': enables the SINCO regulariser and Dice metrics; "
                        "repeat it for an ensemble (the regulariser averaged over the networks)")  # fmt: skip
    p.add_argument("--mask", default=None, metavar="LABELS", help="label file of INPUT (same slice is read; label > 0 = tumour)")
    p.add_argument("--lam", default="1", help="regulariser weight lambda (default: 1; 0 = plain fitting)")
    add_regularizer_arguments(p, benchmark=False)
    p.add_argument("--reg-every", type=int, default=1, metavar="K", help="apply the regulariser every K-th step (default: 1)")
    p.add_argument("--compile", choices=("auto", "on", "off"), default="auto",
                   help="torch.compile the fitting step (default: auto = SIREN fits of 1000+ steps)")
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("train-seg", help="train the tumour-segmentation U-Net of the SINCO regulariser")
    _add_dataset_arguments(p)
    p.add_argument("--epochs", type=int, default=75, help="epochs (default: 75, the paper's)")
    p.add_argument("--batch-size", type=int, default=8, help="slices per step (default: 8)")
    p.add_argument("--lr", type=float, default=1e-4, help="Adam learning rate (default: 1e-4)")
    p.add_argument("--val-cases", type=int, default=1, help="cases held out for validation (default: 1)")
    p.add_argument("--val-ids", default=None, metavar="ID,ID", help="validation cases by id (instead of --val-cases drawn with --seed)")
    p.add_argument("--train-ids", default=None, metavar="ID,ID",
                   help="training cases by id (default: all but validation); cases in neither list are left out")  # fmt: skip
    p.add_argument("--gamma", type=float, default=1.5, help="random intensity gamma augmentation range (default: 1.5; 1 = off)")
    p.add_argument("--negatives-per-positive", type=float, default=1.0, help="tumour-free slices per tumour slice in each epoch (default: 1)")
    p.add_argument("--no-flip", action="store_true", help="no left-right flip augmentation")
    p.add_argument("--channels", default="16,32,64,128", help="U-Net channels per level (default: 16,32,64,128)")
    p.add_argument("--res-units", type=int, default=0, help="U-Net residual units per block (default: 0; see UNetConfig)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("-o", "--output", required=True, metavar="SEG.pt", help="checkpoint to write (and SEG.pt.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_train_seg)

    p = sub.add_parser("benchmark", help="compare the INR methods and classical codecs on a dataset (the paper's Table 1)")
    _add_dataset_arguments(p)
    p.add_argument("--seg-model", required=True, action="append", metavar="SEG.pt",
                   help="checkpoint from 'sinco train-seg' (the loss network); repeat it for an ensemble")  # fmt: skip
    p.add_argument("--cases", default="val", help="test cases: val (the seg model's validation cases), all, or ID,ID (default: val)")
    p.add_argument("--methods", default="coin,vanilla-inr,sinco-siren,sinco-inr,jpeg,jpeg2000",
                   help="comma-separated: coin, vanilla-inr, sinco-siren, sinco-inr, jpeg, jpeg2000, jpegxl, avif, webp")
    p.add_argument("--bpp", default="1.2", help="target rate(s), comma-separated (default: 1.2)")
    p.add_argument("--images", type=int, default=10, help="test slices (default: 10)")
    p.add_argument("--min-tumour", type=float, default=0.01, help="minimum tumour fraction of a test slice (default: 0.01)")
    p.add_argument("--preset", choices=("paper", "fast"), default="paper", help="INR fitting schedule (default: paper, see compress)")
    p.add_argument("--steps", type=int, default=None, help="INR fitting steps (default: the preset's, paper 50000)")
    p.add_argument("--lr", type=float, default=None, help="INR (peak) learning rate (default: the preset's)")
    p.add_argument("--schedule", choices=("constant", "cosine"), default=None, help="INR learning-rate schedule (default: the preset's)")
    p.add_argument("--warmup", type=int, default=None, help="cosine warm-up steps (default: the preset's)")
    p.add_argument("--optimizer", choices=("adam", "adam+lbfgs"), default=None, help="INR optimiser (default: the preset's)")
    p.add_argument("--lam", default="1", metavar="L[,L...]",
                   help="SINCO regulariser weight(s); a list (0,0.01,0.1,1,10) runs the sinco methods once per value (default: 1)")
    add_regularizer_arguments(p, benchmark=True)
    p.add_argument("--reg-every", type=int, default=1, metavar="K", help="regulariser every K-th step (default: 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-slices", type=int, default=None, metavar="N",
                   help="test slices of one INR method fitted together (default: 1 on the CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--out", required=True, metavar="OUTDIR", help="output folder; rerunning resumes an interrupted run")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_benchmark)

    p = sub.add_parser("demo", help="short benchmark of every method on embedded real brain MRI (no download)")
    p.add_argument("--out", default="sinco-demo", metavar="DIR", help="output folder (default: ./sinco-demo)")
    p.add_argument("--quick", action="store_true", help="one slice, 150 steps (about a minute)")
    p.add_argument("--steps", type=int, default=None, help="INR steps (default: 500; --quick 150)")
    p.add_argument("--images", type=int, default=None, help="test slices (default: 2; --quick 1)")
    p.add_argument("--device", default="auto")
    p.add_argument("--export-data", default=None, metavar="DIR", help="only write the demo dataset to DIR and exit")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("segment", help="predict the tumour mask of a 2-D slice")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-m", "--model", required=True, metavar="SEG.pt", help="checkpoint from 'sinco train-seg'")
    p.add_argument("-o", "--output", required=True, metavar="MASK", help="mask file: .npy, .png, .nii.gz or .nii (uint8, 1 = tumour)")
    p.add_argument("--slice", type=int, default=None, metavar="K")
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2))
    p.add_argument("--channel", type=int, default=0, metavar="C")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("decompress", help="decode a .sinco file to an image")
    p.add_argument("input", metavar="IN.sinco")
    p.add_argument("-o", "--output", required=True, metavar="OUT", help="output: .npy, .png (16-bit), .nii.gz, .nii or .tif")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_decompress)

    p = sub.add_parser("info", help="print the header of a .sinco file")
    p.add_argument("input", metavar="IN.sinco")
    p.add_argument("--json", action="store_true", help="print the header as one JSON object")
    p.set_defaults(func=cmd_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``sinco`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (see the module docstring).
    """
    args = build_parser().parse_args(argv)
    # A plain `kill` unwinds like Ctrl-C, so temporary files are removed and outputs stay whole.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return args.func(args)
    except SincoError as exc:
        print(f"sinco: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sinco: interrupted; no output was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"sinco: error: {exc.strerror or exc}{f': {exc.filename!r}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_OS_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
