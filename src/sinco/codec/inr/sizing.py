"""Rate sizing: the widest network whose parameter bit rate does not exceed a target."""

from __future__ import annotations

import math

from sinco.codec.inr.spec import ARCHITECTURES, INRSpec
from sinco.errors import InputError


def param_bpp(n_params: int, *, bits_per_param: int, n_pixels: int) -> float:
    """The paper's rate: ``bits_per_param * n_params / n_pixels``.

    Args:
        n_params: number of stored parameters.
        bits_per_param: bits of each stored parameter (16 for fp16).
        n_pixels: number of pixels ``H * W``.

    Returns:
        Bits per pixel, header not counted.
    """
    return bits_per_param * n_params / n_pixels


def size_for_bpp(
    arch: str,
    *,
    bpp: float,
    height: int,
    width: int,
    depth: int,
    skips: tuple[int, ...] = (),
    bits_per_param: int = 16,
    w0: float = 30.0,
    w0_first: float = 30.0,
    n_freqs: int = 12,
) -> INRSpec:
    """Choose the widest network of a given depth whose parameter bpp is at most ``bpp``.

    Args:
        arch: ``"siren"`` or ``"pe-mlp"``.
        bpp: target bits per pixel (> 0).
        height: image rows ``H``.
        width: image columns ``W``.
        depth: hidden layers.
        skips: PE-MLP skip layers.
        bits_per_param: bits stored per parameter.
        w0: SIREN hidden frequency.
        w0_first: SIREN first-layer frequency.
        n_freqs: PE-MLP encoding frequencies.

    Returns:
        The :class:`INRSpec` with the largest width that fits the budget.

    Raises:
        InputError: if an argument is out of range or not even a width-1 network fits the budget.
    """
    if arch not in ARCHITECTURES:
        raise InputError(f"--arch {arch!r}: expected one of {', '.join(ARCHITECTURES)}")
    if not (math.isfinite(bpp) and bpp > 0):
        raise InputError(f"--bpp {bpp}: must be a positive number")
    if height < 1 or width < 1:
        raise InputError(f"image shape ({height}, {width}): both sides must be at least 1")
    n_pixels = height * width
    budget = bpp * n_pixels / bits_per_param

    def spec_of(w: int) -> INRSpec:
        return INRSpec(arch=arch, width=w, depth=depth, w0=w0, w0_first=w0_first, n_freqs=n_freqs, skips=skips)

    # The count grows with width, so walk up until the next width breaks the budget.
    if spec_of(1).n_params() > budget:
        raise InputError(
            f"--bpp {bpp}: too low for a {arch} of depth {depth} on a {height}x{width} image "
            f"(even width 1 needs {param_bpp(spec_of(1).n_params(), bits_per_param=bits_per_param, n_pixels=n_pixels):.3f} bpp)"
        )
    w = 1
    while w < 65535 and spec_of(w + 1).n_params() <= budget:
        w += 1
    return spec_of(w)
