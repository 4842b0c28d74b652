"""The classical anchors on a real slice: PSNR, rate and time of each codec at a few rates, BD-rate against JPEG 2000
and VVC, and a check that the ffmpeg codecs give what ffmpeg run by hand gives.

Usage (from the repository root):

    .venv/bin/python benchmarks/anchors.py [--data ../shared/data/brats2013] [--case brats_2013_pat0005_1] [--slice 91]
        [--bpp 0.3,0.6,1.2] [--methods jpeg2000,hevc,vvc,avif,avif10,avif12]

The slice (axial, of the case's FLAIR volume) is min-max scaled to [0, 1]; every method codes it at the highest
quality whose real file fits each rate (:func:`sinco.classical.base.encode_at_bpp`), and the PSNR is that of the
decoded file. ``encode s`` is the whole rate search (every trial encoding), wall clock, and ``cpu s`` the CPU time of
this process and of the ffmpeg processes it ran. BD-rate: VCEG-M33 polynomial of the three points (degree 2).
For each ffmpeg method the highest rate's file is made again by ffmpeg with the documented command written out here,
and the bytes and decoded PSNR compared. ``--slab N`` adds the volume codecs on N slices against JPEG 2000 slice by
slice.
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np

from sinco.benchmark.bjontegaard import bd_rate
from sinco.classical.base import encode_at_bpp
from sinco.classical.registry import CLASSICAL_CODECS
from sinco.classical.video import FFmpegCodec, ffmpeg_exe
from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_array, select_slice

# The note's figures on BraTS pat0005 slice 91 (JPEG 2000 through Pillow's rate mode, VVC intra as here).
NOTE = {"jpeg2000": [(0.30, 38.97), (0.60, 47.55), (1.19, 59.09)], "vvc": [(0.32, 45.72), (0.68, 55.40), (1.23, 65.53)]}


def _cpu() -> float:
    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)))


def direct_ffmpeg(name: str, image: np.ndarray, quality: int) -> tuple[bytes, np.ndarray]:
    """The documented ffmpeg command of ``name`` at ``quality``, run by hand: ``(bitstream, decoded image in [0, 1])``."""
    height, width = image.shape
    if name == "hevc":
        samples, fmt, peak, mux = np.rint(image * 4095).astype("<u2").tobytes(), "gray12le", 4095, "hevc"
        codec = ["-c:v", "libx265", "-preset", "slow", "-x265-params", f"qp={51 - quality}:keyint=1:tune=psnr:info=0:log-level=error"]
    elif name == "vvc":
        luma = np.rint(image * 1023).astype("<u2")
        samples, fmt, peak, mux = luma.tobytes() + np.full(luma.size // 2, 512, "<u2").tobytes(), "yuv420p10le", 1023, "vvc"
        codec = ["-c:v", "libvvenc", "-preset", "medium", "-qp", str(63 - quality), "-vvenc-params", "IntraPeriod=1"]
    else:
        bits = int(name[-2:])
        peak = (1 << bits) - 1
        samples, fmt, mux = np.rint(image * peak).astype("<u2").tobytes(), f"gray{bits}le", "obu"
        codec = ["-threads", "1", "-c:v", "libaom-av1", "-cpu-used", "4", "-crf", str(63 - quality), "-still-picture", "1"]
    with tempfile.TemporaryDirectory() as tmp:
        raw, out, dec = Path(tmp) / "in.raw", Path(tmp) / "out.bin", Path(tmp) / "dec.raw"
        raw.write_bytes(samples)
        base = [ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y"]
        subprocess.run([*base, "-f", "rawvideo", "-pix_fmt", fmt, "-s", f"{width}x{height}", "-r", "25", "-i", str(raw), *codec, "-f", mux,
                        str(out)], check=True, capture_output=True)  # fmt: skip
        subprocess.run([*base, "-i", str(out), "-f", "rawvideo", "-pix_fmt", fmt, str(dec)], check=True, capture_output=True)
        decoded = np.frombuffer(dec.read_bytes(), dtype="<u2")[: height * width].reshape(height, width) / peak
        return out.read_bytes(), decoded


def main() -> None:
    """Measure and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default=os.environ.get("SINCO_BRATS_DIR", "../shared/data/brats2013"))
    parser.add_argument("--case", default="brats_2013_pat0005_1")
    parser.add_argument("--slice", type=int, default=91, help="axial slice index (default: 91)")
    parser.add_argument("--bpp", default="0.3,0.6,1.2")
    parser.add_argument("--methods", default="jpeg2000,hevc,vvc,avif,avif10,avif12")
    parser.add_argument("--slab", type=int, default=0,
                        help="also code a slab of this many axial slices centred on --slice with hevc-ra and vvc-ra (the slices "
                             "as frames) and with jpeg2000 slice by slice, at the same rates (default: 0, no slab)")  # fmt: skip
    args = parser.parse_args()
    rates = [float(b) for b in args.bpp.split(",")]
    methods = args.methods.split(",")
    volume = load_array(Path(args.data) / args.case / "Flair_subtrMeanDivStd.nii.gz")
    image, _, _ = normalize_minmax(select_slice(volume, slice_index=args.slice))
    print(f"# {args.case} slice {args.slice}, {image.shape[0]} x {image.shape[1]}, FLAIR min-max scaled; {os.cpu_count()} CPUs, "
          f"load average {os.getloadavg()[0]:.1f}")  # fmt: skip
    print(f"{'method':9} {'target':>6} {'bpp':>6} {'PSNR':>6} {'ceiling':>7} {'quality':>7} {'trials':>6} {'encode s':>8} {'cpu s':>6} {'decode s':>8}")
    curves: dict[str, list[tuple[float, float]]] = {}
    seconds: dict[str, list[float]] = {}
    cpu: dict[str, list[float]] = {}
    last: dict[str, tuple[int, bytes, float]] = {}
    for method in methods:
        codec = CLASSICAL_CODECS[method]()
        for target in rates:
            start, start_cpu = time.perf_counter(), _cpu()
            match = encode_at_bpp(codec, image, target_bpp=target)
            encode = time.perf_counter() - start
            start = time.perf_counter()
            decoded = codec.decode(match.data)
            decode = time.perf_counter() - start
            spent = _cpu() - start_cpu
            value = _psnr(decoded, image)
            curves.setdefault(method, []).append((match.bpp, value))
            seconds.setdefault(method, []).append(encode + decode)
            cpu.setdefault(method, []).append(spent)
            last[method] = (int(match.quality), match.data, value)
            print(f"{method:9} {target:6.2f} {match.bpp:6.3f} {value:6.2f} {codec.psnr_ceiling:7.1f} {match.quality:7.4g} {match.trials:6d} "
                  f"{encode:8.2f} {spent:6.2f} {decode:8.2f}")  # fmt: skip
    print("\n# BD-rate (%) over the rates above (negative: fewer bits at equal PSNR)")
    for reference in ("jpeg2000", "vvc"):
        if reference not in curves:
            continue
        anchor = curves[reference]
        for method in methods:
            if method != reference:
                d = bd_rate(anchor_rate=[p[0] for p in anchor], anchor_psnr=[p[1] for p in anchor],
                            test_rate=[p[0] for p in curves[method]], test_psnr=[p[1] for p in curves[method]])  # fmt: skip
                value = "-" if d.value is None else f"{d.value:+.1f}"
                print(f"{method:9} vs {reference:8}: {value:>7} (degree {d.degree}, PSNR {d.interval})")
    print("\n# The note's figures on pat0005 slice 91 (bpp, PSNR):")
    for method, points in NOTE.items():
        print(f"{method:9} " + ", ".join(f"{b:.2f} bpp {p:.2f} dB" for b, p in points))
    print("\n# Time a slice, all rates (wall encode + decode / CPU of sinco and ffmpeg):")
    for method in methods:
        print(f"{method:9} {sum(seconds[method]):6.2f} s / {sum(cpu[method]):6.2f} s cpu  (per rate {np.mean(seconds[method]):.2f} s)")
    if "hevc" in seconds and "vvc" in seconds:
        per_rate = [h + v for h, v in zip(seconds["hevc"], seconds["vvc"], strict=True)]
        print(f"hevc+vvc  per rate: {', '.join(f'{s:.2f}' for s in per_rate)} s wall; cpu "
              f"{', '.join(f'{h + v:.2f}' for h, v in zip(cpu['hevc'], cpu['vvc'], strict=True))} s")  # fmt: skip
    print("\n# The ffmpeg methods at their highest rate, made again by ffmpeg by hand:")
    for method in methods:
        if isinstance(CLASSICAL_CODECS[method](), FFmpegCodec):
            quality, data, value = last[method]
            direct, decoded = direct_ffmpeg(method, image, quality)
            print(f"{method:9} quality {quality}: same bytes {direct == data} ({len(direct)} / {len(data)}), PSNR "
                  f"{_psnr(decoded, image):.4f} / {value:.4f}")  # fmt: skip
    if args.slab:
        slab_comparison(volume, centre=args.slice, depth=args.slab, rates=rates)


def slab_comparison(volume: np.ndarray, *, centre: int, depth: int, rates: list[float]) -> None:
    """The volume codecs on a slab against JPEG 2000 slice by slice: bits per voxel, volume PSNR (MSE over every voxel),
    seconds, BD-rate."""
    from sinco.classical.registry import VOLUME_CODECS

    first = centre - depth // 2
    slab = np.stack([select_slice(volume, slice_index=k) for k in range(first, first + depth)]).astype(np.float64)
    slab = (slab - slab.min()) / (slab.max() - slab.min())  # one range for every method: the slab's
    print(f"\n# A slab of {depth} axial slices ({first}..{first + depth - 1}), min-max over the slab; bpp = bits per voxel")
    print(f"{'method':9} {'target':>6} {'bpp':>6} {'PSNR':>6} {'encode s':>8} {'cpu s':>7}")
    curves: dict[str, list[tuple[float, float]]] = {}
    jpeg2000 = CLASSICAL_CODECS["jpeg2000"]()
    for target in rates:
        start, start_cpu = time.perf_counter(), _cpu()
        matches = [encode_at_bpp(jpeg2000, s, target_bpp=target) for s in slab]
        decoded = np.stack([jpeg2000.decode(m.data) for m in matches])
        bpp = 8 * sum(len(m.data) for m in matches) / slab.size
        curves.setdefault("jpeg2000", []).append((bpp, _psnr(decoded, slab)))
        print(f"{'jpeg2000':9} {target:6.2f} {bpp:6.3f} {curves['jpeg2000'][-1][1]:6.2f} {time.perf_counter() - start:8.2f} "
              f"{_cpu() - start_cpu:7.2f}")  # fmt: skip
    for method in VOLUME_CODECS:
        codec = VOLUME_CODECS[method]()
        for target in rates:
            start, start_cpu = time.perf_counter(), _cpu()
            match = encode_at_bpp(codec, slab, target_bpp=target)
            value = _psnr(codec.decode(match.data), slab)
            curves.setdefault(method, []).append((match.bpp, value))
            print(f"{method:9} {target:6.2f} {match.bpp:6.3f} {value:6.2f} {time.perf_counter() - start:8.2f} {_cpu() - start_cpu:7.2f}"
                  f"  (quality {match.quality:g}, {match.trials} trials)")  # fmt: skip
    anchor = curves["jpeg2000"]
    for method in VOLUME_CODECS:
        d = bd_rate(anchor_rate=[p[0] for p in anchor], anchor_psnr=[p[1] for p in anchor],
                    test_rate=[p[0] for p in curves[method]], test_psnr=[p[1] for p in curves[method]])  # fmt: skip
        print(f"{method:9} vs jpeg2000 slice by slice: BD-rate {'-' if d.value is None else f'{d.value:+.1f}'} % (degree {d.degree})")


if __name__ == "__main__":
    main()
