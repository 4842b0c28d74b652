"""Slices per minute of ``sinco compress-batch`` with 1 and 2 local Dask workers.

Usage (from the repository root, after scripts/setup-venv, which installs the cluster extra):

    .venv/bin/python benchmarks/batch_throughput.py [--arch siren] [--workers 1,2] [--slices 76:80] [--steps 500]

Runs the real command (``sinco compress-batch CASE/Flair_subtrMeanDivStd.nii.gz --arch A --preset fast --steps N``)
on a few slices of a shared BraTS case, once per worker count, each worker a process with one torch
thread (``--threads-per-worker 1``; the command sets each worker's ``OMP_NUM_THREADS`` to it), into a
fresh temporary folder. It prints, per run: the wall-clock time (cluster start-up included), the
slices per minute over the wall clock, the mean seconds of one slice's fit as the workers logged it
(``.sinco-work/fits.jsonl``), and the steady-state slices per minute that the fit time gives for
that many workers, ``60 * workers / mean fit seconds``, and the mean CPU seconds of one fit (the
worker's process time: the fit's cost in core-seconds, which other processes sharing the cores do
not inflate the way they inflate the wall clock). Say how loaded the machine was when quoting the
wall-clock figures.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def run_once(volume: Path, *, arch: str, workers: int, slices: str, steps: int, out: Path) -> dict[str, float]:
    """Run the command once and measure it."""
    command = [sys.executable, "-m", "sinco", "compress-batch", str(volume), "--out", str(out), "--slices", slices,
               "--arch", arch, "--preset", "fast", "--steps", str(steps), "--workers", str(workers), "--threads-per-worker", "1",
               "--device", "cpu", "--quiet", "--json"]  # fmt: skip
    start = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise SystemExit(f"compress-batch failed ({done.returncode}): {done.stderr.strip().splitlines()[-1:]}")
    counts = json.loads(done.stdout)
    fits = [json.loads(line) for line in (out / ".sinco-work" / "fits.jsonl").read_text().splitlines()]
    fit_seconds = sum(f["seconds"] for f in fits) / len(fits)
    cpu_seconds = sum(f["cpu_seconds"] for f in fits) / len(fits)
    return {"workers": workers, "slices": counts["fitted_this_run"], "wall_s": wall, "per_min_wall": 60 * counts["fitted_this_run"] / wall,
            "fit_s": fit_seconds, "per_min_steady": 60 * workers / fit_seconds, "cpu_s": cpu_seconds}  # fmt: skip


def main() -> None:
    """Measure and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--case", default="brats_2013_pat0003_1")
    parser.add_argument("--workers", default="1,2")
    parser.add_argument("--slices", default="76:80", help="slice range of the case (default: 76:80, 4 slices with brain)")
    parser.add_argument("--arch", default="siren", help="codec family (default: siren, the figures in docs/cluster.md)")
    parser.add_argument("--steps", type=int, default=500, help="gradient evaluations per slice, --preset fast (default: 500)")
    args = parser.parse_args()
    volume = Path(args.data) / args.case / "Flair_subtrMeanDivStd.nii.gz"
    if not volume.is_file():
        raise SystemExit(f"{volume}: not found (set --data or SINCO_BRATS_DIR)")
    print(f"# {os.cpu_count()} CPU cores, load average {os.getloadavg()[0]:.1f}; {volume.parent.name} slices {args.slices}, "
          f"--preset fast --steps {args.steps}, {args.arch} 1.2 bpp, 1 torch thread per worker")  # fmt: skip
    print(f"{'workers':>7} {'slices':>6} {'wall s':>7} {'slices/min (wall)':>17} {'fit s/slice':>11} {'slices/min (steady)':>19} {'CPU s/slice':>11}")
    for workers in (int(w) for w in args.workers.split(",")):
        with tempfile.TemporaryDirectory(prefix="sinco-batch-bench-") as tmp:
            r = run_once(volume, arch=args.arch, workers=workers, slices=args.slices, steps=args.steps, out=Path(tmp) / "out")
        print(f"{r['workers']:>7} {r['slices']:>6} {r['wall_s']:>7.1f} {r['per_min_wall']:>17.2f} {r['fit_s']:>11.1f} {r['per_min_steady']:>19.2f} {r['cpu_s']:>11.1f}")
    print(f"# load average at the end {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
