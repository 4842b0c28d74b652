"""Bjontegaard deltas (VCEG-M33): the average rate change at equal PSNR, and PSNR change at equal rate, of two RD curves.

Variant: the original cubic polynomial of VCEG-M33 (G. Bjontegaard, "Calculation of average PSNR differences
between RD-curves", 2001), least-squares fitted (with 4 points it interpolates them exactly) and integrated in
closed form over the interval both curves cover. It is the definition the image-compression literature
(Cool-chic, C3, CompressAI's tables) quotes, and needs only numpy. The piecewise-cubic (pchip) variant of the
JCT-VC/JVET spreadsheets is more robust to erratic curves (a cubic can overshoot between badly spaced or
non-monotone points); when reading a large delta of a noisy curve, look at ``rate_distortion.png`` too.

With fewer points the degree drops: 3 distinct points give a quadratic, 2 a straight line (the result records the
degree used); below 2, or without an overlapping interval, the delta is ``None`` with the reason. Points at the
lossless (PSNR >= :data:`LOSSLESS_PSNR`: the benchmark stores an exact reconstruction as 999 dB, and a file that
restores an integer image's grey levels exactly is off only by the float32 rounding of the source, 150-165 dB) say
nothing about the curve's shape and would dominate any fit: they are left out and counted.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from sinco.benchmark.methods import swept_key
from sinco.errors import InputError

#: Lossless from here up: above what any lossy 16-bit coding reaches (uniform 16-bit quantization: 107.7 dB), below
#: the float32 rounding of a source restored exactly (about 2^-25 of the range: 150 dB and up).
LOSSLESS_PSNR = 140.0
MAX_DEGREE = 3
FIT = (
    "VCEG-M33 cubic polynomial (least squares; quadratic/linear with 3/2 distinct points), closed-form integral over the overlap"
)


@dataclass(frozen=True)
class Delta:
    """One Bjontegaard delta of a test curve against an anchor curve.

    Attributes:
        value: BD-rate in percent (negative: the test needs less rate) or BD-PSNR in dB (positive: the test is
            better); ``None`` when it cannot be computed.
        reason: why ``value`` is ``None`` (``None`` otherwise).
        degree: degree of the polynomials fitted (3 is the standard cubic); ``None`` if no fit was made.
        interval: the integration interval (PSNR in dB for BD-rate, bpp for BD-PSNR), or ``None``.
        points: points used of the anchor and of the test curve.
        excluded: points left out (lossless cap) of the anchor and of the test curve.
    """

    value: float | None
    reason: str | None
    degree: int | None
    interval: tuple[float, float] | None
    points: tuple[int, int]
    excluded: tuple[int, int]

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return json_ready(asdict(self))


def json_ready(value: Any) -> Any:
    """Tuples as lists, recursively (JSON has no tuples)."""
    if isinstance(value, Mapping):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_ready(v) for v in value]
    return value


def _curve(rate: Iterable[float], psnr: Iterable[float], *, name: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Validated ``(rate, psnr, excluded)`` of one curve, the lossless-capped points removed."""
    r, p = np.asarray(list(rate), dtype=np.float64), np.asarray(list(psnr), dtype=np.float64)
    if r.ndim != 1 or r.shape != p.shape:
        raise InputError(f"{name}: rate and psnr need the same number of points, got {r.size} and {p.size}")
    if not np.all(np.isfinite(r) & (r > 0)):
        raise InputError(f"{name}_rate {r.tolist()}: rates must be finite and positive")
    if np.any(np.isnan(p)):
        raise InputError(f"{name}_psnr {p.tolist()}: PSNR must not be NaN")
    keep = p < LOSSLESS_PSNR
    return r[keep], p[keep], int((~keep).sum())


def _delta(
    x_anchor: np.ndarray, y_anchor: np.ndarray, x_test: np.ndarray, y_test: np.ndarray
) -> tuple[float | None, str | None, int | None, tuple[float, float] | None]:
    """Mean of ``p_test - p_anchor`` over the overlap of the x ranges, ``p`` the polynomial fits of ``y`` on ``x``."""
    distinct = min(np.unique(x_anchor).size, np.unique(x_test).size)
    if distinct < 2:
        return (
            None,
            f"fewer than 2 distinct points on a curve (anchor {np.unique(x_anchor).size}, test {np.unique(x_test).size})",
            None,
            None,
        )
    lo, hi = max(x_anchor.min(), x_test.min()), min(x_anchor.max(), x_test.max())
    if not hi > lo:
        return None, "the curves do not overlap", None, None
    degree = min(MAX_DEGREE, distinct - 1)
    # Centred x keeps the cubic's normal equations well conditioned (PSNR values are ~30-70 dB).
    centre = 0.5 * (lo + hi)
    areas = []
    for x, y in ((x_anchor, y_anchor), (x_test, y_test)):
        integral = np.polyint(np.polyfit(x - centre, y, degree))
        areas.append(np.polyval(integral, hi - centre) - np.polyval(integral, lo - centre))
    return float((areas[1] - areas[0]) / (hi - lo)), None, degree, (float(lo), float(hi))


def bd_rate(*, anchor_rate: Sequence[float], anchor_psnr: Sequence[float], test_rate: Sequence[float],
            test_psnr: Sequence[float]) -> Delta:  # fmt: skip
    """BD-rate: the average rate change, in percent, of the test curve against the anchor at equal PSNR.

    ``ln(rate)`` is fitted as a polynomial of PSNR on each curve; the mean difference ``d`` over the PSNR interval
    both curves cover gives ``100 * (exp(d) - 1)``. Negative means the test needs less rate.

    Args:
        anchor_rate: rates of the anchor (any positive unit, e.g. bpp), one per point.
        anchor_psnr: PSNR (dB) of the anchor, one per point.
        test_rate: rates of the test curve (same unit).
        test_psnr: PSNR (dB) of the test curve.

    Returns:
        The :class:`Delta` (``value`` in percent, ``interval`` in dB).

    Raises:
        InputError: if a curve's rate and PSNR lengths differ, a rate is not finite and positive, or a PSNR is NaN.
    """
    ra, pa, xa = _curve(anchor_rate, anchor_psnr, name="anchor")
    rt, pt, xt = _curve(test_rate, test_psnr, name="test")
    mean, reason, degree, interval = _delta(pa, np.log(ra), pt, np.log(rt))
    value = None if mean is None else 100.0 * math.expm1(mean)
    return Delta(value, reason, degree, interval, (ra.size, rt.size), (xa, xt))


def bd_psnr(*, anchor_rate: Sequence[float], anchor_psnr: Sequence[float], test_rate: Sequence[float],
            test_psnr: Sequence[float]) -> Delta:  # fmt: skip
    """BD-PSNR: the average PSNR change, in dB, of the test curve against the anchor at equal rate.

    PSNR is fitted as a polynomial of ``ln(rate)`` on each curve and the fits' mean difference taken over the
    ``ln(rate)`` interval both cover. Positive means the test is better.

    Args:
        anchor_rate: rates of the anchor (any positive unit, e.g. bpp), one per point.
        anchor_psnr: PSNR (dB) of the anchor, one per point.
        test_rate: rates of the test curve (same unit).
        test_psnr: PSNR (dB) of the test curve.

    Returns:
        The :class:`Delta` (``value`` in dB, ``interval`` in the rate's unit).

    Raises:
        InputError: as :func:`bd_rate`.
    """
    ra, pa, xa = _curve(anchor_rate, anchor_psnr, name="anchor")
    rt, pt, xt = _curve(test_rate, test_psnr, name="test")
    mean, reason, degree, interval = _delta(np.log(ra), pa, np.log(rt), pt)
    rates = None if interval is None else (math.exp(interval[0]), math.exp(interval[1]))
    return Delta(mean, reason, degree, rates, (ra.size, rt.size), (xa, xt))


def _curves(records: Iterable[Mapping[str, Any]]) -> dict[str, dict[str, list[tuple[float, float, float]]]]:
    """``method -> image_id -> [(target_bpp, bpp_file, psnr), ...]`` sorted by target rate."""
    out: dict[str, dict[str, list[tuple[float, float, float]]]] = {}
    for r in records:
        out.setdefault(r["method"], {}).setdefault(r["image_id"], []).append(
            (float(r["target_bpp"]), float(r["bpp_file"]), float(r["psnr"]))
        )
    for by_image in out.values():
        for points in by_image.values():
            points.sort()
    return out


def mean_curve(
    points_by_image: Mapping[str, list[tuple[float, float, float]]], images: Sequence[str]
) -> tuple[list[float], list[float]]:
    """The mean curve over ``images``: at each target rate every image has, the mean file bpp and mean PSNR.

    A target rate is left out where an image is missing or at the lossless cap there (a mean over a subset, or
    with a lossless file's 999 dB (or float32-rounding 160 dB) in it, would not be a point of the average curve).

    Returns:
        ``(rates, psnrs)``.
    """
    by_target: dict[float, list[tuple[float, float]]] = {}
    for image in images:
        for target, rate, psnr in points_by_image.get(image, []):
            by_target.setdefault(target, []).append((rate, psnr))
    rates, psnrs = [], []
    for target in sorted(by_target):
        values = by_target[target]
        if len(values) == len(images) and all(p < LOSSLESS_PSNR for _, p in values):
            rates.append(float(np.mean([v[0] for v in values])))
            psnrs.append(float(np.mean([v[1] for v in values])))
    return rates, psnrs


def _both(anchor: tuple[Sequence[float], Sequence[float]], test: tuple[Sequence[float], Sequence[float]]) -> dict[str, Any]:
    kw = dict(anchor_rate=anchor[0], anchor_psnr=anchor[1], test_rate=test[0], test_psnr=test[1])
    return {"bd_rate": bd_rate(**kw).to_dict(), "bd_psnr": bd_psnr(**kw).to_dict()}


def _summary(values: list[float]) -> dict[str, float | int | None]:
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": float(np.mean(values)), "std": float(np.std(values)), "n": len(values)}


def benchmark_deltas(records: Sequence[Mapping[str, Any]], *, methods: Sequence[str], anchor: str) -> dict[str, Any]:
    """Bjontegaard deltas of every method against ``anchor``, per image and averaged, from benchmark records.

    Each curve is one image's records of one method (``bpp_file`` against ``psnr``, as measured on the real
    files), compared with the anchor's records of the same image. ``mean`` is the mean and (population) standard
    deviation over the images with a value; ``mean_curve`` is the delta of the method's mean curve against the
    anchor's (see :func:`mean_curve`), over the images both have.

    Args:
        records: benchmark records (``method``, ``image_id``, ``target_bpp``, ``bpp_file``, ``psnr``).
        methods: the methods to compare (the anchor included: its deltas are 0 where defined).
        anchor: the anchor method.

    Returns:
        ``{"anchor", "fit", "excluded", "methods": {method: {"per_image": {image: {"bd_rate", "bd_psnr"}},
        "mean": {"bd_rate": {mean, std, n}, "bd_psnr": {...}}, "mean_curve": {"bd_rate", "bd_psnr"}}}}``; every
        delta as :meth:`Delta.to_dict`.

    Raises:
        InputError: if ``anchor`` has no records.
    """
    curves = _curves(records)
    if anchor not in curves:
        raise InputError(f"--anchor {anchor!r}: no records of this method in the run")
    anchor_curves = curves[anchor]
    out: dict[str, Any] = {"anchor": anchor, "fit": FIT,
                           "excluded": f"points with PSNR >= {LOSSLESS_PSNR:g} dB (lossless: exact, or within the float32 rounding of the source) are left out of every fit",
                           "methods": {}}  # fmt: skip
    for method in methods:
        if method not in curves:
            continue
        per_image: dict[str, Any] = {}
        for image, points in sorted(curves[method].items()):
            if image in anchor_curves:
                reference = anchor_curves[image]
                per_image[image] = _both(
                    ([p[1] for p in reference], [p[2] for p in reference]), ([p[1] for p in points], [p[2] for p in points])
                )
        images = sorted(per_image)
        mean = {
            key: _summary([d[key]["value"] for d in per_image.values() if d[key]["value"] is not None])
            for key in ("bd_rate", "bd_psnr")
        }
        out["methods"][method] = {"per_image": per_image, "mean": mean,
                                  "mean_curve": _both(mean_curve(anchor_curves, images), mean_curve(curves[method], images))}  # fmt: skip
    return out


def bjontegaard_section(records: list[dict[str, Any]], config: Any) -> dict[str, Any] | None:
    """The Bjontegaard deltas of every method of a benchmark against its references (see :func:`benchmark_deltas`), or
    ``None`` with a single target rate (no curve). A method swept over several lambdas has one curve per lambda
    (``method@lambda``), never one mixing them.

    The references are :meth:`~sinco.benchmark.config.BenchmarkConfig.bd_references` (``config.anchor``, then
    ``jpeg2000``) that have records: the first is the section's ``anchor``, the deltas against each further one are under
    ``also`` (``{reference: section}``); ``missing`` names the references that ran no record (e.g. an encoder missing
    here). With none left the section is ``{"anchor": None, "reason": ..., "methods": {}}``."""
    if len(config.bpps) < 2:
        return None
    swept = {m: config.lams_of(m) for m in config.methods if len(config.lams_of(m)) > 1}
    keyed = [{**r, "method": swept_key(r["method"], float(r.get("lam_setting", 0.0)))} if r["method"] in swept else r for r in records]
    methods = [k for m in config.methods for k in ([swept_key(m, lam) for lam in swept[m]] if m in swept else [m])]
    references = [swept_key(a, swept[a][0]) if a in swept else a for a in config.bd_references()]
    present = {r["method"] for r in keyed}
    ran, missing = [a for a in references if a in present], [a for a in references if a not in present]
    if not ran:
        return {"anchor": None, "reason": f"no records of {' or '.join(references) or 'an anchor'}", "missing": missing, "methods": {}}
    section = benchmark_deltas(keyed, methods=methods, anchor=ran[0])
    section["also"] = {a: benchmark_deltas(keyed, methods=methods, anchor=a) for a in ran[1:]}
    section["missing"] = missing
    return section
