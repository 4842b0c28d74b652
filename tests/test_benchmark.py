"""A tiny benchmark end to end: schema, finite metrics, table, figures, resuming, classical codecs."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import BENCH_SIZE as SIZE

from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.methods import all_methods
from sinco.benchmark.runner import run_benchmark
from sinco.benchmark.selection import select_test_slices
from sinco.classical.base import encode_at_bpp
from sinco.classical.registry import CLASSICAL_CODECS, get_codec
from sinco.errors import InputError
from sinco.metrics import psnr

REQUIRED = {"image_id", "method", "target_bpp", "bpp_params", "bpp_file", "psnr", "ssim", "dice", "dice_reference",
            "encode_seconds", "decode_seconds"}  # fmt: skip


@pytest.fixture
def dataset(benchmark_dataset):
    return benchmark_dataset


def _config(dataset, **kw) -> BenchmarkConfig:
    root, ckpt = dataset
    base = dict(data=str(root), seg_model=str(ckpt), image_glob="Flair.nii.gz", cases="all", images=2, bpps=(4.0,), steps=4,
                codec_options={"siren": {"depth": 3}, "pe-mlp": {"depth": 2}})  # fmt: skip
    return BenchmarkConfig(**{**base, **kw})


@pytest.mark.slow
def test_tiny_benchmark_schema_table_and_figures(dataset, tmp_path):
    config = _config(dataset, methods=all_methods(), bpps=(4.0, 6.0))
    out = tmp_path / "out"
    result = run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["methods"] == list(all_methods()) and saved["config"]["steps"] == 4
    records = saved["records"]
    assert len(records) == 2 * len(all_methods()) * 2
    assert len({r["image_id"] for r in records}) == 2 and [s["image_id"] for s in saved["slices"]] == sorted({r["image_id"] for r in records})
    for r in records:
        assert REQUIRED <= set(r), r["method"]
        for key in ("bpp_file", "psnr", "ssim", "dice", "dice_reference", "encode_seconds", "decode_seconds"):
            assert np.isfinite(r[key]), (r["method"], key)
        data = (out / r["file"]).read_bytes()
        assert r["bpp_file"] == pytest.approx(8 * len(data) / SIZE**2)
        if r["method"] in CLASSICAL_CODECS:
            assert r["bpp_params"] is None and "steps" not in r
            assert r["bpp_file"] <= r["target_bpp"] or r["within_budget"] is False
            # A constant image would fail: a flat grey slice scores at most 11.3 dB on these slices, the classical
            # codecs at 4 bpp at least 38.7 (measured with encode_at_bpp on every slice of the three cases).
            assert r["psnr"] > 30, (r["method"], r["psnr"])
        elif r["method"] in ("grid", "sinco-grid"):  # latent grids: no fp16-parameter rate, the file is the rate
            assert r["bpp_params"] is None and r["steps"] >= 4  # every step of every trial of the rate search
            assert r["rate_trials"] >= 1 and r["within_band"] in (True, False) and r["lambda_rd"] > 0
            assert r["network_rate_weight"] >= 1  # > 1: networks coarsened to fit the target
        else:
            # INR families: the paper's parameter rate; the grid family: the whole file (its rate search's guarantee).
            assert (r["bpp_file"] if r["bpp_params"] is None else r["bpp_params"]) <= r["target_bpp"] and r["steps"] == 4
    table = (out / "table.md").read_text()
    assert "COIN (SIREN)" in table and "JPEG 2000" in table and "uncompressed (reference)" in table and "Target 6 bpp" in table
    names = sorted(Path(f).name for f in result["figures"])
    assert "rate_distortion.png" in names and sum(n.startswith("figure_") for n in names) == 2
    assert all(Path(f).stat().st_size > 1000 for f in result["figures"])


@pytest.mark.slow
def test_interrupted_benchmark_resumes_without_redoing_records(dataset, tmp_path, monkeypatch):
    import sinco.compression.image as inr_codec

    config = _config(dataset, methods=("coin", "sinco-inr", "jpeg"))
    out = tmp_path / "out"
    real = inr_codec.compress_images
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(inr_codec, "compress_images", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    first = json.loads((out / "results.json").read_text())["records"]
    assert [r["method"] for r in first] == ["coin", "coin"]  # both COIN fits done, the first SINCO fit interrupted

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(inr_codec, "compress_images", counting)
    run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    final = json.loads((out / "results.json").read_text())["records"]
    assert calls["n"] == 2  # only the two SINCO (INR) records were fitted
    assert len(final) == 6 and final[:2] == first
    # A finished run does nothing more; another configuration in the same folder is refused.
    calls["n"] = 0
    run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    assert calls["n"] == 0
    with pytest.raises(InputError, match="another configuration .*steps"):
        run_benchmark(_config(dataset, methods=("coin", "sinco-inr", "jpeg"), steps=5), outdir=out, device=torch.device("cpu"))

    # Fitting both slices as one batch: one call per method, the same records up to summation order.
    calls["n"] = 0
    batched = run_benchmark(_config(dataset, methods=("coin", "sinco-inr", "jpeg"), batch_slices=2), outdir=tmp_path / "b",
                            device=torch.device("cpu"), progress=False)["records"]  # fmt: skip
    assert calls["n"] == 2
    by_key = {(r["image_id"], r["method"]): r for r in final}
    for r in batched:
        assert r["psnr"] == pytest.approx(by_key[r["image_id"], r["method"]]["psnr"], abs=1e-3)
        if r["method"] != "jpeg":
            assert r["batch_slices"] == 2 and r["evaluations"] == 4


def test_slice_selection_is_deterministic_and_spread(dataset):
    from sinco.data.datasets import discover_cases

    cases = discover_cases(dataset[0], image_glob="Flair.nii.gz")
    picked = select_test_slices(cases, n_images=4, min_tumour=0.01)
    assert [p.image_id for p in picked] == [p.image_id for p in select_test_slices(cases, n_images=4, min_tumour=0.01)]
    assert {p.case.case_id for p in picked} == {"case0", "case1", "case2"}
    assert all(p.tumour_fraction >= 0.01 for p in picked)
    assert len(select_test_slices(cases, n_images=100, min_tumour=0.01)) == 18  # all 6 slices of 3 cases qualify
    with pytest.raises(InputError, match="no slice"):
        select_test_slices(cases, n_images=2, min_tumour=0.9)


def test_val_cases_come_from_the_checkpoint(dataset, tmp_path):
    config = _config(dataset, cases="val", methods=("jpeg",), images=3)
    run_benchmark(config, outdir=tmp_path / "o", device=torch.device("cpu"), progress=False)
    records = json.loads((tmp_path / "o" / "results.json").read_text())["records"]
    assert {r["case"] for r in records} == {"case2"}


@pytest.mark.parametrize("name", sorted(CLASSICAL_CODECS))
def test_classical_codecs_round_trip_and_meet_the_rate(name):
    rng = np.random.default_rng(0)
    rows, cols = np.meshgrid(np.linspace(0, 1, 96), np.linspace(0, 1, 96), indexing="ij")
    image = np.clip(0.5 * rows + 0.3 * np.sin(6 * cols) + 0.2 + 0.02 * rng.standard_normal((96, 96)), 0, 1).astype(np.float32)
    codec = get_codec(name)
    match = encode_at_bpp(codec, image, target_bpp=2.0)
    assert match.within_budget and match.bpp <= 2.0 and match.bpp == 8 * len(match.data) / image.size
    decoded = codec.decode(match.data)
    assert decoded.shape == image.shape and decoded.dtype == np.float32
    assert psnr(pred=decoded, target=image) > 25
    lo, hi = codec.quality_range
    if codec.integer_quality and match.quality < hi:  # the next quality up breaks the budget
        assert 8 * len(codec.encode(image, quality=match.quality + 1)) / image.size > 2.0


def test_unknown_method_is_refused(dataset):
    with pytest.raises(InputError, match="--methods"):
        _config(dataset, methods=("coin", "png"))


def test_each_family_takes_its_default_preset_unless_one_is_named(dataset):
    grid_only = _config(dataset, seg_model=None, label_glob=None, methods=("grid", "jpeg2000"))
    from sinco.codec.grid.config import GRID_PRESETS

    grid = grid_only.fit_config("grid").grid
    assert grid_only.preset is None and grid.steps == 4 and grid.max_rate_trials == GRID_PRESETS["fast"].max_rate_trials
    # A preset the family does not list falls back to its default: `long` must be listed (fast's 3 trials, long's 4).
    long = _config(dataset, seg_model=None, label_glob=None, methods=("grid",), preset="long").fit_config("grid").grid
    assert long.max_rate_trials == GRID_PRESETS["long"].max_rate_trials != GRID_PRESETS["fast"].max_rate_trials
    with pytest.raises(InputError, match="--preset 'paper'"):
        _config(dataset, seg_model=None, label_glob=None, methods=("grid",), preset="paper")


def test_an_unreachable_grid_rate_is_not_recorded_and_the_run_goes_on(dataset, tmp_path, capsys):
    config = _config(dataset, seg_model=None, label_glob=None, methods=("grid", "jpeg"), bpps=(0.01,), images=1)
    result = run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    assert [r["method"] for r in result["records"]] == ["jpeg"]
    err = capsys.readouterr().err
    assert "sinco: warning: grid on" in err and "unreachable" in err


@pytest.mark.slow
def test_bjontegaard_section_of_a_multi_rate_run(dataset, tmp_path):
    rates = (1.0, 2.0, 3.0, 4.0)
    config = _config(dataset, methods=("coin", "jpeg", "jpeg2000"), bpps=rates, images=1, seg_model=None, cases="all")
    out = tmp_path / "out"
    run_benchmark(config, outdir=out, device=torch.device("cpu"), progress=False)
    saved = json.loads((out / "results.json").read_text())
    deltas = saved["bjontegaard"]
    assert deltas["anchor"] == "jpeg2000" and set(deltas["methods"]) == {"coin", "jpeg", "jpeg2000"}
    image = saved["slices"][0]["image_id"]
    anchor = {float(r["target_bpp"]): r for r in saved["records"] if r["method"] == "jpeg2000"}
    usable = len({(r["bpp_file"], r["psnr"]) for r in anchor.values() if r["psnr"] < 999})
    own = deltas["methods"]["jpeg2000"]["per_image"][image]
    assert usable == 4  # four distinct lossy points of the anchor: the deltas below are defined
    # jpeg2000 against itself: zero, from the records' real rates.
    assert own["bd_rate"]["value"] == pytest.approx(0, abs=1e-6) and own["bd_psnr"]["value"] == pytest.approx(0, abs=1e-6)
    coin = deltas["methods"]["coin"]["per_image"][image]
    assert coin["bd_psnr"]["points"] == [4, 4]
    assert np.isfinite(coin["bd_psnr"]["value"]) and coin["bd_psnr"]["value"] < -10  # 4 steps of COIN are far behind (-28 dB)
    # Its PSNR range does not reach the anchor's: no rate delta, and the reason says so.
    assert coin["bd_rate"]["value"] is None and coin["bd_rate"]["reason"] == "the curves do not overlap"
    table = (out / "table.md").read_text()
    assert "## Bjontegaard deltas against JPEG 2000" in table and "| COIN (SIREN) |" in table.split("Bjontegaard deltas")[1]
    # The anchor only changes the summaries: the same folder is summarized again against JPEG, nothing refitted.
    again = run_benchmark(_config(dataset, methods=("coin", "jpeg", "jpeg2000"), bpps=rates, images=1, seg_model=None, cases="all",
                                  anchor="jpeg"), outdir=out, device=torch.device("cpu"), progress=False)  # fmt: skip
    assert again["records"] == saved["records"] and "## Bjontegaard deltas against JPEG\n" in again["table"]


def test_one_rate_has_no_bjontegaard_section(dataset, tmp_path):
    config = _config(dataset, methods=("jpeg",), seg_model=None, cases="all", images=1)
    result = run_benchmark(config, outdir=tmp_path / "o", device=torch.device("cpu"), progress=False)
    assert "bjontegaard" not in json.loads((tmp_path / "o" / "results.json").read_text())
    assert "No Bjontegaard deltas: this run has one target rate" in result["table"]


def test_anchor_must_be_a_benchmarked_method(tmp_path):
    dataset = (tmp_path, tmp_path / "seg.pt")  # only validated here, never read
    with pytest.raises(InputError, match="^--anchor 'vvc': .*--methods 'coin,jpeg'"):
        _config(dataset, methods=("coin", "jpeg"), bpps=(1.0, 2.0))
    with pytest.raises(InputError, match="^--anchor 'jpeg': .*--methods 'coin,jpeg2000'"):  # only the default falls back
        _config(dataset, methods=("coin", "jpeg2000"), bpps=(1.0, 2.0), anchor="jpeg")
    # The default anchor, VVC, falls back to JPEG 2000 where it does not run; both where both run.
    assert _config(dataset, methods=("coin", "jpeg2000"), bpps=(1.0, 2.0)).bd_references() == ("jpeg2000",)
    assert _config(dataset, methods=("jpeg2000", "vvc"), bpps=(1.0, 2.0)).bd_references() == ("vvc", "jpeg2000")
    with pytest.raises(InputError, match="^--anchor 'png'"):
        _config(dataset, methods=("coin", "jpeg"), anchor="png")
    assert _config(dataset, methods=("coin", "jpeg"), bpps=(1.0,)).anchor == "vvc"  # one rate: no deltas, no anchor needed


def test_cli_bad_anchor_is_one_line_and_exit_2(tmp_path, run):
    code, _, err = run(["benchmark", "--data", tmp_path, "--image-glob", "Flair.nii.gz", "--methods", "coin,jpeg", "--bpp", "1,2",
                        "--anchor", "jpeg2000", "--out", tmp_path / "o", "--quiet"])  # fmt: skip
    assert code == 2 and err.count("\n") == 1 and err.startswith("sinco: error: --anchor 'jpeg2000'")
    assert not (tmp_path / "o").exists()


def test_a_finished_run_extends_with_more_methods_and_rates(dataset, tmp_path):
    """Records are keyed by method and rate: rerunning with more of either codes only the new records, keeps the
    earlier ones byte for byte, and summarizes them all."""
    out = tmp_path / "out"
    first = run_benchmark(_config(dataset, methods=("coin", "jpeg"), bpps=(2.0,)), outdir=out, device=torch.device("cpu"), progress=False)
    kept = {(r["image_id"], r["method"], r["target_bpp"]): (out / r["file"]).read_bytes() for r in first["records"]}
    extended = run_benchmark(_config(dataset, methods=("jpeg2000",), bpps=(1.0, 3.0), anchor="jpeg2000"), outdir=out,
                             device=torch.device("cpu"), progress=False)  # fmt: skip
    keys = {(r["image_id"], r["method"], r["target_bpp"]) for r in extended["records"]}
    assert len(extended["records"]) == 8 and set(kept) <= keys
    assert all((out / r["file"]).read_bytes() == kept[k] for r in extended["records"] if (k := (r["image_id"], r["method"], r["target_bpp"])) in kept)
    saved = json.loads((out / "results.json").read_text())["config"]
    assert saved["methods"] == ["jpeg2000", "coin", "jpeg"] and saved["bpps"] == [1.0, 2.0, 3.0]
    # A codec method both runs name must be fitted as before.
    with pytest.raises(InputError, match="another configuration .*fit"):
        run_benchmark(_config(dataset, methods=("coin",), steps=5), outdir=out, device=torch.device("cpu"), progress=False)
    rows = [line.split("|")[1].strip() for line in extended["table"].splitlines() if line.startswith("| JPEG")]
    assert "JPEG" in rows and "JPEG 2000" in rows


def test_report_redraws_the_table_and_figure_from_results_json_alone(dataset, tmp_path, run):
    """`sinco report` needs only results.json: the data and the coded files may be gone."""
    import shutil

    out = tmp_path / "run"
    result = run_benchmark(_config(dataset, methods=("jpeg", "jpeg2000"), bpps=(1.0, 3.0), anchor="jpeg2000"), outdir=out,
                           device=torch.device("cpu"), progress=False)  # fmt: skip
    shutil.rmtree(out / "files")
    shutil.rmtree(dataset[0])
    code, printed, _ = run(["report", out / "results.json", "--out", tmp_path / "report", "--anchor", "jpeg"])
    assert code == 0
    table = (tmp_path / "report" / "run.md").read_text()
    assert (tmp_path / "report" / "rate_distortion.png").stat().st_size > 1000
    # The same rows as the run's own table; the deltas now against JPEG, which is 0 against itself.
    rows = [line for line in result["table"].splitlines() if line.startswith("| JPEG")]
    assert rows and all(row in table for row in rows[:2])
    assert "## Bjontegaard deltas against JPEG\n" in table and "## Bjontegaard deltas against JPEG 2000" not in table
    code, _, err = run(["report", tmp_path / "missing.json", "--out", tmp_path / "r2"])
    assert code == 2 and "not a benchmark's results.json" in err and len(err.strip().splitlines()) == 1


def test_table_psnr_of_exact_files_is_counted_not_averaged():
    from sinco.benchmark.tables import _psnr_cell

    assert _psnr_cell([999.0, 40.0, 42.0], 2) == "41.00 ± 1.00 (1 lossless)"
    assert _psnr_cell([999.0, 160.5], 2) == "lossless"
    assert _psnr_cell([40.0, 42.0], 2) == "41.00 ± 1.00"
