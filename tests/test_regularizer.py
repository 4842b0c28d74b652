"""Issue 14: the data term, the regularizer's variants (self target, ensemble, perturbations), the judge, lambda sweeps."""

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.frontier import paired_comparison
from sinco.benchmark.runner import run_benchmark
from sinco.cli import main
from sinco.cli.options import parse_lams
from sinco.codec.config import CodecConfig
from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.networks import build_inr
from sinco.codec.inr.sizing import size_for_bpp
from sinco.codec.inr.training import StackedFit, fit_inr
from sinco.compression.image import compress_images
from sinco.data.datasets import Case, split_cases
from sinco.errors import InputError
from sinco.regularizer.judge import load_judge
from sinco.regularizer.loss import (
    RegularizerOptions,
    StructuralRegularizer,
    build_regularizer,
    data_term,
    same_network,
    self_targets,
)
from sinco.seg.network import UNetConfig, build_unet, load_seg_model, save_checkpoint


def _checkpoint(path: Path, *, seed: int, channels=(4, 8)) -> Path:
    torch.manual_seed(seed)
    unet = UNetConfig(channels=channels, strides=(2,) * (len(channels) - 1))
    save_checkpoint(path, net=build_unet(unet), config=unet, threshold=0.5, training={"val_cases": ["case2"]})
    return path


@pytest.fixture
def nets(tmp_path):
    return load_seg_model(_checkpoint(tmp_path / "a.pt", seed=0)), load_seg_model(_checkpoint(tmp_path / "b.pt", seed=1))


def _slices(n: int = 2, size: int = 16) -> tuple[np.ndarray, np.ndarray]:
    rows, cols = np.meshgrid(np.linspace(-1, 1, size), np.linspace(-1, 1, size), indexing="ij")
    masks = np.stack([((rows - 0.1 * k) ** 2 + cols**2 < 0.2) for k in range(n)]).astype(np.uint8)
    images = (0.3 + 0.5 * masks + 0.05 * rows[None]).astype(np.float32)
    return images, masks


def test_data_terms_relate_as_mean_sum_and_norm():
    pred, target = torch.rand(3, 50, 1), torch.rand(3, 50, 1)
    mse, sse, l2 = (data_term(pred, target, kind=k) for k in ("mse", "sse", "l2"))
    assert mse.shape == (3,)
    torch.testing.assert_close(sse, 50 * mse)
    torch.testing.assert_close(l2, sse.sqrt())
    with pytest.raises(InputError, match="--data-term 'l1'"):
        data_term(pred, target, kind="l1")
    with pytest.raises(InputError, match="--data-term 'L2'"):
        INRFitConfig(data_term="L2")


@pytest.mark.parametrize("kind", ["sse", "l2"])
def test_objective_uses_the_data_term_while_psnr_stays_on_the_mse(kind):
    images, _ = _slices(1)
    torch.manual_seed(0)
    model = build_inr(size_for_bpp("siren", bpp=4, height=16, width=16, depth=2, bits_per_param=16))
    config = INRFitConfig(steps=5, data_term=kind, compile="off")
    fit = StackedFit([model], targets=torch.from_numpy(images), config=config, device=torch.device("cpu"))
    objective, mse = fit.objective(full=True)
    expected = mse * 256 if kind == "sse" else (mse * 256).sqrt()
    torch.testing.assert_close(objective, expected)
    result = fit_inr(model, target=torch.from_numpy(images[0]), config=config, device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        from sinco.codec.inr.encodings import make_coordinates

        out = model(make_coordinates(16, 16)).reshape(16, 16)
    assert result.best_mse == pytest.approx(float((out - torch.from_numpy(images[0])).square().mean()), rel=1e-4)


def test_ensemble_is_the_mean_of_its_networks_and_subset_keeps_it(nets):
    images, masks = _slices(2)
    x = torch.from_numpy(images)[:, None]
    one = [StructuralRegularizer(n, mask=masks, device=torch.device("cpu"))(x) for n in nets]
    both = StructuralRegularizer(list(nets), mask=masks, device=torch.device("cpu"))
    torch.testing.assert_close(both(x), (one[0] + one[1]) / 2)
    torch.testing.assert_close(both.subset(1)(x[1:]), both(x)[1:])
    assert not torch.allclose(one[0], one[1])  # two different networks, so the mean is not either one


def test_perturbations_are_seeded_differentiable_and_change_the_value(nets):
    images, masks = _slices(2)
    x = torch.from_numpy(images)[:, None].requires_grad_()
    plain = StructuralRegularizer(nets[0], mask=masks, device=torch.device("cpu"))(x)
    values = [
        StructuralRegularizer(nets[0], mask=masks, device=torch.device("cpu"), perturb=3, noise=0.1, seed=s)(x) for s in (7, 7, 8)
    ]
    torch.testing.assert_close(values[0], values[1])
    assert not torch.allclose(values[0], values[2]) and not torch.allclose(values[0], plain)
    values[0].sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(InputError, match="--seg-perturb -1"):
        RegularizerOptions(perturb=-1)
    with pytest.raises(InputError, match="--seg-target 'truth'"):
        RegularizerOptions(target="truth")


def test_self_target_is_each_networks_own_mask_of_the_uncompressed_slice(nets):
    images, _ = _slices(2)
    reg = build_regularizer(
        list(nets), options=RegularizerOptions(target="self"), masks=None, images=images, device=torch.device("cpu")
    )
    for k, net in enumerate(nets):
        np.testing.assert_array_equal(reg.mask[k, :, 0].numpy(), self_targets(net, images))
    with pytest.raises(InputError, match="--seg-target mask needs --mask"):
        build_regularizer([nets[0]], options=RegularizerOptions(), masks=None, images=images, device=torch.device("cpu"))


def test_compress_images_with_self_target_needs_no_mask_and_the_judge_adds_dice_eval(nets):
    images, masks = _slices(1)
    common = dict(ranges=[(0.0, 1.0)], codec=CodecConfig(arch="siren", bpp=6, options={"depth": 2}), fit_config=INRFitConfig(steps=3, compile="off"),
                  device=torch.device("cpu"), seg_model=nets[0], eval_seg_model=nets[1])  # fmt: skip
    no_mask = compress_images(list(images), masks=None, regularizer_options=RegularizerOptions(target="self"), **common)[0]
    assert "dice" not in no_mask.metrics and no_mask.metrics["dice_eval_target"] == "self"
    assert 0 <= no_mask.metrics["dice_self"] <= 1 and 0 <= no_mask.metrics["dice_eval"] <= 1
    with_mask = compress_images(list(images), masks=list(masks), ensemble=[nets[1]], **common)[0]
    from sinco.metrics import dice

    expected = dice(pred=nets[1].predict(with_mask.reconstruction), target=masks[0])
    assert with_mask.metrics["dice_eval"] == pytest.approx(expected) and with_mask.metrics["dice_eval_target"] == "mask"


def test_judge_that_is_the_loss_network_is_refused(tmp_path, nets):
    a = tmp_path / "a.pt"
    copy = tmp_path / "copy.pt"
    shutil.copy(a, copy)
    for judge in (a, copy):
        with pytest.raises(InputError, match="--eval-seg-model .*the same network as the loss network"):
            load_judge(judge, loss_models=[nets[0]])
    assert same_network(nets[0], load_seg_model(copy)) and not same_network(*nets)
    assert load_judge(tmp_path / "b.pt", loss_models=[nets[0]]).path.endswith("b.pt")


def test_lambda_lists_only_in_the_benchmark():
    assert parse_lams("0,0.01,1", allow_list=True) == (0.0, 0.01, 1.0)
    assert parse_lams("0.5", allow_list=False) == (0.5,)
    for text, allow, message in (("0,1", False, "a list of lambdas is for 'sinco benchmark'"), ("1,x", True, "comma-separated numbers"),
                                 ("-1", True, "non-negative"), ("1,1", True, "listed twice")):  # fmt: skip
        with pytest.raises(InputError, match=message):
            parse_lams(text, allow_list=allow)


def test_compress_cli_errors_are_one_line(nifti_volume, tmp_path, capsys):
    ckpt = _checkpoint(tmp_path / "a.pt", seed=0)
    base = ["compress", str(nifti_volume), "--slice", "2", "-o", str(tmp_path / "o.sinco"), "--arch", "siren", "--steps", "2", "--quiet"]
    for extra, message in (
        (["--lam", "0,1"], "--lam 0,1: a list of lambdas is for 'sinco benchmark'"),
        (["--data-term", "l3"], "--data-term 'l3': expected one of mse, sse, l2"),
        (
            ["--seg-model", str(ckpt), "--seg-target", "self", "--eval-seg-model", str(ckpt)],
            "the same network as the loss network",
        ),
        (["--seg-model", str(ckpt)], "--seg-model needs --mask"),
    ):
        assert main(base + extra) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
    assert not (tmp_path / "o.sinco").exists()


def test_compress_cli_self_target_with_judge_reports_dice_eval(nifti_volume, tmp_path, capsys):
    a, b = _checkpoint(tmp_path / "a.pt", seed=0), _checkpoint(tmp_path / "b.pt", seed=1, channels=(4, 8, 8))
    out = tmp_path / "o.sinco"
    c = _checkpoint(tmp_path / "c.pt", seed=2)
    code = main(["compress", str(nifti_volume), "--slice", "2", "-o", str(out), "--steps", "3", "--bpp", "6", "--arch", "siren", "--depth", "2",
                 "--quiet", "--json", "--seg-model", str(a), "--seg-model", str(c), "--seg-target", "self", "--seg-perturb", "2",
                 "--data-term", "sse", "--eval-seg-model", str(b)])  # fmt: skip
    report = json.loads(capsys.readouterr().out)
    assert code == 0 and report["data_term"] == "sse" and report["dice_eval_target"] == "self" and "dice_self" in report
    sidecar = json.loads(out.with_name("o.sinco.json").read_text())
    assert sidecar["fit"]["data_term"] == "sse" and sidecar["regularizer"]["seg_target"] == "self"
    assert sidecar["regularizer"]["seg_perturb"] == 2 and sidecar["regularizer"]["ensemble"] == [str(c)]
    assert sidecar["eval_seg_model"]["path"] == str(b)


def test_regularized_fits_default_to_the_sum_of_squared_errors(nifti_volume, tmp_path, capsys):
    """The SINCO methods and compress --seg-model use sse unless told otherwise; plain fits keep mse."""
    methods = ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "grid", "sinco-grid")
    config = BenchmarkConfig(data=str(tmp_path), seg_model="unused.pt", methods=methods)
    terms = {m: config.fit_config(m).data_term for m in methods}
    assert terms == {"coin": "mse", "vanilla-inr": "mse", "sinco-siren": "sse", "sinco-inr": "sse", "grid": "mse", "sinco-grid": "sse"}
    explicit = BenchmarkConfig(data=str(tmp_path), seg_model="unused.pt", methods=methods[:4], fit_options={"data_term": "l2"})
    assert explicit.fit_config("sinco-siren").data_term == "l2" and explicit.fit_config("coin").data_term == "l2"
    with pytest.raises(InputError, match="--data-term 'l2': --arch grid"):
        BenchmarkConfig(data=str(tmp_path), seg_model="unused.pt", methods=methods, fit_options={"data_term": "l2"}).fit_config("sinco-grid")
    from sinco.benchmark.tables import _regularizer_lines

    assert "data term `sse`" in _regularizer_lines(config)[0] and "data term `l2`" in _regularizer_lines(explicit)[0]

    ckpt = _checkpoint(tmp_path / "a.pt", seed=0)
    mask = tmp_path / "mask.nii.gz"
    import nibabel as nib

    volume = nib.load(str(nifti_volume))
    nib.save(nib.Nifti1Image((np.asarray(volume.dataobj) > 120).astype(np.uint8), volume.affine), str(mask))
    base = ["compress", str(nifti_volume), "--slice", "2", "--steps", "2", "--bpp", "6", "--arch", "siren", "--depth", "2", "--quiet"]
    for extra, expected in ((["--seg-model", str(ckpt), "--mask", str(mask)], "sse"), ([], "mse"),
                            (["--seg-model", str(ckpt), "--mask", str(mask), "--data-term", "mse"], "mse")):  # fmt: skip
        out = tmp_path / f"{expected}-{len(extra)}.sinco"
        assert main(base + ["-o", str(out)] + extra) == 0, capsys.readouterr().err
        assert json.loads(out.with_name(out.name + ".json").read_text())["fit"]["data_term"] == expected


def test_library_fits_resolve_the_auto_data_term(nets):
    """compress_images with INRFitConfig's default data term fits sse with a segmentation network, mse without."""
    images, masks = _slices(1)

    def file_of(data_term: str | None, seg_model) -> bytes:
        fit = INRFitConfig(steps=4, compile="off", **({} if data_term is None else {"data_term": data_term}))
        return compress_images(list(images), ranges=[(0.0, 1.0)], codec=CodecConfig(arch="siren", bpp=6, options={"depth": 2}), fit_config=fit,
                               device=torch.device("cpu"), seg_model=seg_model, masks=None if seg_model is None else list(masks))[0].data  # fmt: skip

    assert INRFitConfig().data_term == "auto" and INRFitConfig().resolved(regularized=True).data_term == "sse"
    regularized = file_of(None, nets[0])
    assert regularized == file_of("sse", nets[0]) and regularized != file_of("mse", nets[0])
    assert file_of(None, None) == file_of("mse", None)
    with pytest.raises(InputError, match="--data-term 'mean'"):
        INRFitConfig(data_term="mean")


def test_benchmark_lambda_sweep_records_frontier_and_paired_table(benchmark_dataset, tmp_path):
    root, ckpt = benchmark_dataset
    judge = _checkpoint(tmp_path / "judge.pt", seed=3)
    config = BenchmarkConfig(data=str(root), seg_model=str(ckpt), image_glob="Flair.nii.gz", cases="all", images=2, bpps=(4.0,),
                             steps=3, codec_options={"siren": {"depth": 2}}, methods=("coin", "sinco-siren"), lam=0.0, lams=(0.0, 0.5, 10.0),
                             fit_options={"data_term": "sse"}, eval_seg_model=str(judge))  # fmt: skip
    out = tmp_path / "out"
    result = run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    records = result["records"]
    sinco = sorted((r["image_id"], r["lam_setting"]) for r in records if r["method"] == "sinco-siren")
    assert len(sinco) == 6 and {lam for _, lam in sinco} == {0.0, 0.5, 10.0}
    assert sum(r["method"] == "coin" for r in records) == 2
    assert len({r["file"] for r in records}) == len(records)
    assert all(0 <= r["dice_eval"] <= 1 and "dice_eval_reference" in r for r in records)
    table = (out / "table.md").read_text()
    assert "Dice (loss network)" in table and "Dice (independent)" in table and "SINCO (SIREN), lambda 10" in table
    assert "Paired against lambda 0" in table and "data term `sse`" in table
    assert (out / "dice_vs_psnr.png").stat().st_size > 1000 and str(out / "dice_vs_psnr.png") in result["figures"]
    stats = paired_comparison(records, method="sinco-siren", bpp=4.0, lam=10.0, baseline=("sinco-siren", 0.0), metric="psnr")
    diffs = [next(r["psnr"] for r in records if r["image_id"] == i and r.get("lam_setting") == 10.0 and r["method"] == "sinco-siren")
             - next(r["psnr"] for r in records if r["image_id"] == i and r.get("lam_setting") == 0.0 and r["method"] == "sinco-siren")
             for i in {r["image_id"] for r in records}]  # fmt: skip
    assert stats["n"] == 2 and stats["mean"] == pytest.approx(np.mean(diffs))


def test_benchmark_without_judge_says_so(benchmark_dataset, tmp_path):
    root, ckpt = benchmark_dataset
    config = BenchmarkConfig(data=str(root), seg_model=str(ckpt), image_glob="Flair.nii.gz", cases="all", images=1, bpps=(4.0,),
                             steps=2, codec_options={"siren": {"depth": 2}}, methods=("coin",))  # fmt: skip
    run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    table = (tmp_path / "out" / "table.md").read_text()
    assert "no judge" in table and "no Dice here is independent" in table


def test_benchmark_refuses_the_loss_network_as_judge(benchmark_dataset, tmp_path):
    root, ckpt = benchmark_dataset
    config = BenchmarkConfig(data=str(root), seg_model=str(ckpt), image_glob="Flair.nii.gz", cases="all", images=1, bpps=(4.0,),
                             steps=2, methods=("coin",), eval_seg_model=str(ckpt))  # fmt: skip
    with pytest.raises(InputError, match="--eval-seg-model"):
        run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    assert not (tmp_path / "out" / "results.json").exists()


def test_train_ids_leave_other_cases_out():
    cases = [Case(case_id=f"p{i}", image=Path("i"), label=Path("l")) for i in range(6)]
    train, val = split_cases(cases, val_cases=1, seed=0, val_ids=("p2",), train_ids=("p0", "p1"))
    assert [c.case_id for c in train] == ["p0", "p1"] and [c.case_id for c in val] == ["p2"]
    train, val = split_cases(cases, val_cases=2, seed=0, train_ids=("p0", "p1"))
    assert len(val) == 2 and not {c.case_id for c in val} & {"p0", "p1"}
    with pytest.raises(InputError, match="also in --val-ids"):
        split_cases(cases, val_cases=1, seed=0, val_ids=("p1",), train_ids=("p0", "p1"))
    with pytest.raises(InputError, match="--train-ids: unknown case"):
        split_cases(cases, val_cases=1, seed=0, train_ids=("p9",))
