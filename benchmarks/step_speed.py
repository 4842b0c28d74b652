"""Milliseconds per fitting step of each method, against a plain eager loop and a physical lower bound.

Usage (from the repository root, after scripts/setup-venv):

    .venv/bin/python benchmarks/step_speed.py [--steps 30] [--device cpu]

For each method at 1.2 bpp on a real 240 x 240 BraTS slice it prints the median time of a step
after warm-up for

- ``plain``: the plainest eager PyTorch loop (coordinates through the whole model every step,
  positional encoding included, MSE + regularizer, backward, Adam);
- ``sinco``: the very step :func:`sinco.codec.inr.training.fit_inr` runs for a 50,000-step fit
  (:meth:`sinco.codec.inr.training.StackedFit.step`: precomputed encoding, ``torch.compile`` where
  ``compile=auto`` picks it, best-state and divergence bookkeeping included);

the matmul/convolution FLOPs of a step (``torch.utils.flop_counter``), the sine/cosine evaluations
of a step, and a lower bound: FLOPs at the measured peak of a large float32 matmul plus sines at the
measured ``torch.sin`` throughput, both measured in the same run. It also times decoding.
The SINCO U-Net is freshly initialized (the time does not depend on its weights).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch
from torch.utils.flop_counter import FlopCounterMode

from sinco.codec.files import decode_file, write_file
from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.encodings import make_coordinates
from sinco.codec.inr.networks import build_inr, flatten_parameters
from sinco.codec.inr.payload import quantize_fp16
from sinco.codec.inr.training import StackedFit
from sinco.codec.registry import get_family
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_slice
from sinco.regularizer.loss import StructuralRegularizer
from sinco.seg.network import SegModel, UNetConfig, build_unet, freeze

METHODS = {"coin": ("siren", False), "vanilla-inr": ("pe-mlp", False), "sinco-siren": ("siren", True), "sinco-inr": ("pe-mlp", True)}


def median_ms(fn, *, steps: int, warmup: int = 5) -> float:
    """Median wall time of ``fn()`` in milliseconds, after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


def peak_matmul_flops(device: torch.device) -> float:
    """FLOP/s of a 2048^3 float32 matmul (median of 10)."""
    a, b = torch.randn(2048, 2048, device=device), torch.randn(2048, 2048, device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        torch.mm(a, b)
        sync()

    return 2 * 2048**3 / (median_ms(run, steps=10, warmup=3) / 1000)


def peak_sin_rate(device: torch.device) -> float:
    """Sines per second of ``torch.sin`` on 16M float32 values, out of place (median of 10)."""
    x = torch.randn(1 << 24, device=device)
    out = torch.empty_like(x)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def run():
        torch.sin(x, out=out)
        sync()

    return x.numel() / (median_ms(run, steps=10, warmup=3) / 1000)


def measure_method(arch: str, *, regularized: bool, image: np.ndarray, mask: np.ndarray, device: torch.device, steps: int,
                   flops_peak: float, sin_rate: float) -> tuple[dict, torch.nn.Module]:  # fmt: skip
    """Time the plain and the sinco step of one method; returns the table row and the model."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    height, width = image.shape
    target = torch.from_numpy(image).reshape(-1, 1).to(device)
    coords = make_coordinates(height, width, device=device)
    spec = get_family(arch).make_spec(bpp=1.2, height=height, width=width, options={})
    torch.manual_seed(0)
    model = build_inr(spec).to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    reg = None
    if regularized:
        unet = UNetConfig()
        reg = StructuralRegularizer(SegModel(net=freeze(build_unet(unet)), config=unet), mask=mask, device=device)

    def loss_of(pred: torch.Tensor) -> torch.Tensor:
        loss = torch.nn.functional.mse_loss(pred, target)
        return loss + reg(pred.reshape(1, 1, height, width)) if reg is not None else loss

    def plain_step() -> None:
        optimizer.zero_grad()
        loss = loss_of(model(coords))
        loss.backward()
        optimizer.step()
        loss.item()
        sync()

    fit_config = INRFitConfig(steps=50_000, lam=1.0)
    torch.manual_seed(0)
    fit = StackedFit([build_inr(spec)], targets=torch.from_numpy(image)[None], config=fit_config, device=device, regularizer=reg,
                     compile_when_auto=get_family(arch).compile_when_auto)
    step_index = iter(range(10**9))

    def sinco_step() -> None:
        fit.step(next(step_index))
        sync()

    feats = model.features(coords).detach()
    with FlopCounterMode(display=False) as counter:
        loss_of(model.forward_features(feats)).backward()
    flops = counter.get_total_flops()
    # Sines (forward) and cosines (backward) of every SIREN unit; the PE encoding is precomputed.
    sines = 2 * height * width * spec.width * spec.depth if arch == "siren" else 0
    row = {
        "params": spec.n_params(), "gflop": flops / 1e9, "msin": sines / 1e6,
        "bound": 1000 * (flops / flops_peak + sines / sin_rate),
        "plain": median_ms(plain_step, steps=steps), "fast": median_ms(sinco_step, steps=steps),
    }  # fmt: skip
    return row, model


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--steps", type=int, default=30, help="timed steps per variant (after 5 warm-up steps)")
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    case = Path(args.data) / "brats_2013_pat0003_1"
    image, vmin, vmax = normalize_minmax(load_slice(case / "Flair_subtrMeanDivStd.nii.gz", slice_index=85))
    mask = np.asarray(load_slice(case / "OTMultiClass.nii.gz", slice_index=85) > 0, dtype=np.uint8)
    height, width = image.shape
    flops_peak, sin_rate = peak_matmul_flops(device), peak_sin_rate(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    print(f"# {name}, torch {torch.__version__}; peak float32 matmul {flops_peak / 1e9:.1f} GFLOP/s, torch.sin {sin_rate / 1e9:.2f} G/s")
    print(f"{'method':12} {'params':>6} {'GFLOP':>6} {'Msin':>6} {'bound':>7} {'plain':>7} {'sinco':>7} {'sinco/plain':>11} {'sinco/bound':>11}  (ms/step)")
    for method, (arch, regularized) in METHODS.items():
        row, model = measure_method(arch, regularized=regularized, image=image, mask=mask, device=device, steps=args.steps,
                                    flops_peak=flops_peak, sin_rate=sin_rate)  # fmt: skip
        print(f"{method:12} {row['params']:6d} {row['gflop']:6.2f} {row['msin']:6.1f} {row['bound']:7.2f} {row['plain']:7.2f} "
              f"{row['fast']:7.2f} {row['fast'] / row['plain']:11.2f} {row['fast'] / row['bound']:11.1f}", flush=True)  # fmt: skip

    for arch in ("siren", "pe-mlp"):
        spec = get_family(arch).make_spec(bpp=1.2, height=height, width=width, options={})
        payload = quantize_fp16(flatten_parameters(build_inr(spec))).tobytes()
        data = write_file(family=arch, spec=spec, payload=payload, height=height, width=width, vmin=vmin, vmax=vmax)
        one = median_ms(lambda data=data: decode_file(data), steps=20)
        print(f"# decode on the CPU, {arch}: {one:.1f} ms per 240 x 240 slice; a 155-slice volume one slice at a time ~ {155 * one / 1000:.2f} s")


if __name__ == "__main__":
    main()
