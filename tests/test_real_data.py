"""End-to-end checks on a real BraTS slice (skipped where ../shared/data is absent)."""

import json

import nibabel as nib
import numpy as np
import pytest
import torch

from sinco.cli import main
from sinco.data.io import load_slice


def _tumour_slice(case) -> int:
    labels = np.asarray(nib.load(case / "OTMultiClass.nii.gz").dataobj)
    return int(np.argmax((labels > 0).sum(axis=(0, 1))))


@pytest.mark.slow
@pytest.mark.parametrize("arch", ["siren", "pe-mlp"])
def test_real_slice_at_paper_rate(brats_case, tmp_path, capsys, arch):
    flair = brats_case / "Flair_subtrMeanDivStd.nii.gz"
    k = _tumour_slice(brats_case)
    out = tmp_path / f"{arch}.sinco"
    code = main(["compress", str(flair), "--slice", str(k), "-o", str(out), "--arch", arch, "--steps", "25", "--json", "--quiet"])
    stdout, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(stdout)
    assert report["shape"] == [240, 240]
    assert report["bpp_params"] <= 1.2
    assert report["bpp_file"] <= 1.25
    assert report["bpp_file"] == 8 * out.stat().st_size / (240 * 240)
    assert np.isfinite(report["psnr"]) and 0 < report["ssim"] <= 1
    assert main(["decompress", str(out), "-o", str(tmp_path / "x.nii.gz")]) == 0
    decoded = load_slice(tmp_path / "x.nii.gz")
    original = load_slice(flair, slice_index=k)
    assert decoded.shape == original.shape
    assert decoded.min() >= original.min() - 1e-5 and decoded.max() <= original.max() + 1e-5


@pytest.mark.slow
def test_sinco_regularizer_on_a_real_validation_slice(brats_case, tmp_path, capsys):
    # A deliberately tiny, one-epoch network: this checks the plumbing on real data, not the Dice
    # (the README records a properly trained network).
    data = brats_case.parent
    ckpt = tmp_path / "seg.pt"
    args = ["train-seg", "--data", str(data), "--epochs", "1", "--lr", "1e-3", "--channels", "4,8", "--res-units", "0",
            "--negatives-per-positive", "0.2", "--val-cases", "1", "-o", str(ckpt), "--quiet", "--device", "cpu"]  # fmt: skip
    assert main(args) == 0
    capsys.readouterr()
    meta = torch.load(ckpt, weights_only=True)["training"]
    assert len(meta["train_cases"]) == 3 and len(meta["val_cases"]) == 1
    val_case = data / meta["val_cases"][0]
    k = _tumour_slice(val_case)
    code = main(["compress", str(val_case / "Flair_subtrMeanDivStd.nii.gz"), "--slice", str(k), "-o", str(tmp_path / "s.sinco"),
                 "--seg-model", str(ckpt), "--mask", str(val_case / "OTMultiClass.nii.gz"), "--lam", "1", "--arch", "siren",
                 "--steps", "5", "--json", "--quiet"])  # fmt: skip
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    for key in ("psnr", "ssim", "dice", "dice_reference", "bpp_params", "bpp_file"):
        assert np.isfinite(report[key]), key
    assert report["lam"] == 1.0 and report["bpp_file"] <= 1.25


def test_automatic_head_matches_the_brats_brain_mask(brats_case):
    from sinco.data.intensity import normalize_minmax
    from sinco.metrics import dice
    from sinco.metrics.roi import head_mask

    k = _tumour_slice(brats_case)
    image, _, _ = normalize_minmax(load_slice(brats_case / "Flair_subtrMeanDivStd.nii.gz", slice_index=k))
    brain = load_slice(brats_case / "brainmask.nii.gz", slice_index=k) > 0
    assert dice(pred=head_mask(image), target=brain) > 0.97
