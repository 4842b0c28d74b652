"""The INR families' payload: the network's weights as IEEE fp16, little-endian, in ``model.parameters()`` order."""

from __future__ import annotations

import numpy as np
import torch

from sinco.errors import BitstreamError, InputError


def quantize_fp16(flat: torch.Tensor) -> np.ndarray:
    """Round float32 parameters to IEEE half precision (round to nearest even).

    Args:
        flat: tensor of shape ``(P,)``.

    Returns:
        Little-endian float16 array of shape ``(P,)``.

    Raises:
        InputError: if a value is not finite or overflows fp16 (|x| > 65504).
    """
    values = flat.detach().to("cpu", torch.float32).numpy()
    if not np.all(np.isfinite(values)):
        raise InputError("parameters contain NaN or Inf: refusing to store them")
    half = values.astype("<f2")
    if not np.all(np.isfinite(half)):
        raise InputError("a parameter exceeds the fp16 range (|x| > 65504): refusing to store it")
    return half


def dequantize_fp16(payload: bytes, *, count: int) -> np.ndarray:
    """Read ``count`` little-endian fp16 values, refusing non-finite ones.

    Args:
        payload: exactly ``2 * count`` bytes.
        count: number of values.

    Returns:
        float32 array ``(count,)``.

    Raises:
        BitstreamError: if the length is wrong or a value is NaN or Inf.
    """
    if len(payload) != 2 * count:
        raise BitstreamError(f"corrupted .sinco file: a payload of {len(payload)} bytes for {count} fp16 weights")
    weights = np.frombuffer(payload, dtype="<f2", count=count)
    if not np.all(np.isfinite(weights)):
        raise BitstreamError("corrupted .sinco file: weights contain NaN or Inf")
    return weights.astype(np.float32)
