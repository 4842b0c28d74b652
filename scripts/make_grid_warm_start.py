"""Remake the grid family's warm start (src/sinco/assets/grid_warm_start_<ID>.json) from public images.

The images are axial slices of the MNI152 2009 template that nilearn ships (T1, grey-matter and white-matter maps),
none from the axial range of the demo's test slab (z 95-132), so the demo does not measure a decoder that has seen its
slice. Each is fitted with the `fast` recipe in turn, at lambda_rd 1e-3, 3e-4 and 1e-4 (cycled), from the weights the
previous fit left (sequential fine-tuning); the last weights, as integers, are the warm start. One thread, seed 0;
about ten minutes on a 2-core CPU. Another float library may give weights that differ in their last bits: the file
that ships is the warm start, its SHA-256 recorded in sinco.codec.grid.warm_start.WARM_STARTS.

Usage: .venv/bin/python scripts/make_grid_warm_start.py --id 1 [--steps 1500] [--out src/sinco/assets]
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import nibabel as nib
import numpy as np
import torch

from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import train_warm_start
from sinco.codec.grid.warm_start import quantize_warm_start, warm_start_json
from sinco.data.demo import T1_FILE, WM_FILE, template_dir
from sinco.data.intensity import normalize_minmax
from sinco.version import __version__

GM_FILE = "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz"
#: (template file, axial index): outside the demo's test slab, z 95-132.
SLICES = ((T1_FILE, 45), (GM_FILE, 60), (WM_FILE, 80), (T1_FILE, 145), (GM_FILE, 85), (WM_FILE, 140), (T1_FILE, 70),
          (GM_FILE, 150), (WM_FILE, 50))  # fmt: skip
LAMBDAS = (1e-3, 3e-4, 1e-4)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--id", type=int, required=True, help="the warm start's id (never reuse one for other weights)")
    parser.add_argument("--steps", type=int, default=1500, help="steps of each image's fit (default: 1500)")
    parser.add_argument("--out", default="src/sinco/assets", help="folder of the asset (default: src/sinco/assets)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    folder = template_dir()
    volumes = {name: np.asarray(nib.load(str(folder / name)).dataobj).astype(np.float32) for name in {n for n, _ in SLICES}}
    images = [normalize_minmax(volumes[name][:, :, z], name=f"{name} z{z}")[0] for name, z in SLICES]
    spec = GridSpec()
    config = GRID_PRESETS["fast"].with_steps(args.steps)
    started = time.process_time()
    tensors = train_warm_start(images, spec=spec, config=config, lambdas=LAMBDAS, device=torch.device("cpu"), progress=True)
    warm = quantize_warm_start(tensors, spec)
    provenance = {"command": f"scripts/make_grid_warm_start.py --id {args.id} --steps {args.steps}", "sinco_version": __version__,
                  "torch_version": torch.__version__, "images": [f"{name} axial {z}" for name, z in SLICES], "lambdas": list(LAMBDAS),
                  "fit": config.to_dict(), "cpu_seconds": round(time.process_time() - started, 1)}  # fmt: skip
    path = Path(args.out) / f"grid_warm_start_{args.id}.json"
    path.write_text(warm_start_json(warm, provenance=provenance))
    print(f"{path}: sha256 {warm.sha256()} (record it in sinco.codec.grid.warm_start.WARM_STARTS)")


if __name__ == "__main__":
    main()
