"""The ``sinco`` command line: a thin layer over the library.

Heavy imports (torch, MONAI) happen inside the commands, so ``sinco --help`` is instant.

Exit status: 0 success; 1 an operating-system failure (disk full, permission denied); 2 bad
input, bad usage or an invalid ``.sinco`` file; 3 (``compress-batch``) some slices failed twice
and their inputs were not written, the others were; 130 interrupted.
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
EXIT_SLICES_FAILED = 3


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def _json_default(value: Any) -> Any:
    return str(value)


def _read_sinco(path: str) -> bytes:
    from sinco.codec.format import read_file

    return read_file(path)


def _codec_and_fit(args: argparse.Namespace) -> tuple[Any, Any]:
    """The codec and fitting configurations of ``compress`` from its flags (see :func:`_add_codec_arguments`)."""
    from sinco.codec.config import CodecConfig
    from sinco.codec.families import all_families
    from sinco.fit.config import with_resolved_data_term

    codec_dests = {o.dest for f in all_families() for o in f.options}
    codec = CodecConfig(arch=args.arch, bpp=args.bpp, options={d: getattr(args, d) for d in sorted(codec_dests)})
    overrides = with_resolved_data_term(_fit_overrides(args), regularised=getattr(args, "seg_model", None) is not None,
                                           accepted={o.dest for o in codec.family.fit_options})  # fmt: skip
    return codec, codec.family.fit_config(args.preset, overrides)


def _fit_overrides(args: argparse.Namespace, *, lam_list: bool = False) -> dict[str, Any]:
    """The fitting flags (common and every family's) as given; ``None`` where not given. ``--lam`` is one
    value, or with ``lam_list`` (the benchmark, which reads the list itself) left out."""
    from sinco.codec.families import all_families
    from sinco.fit.config import COMMON_FIT_OPTIONS
    from sinco.regularizer_cli import parse_lams

    dests = list(COMMON_FIT_OPTIONS) + sorted({o.dest for f in all_families() for o in f.fit_options})
    values = {d: getattr(args, d) for d in dests}
    values["lam"] = None if lam_list else parse_lams(args.lam, allow_list=False)[0]
    return values


def _check_regularizer_flags(args: argparse.Namespace, *, mask_optional: bool = False) -> None:
    if (args.seg_model is None) != (args.mask is None) and not mask_optional:
        given, missing = ("--mask", "--seg-model") if args.seg_model is None else ("--seg-model", "--mask")
        raise InputError(f"{given} needs {missing}: the regulariser segments the reconstruction and compares it with the mask")


def _load_regularizer_inputs(args: argparse.Namespace, *, load_mask: Any) -> tuple[Any, Any]:
    """The segmentation model of ``--seg-model`` and the mask(s) of ``--mask`` read with ``load_mask``; both or neither."""
    _check_regularizer_flags(args)
    if args.seg_model is None:
        return None, None
    from sinco.seg.network import load_seg_model

    return load_seg_model(args.seg_model), load_mask(args.mask)


def _write_sidecar(path: Path, record: dict[str, Any]) -> None:
    from sinco.utils.atomic import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(record, indent=2, default=_json_default) + "\n").encode())


def cmd_compress(args: argparse.Namespace) -> int:
    """``sinco compress``: fit, store, decode, measure."""
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import load_slice
    from sinco.pipeline import compress_images, sidecar_record
    from sinco.regularizer_cli import load_networks, regularizer_options
    from sinco.utils.atomic import atomic_write_bytes, check_output_path
    from sinco.utils.device import resolve_device

    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    sidecar = out.with_name(out.name + ".json")
    codec, fit = _codec_and_fit(args)
    options = regularizer_options(args, seed=fit.seed)
    # With --seg-target self the loss network's own mask is the target: --mask only adds ground-truth metrics.
    _check_regularizer_flags(args, mask_optional=options.target == "self" and args.seg_model is not None)
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
    roi = None
    if args.roi is not None:
        roi = load_slice(args.roi, slice_index=args.slice, axis=args.axis, arg="--roi") > 0
        if roi.shape != image.shape:
            raise InputError(f"--roi {args.roi!r}: shape {roi.shape} differs from INPUT's {image.shape}")
    result = compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit=fit, device=device, seg_model=seg_model,
        masks=None if mask is None else [mask], rois=[roi], progress=not args.quiet,
        regularizer_options=options if seg_model is not None else None, ensemble=seg_models[1:], eval_seg_model=judge,
    )[0]  # fmt: skip
    atomic_write_bytes(out, result.data)
    if result.fit.divergences:
        print(
            f"sinco: warning: the fit diverged {result.fit.divergences} time(s); the best state was restored "
            f"and the learning rate lowered to {result.fit.lr_final:g}",
            file=sys.stderr,
        )
    report = {"output": str(out), **result.report(), "device": str(device)}
    if hasattr(fit, "data_term"):
        report["data_term"] = fit.data_term
    regularizer = None if seg_model is None else {
        "seg_model": str(args.seg_model[0]), "mask": None if args.mask is None else str(args.mask),
        "seg_training": seg_model.training.get("summary"), "ensemble": [str(p) for p in args.seg_model[1:]],
        "seg_target": options.target, "seg_perturb": options.perturb, "perturb_scale": options.scale, "perturb_noise": options.noise,
    }  # fmt: skip
    record = sidecar_record(
        input={"path": str(args.input), "slice": args.slice, "axis": args.axis, "channel": args.channel, "shape": list(raw.shape),
               "vmin": vmin, "vmax": vmax, "roi": args.roi},
        codec=codec, fit=fit, device=args.device, result=report, regularizer=regularizer)  # fmt: skip
    record["eval_seg_model"] = None if judge is None else {"path": str(args.eval_seg_model), "seg_training": judge.training.get("summary")}
    _write_sidecar(sidecar, record)
    if args.json:
        print(json.dumps(report, default=_json_default))
        return EXIT_OK
    m = result.metrics
    seg = f" dice={m['dice']:.4f} (uncompressed {m['dice_reference']:.4f}) lam={result.fit.lam:g}" if "dice" in m else ""
    seg += f" dice_eval={m['dice_eval']:.4f}" if "dice_eval" in m else ""
    params = f" bpp_params={m['bpp_params']:.4f}" if "bpp_params" in m else ""
    print(f"{out}: psnr={m['psnr']:.2f} dB ssim={m['ssim']:.4f}{seg}{params} bpp_file={m['bpp_file']:.4f} "
          f"({m['file_bytes']} bytes){_rate_search(m)} seconds={result.seconds:.1f}")  # fmt: skip
    return EXIT_OK


def _lattice(levels: int, *, step: int) -> str:
    """A grid residual layer's lattice in words (``levels`` 2^16: the fine one; else the image's own grey levels)."""
    if levels == 1 << 16:
        return "2^-16 of the range"
    return f"1/{levels}: the image's levels" + (", lossless" if step == 1 else "")


def _rate_search(metrics: dict[str, Any]) -> str:
    """How a rate search ended (the grid family's), for the one-line report; empty for other families."""
    if metrics.get("within_band") is None:
        return f" lambda_rd={metrics['lambda_rd']:.3g}" if "lambda_rd" in metrics else ""
    band = "within 3% below the target" if metrics["within_band"] else "below the 3% band: the best file within the target"
    if metrics.get("network_rate_weight", 1.0) > 1.0:
        band += f", networks coarsened (rate weight x{metrics['network_rate_weight']:.3g}) to fit"
    if metrics.get("residual_step") is not None:
        step, lattice = metrics["residual_step"], _lattice(metrics["residual_levels"], step=metrics["residual_step"])
        band += f"; residual layer {metrics['residual_bits'] / metrics['file_bytes'] / 8:.0%} of the file, step {step} x {lattice}"
    return f" lambda_rd={metrics['lambda_rd']:.3g} ({metrics['rate_trials']} trials, {band})"


def _compress_volume(args: argparse.Namespace, *, out: Path, sidecar: Path, codec: Any, fit: Any, device: Any) -> int:
    """``sinco compress --slices``: every slice of a range, fitted in batches, into one volume file."""
    from sinco.data.io import load_affine, load_array, select_slices
    from sinco.pipeline import compress_volume, default_batch_slices, sidecar_record
    from sinco.utils.atomic import atomic_write_bytes

    if args.slice is not None:
        raise InputError("--slice and --slices: give one (--slice K for one slice, --slices all|A:B for a volume)")
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    stack, indices = select_slices(load_array(args.input), slices=args.slices, axis=args.axis, channel=args.channel)

    def load_masks(path: str) -> Any:
        masks, _ = select_slices(load_array(path, arg="--mask"), slices=args.slices, axis=args.axis, arg="--mask")
        if masks.shape != stack.shape:
            raise InputError(f"--mask: slices of shape {masks.shape[1:]} differ from INPUT's {stack.shape[1:]}")
        return masks > 0

    seg_model, masks = _load_regularizer_inputs(args, load_mask=load_masks)
    rois = None
    if args.roi is not None:
        rois, _ = select_slices(load_array(args.roi, arg="--roi"), slices=args.slices, axis=args.axis, arg="--roi")
        if rois.shape != stack.shape:
            raise InputError(f"--roi: slices of shape {rois.shape[1:]} differ from INPUT's {stack.shape[1:]}")
        rois = rois > 0
    result = compress_volume(
        stack, first_index=indices.start, axis=args.axis, affine=load_affine(args.input), codec=codec, fit=fit,
        device=device, batch_slices=batch, seg_model=seg_model, masks=masks, rois=rois, progress=not args.quiet,
    )  # fmt: skip
    atomic_write_bytes(out, result.data)
    m = result.metrics
    if m["divergences"]:
        print(f"sinco: warning: {m['divergences']} divergence(s) across the slices; see {sidecar}", file=sys.stderr)
    report = {"output": str(out), **{k: (_finite(v) if isinstance(v, float) else v) for k, v in m.items()},
              "seconds": result.seconds, "device": str(device), "slice_range": [indices.start, indices.stop]}  # fmt: skip
    regularizer = None if seg_model is None else {"seg_model": str(args.seg_model), "mask": str(args.mask)}
    _write_sidecar(sidecar, sidecar_record(
        input={"path": str(args.input), "slices": args.slices, "axis": args.axis, "channel": args.channel, "roi": args.roi},
        codec=codec, fit=fit, device=args.device, result=report, regularizer=regularizer, slices=result.slices))  # fmt: skip
    if args.json:
        print(json.dumps(report, default=_json_default))
        return EXIT_OK
    fitted = f"mean psnr={m['psnr_mean']:.2f} dB mean ssim={m['ssim_mean']:.4f} " if m["inr_slices"] else "nothing to fit, "
    speed = f" {m['slices_per_minute']:.2f} slices/min (batches of {batch})" if m["inr_slices"] else ""
    print(
        f"{out}: {m['slices']} slices {indices.start}..{indices.stop - 1} ({m['inr_slices']} fitted, {m['constant_slices']} constant) "
        f"{fitted}bpp_file={m['bpp_file']:.4f} ({m['file_bytes']} bytes){speed} seconds={result.seconds:.1f}"
    )
    return EXIT_OK


def cmd_compress_batch(args: argparse.Namespace) -> int:
    """``sinco compress-batch``: every slice of every input is a Dask task; one volume file per input."""
    from sinco.errors import DeviceError
    from sinco.eval.batch import BatchConfig, ClusterConfig, plan_batch, run_batch
    from sinco.utils.device import resolve_device

    codec, fit = _codec_and_fit(args)
    cluster = ClusterConfig(scheduler=args.scheduler, workers=args.workers, threads_per_worker=args.threads_per_worker)
    # Absolute, so that workers started elsewhere (a remote cluster sharing the file system) find it.
    seg_model = None if args.seg_model is None else str(Path(args.seg_model).resolve())
    config = BatchConfig(codec=codec, fit=fit, slices=args.slices, axis=args.axis, channel=args.channel, device=args.device,
                         torch_threads=args.threads_per_worker, seg_model=seg_model, mask_glob=args.mask_glob)  # fmt: skip
    try:
        resolve_device(args.device)
    except DeviceError:
        if args.scheduler == "local":
            raise  # a remote cluster's workers may have the GPU this machine lacks
    plans = plan_batch(args.inputs, config=config, out_dir=args.out, force=args.force)
    result = run_batch(plans, config=config, cluster=cluster, out_dir=args.out, progress=not args.quiet, argv=sys.argv)
    counts = result.manifest["counts"]
    for path, index, error in result.failed:
        print(f"sinco: error: {path} slice {index}: {error}", file=sys.stderr)
    summary = (f"{args.out}: {counts['outputs_written']} of {counts['inputs']} files written, {counts['done']} of {counts['slices']} "
               f"slices done ({result.fitted} fitted now, {result.skipped} before), {counts['failed']} failed; see {args.out}/manifest.json")  # fmt: skip
    print(json.dumps(counts) if args.json else summary)
    return EXIT_SLICES_FAILED if result.failed else EXIT_OK


def cmd_decompress(args: argparse.Namespace) -> int:
    """``sinco decompress``: decode a ``.sinco`` file to an image file."""
    from sinco.codec.files import decode_file
    from sinco.codec.volume import decode_volume, is_volume_file
    from sinco.data.io import OUTPUT_SUFFIXES, VOLUME_SUFFIXES, image_suffix, save_image, save_volume
    from sinco.utils.atomic import check_output_path

    if image_suffix(args.output) not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {args.output!r}: unsupported output format (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    data = _read_sinco(args.input)
    if is_volume_file(data):
        if image_suffix(args.output) not in VOLUME_SUFFIXES:
            raise InputError(f"-o {args.output!r}: {args.input!r} is a volume; write it as {', '.join(VOLUME_SUFFIXES)}")
        out = check_output_path(args.output, inputs=[args.input], force=args.force)
        vheader, volume, _ = decode_volume(data)
        what = save_volume(out, volume, axis=vheader.axis, affine=vheader.affine)
        print(f"{out}: {vheader.n_slices} slices of {vheader.height}x{vheader.width} ({what})")
        return EXIT_OK
    out = check_output_path(args.output, inputs=[args.input], force=args.force)
    parsed, image = decode_file(data)
    what = save_image(out, scaled=image, vmin=parsed.vmin, vmax=parsed.vmax)
    print(f"{out}: {parsed.height}x{parsed.width} ({what})")
    return EXIT_OK


def _print_rows(rows: list[tuple[str, str]]) -> None:
    for key, value in rows:
        print(f"{key:<11} {value}")


def _volume_info(data: bytes, *, as_json: bool) -> int:
    from sinco.codec.families import get_family
    from sinco.codec.files import parse_file
    from sinco.codec.volume import decode_volume_file

    vheader, records = decode_volume_file(data)
    inner = [parse_file(r.data) for r in records if r.data is not None]
    first = inner[0] if inner else None
    info = {
        "format_version": data[4], "kind": "volume", "axis": vheader.axis,
        "slices": [vheader.first_index, vheader.first_index + vheader.n_slices],
        "shape": [vheader.n_slices, vheader.height, vheader.width], "inr_slices": len(inner),
        "constant_slices": vheader.n_slices - len(inner), "family": first.family if first else None,
        "record_format_version": first.version if first else None,
        "arch": get_family(first.family).describe(first.spec) if first else None,
        "file_bytes": len(data), "bpp_file": 8 * len(data) / vheader.n_voxels,
    }  # fmt: skip
    if as_json:
        print(json.dumps(info))
        return EXIT_OK
    last = vheader.first_index + vheader.n_slices - 1
    rows = [("format", f".sinco volume v{data[4]}"),
            ("slices", f"{vheader.n_slices} ({len(inner)} fitted, {info['constant_slices']} constant), source indices "
                       f"{vheader.first_index}..{last} along axis {vheader.axis}"),
            ("shape", f"{vheader.height} x {vheader.width} per slice")]  # fmt: skip
    if first:
        rows += [("family", f"{first.family} (records in .sinco v{first.version})"),
                 ("arch", ", ".join(f"{k}={v}" for k, v in info["arch"].items() if k != "arch"))]  # fmt: skip
    _print_rows(rows + [("file", f"{len(data)} bytes, {info['bpp_file']:.4f} bpp (file)")])
    return EXIT_OK


def cmd_info(args: argparse.Namespace) -> int:
    """``sinco info``: what a ``.sinco`` file holds: format version, family, geometry, rate."""
    from sinco.codec.families import get_family
    from sinco.codec.files import parse_file
    from sinco.codec.volume import is_volume_file

    data = _read_sinco(args.input)
    if is_volume_file(data):
        return _volume_info(data, as_json=args.json)
    parsed = parse_file(data)
    family, header = get_family(parsed.family), parsed.header
    info = {
        "format_version": parsed.version, "family": parsed.family, "arch": family.describe(parsed.spec),
        "shape": [header.height, header.width], **family.rate_fields(parsed.spec, n_pixels=header.n_pixels),
        "payload_bytes": len(parsed.payload), "file_bytes": len(data), "bpp_file": 8 * len(data) / header.n_pixels,
        "intensity_range": [header.vmin, header.vmax], **family.describe_payload(parsed.spec, parsed.payload),
    }  # fmt: skip
    if args.json:
        print(json.dumps(info))
        return EXIT_OK
    rows = [("format", f".sinco v{parsed.version}"), ("family", f"{parsed.family}: {family.summary}"),
            ("arch", ", ".join(f"{k}={v}" for k, v in info["arch"].items() if k != "arch")),
            ("shape", f"{header.height} x {header.width}"),
            ("file", f"{len(data)} bytes ({len(parsed.payload)} of payload), {info['bpp_file']:.4f} bpp (file)")]  # fmt: skip
    if "n_params" in info:
        rows.append(("parameters", f"{info['n_params']} (fp16), {info['bpp_params']:.4f} bpp (parameters)"))
    if "network_bytes" in info:
        rows.append(("parts", f"payload v{info['payload_version']}: decoder networks {info['network_bytes']} bytes, "
                              f"latents {info['latent_bytes']} bytes"))  # fmt: skip
    if "residual" in info:
        layer = info["residual"]
        rows.append(("residual", f"{layer['bytes']} bytes of coded error, step {layer['step']} x {_lattice(layer['levels'], step=layer['step'])}"))
    _print_rows(rows + [("intensity", f"{header.vmin:.6g} .. {header.vmax:.6g}")])
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
    unet = UNetConfig(channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=args.res_units, net=args.net)
    config = TrainSegConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_cases=args.val_cases, seed=args.seed,
        negatives_per_positive=args.negatives_per_positive, flip=not args.no_flip, gamma=args.gamma, unet=unet,
    )  # fmt: skip
    device = resolve_device(args.device)
    image_glob, label_glob = _dataset_globs(args)
    if label_glob is None:
        raise InputError("--label-glob: training a segmentation network needs tumour labels")
    cases = discover_cases(args.data, layout=args.layout, image_glob=image_glob, label_glob=label_glob, channel=args.channel)
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
        "data": str(args.data), "layout": args.layout, "image_glob": image_glob, "label_glob": label_glob,
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


def _codec_options_by_family(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """Each family's codec options among the flags given (a flag applies to every family that reads it)."""
    from sinco.codec.families import all_families

    return {f.name: {o.dest: getattr(args, o.dest) for o in f.options if getattr(args, o.dest) is not None} for f in all_families()}


def _benchmark_methods(args: argparse.Namespace) -> tuple[str, ...]:
    """``--methods``, or the default: without ``--seg-model``, the default methods that need none."""
    from sinco.eval.benchmark import DEFAULT_METHODS, codec_methods

    if args.methods is not None:
        return tuple(m for m in args.methods.split(",") if m)
    if args.seg_model is not None:
        return DEFAULT_METHODS
    return tuple(m for m in DEFAULT_METHODS if not (m in codec_methods() and codec_methods()[m][1].regularised))


def cmd_benchmark(args: argparse.Namespace) -> int:
    """``sinco benchmark``: the paper's comparison on a dataset."""
    from sinco.eval.benchmark import BenchmarkConfig, run_benchmark
    from sinco.fit.config import COMMON_FIT_OPTIONS
    from sinco.pipeline import default_batch_slices
    from sinco.utils.device import resolve_device

    device = resolve_device(args.device)
    batch = default_batch_slices(device) if args.batch_slices is None else args.batch_slices
    from sinco.regularizer_cli import parse_lams

    overrides = _fit_overrides(args, lam_list=True)
    lams = parse_lams(args.lam, allow_list=True)
    image_glob, label_glob = _dataset_globs(args)
    cases = args.cases if args.cases is not None else ("val" if args.seg_model is not None else "all")
    config = BenchmarkConfig(
        data=str(args.data), seg_model=None if args.seg_model is None else str(args.seg_model[0]), layout=args.layout,
        image_glob=image_glob, label_glob=label_glob, channel=args.channel, cases=cases, roi_glob=args.roi_glob,
        methods=_benchmark_methods(args), bpps=_parse_bpps(args.bpp), images=args.images,
        min_tumour=args.min_tumour, preset=args.preset, steps=args.steps, lr=args.lr, lam=lams[0],
        lams=lams if len(lams) > 1 else None, eval_seg_model=args.eval_seg_model,
        ensemble=tuple(str(p) for p in (args.seg_model or [])[1:]), seg_target=args.seg_target, seg_perturb=args.seg_perturb,
        reg_every=args.reg_every, seed=args.seed, batch_slices=batch,
        fit_options={k: v for k, v in overrides.items() if k not in COMMON_FIT_OPTIONS and v is not None},
        codec_options={k: v for k, v in _codec_options_by_family(args).items() if v},
        anchor=args.anchor,
    )  # fmt: skip
    result = run_benchmark(config, outdir=args.out, device=device, progress=not args.quiet)
    _benchmark_summary(result)
    return EXIT_OK


def cmd_demo(args: argparse.Namespace) -> int:
    """``sinco demo``: a short benchmark of every method on the embedded MNI152 data."""
    from importlib.resources import files

    from sinco.data.demo import IMAGE_NAME, LABEL_NAME, write_demo_dataset
    from sinco.eval.benchmark import BenchmarkConfig, all_methods, codec_methods, run_benchmark
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
        label_glob=LABEL_NAME, cases="val", bpps=(1.2,), images=images, min_tumour=0.01, steps=steps,
        methods=tuple(m for m in all_methods() if m not in codec_methods() or codec_methods()[m][1].in_demo),
        reg_every=1,
    )  # fmt: skip
    result = run_benchmark(config, outdir=out, device=resolve_device(args.device), progress=not args.quiet)
    _benchmark_summary(result)
    return EXIT_OK


def _add_codec_arguments(p: argparse.ArgumentParser) -> None:
    """Every registered family's codec options, once each (a flag several families read is added once)."""
    from sinco.codec.families import all_families

    seen: dict[str, list[str]] = {}
    group = p.add_argument_group("codec family options (each applies to the families named in its help)")
    options = {}
    for family in all_families():
        for option in family.options:
            seen.setdefault(option.flag, []).append(family.name)
            options.setdefault(option.flag, option)
    for flag, option in options.items():
        group.add_argument(flag, dest=option.dest, type=option.type, default=None, metavar=option.metavar,
                           help=f"{option.help} [{', '.join(seen[flag])}]")  # fmt: skip


def _add_fit_arguments(p: argparse.ArgumentParser, *, lam_help: str) -> None:
    """The fitting flags shared by ``compress`` and ``benchmark``: the common ones and every family's."""
    from sinco.codec.families import all_families

    families = all_families()
    presets = "; ".join(f"{f.name}: {', '.join(f.presets)} (default {f.default_preset})" for f in families)
    p.add_argument("--preset", default=None, help=f"fitting preset per family: {presets}. grid: fast = 900 steps (about a minute "
                   "a slice on 2 CPU cores), quality = 6000 from the best of four seeds, long = 12000 (for GPUs; see "
                   "docs/grid-codec.md); siren and pe-mlp: paper = the paper's 50000 Adam steps at lr 1e-3, fast = 4000 "
                   "gradient evaluations, Adam then L-BFGS (see docs/performance.md)")  # fmt: skip
    p.add_argument("--steps", type=int, default=None, help="gradient evaluations (default: the preset's)")
    lr_readers = ", ".join(f.name for f in families if f.reads_option("lr"))
    p.add_argument("--lr", type=float, default=None, help=f"(peak) learning rate (default: the preset's) [{lr_readers}]")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--lam", default="1", metavar="LAMBDA", help=lam_help)
    p.add_argument("--reg-every", type=int, default=1, metavar="K", help="apply the regulariser every K-th step (default: 1)")
    seen: dict[str, list[str]] = {}
    options = {}
    for family in families:
        for option in family.fit_options:
            seen.setdefault(option.flag, []).append(family.name)
            options.setdefault(option.flag, option)
    group = p.add_argument_group("fitting options of the codec families")
    for flag, option in options.items():
        group.add_argument(flag, dest=option.dest, type=option.type, default=None, metavar=option.metavar,
                           help=f"{option.help} [{', '.join(seen[flag])}]")  # fmt: skip


def _dataset_globs(args: argparse.Namespace) -> tuple[str, str | None]:
    """``(image_glob, label_glob)`` of a dataset command: the layout's defaults, ``--label-glob none`` for no labels."""
    if args.layout == "images":
        if args.image_glob is None:
            raise InputError("--layout images needs --image-glob (e.g. '*.png' or 'slices/*.tif')")
        label = args.label_glob
    else:
        label = "OTMultiClass.nii.gz" if args.label_glob is None else args.label_glob
    label = None if label is not None and label.strip().lower() in ("", "none") else label
    return (args.image_glob or "Flair*.nii.gz"), label


def _add_dataset_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--data", required=True, metavar="DIR",
                   help="dataset folder (Decathlon Task01, one folder per case, or a folder of 2-D images)")  # fmt: skip
    p.add_argument("--layout", choices=("auto", "decathlon", "folders", "images"), default="auto",
                   help="dataset layout (default: auto = decathlon if DIR/dataset.json exists, else folders); "
                        "images = 2-D PNG/TIFF/.npy files, those of one folder are one case's slices")  # fmt: skip
    p.add_argument("--image-glob", default=None,
                   help="folders layout: image file (or DICOM series folder) in each case folder (default: Flair*.nii.gz); "
                        "images layout: the images under DIR (required, e.g. '*.png')")  # fmt: skip
    p.add_argument("--label-glob", default=None,
                   help="tumour labels: folders layout, the file in each case folder (default: OTMultiClass.nii.gz; 'none' = no "
                        "labels); images layout, masks paired with the images by name (default: none)")  # fmt: skip
    p.add_argument("--channel", type=int, default=0, help="modality of 4-D volumes (default: 0, FLAIR)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sinco`` command."""
    parser = argparse.ArgumentParser(prog="sinco", description="Compress medical images with implicit neural representations.")
    parser.add_argument("--version", action="version", version=f"sinco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    from sinco.codec.families import DEFAULT_FAMILY, all_families
    from sinco.eval.benchmark import DEFAULT_METHODS, all_methods

    families = all_families()
    p = sub.add_parser("compress", help="fit a neural codec to a 2-D image (or the slices of a volume) and store it as a .sinco file")
    p.add_argument("input", metavar="INPUT",
                   help="NIfTI (.nii/.nii.gz), .npy, PNG or TIFF image, or DICOM: a file or a folder holding one series")  # fmt: skip
    p.add_argument("-o", "--output", required=True, metavar="OUT.sinco", help="output file (a JSON record goes to OUT.sinco.json)")
    p.add_argument("--arch", choices=[f.name for f in families], default=DEFAULT_FAMILY,
                   help="codec family: " + "; ".join(f"{f.name} = {f.summary}" for f in families) + f" (default: {DEFAULT_FAMILY})")  # fmt: skip
    p.add_argument("--bpp", type=float, default=1.2, help="target bits per pixel (default: 1.2)")
    p.add_argument("--slice", type=int, default=None, metavar="K", help="slice index of a 3-D/4-D volume")
    p.add_argument("--slices", default=None, metavar="all|A:B",
                   help="compress consecutive slices (A:B half-open) of a volume into one volume file")  # fmt: skip
    p.add_argument("--batch-slices", type=int, default=None, metavar="N",
                   help="with --slices: slices fitted together as one batch (default: 1 on the CPU, 16 on CUDA)")  # fmt: skip
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis (default: 2, axial)")
    p.add_argument("--channel", type=int, default=0, metavar="C", help="channel of a 4-D volume (default: 0, FLAIR)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("--seg-model", default=None, action="append", metavar="SEG.pt",
                   help="segmentation checkpoint from 'sinco train-seg': enables the SINCO regulariser and Dice metrics; "
                        "repeat it for an ensemble (the regulariser averaged over the networks)")  # fmt: skip
    p.add_argument("--mask", default=None, metavar="LABELS", help="label file of INPUT (same slice is read; label > 0 = tumour)")
    add_regularizer_arguments(p, benchmark=False)
    p.add_argument("--roi", default=None, metavar="MASK",
                   help="region of interest for psnr_roi/ssim_roi, e.g. a brain mask (same slice is read; default: the head found "
                        "automatically)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the result as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    _add_fit_arguments(p, lam_help="regulariser weight lambda (default: 1; 0 = plain fitting)")
    _add_codec_arguments(p)
    p.set_defaults(func=cmd_compress)

    p = sub.add_parser("compress-batch", help="compress many scans, one Dask task per slice, resumably (needs sinco[cluster])")
    p.add_argument("inputs", nargs="+", metavar="INPUT", help="image files, folders (their image files) or globs ('data/*/flair.nii.gz')")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder: one .sinco file per input, manifest.json, .sinco-work/ records")
    p.add_argument("--arch", choices=[f.name for f in families], default=DEFAULT_FAMILY, help=f"codec family (default: {DEFAULT_FAMILY})")
    p.add_argument("--bpp", type=float, default=1.2, help="target bits per pixel (default: 1.2)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (default: auto)")
    _add_fit_arguments(p, lam_help="regulariser weight lambda (default: 1; 0 = plain fitting)")
    _add_codec_arguments(p)
    p.add_argument("--slices", default="all", metavar="all|A:B", help="slices of each volume (A:B half-open; default: all)")
    p.add_argument("--axis", type=int, default=2, choices=(0, 1, 2), help="slicing axis (default: 2, axial)")
    p.add_argument("--channel", type=int, default=0, metavar="C", help="channel of 4-D volumes (default: 0, FLAIR)")
    p.add_argument("--seg-model", default=None, metavar="SEG.pt", help="segmentation checkpoint: enables the SINCO regulariser")
    p.add_argument("--mask-glob", default=None, metavar="PATTERN",
                   help="each input's label file, a pattern in its folder; {stem} = the input's name without suffix")  # fmt: skip
    p.add_argument("--scheduler", default="local", metavar="local|tcp://HOST:PORT",
                   help="local: a LocalCluster on this machine (default); or the address of a running Dask scheduler")  # fmt: skip
    p.add_argument("--workers", type=int, default=None, metavar="N", help="local worker processes (default: cores / K, or one per GPU)")
    p.add_argument("--threads-per-worker", type=int, default=1, metavar="K",
                   help="torch threads of each fit; each worker fits one slice at a time (default: 1)")  # fmt: skip
    p.add_argument("--json", action="store_true", help="print the counts as one JSON object")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace existing output files made with other settings")
    p.set_defaults(func=cmd_compress_batch)

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
    p.add_argument("--net", default="unet", metavar="unet|attention-unet",
                   help="architecture: MONAI UNet or AttentionUnet (default: unet; a judge of the other kind shares fewer weaknesses)")
    p.add_argument("--seed", type=int, default=0, help="random seed (default: 0)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda (default: auto)")
    p.add_argument("-o", "--output", required=True, metavar="SEG.pt", help="checkpoint to write (and SEG.pt.json)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.add_argument("--force", action="store_true", help="replace an existing output file")
    p.set_defaults(func=cmd_train_seg)

    p = sub.add_parser("benchmark", help="compare the neural codecs and classical codecs on a dataset (the paper's Table 1)")
    _add_dataset_arguments(p)
    p.add_argument("--seg-model", default=None, action="append", metavar="SEG.pt",
                   help="checkpoint from 'sinco train-seg' (the loss network): adds Dice and the regularised methods (default: "
                        "none, no Dice); repeat it for an ensemble")  # fmt: skip
    add_regularizer_arguments(p, benchmark=True)
    p.add_argument("--cases", default=None,
                   help="test cases: val (the seg model's validation cases), all, or ID,ID (default: val with --seg-model, else all)")  # fmt: skip
    p.add_argument("--roi-glob", default=None, metavar="GLOB",
                   help="region of interest for PSNR/SSIM ROI: a mask in each case folder, e.g. brainmask.nii.gz (images layout: "
                        "paired by name); default: the head found automatically")  # fmt: skip
    p.add_argument("--methods", default=None,
                   help=f"comma-separated, from: {', '.join(all_methods())} (default: {','.join(DEFAULT_METHODS)}; without "
                        "--seg-model the unregularised ones)")  # fmt: skip
    p.add_argument("--bpp", default="1.2", help="target rate(s), comma-separated (default: 1.2)")
    p.add_argument("--anchor", default="jpeg2000", metavar="METHOD",
                   help="with several --bpp rates: the method of --methods every other is compared with by BD-rate and "
                        "BD-PSNR in table.md and results.json (default: jpeg2000)")  # fmt: skip
    p.add_argument("--images", type=int, default=10, help="test slices (default: 10)")
    p.add_argument("--min-tumour", type=float, default=0.01,
                   help="minimum tumour fraction of a test slice, with labels only (default: 0.01)")  # fmt: skip
    _add_fit_arguments(p, lam_help="SINCO regulariser weight(s) of the regularised methods; a list (0,0.01,0.1,1,10) runs them "
                       "once per value (default: 1)")
    _add_codec_arguments(p)
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
