"""fp32 <-> fp16 parameter quantisation.

The stored parameter order is the order of ``model.parameters()``: layer by layer, each layer's
weight (row-major, ``out x in``) then its bias.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sinco.errors import InputError


def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one flat float32 CPU tensor.

    Args:
        model: the network.

    Returns:
        Tensor of shape ``(P,)``.
    """
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in model.parameters()])


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


def load_flat_parameters(model: nn.Module, flat: np.ndarray | torch.Tensor) -> None:
    """Copy a flat parameter vector into ``model`` (any float dtype, cast to each parameter's).

    Args:
        model: the network to fill.
        flat: array of shape ``(P,)`` with ``P`` the model's parameter count.

    Raises:
        InputError: if the length does not match.
    """
    values = torch.as_tensor(np.asarray(flat, dtype=np.float32) if isinstance(flat, np.ndarray) else flat)
    total = sum(p.numel() for p in model.parameters())
    if values.numel() != total:
        raise InputError(f"parameter vector has {values.numel()} values, the network needs {total}")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(values[offset : offset + n].reshape(p.shape).to(p.dtype))
            offset += n
