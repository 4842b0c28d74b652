"""The volume family's warm start against random starting weights: fixed-lambda fits of real slabs, and their BD-rate.

Usage (from the repository root):

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid3d_warm_start.py [--preset fast] [--lambdas 3e-3,3e-4,3e-5]
        [--slabs brats,lgg]

For each slab (BraTS 2013 pat0003 FLAIR slices 86-93, one slab of 8; LGG TCGA_CS_4942 FLAIR slices 8-15) and lambda:
one volume file with ``grid``'s warm start lifted to the volume decoder (``--warm-start on``) and one from random
weights (``--warm-start off``), both through :func:`sinco.compression.volume.compress_volume_slabs` (what ``sinco
compress --slices A:B --arch grid3d --lambda-rd X`` runs); prints each file's bits per voxel (its real bytes) and the
volume PSNR of what it decodes to, then per slab the BD-rate / BD-PSNR of the warm curve against the random one.

``--anchors RESULTS.json`` (a ``sinco benchmark --volumes`` run on the same slab, e.g. ``--slices 86:94 --methods
jpeg2000,hevc-ra,vvc-ra``) also prints both curves' BD-rate against each method of that run (the same volume PSNR: the
MSE over every voxel of the slab scaled to its own range, and the files' real bytes).
"""

from __future__ import annotations

import argparse
import json
import os

import torch

from sinco.benchmark.bjontegaard import bd_psnr, bd_rate
from sinco.codec.config import CodecConfig
from sinco.codec.registry import fit_config
from sinco.compression.volume import compress_volume_slabs
from sinco.data.io import load_affine, load_array, select_slices

DATA = os.environ.get("SINCO_SHARED_DATA", "../shared/data")
SLABS = {"brats": ("brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz", 86, 94),
         "lgg": ("lgg/TCGA_CS_4942_19970222/flair.nii.gz", 8, 16)}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="fast")
    parser.add_argument("--lambdas", default="3e-3,3e-4,3e-5")
    parser.add_argument("--slabs", default="brats,lgg")
    parser.add_argument("--anchors", default=None, help="results.json of a sinco benchmark --volumes run on the same slab")
    args = parser.parse_args()
    anchors = json.loads(open(args.anchors).read())["records"] if args.anchors else []
    lambdas = [float(v) for v in args.lambdas.split(",")]
    print(f"# grid3d {args.preset} preset, fixed lambda_rd; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    for name in args.slabs.split(","):
        path, first, stop = SLABS[name]
        source = os.path.join(DATA, path)
        volume, _ = select_slices(load_array(source), slices=f"{first}:{stop}")
        affine = load_affine(source)
        curves: dict[str, list[tuple[float, float]]] = {}
        for arm in ("on", "off"):
            for lam in lambdas:
                config = fit_config("grid3d", args.preset, {"lambda_rd": lam, "seed": 0})
                codec = CodecConfig(arch="grid3d", bpp=1.0, options={"slab": stop - first, "warm_start": arm})
                result = compress_volume_slabs(volume, first_index=first, axis=2, affine=affine, codec=codec, fit_config=config,
                                               device=torch.device("cpu"))  # fmt: skip
                m = result.metrics
                curves.setdefault(arm, []).append((m["bpp_file"], m["psnr_volume"]))
                print(json.dumps({"slab": name, "warm_start": arm, "lambda_rd": lam, "bpv": round(m["bpp_file"], 4),
                                  "psnr_volume": round(m["psnr_volume"], 3), "network_bits": m["slab_fits"][0]["network_bits"],
                                  "fit_seconds": round(m["fit_seconds"], 1)}), flush=True)  # fmt: skip
        _print_delta(f"{name}: warm start against random weights", anchor=curves["off"], test=curves["on"])
        image_id = f"{os.path.basename(os.path.dirname(path))}:{first}:{stop}"
        for method in sorted({r["method"] for r in anchors if r["image_id"] == image_id}):
            anchor = [(r["bpp_file"], r["psnr"]) for r in anchors if r["image_id"] == image_id and r["method"] == method]
            for arm in ("on", "off"):
                _print_delta(f"{name}: grid3d --warm-start {arm} against {method}", anchor=anchor, test=curves[arm])


def _print_delta(what: str, *, anchor: list[tuple[float, float]], test: list[tuple[float, float]]) -> None:
    kwargs = dict(anchor_rate=[p[0] for p in anchor], anchor_psnr=[p[1] for p in anchor], test_rate=[p[0] for p in test],
                  test_psnr=[p[1] for p in test])  # fmt: skip
    rate, gain = bd_rate(**kwargs), bd_psnr(**kwargs)
    shown = f"BD-rate {rate.value:+.1f}%" if rate.value is not None else f"BD-rate n/a ({rate.reason})"
    print(f"# {what}: {shown}, BD-PSNR {gain.value:+.2f} dB" if gain.value is not None else f"# {what}: {shown}", flush=True)


if __name__ == "__main__":
    main()
