"""Dice overlap of binary masks."""

from __future__ import annotations

import numpy as np
import torch

from sinco.errors import InputError


def dice(*, pred: np.ndarray, target: np.ndarray) -> float:
    """Dice coefficient ``2 |P & T| / (|P| + |T|)`` of two binary masks (nonzero = foreground).

    Computed by :func:`monai.metrics.compute_dice` with ``ignore_empty=False``: when the target is
    empty, Dice is 1.0 if the prediction is empty too and 0.0 otherwise.

    Args:
        pred: predicted mask ``(H, W)``.
        target: reference mask ``(H, W)``.

    Returns:
        Dice in ``[0, 1]``.

    Raises:
        InputError: if the shapes differ.
    """
    from monai.metrics import compute_dice

    pred = np.asarray(pred)
    target = np.asarray(target)
    if pred.shape != target.shape:
        raise InputError(f"pred shape {pred.shape} differs from target shape {target.shape}")
    as_batch = lambda m: torch.from_numpy(np.ascontiguousarray(m != 0, dtype=np.float32))[None, None]  # noqa: E731
    return float(compute_dice(as_batch(pred), as_batch(target), include_background=True, ignore_empty=False).item())
