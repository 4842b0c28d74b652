"""Interrupted runs leave no partial output; diverging fits are caught; runs are reproducible."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from sinco.cli import main

# Runs the CLI with Path.write_bytes slowed down for files whose name contains MATCH, from the
# (SKIP + 1)-th such write on: half the data is written, a marker printed, and the process sleeps,
# so the test can kill it in the middle of writing an output.
SLOW_WRITER = """
import pathlib, sys, time
real = pathlib.Path.write_bytes
seen = {"n": 0}
def half_then_sleep(self, data):
    if MATCH not in self.name:
        return real(self, data)
    seen["n"] += 1
    if seen["n"] <= SKIP:
        return real(self, data)
    with open(self, "wb") as handle:
        handle.write(data[: len(data) // 2])
        handle.flush()
        sys.stderr.write("HALF-WRITTEN\\n")
        sys.stderr.flush()
        time.sleep(60)
        handle.write(data[len(data) // 2 :])
    return len(data)
pathlib.Path.write_bytes = half_then_sleep
from sinco.cli import main
sys.exit(main(sys.argv[1:]))
"""


def _kill_mid_write(args: list[str], sig: int, *, match: str = "", skip: int = 0) -> subprocess.CompletedProcess:
    script = SLOW_WRITER.replace("MATCH", repr(match)).replace("SKIP", str(skip))
    # A shell's background jobs ignore SIGINT, and a child inherits that: give it the default, as a terminal would.
    proc = subprocess.Popen([sys.executable, "-c", script, *args], stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))  # fmt: skip
    deadline = time.monotonic() + 120
    lines = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        lines.append(line)
        if "HALF-WRITTEN" in line or not line:
            break
    assert "HALF-WRITTEN" in lines[-1], "".join(lines)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, "".join(lines) + err)


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL], ids=["SIGINT", "SIGTERM", "SIGKILL"])
def test_killing_compress_mid_write_keeps_the_old_file(nifti_volume, tmp_path, sig):
    out = tmp_path / "run" / "a.sinco"
    out.parent.mkdir()
    out.write_bytes(b"previous complete file")
    args = ["compress", str(nifti_volume), "--slice", "1", "-o", str(out), "--bpp", "4", "--arch", "siren", "--depth", "3", "--steps", "3", "--quiet", "--force"]
    done = _kill_mid_write(args, sig)
    assert out.read_bytes() == b"previous complete file"
    leftovers = sorted(p.name for p in out.parent.iterdir() if p != out)
    if sig == signal.SIGKILL:
        # Nothing can run after SIGKILL: a hidden temporary file may stay, the output is never touched.
        assert done.returncode == -signal.SIGKILL
        assert all(name.startswith(".a.sinco.") and ".tmp" in name for name in leftovers)
    else:
        assert done.returncode == 130 and "interrupted" in done.stderr and "Traceback" not in done.stderr
        assert leftovers == []


@pytest.mark.slow
def test_killing_compress_mid_write_leaves_no_output(nifti_volume, tmp_path):
    out = tmp_path / "new.sinco"
    args = ["compress", str(nifti_volume), "--slice", "1", "-o", str(out), "--bpp", "4", "--arch", "siren", "--depth", "3", "--steps", "3", "--quiet"]
    done = _kill_mid_write(args, signal.SIGTERM)
    assert done.returncode == 130
    assert list(tmp_path.glob("*new.sinco*")) == []


def test_same_seed_gives_byte_identical_files(nifti_volume, tmp_path, capsys):
    base = ["compress", str(nifti_volume), "--slice", "2", "--bpp", "4", "--arch", "siren", "--depth", "3", "--steps", "15", "--quiet"]
    for name, seed in (("a", "7"), ("b", "7"), ("c", "8")):
        assert main([*base, "--seed", seed, "-o", str(tmp_path / f"{name}.sinco")]) == 0
    capsys.readouterr()
    a, b, c = ((tmp_path / f"{n}.sinco").read_bytes() for n in "abc")
    assert a == b and a != c


def test_a_diverging_fit_is_caught_and_reported(nifti_volume, tmp_path, capsys):
    args = ["compress", str(nifti_volume), "--slice", "2", "--bpp", "4", "--arch", "siren", "--depth", "3", "--steps", "60", "--lr", "5",
            "--quiet", "--json", "-o", str(tmp_path / "d.sinco")]  # fmt: skip
    assert main(args) == 0
    out, err = capsys.readouterr()
    report = json.loads(out)
    assert report["divergences"] >= 1 and report["lr_final"] < 5
    assert "diverged" in err and err.count("\n") == 1
    from sinco.codec.files import parse_file

    parsed = parse_file((tmp_path / "d.sinco").read_bytes())
    assert np.all(np.isfinite(np.frombuffer(parsed.payload, "<f2")))


def test_outputs_never_replace_inputs(nifti_volume, tmp_path, capsys):
    before = nifti_volume.read_bytes()
    link = tmp_path / "link.nii.gz"
    os.symlink(nifti_volume, link)
    for out in (nifti_volume, link):
        code = main(["compress", str(nifti_volume), "--slice", "0", "-o", str(out), "--force", "--steps", "1", "--bpp", "4"])
        assert code == 2 and "overwrite the input" in capsys.readouterr().err
    sinco = tmp_path / "x.sinco"
    assert main(["compress", str(nifti_volume), "--slice", "0", "-o", str(sinco), "--steps", "1", "--bpp", "4", "--arch", "siren", "--depth", "3", "--quiet"]) == 0
    capsys.readouterr()
    os.symlink(sinco, tmp_path / "alias.npy")
    assert main(["decompress", str(sinco), "-o", str(tmp_path / "alias.npy"), "--force"]) == 2
    assert "overwrite the input" in capsys.readouterr().err
    assert nifti_volume.read_bytes() == before and Path(sinco).read_bytes()[:4] == b"SNCO"


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGKILL], ids=["SIGTERM", "SIGKILL"])
def test_killing_benchmark_mid_write_keeps_results_whole_and_resumes(benchmark_dataset, tmp_path, capsys, sig):
    root, ckpt = benchmark_dataset
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(root), "--image-glob", "Flair.nii.gz", "--seg-model", str(ckpt), "--cases", "all",
            "--images", "2", "--methods", "jpeg,jpeg2000", "--bpp", "4", "--steps", "2", "--out", str(out), "--quiet"]  # fmt: skip
    # Only results.json is slowed, from its second write on: the kill lands while a newer
    # results.json is half-written over a complete older one.
    _kill_mid_write(args, sig, match=".results.json.", skip=1)
    # The complete earlier results.json (one record) is still there, not the half-written newer one.
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 1
    # Rerunning finishes the run from there.
    assert main(args) == 0
    capsys.readouterr()
    assert len(json.loads((out / "results.json").read_text())["records"]) == 4
