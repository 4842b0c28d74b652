import math

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter

from sinco.errors import InputError
from sinco.metrics import dice, psnr, ssim


def test_psnr_golden_values():
    target = np.zeros((8, 8))
    assert psnr(pred=target + 0.1, target=target) == pytest.approx(20.0)
    assert psnr(pred=target + 0.01, target=target) == pytest.approx(40.0)
    pred = target.copy()
    pred[0, 0] = 1.0  # MSE = 1/64
    assert psnr(pred=pred, target=target) == pytest.approx(10 * math.log10(64))
    assert psnr(pred=target, target=target) == math.inf


def test_ssim_of_constant_images_is_the_luminance_term():
    # With zero variance SSIM reduces to (2 mu_x mu_y + C1) / (mu_x^2 + mu_y^2 + C1), C1 = (0.01 * L)^2.
    x, y, c1 = 0.5, 0.4, 1e-4
    expected = (2 * x * y + c1) / (x**2 + y**2 + c1)
    assert ssim(pred=np.full((16, 16), y), target=np.full((16, 16), x)) == pytest.approx(expected, rel=1e-9)


def _reference_ssim(x: np.ndarray, y: np.ndarray) -> float:
    """Wang et al. (2004) written out independently: Gaussian sigma 1.5 truncated at 3.5 sigma."""
    f = lambda a: gaussian_filter(a, sigma=1.5, truncate=3.5, mode="reflect")  # noqa: E731
    c1, c2 = 0.01**2, 0.03**2
    mx, my = f(x), f(y)
    vx, vy, cxy = f(x * x) - mx**2, f(y * y) - my**2, f(x * y) - mx * my
    s = ((2 * mx * my + c1) * (2 * cxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))
    pad = 5  # skimage averages away from the border, (win_size - 1) // 2 with an 11-pixel window
    return float(s[pad:-pad, pad:-pad].mean())


def test_ssim_matches_an_independent_implementation_and_a_golden_value():
    rng = np.random.default_rng(1234)
    target = rng.random((24, 24))
    pred = np.clip(target + 0.1 * rng.standard_normal((24, 24)), 0, 1)
    value = ssim(pred=pred, target=target)
    assert value == pytest.approx(_reference_ssim(target, pred), abs=1e-9)
    assert value == pytest.approx(0.94594, abs=1e-4)
    assert ssim(pred=target, target=target) == pytest.approx(1.0)


def test_metric_shape_errors():
    with pytest.raises(InputError, match="differs"):
        psnr(pred=np.zeros((4, 4)), target=np.zeros((4, 5)))
    for side in (4, 8):  # 8 x 8 is below the 11 x 11 Gaussian window too
        with pytest.raises(InputError, match="11x11"):
            ssim(pred=np.zeros((side, side)), target=np.zeros((side, side)))
    with pytest.raises(InputError, match="differs"):
        dice(pred=np.zeros((4, 4)), target=np.zeros((5, 4)))


def test_dice_golden_values_and_empty_masks():
    target = np.zeros((4, 4), bool)
    target[0, :2] = True
    pred = np.zeros((4, 4), bool)
    pred[0, 1:3] = True
    assert dice(pred=pred, target=target) == pytest.approx(0.5)  # 2 * 1 / (2 + 2)
    assert dice(pred=target, target=target) == 1.0
    assert dice(pred=~target, target=target) == 0.0
    empty = np.zeros((4, 4), bool)
    assert dice(pred=empty, target=empty) == 1.0  # both empty: defined as perfect agreement
    assert dice(pred=pred, target=empty) == 0.0
    assert dice(pred=empty, target=target) == 0.0
    assert dice(pred=pred.astype(np.uint8) * 4, target=target) == pytest.approx(0.5)  # nonzero = foreground
