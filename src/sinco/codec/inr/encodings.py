"""Pixel coordinate grids and the NeRF positional encoding."""

from __future__ import annotations

import math

import torch
from torch import nn

from sinco.errors import InputError


def _axis(n: int) -> torch.Tensor:
    return torch.linspace(-1.0, 1.0, n, dtype=torch.float64) if n > 1 else torch.zeros(1, dtype=torch.float64)


def make_coordinates(
    height: int,
    width: int,
    *,
    device: torch.device | str | None = None,
    dtype: torch.dtype = torch.float32,
    start: int = 0,
    stop: int | None = None,
) -> torch.Tensor:
    """Coordinates of every pixel centre of an ``height x width`` image, in ``[-1, 1]^2``.

    Row ``i`` maps to ``-1 + 2 i / (height - 1)`` (and likewise for columns), so the corner pixels
    sit exactly on ``-1`` and ``1``. A dimension of size 1 maps to 0.

    Args:
        height: number of rows ``H`` (>= 1).
        width: number of columns ``W`` (>= 1).
        device: where to create the tensor.
        dtype: floating dtype of the result.
        start: first pixel (row-major index) to return; with ``stop``, a chunk of the grid whose
            values are bit-identical to the same rows of the whole grid.
        stop: one past the last pixel (default ``H * W``).

    Returns:
        Tensor of shape ``(stop - start, 2)``: ``(row, column)`` coordinates in row-major pixel order.

    Raises:
        InputError: if ``height`` or ``width`` is smaller than 1, or the range is invalid.
    """
    if height < 1 or width < 1:
        raise InputError(f"image shape ({height}, {width}): both sides must be at least 1")
    stop = height * width if stop is None else stop
    if not 0 <= start <= stop <= height * width:
        raise InputError(f"pixel range [{start}, {stop}) outside the {height}x{width} grid")
    index = torch.arange(start, stop, dtype=torch.int64)
    grid = torch.stack([_axis(height)[index // width], _axis(width)[index % width]], dim=-1)
    return grid.to(device=device, dtype=dtype)


class PositionalEncoding(nn.Module):
    """NeRF positional encoding ``gamma(c) = (sin(2^k pi c), cos(2^k pi c))``, ``k = 0 .. Lf - 1``.

    The output, for each frequency ``k`` in turn, holds the sines of both coordinates followed by
    their cosines, so ``out_features = 4 * Lf``. The raw coordinates are not included. The phase is
    computed in float64 before the sine, because ``2^11 pi c`` loses three digits in float32 and
    decoding must not depend on the device the encoder trained on.

    Args:
        n_freqs: number of frequencies ``Lf`` (>= 1).
    """

    def __init__(self, n_freqs: int = 12) -> None:
        super().__init__()
        if not isinstance(n_freqs, int) or n_freqs < 1:
            raise InputError(f"n_freqs={n_freqs!r}: must be a positive integer")
        self.n_freqs = n_freqs
        freqs = (2.0 ** torch.arange(n_freqs, dtype=torch.float64)) * math.pi
        self.register_buffer("freqs", freqs, persistent=False)

    @property
    def out_features(self) -> int:
        """Number of output features, ``4 * n_freqs``."""
        return 4 * self.n_freqs

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Encode coordinates.

        Args:
            coords: tensor of shape ``(N, 2)``.

        Returns:
            Tensor of shape ``(N, 4 * n_freqs)`` in the dtype of ``coords``.
        """
        phase = coords.to(torch.float64)[:, None, :] * self.freqs[None, :, None]  # (N, Lf, 2)
        encoded = torch.cat([torch.sin(phase), torch.cos(phase)], dim=-1)  # (N, Lf, 4)
        return encoded.reshape(coords.shape[0], -1).to(coords.dtype)
