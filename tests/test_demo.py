"""``sinco demo``: what it plans to run (the run itself is timed as a benchmark: README, set-up)."""

from __future__ import annotations

from sinco.benchmark.demo import DEMO_RATES, PAPER_METHODS, plan_demo
from sinco.benchmark.methods import is_regularized


def test_the_default_demo_is_the_default_codec_at_its_fast_preset_beside_classical_codecs(tmp_path):
    plan = plan_demo(tmp_path, paper=False)
    config = plan.config
    assert config.methods[0] == "grid" and config.preset == "fast" and config.steps is None
    assert {"jpeg2000", "jpeg"} <= set(config.methods) and config.bpps == DEMO_RATES and config.images == 1
    assert config.anchor in config.methods and not any(is_regularized(m) for m in config.methods)
    assert "fast" in plan.caption and "quality" in plan.caption


def test_the_paper_demo_runs_the_papers_four_methods_at_its_rate(tmp_path):
    plan = plan_demo(tmp_path, paper=True)
    assert plan.config.methods == PAPER_METHODS and plan.config.bpps == (1.2,) and plan.config.steps == 500
    assert sum(is_regularized(m) for m in plan.config.methods) == 2 and "50,000" in plan.caption


def test_export_data_writes_the_dataset_and_stops(tmp_path, run):
    code, stdout, err = run(["demo", "--export-data", tmp_path / "d"])
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "d").iterdir()) == [f"mni152-slab{k}" for k in range(4)]
    assert "--image-glob t1.nii.gz" in stdout


def test_the_default_demo_codes_slices_of_its_held_out_slab_as_one_volume_beside_the_slice_codecs(tmp_path):
    """The volume section: grid3d, grid and JPEG 2000 slice by slice on the slices around the middle of the demo
    network's validation case (where the slice section's test slice lies), at the demo's rate, with its steps stated."""
    from importlib.resources import files

    import torch

    from sinco.benchmark.demo import DEMO_VOLUME_STEPS

    volume = plan_demo(tmp_path, paper=False).volume
    trained = torch.load(str(files("sinco") / "assets" / "demo_seg.pt"), weights_only=True)["training"]
    assert volume.cases in trained["val_cases"] and volume.methods == ("grid3d", "grid", "jpeg2000")
    assert volume.bpps == DEMO_RATES and volume.steps == DEMO_VOLUME_STEPS and volume.anchor == "jpeg2000"
    assert f"{DEMO_VOLUME_STEPS} steps" in plan_demo(tmp_path, paper=False).volume_caption
    assert plan_demo(tmp_path, paper=False, steps=7).volume.steps == 7 and plan_demo(tmp_path, paper=True).volume is None


def test_the_demo_volume_section_measures_each_method_on_its_decoded_file(tmp_path):
    """The section's configuration run on a small volume in the demo dataset's layout (the demo's own 197 x 233 slices
    take a minute): every method one file within the rate, its bits per voxel from the file's bytes and its volume PSNR
    from the decoded file; grid without the refinements grid3d lacks; the table names grid3d."""
    import dataclasses

    import nibabel as nib
    import numpy as np
    import torch

    from sinco.benchmark.demo import DEMO_VOLUME_CASE, DEMO_VOLUME_FIT_OPTIONS
    from sinco.benchmark.volumes import run_volume_benchmark
    from sinco.data.demo import IMAGE_NAME

    z, y, x = np.meshgrid(np.arange(32), np.arange(32), np.arange(4), indexing="ij")
    (tmp_path / "data" / DEMO_VOLUME_CASE).mkdir(parents=True)
    image = (100 + 80 * np.sin(x / 3 + z / 4) * np.cos(y / 5)).astype(np.float32)
    nib.save(nib.Nifti1Image(image, np.eye(4)), str(tmp_path / "data" / DEMO_VOLUME_CASE / IMAGE_NAME))
    volume = dataclasses.replace(plan_demo(tmp_path / "data", paper=False).volume, slices="0:4", steps=30, bpps=(5.0,))
    result = run_volume_benchmark(volume, outdir=tmp_path / "volume", device=torch.device("cpu"), progress=False)
    records = {r["method"]: r for r in result["records"]}
    assert not result["failures"] and set(records) == {"grid3d", "grid", "jpeg2000"}
    for record in records.values():
        size = (tmp_path / "volume" / record["file"]).stat().st_size
        assert record["bpp_file"] == 8 * size / image.size <= 5.0 and record["psnr"] > 15
    assert records["grid3d"]["kind"] == "volume-family" and records["grid3d"]["details"]["steps"] >= 30
    assert volume.fit_config("grid").grid.residual is False and volume.fit_config("grid").grid.context is False
    assert DEMO_VOLUME_FIT_OPTIONS == {"residual": "off", "context": "off"} and "Latent grids 3-D" in result["table"]
