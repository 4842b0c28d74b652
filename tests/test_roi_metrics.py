"""Metrics inside a region of interest, the automatic head mask, and MS-SSIM."""

from __future__ import annotations

import numpy as np
import pytest
from conftest import make_phantom

from sinco.errors import InputError
from sinco.metrics import psnr, ssim
from sinco.metrics.image import ms_ssim, ms_ssim_scales
from sinco.metrics.roi import head_mask, psnr_roi, quality_metrics, ssim_roi


def _pair(size: int = 64, noise: float = 0.03) -> tuple[np.ndarray, np.ndarray]:
    target = make_phantom(size, size)
    target = target / target.max()
    pred = np.clip(target + noise * np.random.default_rng(0).standard_normal(target.shape), 0, 1)
    return pred, target


def test_head_mask_covers_the_head_and_fills_holes() -> None:
    image = make_phantom(64, 64)
    image[30:34, 30:34] = 0  # a dark hole inside the head (a ventricle)
    image[2, 2] = image.max()  # an isolated bright pixel in the background
    mask = head_mask(image)
    rows, cols = np.meshgrid(np.linspace(-1, 1, 64), np.linspace(-1, 1, 64), indexing="ij")
    ellipse = (rows / 0.9) ** 2 + (cols / 0.75) ** 2 < 1
    assert mask[30:34, 30:34].all() and not mask[2, 2]
    assert (mask == ellipse).mean() > 0.97
    assert not head_mask(np.full((16, 16), 3.0)).any()


def test_roi_covering_the_slice_equals_whole_slice_metrics() -> None:
    pred, target = _pair()
    everything = np.ones(target.shape, bool)
    assert psnr_roi(pred=pred, target=target, roi=everything) == pytest.approx(psnr(pred=pred, target=target))
    assert ssim_roi(pred=pred, target=target, roi=everything) == pytest.approx(ssim(pred=pred, target=target))


def test_errors_outside_the_roi_do_not_count() -> None:
    pred, target = _pair(noise=0.0)
    roi = head_mask(target)
    spoiled = pred.copy()
    spoiled[~roi] = 1.0 - spoiled[~roi]  # damage the background only
    assert psnr_roi(pred=spoiled, target=target, roi=roi) == np.inf
    assert psnr(pred=spoiled, target=target) < 10
    noisy, _ = _pair(noise=0.05)
    inside = noisy.copy()
    inside[~roi] = target[~roi]  # the same noise, inside the head only
    assert psnr_roi(pred=inside, target=target, roi=roi) < psnr(pred=inside, target=target)


def test_empty_roi_gives_none_and_bad_shape_is_refused() -> None:
    pred, target = _pair()
    assert psnr_roi(pred=pred, target=target, roi=np.zeros(target.shape)) is None
    assert ssim_roi(pred=pred, target=target, roi=np.zeros(target.shape)) is None
    with pytest.raises(InputError, match="ROI shape"):
        psnr_roi(pred=pred, target=target, roi=np.ones((3, 3)))


@pytest.mark.parametrize(("side", "scales"), [(10, 0), (21, 0), (22, 2), (44, 3), (99, 4), (175, 4), (176, 5), (240, 5)])
def test_ms_ssim_scales_follow_the_window_and_monai_limits(side: int, scales: int) -> None:
    assert ms_ssim_scales(side, side + 7) == scales


def test_ms_ssim_orders_reconstructions_and_handles_small_images() -> None:
    clean, target = _pair(size=176, noise=0.01)
    noisy, _ = _pair(size=176, noise=0.1)
    good, scales = ms_ssim(pred=clean, target=target)
    bad, _ = ms_ssim(pred=noisy, target=target)
    assert scales == 5 and 0 < bad < good <= 1
    assert ms_ssim(pred=target, target=target)[0] == pytest.approx(1.0, abs=1e-5)
    assert ms_ssim(pred=target[:20, :20], target=target[:20, :20]) == (None, 0)


def test_quality_metrics_uses_the_given_mask_or_the_head() -> None:
    pred, target = _pair()
    auto = quality_metrics(pred=pred, target=target, roi=None)
    box = np.zeros(target.shape, bool)
    box[20:40, 20:40] = True
    given = quality_metrics(pred=pred, target=target, roi=box)
    assert auto["roi"] == "auto" and given["roi"] == "mask" and given["roi_fraction"] == pytest.approx(400 / 64**2)
    assert given["ms_ssim"] == auto["ms_ssim"] and given["psnr_roi"] != auto["psnr_roi"]
