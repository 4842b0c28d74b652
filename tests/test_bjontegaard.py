"""Bjontegaard deltas: hand-checkable curves, an independent numerical evaluation, degenerate inputs, aggregation."""

import math

import numpy as np
import pytest

from sinco.benchmark.bjontegaard import LOSSLESS_PSNR, bd_psnr, bd_rate, benchmark_deltas, mean_curve
from sinco.errors import InputError

RATES = [0.3, 0.6, 1.2, 2.0]
PSNRS = [31.0, 35.5, 40.2, 43.9]


def _kw(ar, ap, tr, tp):
    return dict(anchor_rate=ar, anchor_psnr=ap, test_rate=tr, test_psnr=tp)


def test_identical_curves_give_zero():
    kw = _kw(RATES, PSNRS, RATES, PSNRS)
    assert bd_rate(**kw).value == pytest.approx(0, abs=1e-9) and bd_psnr(**kw).value == pytest.approx(0, abs=1e-9)
    assert bd_rate(**kw).degree == 3 and bd_rate(**kw).points == (4, 4)


@pytest.mark.parametrize("shift", [0.7, -2.25])
def test_psnr_shift_at_every_rate_is_the_bd_psnr(shift):
    result = bd_psnr(**_kw(RATES, PSNRS, RATES, [p + shift for p in PSNRS]))
    assert result.value == pytest.approx(shift, abs=1e-6)
    assert result.interval == pytest.approx((0.3, 2.0))


def test_half_the_rate_everywhere_is_minus_50_percent():
    halved = [r / 2 for r in RATES]
    assert bd_rate(**_kw(RATES, PSNRS, halved, PSNRS)).value == pytest.approx(-50.0, abs=1e-6)
    # and the anchor against the test: twice the rate, +100 %
    assert bd_rate(**_kw(halved, PSNRS, RATES, PSNRS)).value == pytest.approx(100.0, abs=1e-6)
    # a better test curve has a positive BD-PSNR
    assert bd_psnr(**_kw(RATES, PSNRS, halved, PSNRS)).value > 0


def _numerical(x_a, y_a, x_t, y_t, samples=200_001):
    """The same definition evaluated another way: dense samples of each cubic fit, trapezoid rule."""
    lo, hi = max(min(x_a), min(x_t)), min(max(x_a), max(x_t))
    grid = np.linspace(lo, hi, samples)
    diff = np.polyval(np.polyfit(x_t, y_t, 3), grid) - np.polyval(np.polyfit(x_a, y_a, 3), grid)
    return float(np.sum((diff[1:] + diff[:-1]) / 2 * np.diff(grid)) / (hi - lo))


# Published inputs without a printed result: "Sample" curves of the widely circulated VCEG-M33 Python scripts
# (kbit/s, dB) and "Test 1" of the FAU-LMS bjontegaard package README. No primary source prints the cubic
# result for them, so the reference here is an independent numerical evaluation of the VCEG-M33 formula.
PUBLISHED = [
    ([686.76, 309.58, 157.11, 85.95], [40.28, 37.18, 34.24, 31.42], [893.34, 407.8, 204.93, 112.75], [40.39, 37.21, 34.17, 31.24]),
    ([9487.76, 4593.60, 2486.44, 1358.24], [40.037, 38.615, 36.845, 34.851], [9787.80, 4469.00, 2451.52, 1356.24],
     [40.121, 38.651, 36.970, 34.987]),
]  # fmt: skip


@pytest.mark.parametrize("curves", PUBLISHED)
def test_published_curves_match_an_independent_evaluation(curves):
    ar, ap, tr, tp = curves
    rate = bd_rate(**_kw(ar, ap, tr, tp)).value
    assert rate == pytest.approx(100 * math.expm1(_numerical(ap, np.log(ar), tp, np.log(tr))), abs=1e-6)
    assert bd_psnr(**_kw(ar, ap, tr, tp)).value == pytest.approx(_numerical(np.log(ar), ap, np.log(tr), tp), abs=1e-6)
    # swapping the curves inverts the rate ratio
    swapped = bd_rate(**_kw(tr, tp, ar, ap)).value
    assert (1 + rate / 100) * (1 + swapped / 100) == pytest.approx(1, abs=1e-3)


def test_fewer_points_lower_the_degree_and_one_point_gives_a_reason():
    halved = [r / 2 for r in RATES]
    three = bd_rate(**_kw(RATES[:3], PSNRS[:3], halved[:3], PSNRS[:3]))
    two = bd_rate(**_kw(RATES[:2], PSNRS[:2], halved[:2], PSNRS[:2]))
    assert (three.degree, two.degree) == (2, 1) and three.value == pytest.approx(-50) and two.value == pytest.approx(-50)
    one = bd_rate(**_kw(RATES[:1], PSNRS[:1], RATES, PSNRS))
    assert one.value is None and "fewer than 2" in one.reason


def test_disjoint_curves_give_none_with_a_reason():
    result = bd_rate(**_kw(RATES, PSNRS, RATES, [p + 50 for p in PSNRS]))
    assert result.value is None and result.reason == "the curves do not overlap" and result.interval is None
    assert bd_psnr(**_kw(RATES, PSNRS, [r * 100 for r in RATES], PSNRS)).value is None


def test_lossless_points_are_left_out():
    capped = [*PSNRS[:3], LOSSLESS_PSNR]
    result = bd_psnr(**_kw(RATES, capped, RATES, [p + 1 for p in capped]))
    assert result.excluded == (1, 1) and result.points == (3, 3) and result.degree == 2
    assert result.value == pytest.approx(1.0, abs=1e-6)  # the remaining points keep the 1 dB shift
    one_sided = bd_psnr(**_kw(RATES, capped, RATES, PSNRS))
    assert one_sided.excluded == (1, 0) and one_sided.interval == pytest.approx((0.3, 1.2)) and abs(one_sided.value) < 0.5
    # A file that restores integer grey levels exactly is off by the source's float32 rounding only (164 dB on a
    # BraTS slice): lossless too, whatever its finite PSNR; a lossy 16-bit point (107 dB) is kept.
    rounded = bd_psnr(**_kw(RATES, PSNRS, RATES, [*PSNRS[:3], 164.4]))
    assert rounded.excluded == (0, 1) and rounded.points == (4, 3)
    assert bd_psnr(**_kw(RATES, PSNRS, RATES, [*PSNRS[:3], 107.0])).excluded == (0, 0)


@pytest.mark.parametrize(
    "kw, match",
    [
        (_kw([1, 2], [30], [1, 2], [30, 31]), "anchor: rate and psnr"),
        (_kw([1, 0], [30, 31], [1, 2], [30, 31]), "anchor_rate"),
        (_kw([1, 2], [30, 31], [1, float("nan")], [30, 31]), "test_rate"),
        (_kw([1, 2], [30, 31], [1, 2], [30, float("nan")]), "test_psnr"),
    ],
)
def test_bad_curves_are_refused(kw, match):
    with pytest.raises(InputError, match=match):
        bd_rate(**kw)


def _records(method, image, rates, psnrs):
    return [{"method": method, "image_id": image, "target_bpp": t, "bpp_file": r, "psnr": p}
            for t, r, p in zip(RATES, rates, psnrs, strict=True)]  # fmt: skip


def test_benchmark_deltas_per_image_mean_and_mean_curve():
    records = (_records("jpeg2000", "a", RATES, PSNRS) + _records("jpeg2000", "b", RATES, [p - 3 for p in PSNRS])
               + _records("coin", "a", RATES, [p + 1 for p in PSNRS]) + _records("coin", "b", RATES, [p - 1 for p in PSNRS]))  # fmt: skip
    out = benchmark_deltas(records, methods=("coin", "jpeg2000"), anchor="jpeg2000")
    coin = out["methods"]["coin"]
    assert coin["per_image"]["a"]["bd_psnr"]["value"] == pytest.approx(1.0, abs=1e-6)
    assert coin["per_image"]["b"]["bd_psnr"]["value"] == pytest.approx(2.0, abs=1e-6)
    assert coin["mean"]["bd_psnr"] == pytest.approx({"mean": 1.5, "std": 0.5, "n": 2}, abs=1e-6)
    assert coin["mean_curve"]["bd_psnr"]["value"] == pytest.approx(1.5, abs=1e-6)  # the mean curves are 1.5 dB apart
    assert out["methods"]["jpeg2000"]["mean"]["bd_rate"]["mean"] == pytest.approx(0, abs=1e-9)
    with pytest.raises(InputError, match="--anchor 'jpeg'"):
        benchmark_deltas(records, methods=("coin",), anchor="jpeg")


def test_mean_curve_drops_a_rate_where_an_image_is_lossless():
    points = {"a": [(t, r, p) for t, r, p in zip(RATES, RATES, PSNRS, strict=True)],
              "b": [(t, r, p) for t, r, p in zip(RATES, RATES, [*PSNRS[:3], LOSSLESS_PSNR], strict=True)]}  # fmt: skip
    assert mean_curve(points, ["a", "b"]) == (RATES[:3], PSNRS[:3])
    assert mean_curve(points, ["a"]) == (RATES, PSNRS)


def test_a_lambda_sweep_gets_one_curve_per_lambda():
    from sinco.benchmark.bjontegaard import bjontegaard_section
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.methods import method_label

    def swept(lam, shift):
        return [{**r, "lam_setting": lam} for r in _records("sinco-siren", "a", RATES, [p + shift for p in PSNRS])]

    records = _records("jpeg2000", "a", RATES, PSNRS) + swept(0.0, -1.0) + swept(1.0, -4.0)
    config = BenchmarkConfig(data=".", seg_model="seg.pt", methods=("sinco-siren", "jpeg2000"), bpps=tuple(RATES), lam=0.0, lams=(0.0, 1.0))
    out = bjontegaard_section(records, config)
    assert set(out["methods"]) == {"sinco-siren@0", "sinco-siren@1", "jpeg2000"}
    assert out["methods"]["sinco-siren@0"]["mean_curve"]["bd_psnr"]["value"] == pytest.approx(-1.0, abs=1e-6)
    assert out["methods"]["sinco-siren@1"]["mean_curve"]["bd_psnr"]["value"] == pytest.approx(-4.0, abs=1e-6)
    assert method_label("sinco-siren@1") == "SINCO (SIREN), lambda 1"

