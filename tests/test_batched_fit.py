"""Fitting several slices as one batched computation gives what fitting them one by one gives."""

import numpy as np
import pytest
import torch

from sinco.codec.inr.config import INRFitConfig
from sinco.codec.inr.encodings import make_coordinates
from sinco.codec.inr.networks import build_inr
from sinco.codec.inr.spec import INRSpec
from sinco.codec.inr.training import StackedFit, fit_inr, fit_inr_batch

CPU = torch.device("cpu")


def _images(n: int) -> torch.Tensor:
    rows, cols = np.meshgrid(np.linspace(0, 1, 18), np.linspace(0, 1, 22), indexing="ij")
    return torch.from_numpy(np.stack([0.5 + 0.4 * np.sin((3 + k) * rows) * np.cos((2 + k) * cols) for k in range(n)]).astype(np.float32))


def _fresh(spec: INRSpec, n: int) -> list:
    models = []
    for _ in range(n):
        torch.manual_seed(0)
        models.append(build_inr(spec))
    return models


@pytest.mark.parametrize("spec", [INRSpec(arch="siren", width=10, depth=3), INRSpec(arch="pe-mlp", width=10, depth=3, n_freqs=3, skips=(1,))])
def test_a_batch_follows_the_trajectories_of_separate_fits(spec):
    images = _images(3)
    config = INRFitConfig(steps=15, lr=2e-3, schedule="cosine", warmup=3, compile="off")
    batched = _fresh(spec, 3)
    results = fit_inr_batch(batched, targets=images, config=config, device=CPU, progress=False)
    coords = make_coordinates(18, 22)
    for k, model in enumerate(_fresh(spec, 3)):
        alone = fit_inr(model, target=images[k], config=config, device=CPU, progress=False)
        assert results[k].best_step == alone.best_step and results[k].batch == 3 and alone.batch == 1
        assert results[k].best_mse == pytest.approx(alone.best_mse, rel=1e-4)
        with torch.no_grad():
            torch.testing.assert_close(batched[k](coords), model(coords), rtol=0, atol=1e-5)
    # Different images, different fits: the slices did not leak into each other.
    assert len({round(r.best_mse, 9) for r in results}) == 3


def test_the_written_out_adam_is_torch_adam():
    image = _images(1)[0]
    spec = INRSpec(arch="siren", width=8, depth=2)
    ours, = _fresh(spec, 1)
    fit_inr(ours, target=image, config=INRFitConfig(steps=10, lr=1e-3, compile="off"), device=CPU, progress=False)
    theirs, = _fresh(spec, 1)
    optimizer = torch.optim.Adam(theirs.parameters(), lr=1e-3)
    coords, target = make_coordinates(18, 22), image.reshape(-1, 1)
    for _ in range(10):
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(theirs(coords), target).backward()
        optimizer.step()
    # fit_inr keeps the best state; on this smooth target every step improves, so that is the last one.
    for a, b in zip(ours.parameters(), theirs.parameters(), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=1e-6)


def test_a_diverging_slice_is_restored_without_touching_the_others():
    images = _images(2)
    spec = INRSpec(arch="siren", width=8, depth=2)
    config = INRFitConfig(steps=6, lr=1e-3, compile="off")
    fit = StackedFit(_fresh(spec, 2), targets=images, config=config, device=CPU)
    for step in range(3):
        fit.step(step)
    healthy_before = fit.flat[1].detach().clone()
    with torch.no_grad():
        fit.flat[0, :5].fill_(float("nan"))  # slice 0's first-layer weights blow up
    fit.step(3)
    assert fit.divergences.tolist() == [1, 0]
    assert fit.lr_scale.tolist() == [0.5, 1.0]
    assert torch.isfinite(fit.flat).all()
    torch.testing.assert_close(fit.flat[0], fit.best[0])
    assert not torch.equal(fit.flat[1], healthy_before)  # slice 1 went on


def test_batch_arguments_are_checked():
    from sinco.errors import InputError

    spec = INRSpec(arch="siren", width=8, depth=2)
    with pytest.raises(InputError, match="targets"):
        fit_inr_batch(_fresh(spec, 2), targets=_images(3), config=INRFitConfig(steps=1), device=CPU, progress=False)
    mixed = [build_inr(spec), build_inr(INRSpec(arch="siren", width=9, depth=2))]
    with pytest.raises(InputError, match="one architecture"):
        fit_inr_batch(mixed, targets=_images(2), config=INRFitConfig(steps=1), device=CPU, progress=False)


def test_lbfgs_phase_counts_evaluations_keeps_the_best_and_batches_like_separate_fits():
    images = _images(2)
    spec = INRSpec(arch="siren", width=10, depth=3)
    # Few L-BFGS evaluations: line searches amplify summation-order differences over many.
    hybrid = INRFitConfig(steps=32, lr=1e-3, optimizer="adam+lbfgs", lbfgs_after=20, compile="off")
    adam = INRFitConfig(steps=32, lr=1e-3, compile="off")
    batched = _fresh(spec, 2)
    results = fit_inr_batch(batched, targets=images, config=hybrid, device=CPU, progress=False)
    coords = make_coordinates(18, 22)
    for k, model in enumerate(_fresh(spec, 2)):
        alone = fit_inr(model, target=images[k], config=hybrid, device=CPU, progress=False)
        assert results[k].best_mse == pytest.approx(alone.best_mse, rel=1e-3)
        assert 20 < alone.best_step <= 32 and alone.steps == 32 and 20 < alone.evaluations <= 32
        with torch.no_grad():
            mse = torch.mean((model(coords).reshape(18, 22) - images[k]) ** 2).item()
        assert mse == pytest.approx(alone.best_mse, rel=1e-4)  # the network is left in the reported best state
        plain = fit_inr(_fresh(spec, 1)[0], target=images[k], config=adam, device=CPU, progress=False)
        assert alone.best_mse < plain.best_mse  # 12 L-BFGS evaluations beat 12 more Adam steps here
        assert set(plain.phase_seconds) == {"adam"}
    # Each phase that ran is timed, for the whole batch.
    assert set(results[0].phase_seconds) == {"adam", "lbfgs"} and results[0].phase_seconds == results[1].phase_seconds
    assert all(t >= 0 for t in results[0].phase_seconds.values()) and sum(results[0].phase_seconds.values()) <= results[0].seconds


def test_lbfgs_options_are_checked():
    from sinco.errors import InputError

    with pytest.raises(InputError, match="--optimizer 'sgd'"):
        INRFitConfig(optimizer="sgd")
    with pytest.raises(InputError, match="--lbfgs-history 0"):
        INRFitConfig(optimizer="adam+lbfgs", lbfgs_history=0)
    cfg = INRFitConfig(steps=4000, optimizer="adam+lbfgs", lbfgs_after=1000, schedule="cosine", warmup=0)
    assert cfg.adam_steps == 1000 and cfg.lr_at(999) == pytest.approx(cfg.lr * cfg.final_lr_ratio, rel=0.01)


@pytest.mark.slow
def test_quantization_tail_tunes_the_weights_to_their_fp16_rounding():
    from sinco.codec.inr.networks import flatten_parameters, load_flat_parameters
    from sinco.codec.inr.payload import quantize_fp16

    image = _images(1)[0]
    spec = INRSpec(arch="siren", width=16, depth=3)
    coords = make_coordinates(18, 22)

    def rounded_mse(model) -> float:
        copy_ = _fresh(spec, 1)[0]
        load_flat_parameters(copy_, quantize_fp16(flatten_parameters(model)).astype(np.float32))
        with torch.no_grad():
            return torch.mean((copy_(coords).reshape(18, 22) - image) ** 2).item()

    plain, tuned = _fresh(spec, 1)[0], _fresh(spec, 1)[0]
    fit_inr(plain, target=image, config=INRFitConfig(steps=300, lr=2e-3, compile="off"), device=CPU, progress=False)
    result = fit_inr(tuned, target=image, config=INRFitConfig(steps=300, lr=2e-3, quantize_tail=40, quantize_lr=1e-5, compile="off"),
                     device=CPU, progress=False)  # fmt: skip
    assert result.evaluations == 300 and result.best_step >= 260
    assert result.best_mse == pytest.approx(rounded_mse(tuned), rel=1e-3)  # judged on the rounded weights
    # The tail starts from the state the plain fit ends in after 260 steps; it never ends worse once rounded.
    start = _fresh(spec, 1)[0]
    fit_inr(start, target=image, config=INRFitConfig(steps=260, lr=2e-3, compile="off"), device=CPU, progress=False)
    assert rounded_mse(tuned) <= rounded_mse(start)
    with pytest.raises(Exception, match="--quantize-tail 301"):
        INRFitConfig(steps=300, quantize_tail=301)
