"""Lambda sweeps of a benchmark: the Dice-PSNR frontier per method and paired tests against lambda = 0.

A structural term helps only if, at the same rate, it raises the Dice measured by an independent
network without costing PSNR; these are the figures and statistics that answer it.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np

from sinco.benchmark.methods import method_label
from sinco.errors import InputError


def dice_key(config: Any) -> str:
    """The record field conclusions rest on: the judge's Dice when there is a judge, else the loss network's."""
    return "dice_eval" if getattr(config, "eval_seg_model", None) else "dice"


def make_frontier(outdir: Path, records: list[dict[str, Any]], *, config: Any) -> Path:
    """``dice_vs_psnr.png``: mean Dice against mean PSNR, one panel per regularized method, one line per rate.

    Each point is one lambda of the sweep (labelled); the Dice is the independent judge's when the run had
    one (else the loss network's, and the axis says so).

    Args:
        outdir: the benchmark's folder.
        records: its records.
        config: the :class:`~sinco.benchmark.config.BenchmarkConfig`.

    Returns:
        The path written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinco.benchmark.figures import save_figure
    from sinco.utils.atomic import atomic_path

    key = dice_key(config)
    methods = [m for m in config.methods if len(config.lams_of(m)) > 1] or list(config.methods)
    fig, axes = plt.subplots(1, len(methods), figsize=(4.6 * len(methods), 4), squeeze=False)
    for ax, method in zip(axes[0], methods, strict=True):
        for bpp in config.bpps:
            points = []
            for lam in config.lams_of(method):
                rs = [r for r in records if r["method"] == method and float(r["target_bpp"]) == float(bpp)
                      and float(r.get("lam_setting", 0.0)) == float(lam) and key in r]  # fmt: skip
                if rs:
                    points.append((lam, float(np.mean([r["psnr"] for r in rs])), float(np.mean([r[key] for r in rs]))))
            if not points:
                continue
            _, x, y = zip(*points, strict=True)
            ax.plot(x, y, marker="o", label=f"{bpp:g} bpp")
            for lam, px, py in points:
                ax.annotate(f"λ={lam:g}", (px, py), fontsize=7, xytext=(3, 3), textcoords="offset points")
        ylabel = "Dice (independent judge)" if key == "dice_eval" else "Dice (loss network: no judge given)"
        ax.set(xlabel="PSNR (dB)", ylabel=ylabel, title=method_label(method))
        ax.legend(fontsize=7)
    fig.suptitle("Dice against PSNR over the lambda sweep (means over the test slices)", fontsize=9)
    fig.tight_layout()
    path = save_figure(fig, outdir / "dice_vs_psnr.png", atomic_path)
    plt.close(fig)
    return path


def paired_comparison(
    records: list[dict[str, Any]], *, method: str, bpp: float, lam: float, baseline: tuple[str, float], metric: str
) -> dict[str, Any]:
    """Paired difference of ``metric`` between a setting and a baseline over the slices both ran on.

    Args:
        records: benchmark records.
        method: the method of the setting.
        bpp: the target rate (both sides).
        lam: the setting's lambda.
        baseline: ``(method, lam)`` of the baseline (e.g. ``("coin", 0.0)`` or ``(method, 0.0)``).
        metric: a record field, e.g. ``"dice_eval"`` or ``"psnr"``.

    Returns:
        ``n``, ``mean`` and ``std`` (sample, ``ddof=1``) of the per-slice differences (setting minus
        baseline), and the two-sided p-values of the Wilcoxon signed-rank test (``p_wilcoxon``) and of
        the paired t-test (``p_ttest``); ``nan`` where a test is undefined (fewer than 2 pairs, or all
        differences zero).

    Raises:
        InputError: if no slice has both records.
    """
    from scipy import stats

    def pick(m: str, lam_value: float) -> dict[str, float]:
        return {r["image_id"]: float(r[metric]) for r in records if r["method"] == m and float(r["target_bpp"]) == float(bpp)
                and float(r.get("lam_setting", 0.0)) == float(lam_value) and metric in r}  # fmt: skip

    mine, base = pick(method, lam), pick(*baseline)
    common = sorted(set(mine) & set(base))
    if not common:
        raise InputError(
            f"no slice has both {method} lambda {lam:g} and {baseline[0]} lambda {baseline[1]:g} at {bpp:g} bpp ({metric})"
        )
    diff = np.array([mine[i] - base[i] for i in common])
    out: dict[str, Any] = {"n": len(common), "mean": float(diff.mean()), "std": float(diff.std(ddof=1)) if len(diff) > 1 else math.nan,
                           "p_wilcoxon": math.nan, "p_ttest": math.nan}  # fmt: skip
    if len(diff) > 1 and np.any(diff != 0):
        out["p_wilcoxon"] = float(stats.wilcoxon(diff).pvalue)
        out["p_ttest"] = float(stats.ttest_1samp(diff, 0.0).pvalue)
    return out


def paired_table(records: list[dict[str, Any]], *, config: Any) -> str:
    """Markdown: every (regularized method, lambda > 0, rate) against the same method at lambda 0.

    Columns: the paired Dice difference (the judge's when there is one), the paired PSNR difference,
    and their Wilcoxon and t-test p-values. Empty when the sweep has no lambda 0.
    """
    key = dice_key(config)
    lines = []
    for method in config.methods:
        lams = config.lams_of(method)
        if 0.0 not in lams or len(lams) < 2:
            continue
        for bpp in config.bpps:
            for lam in (v for v in lams if v > 0):
                try:
                    d = paired_comparison(records, method=method, bpp=bpp, lam=lam, baseline=(method, 0.0), metric=key)
                    p = paired_comparison(records, method=method, bpp=bpp, lam=lam, baseline=(method, 0.0), metric="psnr")
                except InputError:
                    continue
                lines.append(f"| {method} | {bpp:g} | {lam:g} | {d['n']} | {d['mean']:+.4f} ± {d['std']:.4f} | {d['p_wilcoxon']:.3g} | "
                             f"{d['p_ttest']:.3g} | {p['mean']:+.2f} ± {p['std']:.2f} | {p['p_wilcoxon']:.3g} |")  # fmt: skip
    if not lines:
        return ""
    label = "Dice (independent)" if key == "dice_eval" else "Dice (loss network; no judge)"
    return "\n".join([
        "## Paired against lambda 0 (same method, rate and slices)", "",
        f"| method | target bpp | lambda | n | Δ {label} mean ± sd | p Wilcoxon | p t-test | Δ PSNR (dB) mean ± sd | p Wilcoxon (PSNR) |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |", *lines, "",
    ])  # fmt: skip
