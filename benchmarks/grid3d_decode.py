"""Decode time of the volume family ``grid3d`` on a real BraTS FLAIR volume (240 x 240 slices), and the peak memory of
coding a whole 240 x 240 x 155 volume.

Usage (from the repository root, one thread as the targets are stated)::

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid3d_decode.py --file /tmp/slab16.sinco
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/grid3d_decode.py --whole --steps 20 --file /tmp/whole.sinco

The first run fits a 16-slice slab (slices 70:86) with a short schedule (``--steps``, default 100) at a fixed
``lambda_rd`` (one fit, no rate search) and saves the file to ``--file``; later runs reuse it, so the same bytes are
timed before and after a change of the decoder. Decode time depends on the geometry (number of latents, decoding
steps, synthesis over H x W per slice), not much on how long the fit ran: a short fit is enough to time it.

Prints the best of ``--repeat`` decodes (wall-clock and CPU seconds: on a shared machine the CPU time is the steadier
figure) of one slice through ``decode_slab_volume(slices=...)`` (what ``sinco decompress --slices`` runs) and of the
whole file (a 155-slice volume is about 155 / 16 times a 16-slice slab). With ``--whole`` the whole volume is coded (``--steps`` per slab) in a
child process whose peak resident memory (``ru_maxrss``) is printed, then decoded whole and timed.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from pathlib import Path

IMAGE = "/work/shared/data/brats2013/brats_2013_pat0003_1/Flair_subtrMeanDivStd.nii.gz"

_COMPRESS = """
import json, resource, sys, time
import numpy as np, nibabel as nib, torch
from sinco.codec.config import CodecConfig
from sinco.codec.registry import fit_config
from sinco.compression.volume import compress_volume_slabs
image, lo, hi, steps, path = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
source = nib.load(image)
volume = np.moveaxis(np.asarray(source.dataobj, dtype=np.float32), 2, 0)[lo:hi]
config = fit_config("grid3d", "fast", {"steps": steps, "seed": 0, "lambda_rd": 1e-3})
started = time.perf_counter()
result = compress_volume_slabs(volume, first_index=lo, axis=2, affine=source.affine, codec=CodecConfig(arch="grid3d", bpp=1.0,
                               options={"slab": 16}), fit_config=config, device=torch.device("cpu"))
open(path, "wb").write(result.data)
print(json.dumps({"seconds": time.perf_counter() - started, "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "bpp_file": result.metrics["bpp_file"], "psnr_volume": result.metrics["psnr_volume"], "slabs": result.metrics["slabs"]}))
"""


def _compress(path: Path, *, lo: int, hi: int, steps: int) -> dict:
    """Code slices ``lo:hi`` in a child process (its own peak memory); returns its figures."""
    run = subprocess.run([sys.executable, "-c", _COMPRESS, IMAGE, str(lo), str(hi), str(steps), str(path)], capture_output=True,
                         text=True, check=True)  # fmt: skip
    return json.loads(run.stdout.strip().splitlines()[-1])


def _best(call, repeat: int) -> str:
    """The least wall-clock and CPU seconds of ``repeat`` calls (on a shared machine the CPU time is the steadier)."""
    wall, cpu = [], []
    for _ in range(repeat):
        started, cpu_started = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_started)
    return f"{min(wall):.3f} s ({min(cpu):.3f} s CPU)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--file", default="/tmp/grid3d-slab16.sinco", help="the volume file (made when missing)")
    parser.add_argument("--steps", type=int, default=100, help="fitting steps per slab when the file is made")
    parser.add_argument("--repeat", type=int, default=3, help="decodes timed (the best is printed)")
    parser.add_argument("--whole", action="store_true", help="code the whole 155-slice volume (peak memory, whole decode)")
    args = parser.parse_args()
    import torch

    from sinco.codec.volume import decode_slab_volume

    print(f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.2f}")
    path = Path(args.file)
    lo, hi = (0, 155) if args.whole else (70, 86)
    if not path.exists():
        made = _compress(path, lo=lo, hi=hi, steps=args.steps)
        print(f"coded slices {lo}:{hi} ({args.steps} steps per slab, lambda_rd 1e-3): {made}")
    data = path.read_bytes()
    _, whole = decode_slab_volume(data)  # warms the cached tables
    n = whole.shape[0]
    one = _best(lambda: decode_slab_volume(data, slices=range(n // 2, n // 2 + 1)), args.repeat)
    all_slices = _best(lambda: decode_slab_volume(data), args.repeat)
    print(f"{path}: {n} slices, {len(data)} bytes")
    print(f"one slice (--slices {n // 2}:{n // 2 + 1}): {one}")
    print(f"all {n} slices: {all_slices}" + (f"; a 155-slice volume is {155 / n:.2f} times this" if n < 155 else ""))
    print(f"peak RSS of this process: {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
