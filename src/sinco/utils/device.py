"""Compute-device selection."""

from __future__ import annotations

import torch

from sinco.errors import DeviceError, InputError

DEVICE_CHOICES = ("auto", "cpu", "cuda")


def resolve_device(name: str) -> torch.device:
    """Turn a ``--device`` value into a :class:`torch.device`.

    Args:
        name: ``"auto"`` (CUDA when available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:N"``.

    Returns:
        The device to run on.

    Raises:
        InputError: if ``name`` is not one of the accepted values.
        DeviceError: if CUDA is asked for but not available.
    """
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name == "cuda" or (name.startswith("cuda:") and name[5:].isdigit()):
        if not torch.cuda.is_available():
            raise DeviceError(f"--device {name}: CUDA is not available on this machine (use --device cpu or auto)")
        return torch.device(name)
    raise InputError(f"--device {name!r}: expected one of {', '.join(DEVICE_CHOICES)} (or cuda:N)")
