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
