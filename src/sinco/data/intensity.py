"""Per-slice min-max intensity scaling, and its inverse."""

from __future__ import annotations

import numpy as np

from sinco.errors import InputError


def normalize_minmax(image: np.ndarray, *, name: str = "image") -> tuple[np.ndarray, float, float]:
    """Scale an image linearly so that its minimum maps to 0 and its maximum to 1.

    Args:
        image: array of shape ``(H, W)``, any real dtype.
        name: how error messages refer to the image.

    Returns:
        ``(scaled, vmin, vmax)``: ``scaled`` float32 ``(H, W)`` in ``[0, 1]``; ``vmin`` and ``vmax``
        the original extremes (float64), which :func:`restore_intensity` maps back to.

    Raises:
        InputError: if the image is not 2-D, empty, not real, contains NaN/Inf, or is constant.
    """
    if image.ndim != 2:
        raise InputError(f"{name}: expected a 2-D image, got shape {image.shape}")
    if image.size == 0:
        raise InputError(f"{name}: empty image (shape {image.shape}); nothing to compress")
    if not (np.issubdtype(image.dtype, np.number) or image.dtype == bool) or np.iscomplexobj(image):
        raise InputError(f"{name}: expected real-valued pixels, got dtype {image.dtype}")
    values = image.astype(np.float64)
    if not np.all(np.isfinite(values)):
        raise InputError(f"{name}: contains {int(np.sum(~np.isfinite(values)))} NaN or Inf pixels")
    vmin, vmax = float(values.min()), float(values.max())
    if vmax <= vmin:
        raise InputError(f"{name}: constant image (every pixel is {vmin}); nothing to compress")
    return ((values - vmin) / (vmax - vmin)).astype(np.float32), vmin, vmax


def restore_intensity(scaled: np.ndarray, *, vmin: float, vmax: float) -> np.ndarray:
    """Map a ``[0, 1]`` image back to the original intensity range.

    Args:
        scaled: array of shape ``(H, W)`` in ``[0, 1]``.
        vmin: the intensity that 0 maps to.
        vmax: the intensity that 1 maps to.

    Returns:
        float32 array of shape ``(H, W)``.
    """
    return (scaled.astype(np.float64) * (vmax - vmin) + vmin).astype(np.float32)
