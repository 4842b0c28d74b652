"""The figures every record carries, measured on what decoding a file gives back."""

from __future__ import annotations

from typing import Any

import numpy as np

from sinco.seg.network import SegModel


def measure(decoded: np.ndarray, *, target: np.ndarray, file_bytes: int | None = None, seg_model: SegModel | None = None,
            mask: np.ndarray | None = None, roi: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The figures every record carries, of a decoded image against its original.

    Args:
        decoded: the image decoded from the file, ``(H, W)`` in ``[0, 1]``.
        target: the original, ``(H, W)`` in ``[0, 1]``.
        file_bytes: the file's size (adds ``bpp_file`` and ``file_bytes``).
        seg_model: with ``mask``, adds ``dice`` (of ``g``'s mask of ``decoded``) and ``dice_reference`` (of the original).
        mask: ground-truth mask ``(H, W)``.
        roi: the region of interest ``(H, W)`` (a brain mask) of ``psnr_roi`` and ``ssim_roi``; ``None``:
            the head found by :func:`sinco.metrics.roi.head_mask`.

    Returns:
        ``psnr``, ``ssim``, the MS-SSIM and ROI figures of :func:`sinco.metrics.roi.quality_metrics`,
        and the optional fields.
    """
    from sinco.metrics import dice, psnr, ssim
    from sinco.metrics.roi import quality_metrics

    metrics: dict[str, Any] = {"psnr": psnr(pred=decoded, target=target), "ssim": ssim(pred=decoded, target=target),
                               **quality_metrics(pred=decoded, target=target, roi=roi)}  # fmt: skip
    if file_bytes is not None:
        metrics.update(bpp_file=8 * file_bytes / target.size, file_bytes=file_bytes)
    if seg_model is not None and mask is not None:
        metrics["dice"] = dice(pred=seg_model.predict(decoded), target=mask)
        metrics["dice_reference"] = dice(pred=seg_model.predict(target), target=mask)
    return metrics
