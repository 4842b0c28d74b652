"""Rate sizing: the widest network whose parameter bit rate does not exceed a target."""

from __future__ import annotations

import math

from sinco.errors import InputError
from sinco.inr.models import ARCHITECTURES, INRSpec

# Chosen on two BraTS FLAIR slices at 1.2 bpp and 1,500 steps: deeper, narrower SIRENs fitted
# better (depth 3: 41.1 dB .. depth 8: 46.5 dB); PE-MLP results were noisy, depth 6 the best on average.
DEFAULT_DEPTH = {"siren": 8, "pe-mlp": 6}


def default_skips(arch: str, depth: int) -> tuple[int, ...]:
    """Default skip layers: PE-MLP feeds the encoding again into its middle hidden layer.

    Args:
        arch: architecture name.
        depth: number of hidden layers.

    Returns:
        The skip-layer indices (empty for SIREN or a PE-MLP of depth 1).
    """
    return (depth // 2,) if arch == "pe-mlp" and depth >= 2 else ()


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
    depth: int | None = None,
    bits_per_param: int = 16,
    w0: float = 30.0,
    w0_first: float = 30.0,
    n_freqs: int = 12,
    skips: tuple[int, ...] | None = None,
) -> INRSpec:
    """Choose the widest network of a given depth whose parameter bpp is at most ``bpp``.

    Args:
        arch: ``"siren"`` or ``"pe-mlp"``.
        bpp: target bits per pixel (> 0).
        height: image rows ``H``.
        width: image columns ``W``.
        depth: hidden layers; default :data:`DEFAULT_DEPTH` of the architecture.
        bits_per_param: bits stored per parameter.
        w0: SIREN hidden frequency.
        w0_first: SIREN first-layer frequency.
        n_freqs: PE-MLP encoding frequencies.
        skips: PE-MLP skip layers; default :func:`default_skips`.

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
    depth = DEFAULT_DEPTH[arch] if depth is None else depth
    skips = default_skips(arch, depth) if skips is None else skips
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
