"""PSNR and SSIM of images in ``[0, 1]``."""

from __future__ import annotations

import math

import numpy as np

from sinco.errors import InputError


def _check_pair(pred: np.ndarray, target: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    target = np.asarray(target, dtype=np.float64)
    if pred.shape != target.shape:
        raise InputError(f"pred shape {pred.shape} differs from target shape {target.shape}")
    if pred.ndim != 2:
        raise InputError(f"expected 2-D images, got shape {pred.shape}")
    return pred, target


def psnr(*, pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Peak signal-to-noise ratio, ``10 log10(data_range^2 / MSE)``, in dB.

    Args:
        pred: reconstruction ``(H, W)``.
        target: reference ``(H, W)``.
        data_range: peak value (1 for images scaled to ``[0, 1]``).

    Returns:
        PSNR in dB; ``inf`` for identical images.

    Raises:
        InputError: if the shapes differ or are not 2-D.
    """
    pred, target = _check_pair(pred, target)
    mse = float(np.mean((pred - target) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


# The Gaussian window (sigma 1.5, truncated at 3.5 sigma) is 11 x 11.
SSIM_MIN_SIDE = 11


def ssim(*, pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> float:
    """Structural similarity as Wang et al. (2004): Gaussian window, sigma 1.5, K1 0.01, K2 0.03.

    Computed with :func:`skimage.metrics.structural_similarity` (``gaussian_weights=True``,
    ``sigma=1.5``, ``use_sample_covariance=False``; window truncated at 3.5 sigma, 11 x 11),
    averaged over the valid region.

    Args:
        pred: reconstruction ``(H, W)``, at least :data:`SSIM_MIN_SIDE` on each side.
        target: reference ``(H, W)``.
        data_range: dynamic range of the images (1 for ``[0, 1]``).

    Returns:
        Mean SSIM, at most 1.

    Raises:
        InputError: if the shapes differ, are not 2-D, or are smaller than the 11 x 11 window.
    """
    from skimage.metrics import structural_similarity

    pred, target = _check_pair(pred, target)
    if min(pred.shape) < SSIM_MIN_SIDE:
        raise InputError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels (its Gaussian window), got {pred.shape}")
    return float(
        structural_similarity(
            target, pred, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False
        )
    )
