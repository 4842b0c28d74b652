"""Usage errors, argparse's included: at most two short lines on stderr (the error, then where to read more), never the
usage block or a traceback, exit status 2, nothing on stdout and no output file. Run as a user runs it: a subprocess
``python -m sinco ...`` (docs/usage.md, "Exit status and failures")."""

from __future__ import annotations

import subprocess
import sys

import pytest

#: name -> arguments (INPUT and OUT are replaced by real paths: an existing image and an output to be left unwritten).
CASES = {
    "no-command": [],
    "unknown-command": ["compresss", "INPUT"],
    "bad-type": ["compress", "INPUT", "--steps", "abc", "-o", "OUT"],
    "bad-choice": ["compress", "INPUT", "--axis", "5", "-o", "OUT"],
    "unknown-option": ["compress", "INPUT", "--no-such-option", "-o", "OUT"],
    "missing-argument": ["decompress"],
    "missing-value": ["compress", "INPUT", "-o"],
    "bad-value-of-a-family-flag": ["compress", "INPUT", "--arch", "siren", "--depth", "x", "-o", "OUT"],
    "flag-of-another-family": ["compress", "INPUT", "--arch", "grid", "--depth", "3", "-o", "OUT"],
    "negative-lambda": ["compress", "INPUT", "--lam", "-1", "-o", "OUT"],
    "missing-input-file": ["compress", "no-such-file.npy", "-o", "OUT"],
    "benchmark-bad-rate": ["benchmark", "--data", "INPUT", "--bpp", "fast"],
}


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    import numpy as np

    folder = tmp_path_factory.mktemp("usage")
    image = folder / "image.npy"
    np.save(image, np.random.default_rng(0).random((16, 16)).astype(np.float32))
    return {"INPUT": str(image), "OUT": str(folder / "out.sinco")}


@pytest.mark.parametrize("name", list(CASES))
def test_every_usage_error_is_at_most_two_short_lines_and_exit_2(name, paths):
    args = [paths.get(a, a) for a in CASES[name]]
    done = subprocess.run([sys.executable, "-m", "sinco", *args], capture_output=True, text=True, timeout=120)
    lines = done.stderr.splitlines()
    assert done.returncode == 2, (done.returncode, done.stderr)
    assert 1 <= len(lines) <= 2, done.stderr
    assert lines[0].startswith("sinco: error: ") and len(lines[0]) <= 300
    assert len(lines) == 1 or (lines[1].startswith("see '") and lines[1].endswith("--help'"))
    assert "usage:" not in done.stderr and "Traceback" not in done.stderr
    assert done.stdout == ""
    assert not __import__("os").path.exists(paths["OUT"])


def test_the_issue_example_prints_the_error_and_the_pointer_only(paths):
    """``sinco compress x --steps abc -o y`` once printed 18 lines (the usage block, then the error)."""
    done = subprocess.run([sys.executable, "-m", "sinco", "compress", paths["INPUT"], "--steps", "abc", "-o", paths["OUT"]],
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert done.stderr.splitlines() == ["sinco: error: argument --steps: invalid int value: 'abc'", "see 'sinco compress --help'"]
    assert done.returncode == 2
