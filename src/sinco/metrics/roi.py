"""Metrics inside a region of interest (the head or the brain), and the automatic head mask.

Whole-slice PSNR counts the flat background around the head (about 70% of a BraTS slice), where
every codec is nearly exact; measured inside the head the same reconstruction scores lower.
"""

from __future__ import annotations

import math

import numpy as np

from sinco.errors import InputError
from sinco.metrics.image import SSIM_MIN_SIDE, _check_pair

# Above the background level by this fraction of the slice's intensity range counts as head.
HEAD_THRESHOLD = 0.05
# Border width (pixels) whose median is the background level.
BORDER = 2


def head_mask(image: np.ndarray) -> np.ndarray:
    """The head of a slice, found automatically.

    Rule: the background level is the median of the outermost :data:`BORDER` pixels of every
    side; a pixel is head when it is above that level by more than :data:`HEAD_THRESHOLD` of the
    slice's intensity range (max - min). Isolated noise is removed with a 3 x 3 binary opening
    and the holes are filled (:func:`scipy.ndimage.binary_fill_holes`), so dark ventricles and
    sulci inside the head count as head. A constant slice has an empty head. The rule assumes the
    slice's border is background (a head cropped to touch every edge raises the level); give a
    mask (``--roi``, ``--roi-glob``) where it is not.

    Args:
        image: ``(H, W)`` slice, any intensity scale (the ``[0, 1]`` reference in sinco).

    Returns:
        bool ``(H, W)``, True = head.

    Raises:
        InputError: if the image is not 2-D or not finite.
    """
    from scipy import ndimage

    image = np.asarray(image, dtype=np.float64)
    if image.ndim != 2 or not np.all(np.isfinite(image)):
        raise InputError(f"head mask: expected a finite 2-D image, got shape {image.shape}")
    span = float(image.max() - image.min())
    if span == 0:
        return np.zeros(image.shape, bool)
    b = min(BORDER, *(s // 2 for s in image.shape)) or 1
    border = np.concatenate([image[:b].ravel(), image[-b:].ravel(), image[:, :b].ravel(), image[:, -b:].ravel()])
    mask = image > float(np.median(border)) + HEAD_THRESHOLD * span
    mask = ndimage.binary_opening(mask, structure=np.ones((3, 3), bool))
    return ndimage.binary_fill_holes(mask)


def _check_roi(roi: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    roi = np.asarray(roi) != 0
    if roi.shape != shape:
        raise InputError(f"ROI shape {roi.shape} differs from the image's {shape}")
    return roi


def psnr_roi(*, pred: np.ndarray, target: np.ndarray, roi: np.ndarray, data_range: float = 1.0) -> float | None:
    """PSNR over the pixels of a region: ``10 log10(data_range^2 / MSE inside roi)``, in dB.

    Args:
        pred: reconstruction ``(H, W)``.
        target: reference ``(H, W)``.
        roi: ``(H, W)``, nonzero = inside.
        data_range: peak value (1 for ``[0, 1]`` images; the whole slice's range, not the region's).

    Returns:
        PSNR in dB (``inf`` if exact inside the region), or ``None`` for an empty region.

    Raises:
        InputError: if the shapes differ or are not 2-D.
    """
    pred, target = _check_pair(pred, target)
    roi = _check_roi(roi, pred.shape)
    if not roi.any():
        return None
    mse = float(np.mean((pred[roi] - target[roi]) ** 2))
    return math.inf if mse == 0 else 10.0 * math.log10(data_range**2 / mse)


def ssim_roi(*, pred: np.ndarray, target: np.ndarray, roi: np.ndarray, data_range: float = 1.0) -> float | None:
    """SSIM over a region: the mean of the SSIM map inside the region.

    The map is :func:`sinco.metrics.image.ssim`'s (skimage, Gaussian window sigma 1.5, 11 x 11,
    computed on the whole slice so the windows see the region's surroundings); as in that
    function, the 5-pixel border where the window leaves the image is left out. With a region
    covering the slice the value equals :func:`~sinco.metrics.image.ssim`.

    Args:
        pred: reconstruction ``(H, W)``, at least 11 x 11.
        target: reference ``(H, W)``.
        roi: ``(H, W)``, nonzero = inside.
        data_range: dynamic range of the images.

    Returns:
        Mean SSIM inside the region, or ``None`` when the region lies entirely in the border.

    Raises:
        InputError: if the shapes differ, are not 2-D, or are smaller than the window.
    """
    from skimage.metrics import structural_similarity

    pred, target = _check_pair(pred, target)
    roi = _check_roi(roi, pred.shape)
    if min(pred.shape) < SSIM_MIN_SIDE:
        raise InputError(f"SSIM needs images of at least {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE} pixels (its Gaussian window), got {pred.shape}")
    _, full = structural_similarity(
        target, pred, data_range=data_range, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, full=True
    )
    pad = (SSIM_MIN_SIDE - 1) // 2
    inside = roi[pad:-pad, pad:-pad]
    if not inside.any():
        return None
    return float(full[pad:-pad, pad:-pad][inside].mean(dtype=np.float64))


def quality_metrics(*, pred: np.ndarray, target: np.ndarray, roi: np.ndarray | None) -> dict[str, float | int | str | None]:
    """The image-quality figures of a record beyond whole-slice PSNR and SSIM: MS-SSIM, and inside the region of interest.

    Args:
        pred: decoded image ``(H, W)`` in ``[0, 1]``.
        target: reference ``(H, W)`` in ``[0, 1]``.
        roi: the region ``(H, W)`` (a brain mask), or ``None`` for the automatic :func:`head_mask` of ``target``.

    Returns:
        ``ms_ssim``, ``ms_ssim_scales``, ``psnr_roi``, ``ssim_roi``, ``roi`` (``"mask"`` or
        ``"auto"``) and ``roi_fraction`` (the region's share of the slice). An infinite ROI PSNR
        (exact inside the region) is capped at 999 for JSON.
    """
    from sinco.metrics.image import ms_ssim

    region = head_mask(target) if roi is None else _check_roi(roi, np.shape(target))
    value, scales = ms_ssim(pred=pred, target=target)
    cap = lambda v: None if v is None else (v if math.isfinite(v) else 999.0)  # noqa: E731
    return {
        "ms_ssim": value,
        "ms_ssim_scales": scales, "psnr_roi": cap(psnr_roi(pred=pred, target=target, roi=region)),
        "ssim_roi": ssim_roi(pred=pred, target=target, roi=region), "roi": "auto" if roi is None else "mask",
        "roi_fraction": float(region.mean()),
    }  # fmt: skip
