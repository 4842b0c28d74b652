"""Folders of 2-D images (--layout images), benchmarks without labels or a segmentation model, ROI masks."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_phantom

from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.runner import run_benchmark
from sinco.benchmark.selection import select_test_slices
from sinco.cli import main
from sinco.data.datasets import discover_cases, load_case_roi, load_case_volumes, load_slices
from sinco.errors import InputError


def _write_png(path: Path, array: np.ndarray, *, bits: int = 8) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(array.astype(np.uint8 if bits == 8 else np.uint16)).save(path)


def _png_folder(root: Path, *, cases: tuple[str, ...] = ("p1", "p2"), depth: int = 4, size: int = 32, masks: bool = False) -> Path:
    for case in cases:
        for k in range(depth):
            image = make_phantom(size, size) + 10 * k
            _write_png(root / case / f"slice_{k:02d}.png", image * (1 if case == "p1" else 250), bits=8 if case == "p1" else 16)
            if masks:
                _write_png(root / case / f"slice_{k:02d}_mask.png", (image > 150) * 255)
    return root


def test_images_layout_groups_by_folder_and_pairs_masks(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "data", masks=True)
    cases = discover_cases(root, layout="images", image_glob="*/*.png", label_glob="*/*_mask.png")
    assert [c.case_id for c in cases] == ["p1", "p2"]
    assert [p.name for p in cases[0].image_files] == [f"slice_{k:02d}.png" for k in range(4)]
    assert [p.name for p in cases[0].label_files] == [f"slice_{k:02d}_mask.png" for k in range(4)]
    image, label = load_case_volumes(cases[1])
    assert image.shape == (32, 32, 4) and image.dtype == np.uint16 and label.shape == image.shape
    assert load_slices(cases).images.shape == (8, 32, 32)


def test_images_layout_pairs_across_folders_and_npy_tiff(tmp_path: Path) -> None:
    import tifffile

    root = tmp_path / "data"
    (root / "img").mkdir(parents=True)
    (root / "roi").mkdir()
    for k in range(3):
        tifffile.imwrite(root / "img" / f"{k:03d}.tif", (make_phantom() * 100).astype(np.uint16))
        np.save(root / "roi" / f"{k:03d}.npy", (make_phantom() > 0).astype(np.uint8))
    (case,) = discover_cases(root, layout="images", image_glob="img/*.tif", label_glob=None, roi_glob="roi/*.npy")
    assert case.case_id == "img" and not case.has_labels
    assert load_case_roi(case, shape=(32, 32, 3)).sum() == 3 * (make_phantom() > 0).sum()


def test_images_layout_refusals(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "data")
    with pytest.raises(InputError, match="no file pairs with image"):
        discover_cases(root, layout="images", image_glob="*/*.png", label_glob="*/*_mask.png")
    with pytest.raises(InputError, match="no file matches --image-glob"):
        discover_cases(root, layout="images", image_glob="*.jpg", label_glob=None)
    _write_png(root / "p1" / "slice_99.png", make_phantom(20, 20))
    (case, _) = discover_cases(root, layout="images", image_glob="*/*.png", label_glob=None)
    with pytest.raises(InputError, match="need one size"):
        load_case_volumes(case)


def test_without_labels_every_slice_qualifies_spread_over_cases(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "data", depth=6)
    cases = discover_cases(root, layout="images", image_glob="*/*.png", label_glob=None)
    refs = select_test_slices(cases, n_images=4, min_tumour=0.5)
    assert [r.image_id for r in refs] == ["p1:2", "p1:3", "p2:2", "p2:3"]
    assert all(r.tumour_fraction is None for r in refs)


def test_benchmark_without_seg_model_on_pngs(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "data", depth=3)
    config = BenchmarkConfig(data=str(root), seg_model=None, layout="images", image_glob="*/*.png", label_glob=None, cases="all",
                             methods=("coin", "jpeg"), images=2, bpps=(4.0,), steps=3, codec_options={"siren": {"depth": 2}})  # fmt: skip
    out = tmp_path / "out"
    result = run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    records = json.loads((out / "results.json").read_text())["records"]
    assert len(records) == 4
    for r in records:
        assert "dice" not in r and "dice_reference" not in r
        assert r["roi"] == "auto" and 0.3 < r["roi_fraction"] < 0.8
        for key in ("psnr", "ssim", "psnr_roi", "ssim_roi", "ms_ssim"):
            assert np.isfinite(r[key]), key
        assert r["ms_ssim_scales"] == 2
    table = result["table"]
    assert "PSNR ROI (dB)" in table and "SSIM ROI" in table and "| Dice |" not in table and "uncompressed" not in table
    assert any(Path(f).name.startswith("figure_") for f in result["figures"])


def test_benchmark_roi_glob_uses_the_mask(benchmark_dataset, tmp_path: Path) -> None:
    import nibabel as nib

    root, ckpt = benchmark_dataset
    for case in sorted(root.iterdir()):
        brain = np.zeros((48, 48, 6), np.uint8)
        brain[8:40, 8:40] = 1
        nib.save(nib.Nifti1Image(brain, np.eye(4)), str(case / "brainmask.nii.gz"))
    config = BenchmarkConfig(data=str(root), seg_model=str(ckpt), image_glob="Flair.nii.gz", cases="all", methods=("jpeg",),
                             images=2, bpps=(4.0,), roi_glob="brainmask.nii.gz")  # fmt: skip
    result = run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    for r in result["records"]:
        assert r["roi"] == "mask" and r["roi_fraction"] == pytest.approx(32 * 32 / 48**2)
        assert np.isfinite(r["dice"]) and np.isfinite(r["psnr_roi"])
    assert "Dice" in result["table"] and "brainmask.nii.gz" in result["table"]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--layout", "images"], "--layout images needs --image-glob"),
        (["--layout", "images", "--image-glob", "*/*.png", "--cases", "val"], "--cases val"),
        (["--layout", "images", "--image-glob", "*/*.png", "--methods", "sinco-inr"], "needs --seg-model"),
        (["--layout", "images", "--image-glob", "*/*.png", "--label-glob", "*/*_mask.png"], "no file pairs with image"),
        (["--layout", "images", "--image-glob", "*/*.png", "--roi-glob", "*/roi_*.png"], "--roi-glob"),
    ],
)
def test_benchmark_bad_inputs_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], message: str) -> None:
    root = _png_folder(tmp_path / "data", depth=2)
    code = main(["benchmark", "--data", str(root), "--out", str(tmp_path / "out"), "--quiet", "--steps", "2", *argv])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("sinco: error:") and err.count("\n") == 1 and message in err, err


def test_train_seg_needs_labels(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = _png_folder(tmp_path / "data", depth=2)
    code = main(["train-seg", "--data", str(root), "--layout", "images", "--image-glob", "*/*.png", "-o", str(tmp_path / "s.pt")])
    assert code == 2 and "--label-glob" in capsys.readouterr().err


def test_train_seg_on_png_slices_with_paired_masks_then_benchmark(tmp_path: Path) -> None:
    root = _png_folder(tmp_path / "data", cases=("p1", "p2", "p3"), depth=3, masks=True)
    ckpt = tmp_path / "seg.pt"
    globs = ["--layout", "images", "--image-glob", "*/*.png", "--label-glob", "*/*_mask.png"]
    args = ["train-seg", "--data", str(root), *globs, "--epochs", "1", "--batch-size", "4", "--channels", "4,8",
            "-o", str(ckpt), "--quiet", "--device", "cpu", "--val-ids", "p3"]  # fmt: skip
    assert main(args) == 0
    meta = json.loads((tmp_path / "seg.pt.json").read_text())
    assert meta["val_cases"] == ["p3"] and meta["train_slices"] == 6 and meta["label_glob"] == "*/*_mask.png"
    out = tmp_path / "bench"
    args = ["benchmark", "--data", str(root), *globs, "--seg-model", str(ckpt), "--methods", "jpeg", "--images", "1",
            "--min-tumour", "0.01", "--out", str(out), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    (record,) = json.loads((out / "results.json").read_text())["records"]
    assert record["case"] == "p3" and np.isfinite(record["dice"]) and np.isfinite(record["psnr_roi"])
