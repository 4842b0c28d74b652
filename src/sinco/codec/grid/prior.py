"""An image's own first guess of ``lambda_rd`` for the rate search, from JPEG 2000's distortion-rate slope.

At the optimum of ``MSE + lambda_rd * bpp`` the slope of the fit's distortion-rate curve is ``-lambda_rd``. The
grid's curve is not known before fitting, but a classical codec's curve of the same image has a similar shape
and is cheap to measure: the first lambda is a preset's factor times JPEG 2000's ``-dMSE/dbpp`` around the
target. Over the benchmarks' searches (docs/grid-codec.md) the lambdas they ended at were 1 to 26 times that
slope (median about 5 with the ``fast`` preset, 2 with ``quality``), where one rate table for every image was
off by up to 25 times.
"""

from __future__ import annotations

import math

import numpy as np

#: The two JPEG 2000 rates are the target divided and multiplied by the square root of this.
_SPREAD = 1.5


def classical_slope(image: np.ndarray, *, target_bpp: float) -> float | None:
    """``-dMSE/dbpp`` of 16-bit JPEG 2000 on ``image`` between ``target / 1.22`` and ``target * 1.22`` bpp.

    Args:
        image: ``(H, W)`` in ``[0, 1]``.
        target_bpp: the rate around which the slope is measured (whole-file bits per pixel).

    Returns:
        The slope (MSE per bpp, positive), or None where JPEG 2000 gives no two distinct points within those
        rates (an image too small for its headers at the lower rate, or coded losslessly at both).
    """
    from sinco.classical.base import encode_at_bpp
    from sinco.classical.images import JPEG2000

    codec = JPEG2000()
    points = []
    for rate in (target_bpp / math.sqrt(_SPREAD), target_bpp * math.sqrt(_SPREAD)):
        match = encode_at_bpp(codec, image, target_bpp=rate)
        if not match.within_budget:
            return None
        error = codec.decode(match.data).astype(np.float64) - image.astype(np.float64)
        points.append((match.bpp, float(np.mean(error**2))))
    (low_rate, low_mse), (high_rate, high_mse) = points
    if high_rate <= low_rate or high_mse >= low_mse:
        return None
    return (low_mse - high_mse) / (high_rate - low_rate)
