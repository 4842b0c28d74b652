"""Quality, rate and time of `sinco compress` on a real BraTS slice, for each INR architecture.

Usage (from the repository root, after scripts/setup-venv):

    .venv/bin/python benchmarks/codec_quality.py --steps 3000 --out runs/bench-codec

Prints one row per architecture (PSNR/SSIM of the decoded file, parameter and file bpp, seconds,
milliseconds per step) and writes the rows with the full configuration to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.inr.config import INRFitConfig
from sinco.compression.image import compress_image
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice
from sinco.utils.atomic import atomic_write_bytes
from sinco.utils.device import resolve_device


def cpu_name() -> str:
    """The CPU model from /proc/cpuinfo, or the platform's processor string."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def main() -> None:
    """Run the benchmark and print its table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--case", default="brats_2013_pat0003_1")
    parser.add_argument("--slice", type=int, default=None, help="default: the slice with the most tumour")
    parser.add_argument("--arch", nargs="+", default=["siren", "pe-mlp"])
    parser.add_argument("--depth", type=int, nargs="+", default=[None], help="hidden layers to try (default: the codec's)")
    parser.add_argument("--bpp", type=float, default=1.2)
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--compile", choices=("auto", "on", "off"), default="auto", help="torch.compile the fit (default: auto)")
    parser.add_argument("--out", default="runs/bench-codec")
    args = parser.parse_args()

    case = Path(args.data) / args.case
    flair = case / "Flair_subtrMeanDivStd.nii.gz"
    k = args.slice
    if k is None:
        labels = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj)
        k = int(np.argmax((labels > 0).sum(axis=(0, 1))))
    image, vmin, vmax = normalize_minmax(load_slice(flair, slice_index=k))
    device = resolve_device(args.device)
    machine = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__, "device": str(device)}
    if device.type == "cuda":
        machine["gpu"] = torch.cuda.get_device_name(device)
    print(f"# {flair} slice {k}, {image.shape[0]}x{image.shape[1]}; {machine}")
    print(f"{'arch':8} {'width':>5} {'depth':>5} {'params':>6} {'bpp_par':>8} {'bpp_file':>8} {'psnr':>7} {'ssim':>7} {'seconds':>8} {'ms/step':>8}")
    rows = []
    for arch, depth in ((a, d) for a in args.arch for d in args.depth):
        codec = CodecConfig(arch=arch, bpp=args.bpp, options={"depth": depth})
        fit = INRFitConfig(steps=args.steps, seed=args.seed, compile=args.compile)
        start = time.perf_counter()
        result = compress_image(image, vmin=vmin, vmax=vmax, codec=codec, fit_config=fit, device=device)
        seconds = time.perf_counter() - start
        spec, m = result.file.spec, result.metrics
        row = {
            "arch": arch, "width": spec.width, "depth": spec.depth, "n_params": spec.n_params(),
            "bpp_params": m["bpp_params"], "bpp_file": m["bpp_file"], "psnr": m["psnr"], "ssim": m["ssim"],
            "seconds": seconds, "ms_per_step": 1000 * result.fit.seconds / max(args.steps, 1),
            "codec": codec.to_dict(), "fit": fit.to_dict(),
        }  # fmt: skip
        rows.append(row)
        print(f"{arch:8} {spec.width:5d} {spec.depth:5d} {spec.n_params():6d} {m['bpp_params']:8.4f} {m['bpp_file']:8.4f} "
              f"{m['psnr']:7.2f} {m['ssim']:7.4f} {seconds:8.1f} {row['ms_per_step']:8.1f}", flush=True)  # fmt: skip
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    record = {"input": {"path": str(flair), "slice": k}, "machine": machine, "args": vars(args), "rows": rows}
    atomic_write_bytes(out / "results.json", (json.dumps(record, indent=2) + "\n").encode())
    print(f"# wrote {out / 'results.json'}")


if __name__ == "__main__":
    main()
