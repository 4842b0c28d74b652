"""The compiled (fast) fitting step computes what the plain eager step computes."""

import numpy as np
import pytest
import torch

from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.encodings import make_coordinates
from sinco.codec.inr.networks import build_inr
from sinco.codec.inr.spec import INRSpec
from sinco.codec.inr.training import StackedFit, fit_inr, use_compile


def _fit(compile_mode: str, image: torch.Tensor):
    torch.manual_seed(0)
    model = build_inr(INRSpec(arch="siren", width=12, depth=3))
    result = fit_inr(model, target=image, config=INRFitConfig(steps=12, compile=compile_mode), device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        out = model(make_coordinates(*image.shape)).reshape(image.shape)
    return result, out


@pytest.mark.slow
def test_compiled_step_matches_the_eager_step():
    rows, cols = np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 24), indexing="ij")
    image = torch.from_numpy((0.5 + 0.4 * np.sin(5 * rows) * np.cos(3 * cols)).astype(np.float32))
    plain, plain_out = _fit("off", image)
    fast, fast_out = _fit("on", image)
    if not fast.compiled:
        pytest.skip("torch.compile is not available on this machine")
    assert not plain.compiled
    assert fast.best_step == plain.best_step
    assert fast.best_mse == pytest.approx(plain.best_mse, rel=1e-3)
    torch.testing.assert_close(fast_out, plain_out, rtol=0, atol=1e-4)


def test_auto_compiles_long_siren_fits_only():
    from sinco.codec.registry import get_family

    siren, pe = get_family("siren").compile_when_auto, get_family("pe-mlp").compile_when_auto
    assert use_compile(INRFitConfig(steps=5000), compile_when_auto=siren)
    assert not use_compile(INRFitConfig(steps=100), compile_when_auto=siren)
    assert not use_compile(INRFitConfig(steps=5000), compile_when_auto=pe)  # matmul-bound: compiling did not pay on the CPU
    assert use_compile(INRFitConfig(steps=10, compile="on"), compile_when_auto=pe)
    assert not use_compile(INRFitConfig(steps=5000, compile="off"), compile_when_auto=siren)


def test_cosine_schedule_and_presets():
    import math

    from sinco.codec.registry import get_family
    from sinco.errors import InputError

    def fit_config_from_preset(preset, *, arch, **overrides):
        return get_family(arch).fit_config(preset, overrides)

    cfg = INRFitConfig(steps=1100, lr=2e-3, schedule="cosine", warmup=100, final_lr_ratio=0.01)
    assert cfg.lr_at(0) == pytest.approx(2e-5) and cfg.lr_at(99) == pytest.approx(2e-3)
    assert cfg.lr_at(100) == pytest.approx(2e-3)
    assert cfg.lr_at(600) == pytest.approx(0.5 * (2e-3 + 2e-5))  # half-way down the cosine
    assert cfg.lr_at(1100) == pytest.approx(2e-5)
    assert all(cfg.lr_at(s) >= cfg.lr_at(s + 1) for s in range(100, 1100))
    assert INRFitConfig(lr=1e-3).lr_at(12345) == 1e-3
    for arch in ("siren", "pe-mlp"):
        paper = fit_config_from_preset("paper", arch=arch)
        assert (paper.steps, paper.lr, paper.schedule, paper.optimizer) == (50_000, 1e-3, "constant", "adam")
    fast = fit_config_from_preset("fast", arch="siren", steps=None, lr=5e-3)
    assert (fast.steps, fast.lr, fast.optimizer, fast.adam_steps) == (4_000, 5e-3, "adam+lbfgs", 2_000)
    cosine = fit_config_from_preset("fast", arch="siren", schedule="cosine", warmup=200, optimizer="adam")
    assert math.isclose(cosine.lr_at(cosine.steps - 1), 1e-5, rel_tol=1e-2)
    fast_pe = fit_config_from_preset("fast", arch="pe-mlp")
    assert (fast_pe.steps, fast_pe.optimizer, fast_pe.adam_steps, fast_pe.lr) == (4_000, "adam+lbfgs", 1_000, 1e-3)
    assert fit_config_from_preset("fast", arch="pe-mlp", optimizer="adam").adam_steps == 4_000
    with pytest.raises(InputError, match="--preset 'quick'"):
        fit_config_from_preset("quick", arch="siren")
    with pytest.raises(InputError, match="--arch 'mlp'"):
        fit_config_from_preset("fast", arch="mlp")
    with pytest.raises(InputError, match="--lambda-rd: does not apply to --arch siren"):
        fit_config_from_preset("fast", arch="siren", lambda_rd=0.01)
    with pytest.raises(InputError, match="--schedule 'step'"):
        INRFitConfig(schedule="step")


@pytest.mark.slow
def test_cosine_schedule_fits_better_than_constant_in_few_steps():
    rows, cols = np.meshgrid(np.linspace(0, 1, 24), np.linspace(0, 1, 24), indexing="ij")
    image = torch.from_numpy((0.5 + 0.4 * np.sin(7 * rows) * np.cos(5 * cols)).astype(np.float32))
    results = {}
    for schedule in ("constant", "cosine"):
        torch.manual_seed(0)
        model = build_inr(INRSpec(arch="siren", width=16, depth=3))
        config = INRFitConfig(steps=300, lr=3e-3 if schedule == "cosine" else 1e-3, schedule=schedule, warmup=20, compile="off")
        results[schedule] = fit_inr(model, target=image, config=config, device=torch.device("cpu"), progress=False)
    assert results["cosine"].best_psnr > results["constant"].best_psnr


def test_the_blocked_pe_mlp_has_autograds_output_and_gradients(monkeypatch):
    import sinco.codec.inr.blocked as blocked

    monkeypatch.setattr(blocked, "BLOCK_ROWS", 64)  # several blocks and a short last one on a 20 x 23 image
    torch.manual_seed(0)
    spec = INRSpec(arch="pe-mlp", width=10, depth=4, n_freqs=5, skips=(2,))
    model = build_inr(spec)
    feats = model.features(make_coordinates(20, 23))
    target = torch.rand(20 * 23, 1)
    params = list(model.parameters())

    def grads(out):
        (out - target).square().mean().backward()
        found = [p.grad.clone() for p in params]
        for p in params:
            p.grad = None
        return out.detach(), found

    ref_out, ref_grads = grads(model.forward_features(feats))
    out, found = grads(blocked.pe_mlp_blocked(feats, params, skips=spec.skips))
    torch.testing.assert_close(out, ref_out, rtol=1e-5, atol=1e-6)
    for got, want in zip(found, ref_grads, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-7)


def test_a_cpu_pe_mlp_fit_runs_blocked_and_follows_the_autograd_fit():
    rows, cols = np.meshgrid(np.linspace(0, 1, 20), np.linspace(0, 1, 24), indexing="ij")
    image = torch.from_numpy((0.5 + 0.4 * np.sin(5 * rows) * np.cos(3 * cols)).astype(np.float32))
    spec = INRSpec(arch="pe-mlp", width=12, depth=4, n_freqs=4, skips=(2,))
    results = []
    for blocked in (True, False):
        torch.manual_seed(0)
        fit = StackedFit([build_inr(spec)], targets=image[None], config=INRFitConfig(steps=30), device=torch.device("cpu"))
        assert fit._blocked_skips == spec.skips
        if not blocked:
            fit._blocked_skips = None  # the autograd path, as on CUDA or in a batch
        for step in range(30):
            fit.step(step)
        results.append(fit.flat.detach().clone())
    torch.testing.assert_close(results[0], results[1], rtol=1e-3, atol=1e-4)
