"""Lossless and near-lossless: sinco's context coder against JPEG-LS, JPEG 2000 (reversible) and JPEG XL (effort 9).

Per slice (an LGG FLAIR slice, a BraTS FLAIR slice on its integer lattice, the MNI152 demo slice) and per volume
(a slab of consecutive slices of each scan; one context model for the slab, without and with the previous slice as
context): bits per pixel of the whole file, the ratio against the stored bit depth
(8 bits for LGG and MNI152; for BraTS, whose z-scores are float32, the bits its lattice needs), encode and decode
seconds, and the error bound K (JPEG-LS's NEAR; JPEG 2000 and JPEG XL only at K = 0). Every sinco file is decoded
and checked (exact, or within K). The data is read from /work/shared/data (not shipped).

With ``--what lossy``: the lossy rate search's high end on a BraTS slice (pat0003 slice 85, the slice of
``benchmarks/grid_rd.py``): ``--preset fast`` at 0.6 .. 2 bpp with ``--context off`` (grids and the residual layer
alone) and ``--context on`` (the context-coded file offered too), PSNR of the decoded files, and the BD-rate of on
against off over the points with finite PSNR (an exact file is listed apart).

Run (about 20 minutes on 2 cores for slices and volumes, 15 for lossy)::

    flock /tmp/sinco-cpu.lock python benchmarks/lossless.py
    python benchmarks/lossless.py --what slices --max-errors 0     # the lossless slices only
    flock /tmp/sinco-cpu.lock python benchmarks/lossless.py --what lossy
    flock /tmp/sinco-cpu.lock python benchmarks/lossless.py --what grid-plane   # the grid's prediction as context
"""

from __future__ import annotations

import argparse
import math
import time
from dataclasses import dataclass

import numpy as np

LGG = "/work/shared/data/lgg/TCGA_CS_5397_20010315/flair.nii.gz"
BRATS = "/work/shared/data/brats2013/brats_2013_pat0005_1/Flair_subtrMeanDivStd.nii.gz"
LOSSY_SLICE = ("/work/shared/data/brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz", 85)
LOSSY_RATES = (0.6, 0.9, 1.2, 1.6, 2.0)


@dataclass
class Row:
    data: str
    method: str
    max_error: int
    bits: float
    pixels: int
    depth: int
    encode_s: float
    decode_s: float

    def line(self) -> str:
        bpp = self.bits / self.pixels
        return (f"| {self.data} | {self.method} | {self.max_error} | {bpp:.3f} | {self.depth / bpp:.2f} | "
                f"{self.encode_s:.2f} | {self.decode_s:.3f} |")  # fmt: skip


def _volume(path: str) -> np.ndarray:
    import nibabel as nib

    return np.moveaxis(np.asarray(nib.load(path).dataobj), 2, 0)


def scans() -> dict[str, tuple[np.ndarray, int]]:
    """Each scan's slices ``(S, H, W)`` on their lattice (integer levels) and the centre slice's index."""
    from sinco.codec.grid.lossless import find_lattice, to_levels
    from sinco.data.demo import T1_FILE, template_dir

    brats = _volume(BRATS)
    return {
        "LGG TCGA_CS_5397": (_volume(LGG).astype(np.int64), 11),
        "BraTS pat0005": (to_levels(brats, find_lattice(brats)), 91),
        "MNI152 demo": (_volume(str(template_dir() / T1_FILE)).astype(np.int64), 95),
    }


def classical(levels: np.ndarray, *, max_error: int) -> list[tuple[str, float, float, float]]:
    """``(method, bits, encode s, decode s)`` of JPEG-LS (NEAR = K) and, at K = 0, JPEG 2000 (reversible) and JPEG XL
    (effort 9): :data:`sinco.classical.registry.LOSSLESS_CODECS` on the levels at their own depth."""
    from sinco.classical.registry import LOSSLESS_CODECS

    names = {"JPEG-LS": "jpegls"} | ({"JPEG 2000 (reversible)": "jpeg2000", "JPEG XL (e9)": "jpegxl"} if max_error == 0 else {})
    bits = max(1, int(levels.max()).bit_length())
    rows = []
    for name, method in names.items():
        codec = LOSSLESS_CODECS[method]()
        started = time.perf_counter()
        data = codec.encode(levels, bits=bits, max_error=max_error)
        encoded = time.perf_counter()
        decoded = codec.decode(data)
        assert np.abs(decoded - levels).max() <= max_error, name
        rows.append((name, 8.0 * len(data), encoded - started, time.perf_counter() - encoded))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--what", choices=("slices", "volumes", "all", "lossy", "grid-plane"), default="all")
    parser.add_argument("--max-errors", default="0,1,2,4", help="bounds K of the slices (volumes: K = 0)")
    parser.add_argument("--volume-slices", type=int, default=8, help="consecutive slices of each volume, centred (default 8)")
    parser.add_argument("--steps", type=int, default=None, help="fitting steps of the context model (default: its own)")
    args = parser.parse_args()

    import torch

    from sinco.codec.grid.context_fit import ContextFitConfig
    from sinco.codec.grid.lossless import compress_exact, compress_exact_volume

    torch.manual_seed(0)
    if args.what == "lossy":
        lossy()
        return
    if args.what == "grid-plane":
        grid_plane()
        return
    config = ContextFitConfig(**({} if args.steps is None else {"steps": args.steps}))
    bounds = [int(k) for k in args.max_errors.split(",")]
    rows: list[Row] = []
    print("| data | method | K | bpp | ratio | encode s | decode s |\n|---|---|---|---|---|---|---|")
    for name, (volume, centre) in scans().items():
        depth = 8 if "BraTS" not in name else math.ceil(math.log2(int(volume.max() - volume.min()) + 1))
        if args.what in ("slices", "all"):
            image = volume[centre]
            for k in bounds:
                result = compress_exact(image, max_error=k, config=config)
                assert result.measured_error <= k
                rows.append(Row(f"{name} slice {centre}", "sinco", k, 8.0 * len(result.data), image.size, depth,
                                result.encode_seconds, result.decode_seconds))  # fmt: skip
                print(rows[-1].line(), flush=True)
                for method, bits, enc, dec in classical(image - image.min(), max_error=k):
                    rows.append(Row(f"{name} slice {centre}", method, k, bits, image.size, depth, enc, dec))
                    print(rows[-1].line(), flush=True)
        if args.what in ("volumes", "all"):
            first = centre - args.volume_slices // 2
            slab = volume[first : first + args.volume_slices]
            label = f"{name} slices {first}..{first + len(slab) - 1}"
            for previous, method in ((False, "sinco (one model)"), (True, "sinco (one model, previous slice)")):
                result = compress_exact_volume(slab, config=config, first_index=first, previous_slice=previous)
                assert result.measured_error == 0
                rows.append(Row(label, method, 0, 8.0 * len(result.data), slab.size, depth, result.encode_seconds, result.decode_seconds))
                print(rows[-1].line(), flush=True)
            totals: dict[str, list[float]] = {}
            for plane in slab:
                for method, bits, enc, dec in classical(plane - slab.min(), max_error=0):
                    total = totals.setdefault(method, [0.0, 0.0, 0.0])
                    total[0] += bits
                    total[1] += enc
                    total[2] += dec
            for method, (bits, enc, dec) in totals.items():
                rows.append(Row(label, method, 0, bits, slab.size, depth, enc, dec))
                print(rows[-1].line(), flush=True)


def grid_plane(lambdas: tuple[float, ...] = (1e-2, 3e-3)) -> None:
    """Does the grid's prediction pay as a side plane of the context coder? The LGG slice lossless: the context coder
    alone, and with the decoded image of a grid file (one fit of ``--preset fast`` at each lambda_rd, no residual, no
    context coder) as a side plane, the grid file's bits counted."""
    from sinco.api import compress, decompress
    from sinco.codec.grid.context import encode
    from sinco.codec.grid.context_fit import fit_context

    levels = _volume(LGG)[11].astype(np.int64)
    levels -= levels.min()
    top = int(levels.max())

    def context_bits(planes: list[np.ndarray]) -> float:
        model = fit_context(levels, top=top, planes=planes)
        return 8.0 * len(encode(levels, model, planes=planes)[0]) / levels.size

    print(f"context coder alone: {context_bits([]):.3f} bpp", flush=True)
    for lambda_rd in lambdas:
        data = compress(levels.astype(np.float32), device="cpu", fit_options={"lambda_rd": lambda_rd, "residual": "off", "context": "off"})
        plane = np.clip(np.rint(decompress(data).astype(np.float64)), 0, top).astype(np.int64)
        grid = 8.0 * len(data) / levels.size
        coded = context_bits([plane])
        print(f"grid at lambda_rd {lambda_rd:g}: file {grid:.3f} bpp + context coder with its image {coded:.3f} = {grid + coded:.3f} bpp", flush=True)


def lossy() -> None:
    """``--preset fast`` at :data:`LOSSY_RATES` with the context-coded file offered or not; BD-rate of on against off."""
    from sinco.api import compress
    from sinco.benchmark.bjontegaard import bd_rate
    from sinco.codec.files import decode_file, parse_file
    from sinco.data.intensity import normalize_minmax

    path, index = LOSSY_SLICE
    image = _volume(path)[index].astype(np.float64)
    scaled, _, _ = normalize_minmax(image)
    curves: dict[str, list[tuple[float, float]]] = {}
    print("| --context | target bpp | bpp | PSNR dB | payload | seconds |\n|---|---|---|---|---|---|")
    for context in ("off", "on"):
        for rate in LOSSY_RATES:
            started = time.perf_counter()
            data = compress(image, bpp=rate, preset="fast", device="cpu", fit_options={"context": context})
            seconds = time.perf_counter() - started
            decoded = decode_file(data)[1]  # [0, 1] on the file's range: the input's minimum and maximum
            mse = float(np.mean((decoded.astype(np.float64) - scaled) ** 2))
            value = math.inf if mse == 0 else 10 * math.log10(1 / mse)
            bpp = 8 * len(data) / image.size
            curves.setdefault(context, []).append((bpp, value))
            print(f"| {context} | {rate} | {bpp:.3f} | {value:.2f} | v{parse_file(data).payload[0]} | {seconds:.0f} |", flush=True)
    finite = {k: [(r, p) for r, p in v if math.isfinite(p)] for k, v in curves.items()}
    delta = bd_rate(anchor_rate=[r for r, _ in finite["off"]], anchor_psnr=[p for _, p in finite["off"]],
                    test_rate=[r for r, _ in finite["on"]], test_psnr=[p for _, p in finite["on"]])  # fmt: skip
    print(f"BD-rate of --context on against off (finite points): {delta}")


if __name__ == "__main__":
    main()
