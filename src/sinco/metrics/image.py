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


# Wang, Simoncelli and Bovik (2003): the weights of the five scales, finest first (MONAI's default).
MS_SSIM_WEIGHTS = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_scales(height: int, width: int) -> int:
    """How many MS-SSIM scales an ``(H, W)`` image allows with the 11 x 11 window; 0 when fewer than 2.

    Each scale halves the image (2 x 2 average pooling) and MONAI's window is applied without
    padding, so the coarsest of ``s`` scales needs ``side // 2**(s - 1) >= 11``; MONAI also refuses
    ``side // (s - 1)**2 <= 10`` (its own size check). Five scales need at least 176 x 176 pixels.
    """
    side = min(height, width)
    for scales in range(len(MS_SSIM_WEIGHTS), 1, -1):
        if side // 2 ** (scales - 1) >= SSIM_MIN_SIDE and side // (scales - 1) ** 2 > SSIM_MIN_SIDE - 1:
            return scales
    return 0


def ms_ssim(*, pred: np.ndarray, target: np.ndarray, data_range: float = 1.0) -> tuple[float | None, int]:
    """Multi-scale SSIM (Wang et al. 2003) by :func:`monai.metrics.regression.compute_ms_ssim`.

    Gaussian window 11 x 11, sigma 1.5, K1 0.01, K2 0.03, five scales with the paper's weights
    :data:`MS_SSIM_WEIGHTS`. An image too small for five scales (below 176 pixels on a side, see
    :func:`ms_ssim_scales`) uses the largest number of scales it allows, the first weights
    renormalized to sum to 1; below two scales (a side under 22 pixels) there is no MS-SSIM and
    ``None`` is returned. MONAI computes in float32.

    Args:
        pred: reconstruction ``(H, W)``.
        target: reference ``(H, W)``.
        data_range: dynamic range of the images (1 for ``[0, 1]``).

    Returns:
        ``(value, scales)``: MS-SSIM in ``[0, 1]`` (``None`` when ``scales`` is 0) and the scales used.

    Raises:
        InputError: if the shapes differ or are not 2-D.
    """
    import torch
    from monai.metrics.regression import compute_ms_ssim

    pred, target = _check_pair(pred, target)
    scales = ms_ssim_scales(*pred.shape)
    if scales == 0:
        return None, 0
    weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
    as_batch = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))[None, None]  # noqa: E731
    value = compute_ms_ssim(as_batch(pred), as_batch(target), spatial_dims=2, data_range=data_range,
                            weights=tuple(float(w) for w in weights / weights.sum()))  # fmt: skip
    return float(value.item()), scales
