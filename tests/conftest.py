"""Shared fixtures: tiny synthetic images and volumes, and the shared BraTS data when present."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

BRATS_DIR = Path(os.environ.get("SINCO_BRATS_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013"))


def make_phantom(height: int = 32, width: int = 32) -> np.ndarray:
    """A smooth synthetic 'head': an ellipse with a brighter disc and a gradient, float64 ``(H, W)``."""
    rows, cols = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    head = ((rows / 0.9) ** 2 + (cols / 0.75) ** 2 < 1).astype(np.float64)
    lesion = ((rows - 0.2) ** 2 + (cols + 0.25) ** 2 < 0.06).astype(np.float64)
    return 100.0 * head * (1.0 + 0.3 * rows) + 80.0 * lesion


@pytest.fixture(name="phantom")
def phantom_fixture() -> Callable[..., np.ndarray]:
    """The synthetic slice maker :func:`make_phantom` ``(height=32, width=32) -> (H, W)``."""
    return make_phantom


@pytest.fixture
def image() -> np.ndarray:
    """A 32 x 32 synthetic slice, float64, range 0..~210."""
    return make_phantom()


@pytest.fixture
def run(capsys: pytest.CaptureFixture[str]) -> Callable[[list[Any]], tuple[int, str, str]]:
    """Runs ``sinco`` with the given arguments (any objects, turned into strings); returns ``(exit status, stdout, stderr)``."""
    from sinco.cli import main

    def call(args: list[Any]) -> tuple[int, str, str]:
        code = main([str(a) for a in args])
        out, err = capsys.readouterr()
        return code, out, err

    return call


@pytest.fixture
def nifti_volume(tmp_path: Path) -> Path:
    """A tiny 3-D NIfTI volume ``(32, 32, 5)`` whose slice k is ``make_phantom() + k``."""
    import nibabel as nib

    vol = np.stack([make_phantom() + k for k in range(5)], axis=-1).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


@pytest.fixture
def nifti_4d(tmp_path: Path) -> Path:
    """A tiny Decathlon-like 4-D NIfTI ``(32, 32, 3, 4)``: channel c, slice k = ``make_phantom() * (c + 1) + k``."""
    import nibabel as nib

    vol = np.stack([np.stack([make_phantom() * (c + 1) + k for k in range(3)], axis=-1) for c in range(4)], axis=-1)
    path = tmp_path / "vol4d.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), np.eye(4)), str(path))
    return path


@pytest.fixture(scope="session")
def brats_case() -> Path:
    """The first shared BraTS case folder; skips the test when the shared data are absent."""
    cases = sorted(BRATS_DIR.glob("brats_*")) if BRATS_DIR.is_dir() else []
    if not cases:
        pytest.skip(f"shared BraTS data not found at {BRATS_DIR} (set SINCO_BRATS_DIR)")
    return cases[0]


BENCH_SIZE = 48


def _bench_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(-1, 1, BENCH_SIZE), np.linspace(-1, 1, BENCH_SIZE), indexing="ij")
    head = ((rows / 0.9) ** 2 + (cols / 0.8) ** 2 < 1).astype(np.float32)
    image = np.zeros((BENCH_SIZE, BENCH_SIZE, 6), np.float32)
    label = np.zeros((BENCH_SIZE, BENCH_SIZE, 6), np.uint8)
    for k in range(6):
        lesion = (rows - 0.05 * k) ** 2 + (cols + 0.2) ** 2 < 0.02 + 0.01 * k
        image[..., k] = head * (1 + 0.2 * rows) + 0.8 * lesion + 0.02 * rng.standard_normal((BENCH_SIZE, BENCH_SIZE))
        label[..., k] = lesion
    return image, label


@pytest.fixture
def benchmark_dataset(tmp_path: Path) -> tuple[Path, Path]:
    """Three 48 x 48 x 6 cases with a lesion in every slice, and an untrained U-Net whose validation case is case2."""
    import nibabel as nib
    import torch

    from sinco.seg.network import UNetConfig, build_unet, save_checkpoint

    root = tmp_path / "data"
    for i in range(3):
        case = root / f"case{i}"
        case.mkdir(parents=True)
        image, label = _bench_case(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(case / "Flair.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(case / "OTMultiClass.nii.gz"))
    torch.manual_seed(0)
    unet = UNetConfig(channels=(4, 8), strides=(2,))
    ckpt = tmp_path / "seg.pt"
    save_checkpoint(ckpt, net=build_unet(unet), config=unet, threshold=0.5,
                    training={"train_cases": ["case0", "case1"], "val_cases": ["case2"]})  # fmt: skip
    return root, ckpt


