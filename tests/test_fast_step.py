"""The compiled (fast) fitting step computes what the plain eager step computes."""

import numpy as np
import pytest
import torch

from sinco.fit.config import FitConfig
from sinco.fit.loop import fit_inr, use_compile
from sinco.inr.encodings import make_coordinates
from sinco.inr.models import INRSpec, build_inr


def _fit(compile_mode: str, image: torch.Tensor):
    torch.manual_seed(0)
    model = build_inr(INRSpec(arch="siren", width=12, depth=3))
    result = fit_inr(model, target=image, config=FitConfig(steps=12, compile=compile_mode), device=torch.device("cpu"), progress=False)
    with torch.no_grad():
        out = model(make_coordinates(*image.shape)).reshape(image.shape)
    return result, out


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
    siren = build_inr(INRSpec(arch="siren", width=4, depth=2))
    pe = build_inr(INRSpec(arch="pe-mlp", width=4, depth=2, n_freqs=2))
    assert use_compile(siren, FitConfig(steps=5000))
    assert not use_compile(siren, FitConfig(steps=100))
    assert not use_compile(pe, FitConfig(steps=5000))  # matmul-bound: compiling did not pay on the CPU
    assert use_compile(pe, FitConfig(steps=10, compile="on")) and not use_compile(siren, FitConfig(steps=5000, compile="off"))
