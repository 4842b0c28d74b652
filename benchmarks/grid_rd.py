"""Rate-distortion, encode and decode time of the latent-grid family on a real BraTS slice, against JPEG 2000.

Usage (from the repository root, after scripts/setup-venv):

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/grid_rd.py --lambdas 3e-3,1e-3,3e-4 --steps 1200 \
        --target-bpp 1.2 --out runs/bench-grid

For each lambda_rd: one fit from scratch; prints the real payload rate (bpp of the payload bytes; the file
adds ``--header-bytes``), the PSNR of what ``decode_grid`` returns, the estimated vs real bits, and 16-bit
JPEG 2000's PSNR at the same whole-file rate, and with two lambdas or more the Bjontegaard deltas of that curve
against JPEG 2000's points. Then one rate search with the chosen preset (encode time per
slice, trials) and the decode time (best of 5). Writes everything with the configuration to OUT/results.json.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from dataclasses import asdict, replace
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sinco.benchmark.bjontegaard import bd_psnr, bd_rate
from sinco.classical.base import encode_at_bpp
from sinco.classical.registry import get_codec
from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.rate_search import fit_grid_at_bpp
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.data.intensity import normalize_minmax
from sinco.utils.atomic import atomic_write_bytes

DEFAULT_IMAGE = "/work/shared/data/brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz"


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """PSNR in dB of two ``[0, 1]`` images."""
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return float("inf") if mse == 0 else 10 * np.log10(1.0 / mse)


def jpeg2000_at(image: np.ndarray, bpp: float) -> tuple[float, float]:
    """16-bit JPEG 2000 at most ``bpp`` (whole file): (its bpp, PSNR of its decoding)."""
    codec = get_codec("jpeg2000")
    match = encode_at_bpp(codec, image, target_bpp=bpp)
    return match.bpp, psnr(codec.decode(match.data), image)


def _tuples(overrides: dict) -> dict:
    """JSON lists as the tuples the frozen dataclasses hold."""
    return {k: tuple(v) if isinstance(v, list) else v for k, v in overrides.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image", default=DEFAULT_IMAGE)
    parser.add_argument("--slice", type=int, default=85, help="axial slice index")
    parser.add_argument("--lambdas", default="3e-3,1e-3,3e-4")
    parser.add_argument("--preset", default="fast", choices=sorted(GRID_PRESETS))
    parser.add_argument("--steps", type=int, default=None, help="scale the preset to this many steps, as `sinco compress --steps` (lambda sweep and search)")
    parser.add_argument("--target-bpp", type=float, default=1.2, help="rate of the timed rate search (0: skip it)")
    parser.add_argument("--header-bytes", type=int, default=40, help="file bytes outside the payload (format v2 header)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spec", default="{}", help='GridSpec overrides as JSON, e.g. \'{"linear_skip": false}\'')
    parser.add_argument("--config", default="{}", help='GridFitConfig overrides as JSON, e.g. \'{"temperature": [0.3, 0.1]}\'')
    parser.add_argument("--out", default=None, help="folder for results.json")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    volume = np.asarray(nib.load(args.image).dataobj)
    image, _, _ = normalize_minmax(volume[:, :, args.slice], name=f"{args.image} slice {args.slice}")
    height, width = image.shape
    pixels = height * width
    spec = GridSpec(**_tuples(json.loads(args.spec)))
    config = replace(GRID_PRESETS[args.preset], seed=args.seed, **_tuples(json.loads(args.config)))
    if args.steps is not None:
        config = config.with_steps(args.steps)  # as `sinco compress --steps`: the phases and candidates keep their shares
    device = torch.device("cpu")
    target = torch.from_numpy(image)[None]
    print(f"image {args.image} slice {args.slice} {height}x{width}; spec {spec} ({spec.macs_per_pixel()} MAC/pixel)")
    print(f"config {config}; torch threads {torch.get_num_threads()}; load average {os.getloadavg()}")
    rows = []
    header = f"{'lambda_rd':>10} {'payload bpp':>11} {'file bpp':>8} {'PSNR dB':>8} {'est/real bits':>14} {'J2K bpp':>8} {'J2K dB':>7} {'s':>6}"
    print(header)
    for lam in [float(x) for x in args.lambdas.split(",") if x]:
        result = fit_grid(target, spec=spec, config=config.with_lambda(lam), device=device)[0]
        decoded = decode_grid(result.payload, spec=spec, height=height, width=width)
        file_bpp = (result.payload_bits + 8 * args.header_bytes) / pixels
        j2k_bpp, j2k_psnr = jpeg2000_at(image, file_bpp)
        row = {
            "lambda_rd": lam, "payload_bpp": result.payload_bits / pixels, "file_bpp": file_bpp, "psnr": psnr(decoded, image),
            "estimated_bits": result.estimated_bits, "payload_bits": result.payload_bits, "network_bits": result.network_bits,
            "jpeg2000_bpp": j2k_bpp, "jpeg2000_psnr": j2k_psnr, "seconds": result.seconds, "steps": result.steps,
        }  # fmt: skip
        rows.append(row)
        print(
            f"{lam:>10.1e} {row['payload_bpp']:>11.3f} {file_bpp:>8.3f} {row['psnr']:>8.2f} "
            f"{result.estimated_bits / result.payload_bits:>14.3f} {j2k_bpp:>8.3f} {j2k_psnr:>7.2f} {result.seconds:>6.1f}",
            flush=True,
        )
    bjontegaard = None
    if len(rows) >= 2:
        curves = dict(anchor_rate=[r["jpeg2000_bpp"] for r in rows], anchor_psnr=[r["jpeg2000_psnr"] for r in rows],
                      test_rate=[r["file_bpp"] for r in rows], test_psnr=[r["psnr"] for r in rows])  # fmt: skip
        rate, gain = bd_rate(**curves), bd_psnr(**curves)
        bjontegaard = {"bd_rate_percent": rate.value, "bd_psnr_db": gain.value, "degree": rate.degree, "reason": rate.reason}
        if rate.value is None or gain.value is None:
            print(f"against JPEG 2000: no Bjontegaard delta ({rate.reason or gain.reason})")
        else:
            print(f"against JPEG 2000 at the same rates: BD-rate {rate.value:+.1f}%, BD-PSNR {gain.value:+.2f} dB (degree {rate.degree})")
    search = None
    if args.target_bpp > 0:
        started = time.perf_counter()
        found = fit_grid_at_bpp(
            target, spec=spec, config=config, target_bpp=args.target_bpp, header_bytes=args.header_bytes, device=device
        )[0]  # fmt: skip
        encode_s = time.perf_counter() - started
        times = []
        for _ in range(5):
            started = time.perf_counter()
            decoded = decode_grid(found.payload, spec=spec, height=height, width=width)
            times.append(time.perf_counter() - started)
        file_bpp = (found.payload_bits + 8 * args.header_bytes) / pixels
        j2k_bpp, j2k_psnr = jpeg2000_at(image, file_bpp)
        search = {
            "target_bpp": args.target_bpp, "file_bpp": file_bpp, "psnr": psnr(decoded, image), "trials": found.trials,
            "lambda_rd": found.config.lambda_rd, "encode_seconds": encode_s, "decode_seconds_best_of_5": min(times),
            "jpeg2000_bpp": j2k_bpp, "jpeg2000_psnr": j2k_psnr, "steps": found.steps, "within_band": found.within_band,
        }  # fmt: skip
        print(
            f"rate search ({args.preset}) to {args.target_bpp} bpp: file {file_bpp:.3f} bpp, PSNR {search['psnr']:.2f} dB "
            f"(JPEG 2000 {j2k_psnr:.2f} dB at {j2k_bpp:.3f}), {found.trials} trials, within 3% band: {found.within_band}, {found.steps} steps, "
            f"encode {encode_s:.1f} s, decode {min(times) * 1000:.0f} ms (best of 5)"
        )
    print(f"load average at the end {os.getloadavg()}")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        record = {"args": vars(args), "spec": asdict(spec), "config": config.to_dict(), "rows": rows,
                  "bjontegaard": bjontegaard, "search": search}  # fmt: skip
        atomic_write_bytes(out / "results.json", (json.dumps(record, indent=2) + "\n").encode())


if __name__ == "__main__":
    main()
