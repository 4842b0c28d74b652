"""Shared fixtures: tiny synthetic images and volumes, and the shared BraTS data when present."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

BRATS_DIR = Path(os.environ.get("SINCO_BRATS_DIR", Path(__file__).resolve().parents[2] / "shared" / "data" / "brats2013"))


def phantom(height: int = 32, width: int = 32) -> np.ndarray:
    """A smooth synthetic 'head': an ellipse with a brighter disc and a gradient, float64 ``(H, W)``."""
    rows, cols = np.meshgrid(np.linspace(-1, 1, height), np.linspace(-1, 1, width), indexing="ij")
    head = ((rows / 0.9) ** 2 + (cols / 0.75) ** 2 < 1).astype(np.float64)
    lesion = ((rows - 0.2) ** 2 + (cols + 0.25) ** 2 < 0.06).astype(np.float64)
    return 100.0 * head * (1.0 + 0.3 * rows) + 80.0 * lesion


@pytest.fixture
def image() -> np.ndarray:
    """A 32 x 32 synthetic slice, float64, range 0..~210."""
    return phantom()


@pytest.fixture
def nifti_volume(tmp_path: Path) -> Path:
    """A tiny 3-D NIfTI volume ``(32, 32, 5)`` whose slice k is ``phantom() + k``."""
    import nibabel as nib

    vol = np.stack([phantom() + k for k in range(5)], axis=-1).astype(np.float32)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(path))
    return path


@pytest.fixture
def nifti_4d(tmp_path: Path) -> Path:
    """A tiny Decathlon-like 4-D NIfTI ``(32, 32, 3, 4)``: channel c, slice k = ``phantom() * (c + 1) + k``."""
    import nibabel as nib

    vol = np.stack([np.stack([phantom() * (c + 1) + k for k in range(3)], axis=-1) for c in range(4)], axis=-1)
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
