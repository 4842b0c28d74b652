"""A network's parameters as one flat vector, and back.

The order is that of ``model.parameters()``: layer by layer, each layer's weight (row-major,
``out x in``) then its bias. The INR codec families store their weights in this order, and the
fitting loop keeps a batch of networks as rows of one ``(S, P)`` tensor in it.
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
