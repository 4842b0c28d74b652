"""``sinco train-seg`` (the regularizer's segmentation network) and ``sinco segment`` (a mask of a slice)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from sinco.cli import options
from sinco.cli.common import EXIT_OK, json_text
from sinco.errors import InputError


def add_parsers(sub: Any) -> None:
    """Register ``train-seg`` and ``segment``."""
    p = sub.add_parser("train-seg", help="train the tumour-segmentation U-Net of the SINCO regularizer")
    options.add_dataset(p)
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
    p.add_argument("--seed", type=options.seed_value, default=0, help="random seed (default: 0)")
    options.add_device(p)
    options.add_output(p, metavar="SEG.pt", help="checkpoint to write (and SEG.pt.json)")
    options.add_quiet(p)
    p.set_defaults(func=cmd_train_seg)

    p = sub.add_parser("segment", help="predict the tumour mask of a 2-D slice")
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-m", "--model", required=True, metavar="SEG.pt", help="checkpoint from 'sinco train-seg'")
    options.add_output(p, metavar="MASK", help="mask file: .npy, .png, .nii.gz or .nii (uint8, 1 = tumour)")
    options.add_slicing(p, volumes=False)
    p.set_defaults(func=cmd_segment)


def cmd_train_seg(args: argparse.Namespace) -> int:
    """``sinco train-seg``: train the tumour-segmentation U-Net."""
    from sinco.data.datasets import discover_cases, load_slices, split_cases
    from sinco.seg.network import UNetConfig, save_checkpoint
    from sinco.seg.train import TrainSegConfig, train_segmentation
    from sinco.utils.atomic import atomic_write_bytes, check_output_path
    from sinco.utils.device import resolve_device
    from sinco.version import __version__

    out = check_output_path(args.output, inputs=[], force=args.force)
    channels = options.parse_list(args.channels, arg="--channels", cast=int)
    unet = UNetConfig(channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=args.res_units, net=args.net)
    config = TrainSegConfig(
        epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, val_cases=args.val_cases, seed=args.seed,
        negatives_per_positive=args.negatives_per_positive, flip=not args.no_flip, gamma=args.gamma, unet=unet,
    )  # fmt: skip
    device = resolve_device(args.device)
    image_glob, label_glob = options.dataset_globs(args)
    if label_glob is None:
        raise InputError("--label-glob: training a segmentation network needs tumour labels")
    cases = discover_cases(args.data, layout=args.layout, image_glob=image_glob, label_glob=label_glob, channel=args.channel)
    val_ids = tuple(v for v in (args.val_ids or "").split(",") if v)
    train_ids = tuple(t for t in (args.train_ids or "").split(",") if t)
    train_cases, val_cases = split_cases(cases, val_cases=config.val_cases, seed=config.seed, val_ids=val_ids, train_ids=train_ids)
    train, val = load_slices(train_cases), load_slices(val_cases)
    if not args.quiet:
        print(f"train: {len(train_cases)} cases, {len(train.ids)} slices ({int(train.has_tumour.sum())} with tumour); "
              f"val: {', '.join(c.case_id for c in val_cases)}, {len(val.ids)} slices ({int(val.has_tumour.sum())} with tumour)",
              file=sys.stderr)  # fmt: skip
    result = train_segmentation(train, val, config=config, device=device, progress=not args.quiet)
    best = result.best
    summary = {"best_epoch": result.best_epoch, "val_dice_tumour": best["val_dice_tumour"], "val_dice_global": best["val_dice_global"],
               "minutes": result.seconds / 60}  # fmt: skip
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
    atomic_write_bytes(out.with_name(out.name + ".json"), (json_text(training, indent=2) + "\n").encode())
    n_params = sum(p.numel() for p in result.net.parameters())
    print(f"{out}: best epoch {result.best_epoch}/{config.epochs}, val dice {best['val_dice_tumour']:.4f} (slices with tumour), "
          f"{best['val_dice_global']:.4f} (pooled); {n_params} parameters, {out.stat().st_size} bytes; {result.seconds / 60:.1f} min")  # fmt: skip
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
