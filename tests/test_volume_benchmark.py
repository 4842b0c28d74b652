"""``sinco benchmark --volumes``: every slab coded whole, measured on the decoded voxels at the rate of the real bytes."""

import json
import math
import struct

import numpy as np
import pytest
import torch
from conftest import BENCH_SIZE as SIZE

import sinco.benchmark.volumes as volumes
from sinco.benchmark.volumes import VolumeBenchmarkConfig, code_slab, load_slab, run_volume_benchmark
from sinco.classical.base import Codec, encode_at_bpp
from sinco.classical.images import JPEG, JPEG2000
from sinco.classical.registry import VOLUME_CODECS
from sinco.classical.slices import SliceBySlice
from sinco.errors import BitstreamError, InputError

CPU = torch.device("cpu")


class TallJPEG2000(Codec):
    """A volume codec for the tests only: JPEG 2000 on the slices stacked as one tall image (2 bytes of depth first)."""

    name, label, extension, bit_depth, quality_range, library = "tall-j2k", "tall JPEG 2000", ".tj2k", 16, (1.0, 99.0), "test"
    integer_quality, ndim = False, 3

    def encode(self, image, *, quality):
        depth, height, width = image.shape
        return struct.pack("<H", depth) + JPEG2000().encode(image.reshape(depth * height, width), quality=quality)

    def decode(self, data):
        (depth,) = struct.unpack_from("<H", data)
        tall = JPEG2000().decode(data[2:])
        return tall.reshape(depth, tall.shape[0] // depth, tall.shape[1])

    @property
    def details(self):
        return {"frames_per_picture": "all"}


class BrokenCodec(TallJPEG2000):
    name, label = "broken", "broken codec"

    def encode(self, image, *, quality):
        raise RuntimeError("encoder crashed\nwith a second line")


@pytest.fixture
def codecs(monkeypatch):
    monkeypatch.setitem(VOLUME_CODECS, "tall-j2k", TallJPEG2000)
    monkeypatch.setitem(VOLUME_CODECS, "broken", BrokenCodec)


def _config(dataset, **kw) -> VolumeBenchmarkConfig:
    root, _ = dataset
    base = dict(data=str(root), seg_model=None, image_glob="Flair.nii.gz", cases="case0,case1", slices="1:5", bpps=(1.5,),
                methods=("jpeg2000",), steps=4, codec_options={"siren": {"depth": 3}})  # fmt: skip
    return VolumeBenchmarkConfig(**{**base, **kw})


def _reference_slab(root, case, start, stop):
    """The slab straight from the file: axial slices start..stop-1, scaled on their own min-max."""
    import nibabel as nib

    raw = np.asarray(nib.load(str(root / case / "Flair.nii.gz")).dataobj, dtype=np.float64)[:, :, start:stop]
    stack = np.moveaxis(raw, 2, 0)
    return (stack - stack.min()) / (stack.max() - stack.min())


def _decoder(method):
    return {"jpeg2000": SliceBySlice(JPEG2000()), "jpeg": SliceBySlice(JPEG()), "tall-j2k": TallJPEG2000()}[method]


def test_records_are_measured_on_the_files_within_the_budget(benchmark_dataset, codecs, tmp_path):
    root, _ = benchmark_dataset
    config = _config(benchmark_dataset, methods=("jpeg", "jpeg2000", "tall-j2k"), bpps=(1.0, 2.0), anchor="jpeg2000")
    out = tmp_path / "out"
    result = run_volume_benchmark(config, outdir=out, device=CPU, progress=False)
    saved = json.loads((out / "results.json").read_text())
    assert saved["config"]["slices"] == "1:5" and saved["config"]["benchmark"] == "volumes" and saved["failures"] == []
    assert [v["image_id"] for v in saved["volumes"]] == ["case0:1:5", "case1:1:5"]
    records = saved["records"]
    assert len(records) == 2 * 3 * 2 and records == result["records"]
    for r in records:
        data = (out / r["file"]).read_bytes()
        voxels = 4 * SIZE * SIZE
        assert r["n_slices"] == 4 and r["first_slice"] == 1 and r["file_bytes"] == len(data)
        assert r["bpp_file"] == 8 * len(data) / voxels and r["within_budget"] == (r["bpp_file"] <= r["target_bpp"])
        # Over budget only where even the lowest quality does not fit (JPEG's headers on 48 x 48 slices at 1-2 bpp).
        assert r["within_budget"] or (r["method"] == "jpeg" and r["details"]["quality"] == 1)
        reference = _reference_slab(root, r["case"], 1, 5)
        decoded = _decoder(r["method"]).decode(data).astype(np.float64)
        mse = np.mean((decoded - reference) ** 2)
        assert r["psnr"] == pytest.approx(10 * math.log10(1 / mse), abs=1e-4)
        per_slice = [10 * math.log10(1 / np.mean((decoded[i] - reference[i]) ** 2)) for i in range(4)]
        assert r["psnr_slice_mean"] == pytest.approx(np.mean(per_slice), abs=1e-3) and 0 < r["ssim"] <= 1
        assert r["encode_seconds"] > 0 and r["decode_seconds"] > 0
    assert all(r["within_budget"] for r in records if r["method"] != "jpeg")
    # One quality for every slice of JPEG 2000: a little higher breaks the slab's budget (the search's tolerance is 0.01).
    for r in (r for r in records if r["method"] == "jpeg2000"):
        q = r["details"]["quality"]
        assert r["kind"] == "image-codec" and r["details"]["rate_control"] == "one quality for every slice"
        slab = load_slab(_case(root, r["case"]), slices="1:5")
        assert 8 * len(SliceBySlice(JPEG2000()).encode(slab.voxels, quality=q + 0.02)) / slab.voxels.size > r["target_bpp"]
    tall = [r for r in records if r["method"] == "tall-j2k"]
    assert all(r["kind"] == "volume-codec" and r["details"]["frames_per_picture"] == "all" for r in tall)
    table = (out / "table.md").read_text()
    assert "JPEG (2 over budget)" in table and "# Volume benchmark" in table and "tall JPEG 2000" in table and "## Bjontegaard deltas against JPEG 2000" in table
    assert saved["bjontegaard"]["anchor"] == "jpeg2000" and saved["bjontegaard"]["also"] == {}
    assert sorted(p.split("/")[-1] for p in result["figures"]) == ["rate_distortion.png", "slab_case0_1_5.png", "slab_case1_1_5.png"]


def _case(root, case_id):
    from sinco.data.datasets import discover_cases

    return {c.case_id: c for c in discover_cases(root, image_glob="Flair.nii.gz")}[case_id]


def test_the_slices_option_picks_the_slab_and_all_is_the_whole_volume(benchmark_dataset):
    root, _ = benchmark_dataset
    config = _config(benchmark_dataset, slices="2:4")
    slab = load_slab(_case(root, "case1"), slices="2:4")
    assert slab.volume_id == "case1:2:4" and slab.voxels.shape == (2, SIZE, SIZE)
    np.testing.assert_allclose(slab.voxels, _reference_slab(root, "case1", 2, 4), atol=1e-6)
    assert load_slab(_case(root, "case1"), slices="all").voxels.shape == (6, SIZE, SIZE)
    assert load_slab(_case(root, "case1"), slices="3:").volume_id == "case1:3:6"
    record, _ = code_slab(slab, "jpeg2000", 1.5, config=config, device=CPU)
    assert record["image_id"] == "case1:2:4" and record["n_slices"] == 2
    for bad in ("5:2", "a:b", "3", "-1:4", "2:2"):
        with pytest.raises(InputError, match=f"^--slices '{bad}'"):
            _config(benchmark_dataset, slices=bad)
    with pytest.raises(InputError, match="^--slices '0:9': case case0 has 6 slices"):
        run_volume_benchmark(_config(benchmark_dataset, slices="0:9"), outdir=benchmark_dataset[0].parent / "o", device=CPU)


def test_a_rerun_resumes_and_never_redoes_a_record(benchmark_dataset, tmp_path, monkeypatch):
    config = _config(benchmark_dataset, methods=("jpeg", "jpeg2000"))
    out = tmp_path / "out"
    real = volumes.code_slab
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(volumes, "code_slab", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_volume_benchmark(config, outdir=out, device=CPU, progress=False)
    first = json.loads((out / "results.json").read_text())["records"]
    assert [r["method"] for r in first] == ["jpeg", "jpeg"]

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    calls["n"] = 0
    monkeypatch.setattr(volumes, "code_slab", counting)
    final = run_volume_benchmark(config, outdir=out, device=CPU, progress=False)["records"]
    assert calls["n"] == 2 and len(final) == 4 and final[:2] == first
    calls["n"] = 0
    run_volume_benchmark(config, outdir=out, device=CPU, progress=False)
    assert calls["n"] == 0
    with pytest.raises(InputError, match="another configuration .*slices"):
        run_volume_benchmark(_config(benchmark_dataset, methods=("jpeg", "jpeg2000"), slices="0:4"), outdir=out, device=CPU)


def test_a_failing_method_is_listed_and_the_run_goes_on(benchmark_dataset, codecs, tmp_path, capsys, monkeypatch):
    config = _config(benchmark_dataset, methods=("broken", "jpeg2000"), bpps=(1.0, 2.0), anchor="broken", cases="case0")
    out = tmp_path / "out"
    result = run_volume_benchmark(config, outdir=out, device=CPU, progress=False)
    assert [r["method"] for r in result["records"]] == ["jpeg2000", "jpeg2000"]
    saved = json.loads((out / "results.json").read_text())
    assert [(f["method"], f["target_bpp"]) for f in saved["failures"]] == [("broken", 1.0), ("broken", 2.0)]
    assert saved["failures"][0]["error"] == "RuntimeError: encoder crashed with a second line"
    err = capsys.readouterr().err.splitlines()
    assert err[0] == "sinco: warning: broken on case0:1:5 at 1 bpp failed: RuntimeError: encoder crashed with a second line; not recorded"
    # The anchor asked for has no records: the deltas fall back to JPEG 2000, and the table says so.
    assert saved["bjontegaard"]["anchor"] == "jpeg2000"
    assert saved["bjontegaard"]["missing"] == ["broken"]
    assert "## Failures" in result["table"] and "broken codec ran no record here" in result["table"]
    # A rerun tries the failed records again (here the codec works by then) and keeps the others.
    monkeypatch.setattr(BrokenCodec, "encode", TallJPEG2000.encode)
    again = run_volume_benchmark(config, outdir=out, device=CPU, progress=False)
    assert [r["method"] for r in again["records"]] == ["jpeg2000", "jpeg2000", "broken", "broken"] and again["failures"] == []
    assert again["records"][:2] == result["records"] and "## Failures" not in again["table"]


def test_a_neural_family_codes_the_slab_slice_by_slice_into_one_volume_file(benchmark_dataset, tmp_path):
    from sinco.codec.volume import decode_volume

    root, _ = benchmark_dataset
    config = _config(benchmark_dataset, methods=("coin",), bpps=(4.0,), cases="case0", slices="2:4")
    result = run_volume_benchmark(config, outdir=tmp_path / "o", device=CPU, progress=False)
    (r,) = result["records"]
    data = (tmp_path / "o" / r["file"]).read_bytes()
    header, decoded, _ = decode_volume(data)
    assert header.n_slices == 2 and header.first_index == 2 and r["kind"] == "family" and r["details"]["fitted_slices"] == 2
    reference = _reference_slab(root, "case0", 2, 4)
    assert r["psnr"] == pytest.approx(10 * math.log10(1 / np.mean((decoded - reference) ** 2)), abs=1e-4)
    assert r["bpp_file"] == 8 * len(data) / (2 * SIZE * SIZE) and r["details"]["slice_bpp"] < 4.0


def test_slice_by_slice_files_round_trip_and_refuse_garbage():
    rng = np.random.default_rng(0)
    slab = rng.random((3, 24, 24)).astype(np.float32)
    codec = SliceBySlice(JPEG2000())
    match = encode_at_bpp(codec, slab, target_bpp=4.0)
    assert match.within_budget and match.bpp == 8 * len(match.data) / slab.size <= 4.0
    decoded = codec.decode(match.data)
    assert decoded.shape == slab.shape and decoded.dtype == np.float32
    with pytest.raises(BitstreamError, match="truncated"):
        codec.decode(match.data[:-10])
    with pytest.raises(BitstreamError, match="magic"):
        codec.decode(b"JUNK" + match.data[4:])
    with pytest.raises(InputError, match="slice by slice needs an image codec"):
        SliceBySlice(TallJPEG2000())


def test_volume_configuration_refusals(benchmark_dataset, codecs):
    from sinco.benchmark.config import BenchmarkConfig

    root, ckpt = benchmark_dataset
    with pytest.raises(InputError, match="^--seg-model: the volume benchmark"):
        _config(benchmark_dataset, seg_model=str(ckpt))
    with pytest.raises(InputError, match="^--methods sinco-inr: regularized methods are not run on volumes"):
        _config(benchmark_dataset, methods=("sinco-inr", "jpeg"))
    with pytest.raises(InputError, match="^--methods tall-j2k: volume codecs code whole slabs; run them with --volumes"):
        BenchmarkConfig(data=str(root), seg_model=None, cases="all", methods=("tall-j2k", "jpeg"))


def test_cli_volumes_and_its_one_line_errors(benchmark_dataset, tmp_path, run):
    root, _ = benchmark_dataset
    common = ["benchmark", "--data", root, "--image-glob", "Flair.nii.gz", "--methods", "jpeg2000", "--bpp", "1.5", "--quiet"]
    code, out, err = run([*common, "--volumes", "--slices", "1:3", "--cases", "case2", "--out", tmp_path / "o"])
    assert code == 0 and "# Volume benchmark" in out and "`case2:1:3` 2 x 48 x 48" in out
    for args, message in ((["--volumes", "--slices", "3:1"], "sinco: error: --slices '3:1': need 0 <= A < B"),
                          (["--slices", "1:3"], "sinco: error: --slices '1:3': a slab of each volume is benchmarked with --volumes"),
                          (["--volumes", "--slices", "0:7"], "sinco: error: --slices '0:7': case case0 has 6 slices")):  # fmt: skip
        code, _, err = run([*common, *args, "--out", tmp_path / "bad"])
        assert code == 2 and err.count("\n") == 1 and err.startswith(message), err
        assert not (tmp_path / "bad").exists()


def test_cli_volumes_of_a_dataset_without_labels(nifti_volume, tmp_path, run):
    case = tmp_path / "data" / "caseA"
    case.mkdir(parents=True)
    nifti_volume.rename(case / "Flair.nii.gz")
    code, out, err = run(["benchmark", "--volumes", "--data", tmp_path / "data", "--methods", "jpeg2000", "--bpp", "2",
                          "--out", tmp_path / "o", "--quiet"])  # fmt: skip
    assert code == 0, err
    assert "`caseA:0:5` 5 x 32 x 32" in out and json.loads((tmp_path / "o" / "results.json").read_text())["config"]["label_glob"] is None


def test_report_redraws_a_volume_run_from_its_results(benchmark_dataset, tmp_path):
    from sinco.benchmark.report import write_report

    config = _config(benchmark_dataset, methods=("jpeg2000", "jpeg"), bpps=(1.0, 3.0), cases="case0", anchor="jpeg2000")
    result = run_volume_benchmark(config, outdir=tmp_path / "run", device=CPU, progress=False)
    written = write_report([tmp_path / "run" / "results.json"], outdir=tmp_path / "report")
    table = (tmp_path / "report" / "run.md").read_text()
    assert [p.name for p in written] == ["run.md", "rate_distortion.png"]
    assert table.startswith(result["table"]) and "`case0:1:5` 4 x 48 x 48" in table


def test_details_without_a_value_are_stored_as_null():
    """A fit's figure that does not apply is nan in its details; results.json (JSON) stores it as null."""
    from sinco.benchmark.volumes import _finite

    assert _finite({"loss": float("nan"), "trials": [1.0, float("inf")], "name": "grid"}) == {"loss": None, "trials": [1.0, None], "name": "grid"}
