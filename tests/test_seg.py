"""Datasets, U-Net training and checkpoints, segmentation, and the SINCO regularizer."""

import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from sinco.cli import main
from sinco.codec.config import CodecConfig
from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.networks import build_inr
from sinco.codec.inr.spec import INRSpec
from sinco.codec.inr.training import fit_inr
from sinco.compression.image import compress_image
from sinco.data.datasets import discover_cases, load_slices, split_cases
from sinco.data.intensity import normalize_minmax
from sinco.errors import InputError
from sinco.regularizer.loss import StructuralRegularizer
from sinco.seg.network import SegModel, UNetConfig, build_unet, freeze, load_seg_model, save_checkpoint

SIZE, DEPTH = 32, 8
TINY_UNET = UNetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def make_case(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A synthetic (32, 32, 8) 'head' with a bright, labelled lesion in slices 2..5; slice 7 is empty."""
    rng = np.random.default_rng(seed)
    rows, cols = np.meshgrid(np.linspace(-1, 1, SIZE), np.linspace(-1, 1, SIZE), indexing="ij")
    head = (rows / 0.9) ** 2 + (cols / 0.8) ** 2 < 1
    image = np.zeros((SIZE, SIZE, DEPTH), np.float32)
    label = np.zeros((SIZE, SIZE, DEPTH), np.float32)
    cy, cx = rng.uniform(-0.3, 0.3, size=2)
    for k in range(DEPTH - 1):
        image[..., k] = head * (1.0 + 0.1 * rng.standard_normal((SIZE, SIZE)))
        if 2 <= k <= 5:
            lesion = (rows - cy) ** 2 + (cols - cx) ** 2 < 0.08
            image[..., k] += 1.5 * lesion
            label[..., k] = np.where(lesion, 2.0 if k % 2 else 4.0, 0.0)
    return image, label


@pytest.fixture
def folders_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "brats_like"
    for i in range(4):
        case = root / f"case{i}"
        case.mkdir(parents=True)
        image, label = make_case(i)
        nib.save(nib.Nifti1Image(image, np.eye(4)), str(case / "Flair_norm.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(case / "OTMultiClass.nii.gz"))
    return root


@pytest.fixture
def decathlon_dataset(tmp_path: Path) -> Path:
    root = tmp_path / "Task01_BrainTumour"
    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    training = []
    for i in range(3):
        image, label = make_case(i)
        four = np.stack([image * (c + 1) for c in range(4)], axis=-1)  # channel c = image * (c + 1)
        nib.save(nib.Nifti1Image(four, np.eye(4)), str(root / "imagesTr" / f"BRATS_{i:03d}.nii.gz"))
        nib.save(nib.Nifti1Image(label.astype(np.uint8), np.eye(4)), str(root / "labelsTr" / f"BRATS_{i:03d}.nii.gz"))
        training.append({"image": f"./imagesTr/BRATS_{i:03d}.nii.gz", "label": f"./labelsTr/BRATS_{i:03d}.nii.gz"})
    (root / "dataset.json").write_text(json.dumps({"name": "BrainTumour", "training": training}))
    return root


def test_folders_layout_and_slices(folders_dataset):
    cases = discover_cases(folders_dataset, layout="auto", image_glob="Flair*.nii.gz")
    assert [c.case_id for c in cases] == ["case0", "case1", "case2", "case3"]
    data = load_slices(cases[:1])
    assert data.ids == [f"case0:{k}" for k in range(DEPTH - 1)]  # the empty slice 7 is left out
    assert data.images.shape == (DEPTH - 1, SIZE, SIZE) and data.images.dtype == np.float32
    image, label = make_case(0)
    expected, _, _ = normalize_minmax(image[..., 3].astype(np.float64))
    np.testing.assert_array_equal(data.images[3], expected)  # scaled exactly as the codec scales
    np.testing.assert_array_equal(data.masks[3], label[..., 3] > 0)
    assert data.has_tumour.tolist() == [False, False, True, True, True, True, False]


def test_decathlon_layout_takes_the_channel(decathlon_dataset):
    cases = discover_cases(decathlon_dataset, layout="auto", channel=2)
    assert [c.case_id for c in cases] == ["BRATS_000", "BRATS_001", "BRATS_002"]
    data = load_slices(cases[:1])
    expected, _, _ = normalize_minmax(make_case(0)[0][..., 3].astype(np.float64) * 3)
    np.testing.assert_allclose(data.images[3], expected, atol=1e-6)
    with pytest.raises(InputError, match="--channel 4: out of range"):
        load_slices(discover_cases(decathlon_dataset, channel=4)[:1])


def test_split_is_by_case_and_reproducible(folders_dataset):
    cases = discover_cases(folders_dataset)
    train, val = split_cases(cases, val_cases=1, seed=0)
    again = split_cases(cases, val_cases=1, seed=0)
    assert (train, val) == again
    assert len(val) == 1 and not {c.case_id for c in train} & {c.case_id for c in val}
    other_seeds = {split_cases(cases, val_cases=1, seed=s)[1][0].case_id for s in range(20)}
    assert len(other_seeds) > 1
    with pytest.raises(InputError, match="--val-cases 4"):
        split_cases(cases, val_cases=4, seed=0)


def test_dataset_errors(tmp_path, folders_dataset):
    with pytest.raises(InputError, match="no such folder"):
        discover_cases(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no cases found"):
        discover_cases(tmp_path / "empty")
    with pytest.raises(InputError, match="--image-glob 'T2\\*.nii.gz' .* found 0 and 1"):
        discover_cases(folders_dataset, image_glob="T2*.nii.gz")
    with pytest.raises(InputError, match="--layout 'nifti'"):
        discover_cases(folders_dataset, layout="nifti")


def test_train_seg_and_segment_cli(folders_dataset, tmp_path, capsys):
    ckpt = tmp_path / "seg.pt"
    args = ["train-seg", "--data", folders_dataset, "--epochs", 2, "--batch-size", 4, "--lr", 1e-2, "--channels", "4,8",
            "--res-units", 0, "--val-cases", 1, "-o", ckpt, "--quiet", "--device", "cpu"]  # fmt: skip
    assert main([str(a) for a in args]) == 0
    out = capsys.readouterr().out
    assert "best epoch" in out and "val dice" in out
    model = load_seg_model(ckpt)
    meta = model.training
    assert len(meta["history"]) == 2 and 1 <= meta["summary"]["best_epoch"] <= 2
    assert len(meta["val_cases"]) == 1 and meta["val_cases"][0] not in meta["train_cases"]
    assert meta["config"]["lr"] == 0.01 and meta["config"]["unet"]["channels"] == [4, 8]
    assert json.loads((tmp_path / "seg.pt.json").read_text())["summary"] == meta["summary"]
    assert all(not p.requires_grad for p in model.net.parameters()) and not model.net.training
    volume = folders_dataset / "case0" / "Flair_norm.nii.gz"
    assert main(["segment", str(volume), "--slice", "3", "-m", str(ckpt), "-o", str(tmp_path / "m.npy")]) == 0
    mask = np.load(tmp_path / "m.npy")
    assert mask.shape == (SIZE, SIZE) and mask.dtype == np.uint8 and set(np.unique(mask)) <= {0, 1}


def test_train_seg_attention_unet_round_trips_and_refuses_residual_units(folders_dataset, tmp_path, capsys):
    """--net attention-unet trains MONAI's AttentionUnet; the checkpoint reloads as that architecture."""
    from monai.networks.nets import AttentionUnet

    ckpt = tmp_path / "att.pt"
    args = ["train-seg", "--data", folders_dataset, "--epochs", 1, "--batch-size", 4, "--lr", 1e-2, "--channels", "4,8",
            "--net", "attention-unet", "--val-cases", 1, "-o", ckpt, "--quiet", "--device", "cpu"]  # fmt: skip
    assert main([str(a) for a in args]) == 0, capsys.readouterr().err
    model = load_seg_model(ckpt)
    assert isinstance(model.net, AttentionUnet) and model.config.net == "attention-unet"
    assert model.training["config"]["unet"]["net"] == "attention-unet"
    image = np.random.default_rng(0).random((SIZE + 3, SIZE), dtype=np.float32)  # a side that needs padding
    assert model.predict(image).shape == image.shape
    capsys.readouterr()
    bad = [str(a) for a in args[:-5]] + ["--res-units", "1", "-o", str(tmp_path / "bad.pt"), "--quiet", "--device", "cpu"]
    assert main(bad) == 2 and "--net attention-unet has no residual units" in capsys.readouterr().err
    assert not (tmp_path / "bad.pt").exists()
    with pytest.raises(InputError, match="--net 'vit'"):
        UNetConfig(net="vit")


@pytest.mark.slow
def test_unet_learns_the_synthetic_lesions(folders_dataset):
    from sinco.seg.train import TrainSegConfig, train_segmentation

    train_cases, val_cases = split_cases(discover_cases(folders_dataset), val_cases=1, seed=0)
    config = TrainSegConfig(epochs=25, batch_size=4, lr=1e-2, unet=UNetConfig(channels=(8, 16), strides=(2,)))
    result = train_segmentation(load_slices(train_cases), load_slices(val_cases), config=config, device=torch.device("cpu"), progress=False)
    assert result.best["val_dice_tumour"] > 0.7
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"]


@pytest.fixture
def tiny_seg_model() -> SegModel:
    torch.manual_seed(0)
    return SegModel(net=freeze(build_unet(TINY_UNET)), config=TINY_UNET)


def test_regularizer_gradient_reaches_the_inr_and_not_the_unet(tiny_seg_model):
    torch.manual_seed(0)
    inr = build_inr(INRSpec(arch="siren", width=8, depth=2))
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:20, 12:22] = 1
    reg = StructuralRegularizer(tiny_seg_model, mask=mask, device=torch.device("cpu"))
    from sinco.codec.inr.encodings import make_coordinates

    value = reg(inr(make_coordinates(SIZE, SIZE)).reshape(1, 1, SIZE, SIZE))
    assert 0 < value.item() < 1
    value.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in inr.parameters())
    assert all(p.grad is None for p in tiny_seg_model.net.parameters())

    before = {k: v.clone() for k, v in tiny_seg_model.net.state_dict().items()}
    target = torch.rand(SIZE, SIZE)
    fit = INRFitConfig(steps=5, lam=1.0)
    result = fit_inr(inr, target=target, config=fit, device=torch.device("cpu"), regularizer=reg, progress=False)
    assert result.lam == 1.0
    after = tiny_seg_model.net.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_regularizer_changes_the_fit(image, tiny_seg_model):
    scaled, vmin, vmax = normalize_minmax(image)
    mask = (image > 150).astype(np.uint8)
    codec = CodecConfig(arch="siren", bpp=4.0, options={"depth": 3})
    results = {
        lam: compress_image(scaled, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=20, lam=lam),
                            device=torch.device("cpu"), seg_model=tiny_seg_model, mask=mask)
        for lam in (0.0, 1.0)
    }  # fmt: skip
    # This untrained U-Net barely moves the fit; that lambda > 0 raises the loss network's Dice is tested per family
    # with a loss network whose direction is visible (tests/test_regularizer_direction.py).
    assert results[0.0].data != results[1.0].data
    for r in results.values():
        assert {"dice", "dice_reference"} <= set(r.metrics)
        assert 0 <= r.metrics["dice"] <= 1
    assert results[0.0].metrics["dice_reference"] == results[1.0].metrics["dice_reference"]
    assert results[1.0].report.lam == 1.0 and results[0.0].report.lam == 0.0


def test_compress_cli_with_regularizer_and_errors(tmp_path, capsys, tiny_seg_model, nifti_volume):
    ckpt = tmp_path / "seg.pt"
    save_checkpoint(ckpt, net=tiny_seg_model.net, config=TINY_UNET, threshold=0.5, training={"summary": {"note": "untrained"}})
    labels = np.zeros((32, 32, 5), np.float32)
    labels[8:16, 8:16, 2] = 2
    label_path = tmp_path / "labels.nii.gz"
    nib.save(nib.Nifti1Image(labels, np.eye(4)), str(label_path))
    base = ["compress", nifti_volume, "--bpp", 4, "--arch", "siren", "--depth", 3, "--steps", 6, "--quiet"]
    ok = base + ["--slice", 2, "-o", tmp_path / "a.sinco", "--seg-model", ckpt, "--mask", label_path, "--lam", 1, "--json"]
    assert main([str(a) for a in ok]) == 0
    report = json.loads(capsys.readouterr().out)
    assert {"psnr", "ssim", "dice", "dice_reference", "bpp_params", "bpp_file", "lam", "reg_every"} <= set(report)
    assert report["lam"] == 1.0 and report["reg_every"] == 1
    sidecar = json.loads((tmp_path / "a.sinco.json").read_text())
    assert sidecar["regularizer"]["seg_model"] == str(ckpt)

    not_a_ckpt = tmp_path / "other.pt"
    torch.save({"state_dict": {}}, not_a_ckpt)
    (tmp_path / "text.pt").write_text("hello")
    wrong_shape = tmp_path / "labels_small.nii.gz"
    nib.save(nib.Nifti1Image(np.ones((16, 16, 5), np.float32), np.eye(4)), str(wrong_shape))
    cases = [
        (["--slice", 2, "--mask", label_path], "--mask needs --seg-model"),
        (["--slice", 2, "--seg-model", ckpt], "--seg-model needs --mask"),
        (["--slice", 1, "--seg-model", ckpt, "--mask", label_path], "empty on this slice"),
        (["--slice", 2, "--seg-model", ckpt, "--mask", wrong_shape], "--mask: shape (16, 16) differs from the image's (32, 32)"),
        (["--slice", 2, "--seg-model", not_a_ckpt, "--mask", label_path], "not a sinco segmentation checkpoint"),
        (["--slice", 2, "--seg-model", tmp_path / "text.pt", "--mask", label_path], "not a sinco segmentation checkpoint"),
        (["--slice", 2, "--seg-model", ckpt, "--mask", label_path, "--lam", -1], "--lam -1"),
    ]
    for extra, message in cases:
        code = main([str(a) for a in base + ["-o", tmp_path / "b.sinco"] + extra])
        err = capsys.readouterr().err
        assert code == 2 and err.count("\n") == 1 and message in err, (extra, err)
    assert not (tmp_path / "b.sinco").exists()
    # With lam 0 an empty mask is allowed: Dice is still defined (1 if g also finds nothing).
    assert main([str(a) for a in base + ["--slice", 1, "-o", tmp_path / "c.sinco", "--seg-model", ckpt, "--mask", label_path, "--lam", 0]]) == 0


def test_volume_regularizes_only_the_slices_with_tumour(tiny_seg_model):
    from sinco.compression.volume import compress_volume

    rows, cols = np.meshgrid(np.linspace(-1, 1, SIZE), np.linspace(-1, 1, SIZE), indexing="ij")
    volume = np.stack([np.exp(-(rows**2 + cols**2) * (2 + k)) * 100 for k in range(3)])
    masks = np.zeros_like(volume, dtype=bool)
    masks[1, 10:20, 12:22] = True  # only the middle slice has a tumour
    codec = CodecConfig(arch="siren", bpp=4.0, options={"depth": 3})
    result = compress_volume(volume, first_index=0, axis=2, affine=np.eye(4), codec=codec, fit_config=INRFitConfig(steps=6, lam=1.0),
                             device=torch.device("cpu"), batch_slices=3, seg_model=tiny_seg_model, masks=masks)  # fmt: skip
    assert [row["lam"] for row in result.slices] == [0.0, 1.0, 0.0]
    assert all(0 <= row["dice"] <= 1 for row in result.slices) and "dice_mean" in result.metrics
    # The batch with the regularizer gives the unregularized slices what a plain batch gives them.
    plain = compress_volume(volume, first_index=0, axis=2, affine=np.eye(4), codec=codec, fit_config=INRFitConfig(steps=6, lam=0.0),
                            device=torch.device("cpu"), batch_slices=3, seg_model=tiny_seg_model, masks=masks)  # fmt: skip
    for k in (0, 2):
        assert result.slices[k]["psnr"] == pytest.approx(plain.slices[k]["psnr"], abs=1e-3)
    assert result.slices[1]["psnr"] != pytest.approx(plain.slices[1]["psnr"], abs=1e-6)


class _Payload:
    """A pickle that would create a file when unpickled without ``weights_only``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def test_a_checkpoint_that_runs_code_when_unpickled_is_refused_without_running_it(tmp_path):
    marker = tmp_path / "code-ran"
    torch.save({"net": _Payload(marker)}, tmp_path / "evil.pt")
    with pytest.raises(InputError, match="not a sinco segmentation checkpoint") as info:
        load_seg_model(tmp_path / "evil.pt")
    assert "\n" not in str(info.value)
    assert not marker.exists()  # torch.load(weights_only=True) never ran the payload
