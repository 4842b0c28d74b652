"""The Markdown table of a benchmark run (``table.md``): the paper's Table 1 for this run, and the Bjontegaard deltas."""

from __future__ import annotations

import math
from collections import defaultdict
from typing import Any

import numpy as np

from sinco.benchmark.bjontegaard import LOSSLESS_PSNR
from sinco.benchmark.frontier import paired_table
from sinco.benchmark.methods import codec_methods, is_regularized, method_label
from sinco.benchmark.results import rows_by_method

#: A row's PSNR this close (dB) to its codec's bit-depth ceiling is marked: the rounding to that depth is then at least
#: half of its error (the two errors add: at the ceiling minus 3 dB they are equal).
CEILING_MARGIN = 3.0

# The paper's Table 1: means over 10 Decathlon Task01 test slices at 1.2 bpp, 50,000 steps.
PAPER_TABLE_1 = {
    "coin": (34.49, 0.907, 0.892),
    "vanilla-inr": (35.18, 0.923, 0.877),
    "sinco-siren": (34.93, 0.915, 0.894),
    "sinco-inr": (35.69, 0.952, 0.895),
}


def _stat(values: list[float | None], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, std = float(np.mean(values)), float(np.std(values))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _psnr_cell(values: list[float | None], digits: int) -> str:
    """:func:`_stat` of the lossy files' PSNR, with the count of exact ones (their 999 dB, or float32 rounding's
    ~160 dB, would make a mean of nothing): "lossless" when every file is exact."""
    exact = sum(1 for v in values if v is not None and v >= LOSSLESS_PSNR)
    lossy = [v for v in values if v is None or v < LOSSLESS_PSNR]
    if not exact:
        return _stat(values, digits)
    return "lossless" if not lossy else f"{_stat(lossy, digits)} ({exact} lossless)"


def _describe_fits(config: Any) -> str:
    described: dict[str, str] = {}
    for method in config.methods:
        if method in codec_methods():
            family = codec_methods()[method][0]
            described.setdefault(family.name, f"{family.describe_fit(config.fit_config(method))} for {family.name}")
    return "; ".join(described.values()) or "no codec family"


def _regularized_data_terms(config: Any) -> str:
    """The data terms the regularized methods were fitted with (as their fitting configurations resolved them), e.g. ``sse``."""
    terms = {getattr(config.fit_config(m), "data_term", None) for m in config.methods if is_regularized(m)}
    return ", ".join(sorted(t for t in terms if t))


def _regularizer_lines(config: Any) -> list[str]:
    """The regularizer's settings, for the table's preamble."""
    terms = _regularized_data_terms(config)
    parts = ([f"data term `{terms}`"] if terms else []) + [f"target `{config.seg_target}`"]
    if config.ensemble:
        parts.append(f"ensemble of {1 + len(config.ensemble)} loss networks ({', '.join(f'`{e}`' for e in config.ensemble)} added)")
    if config.seg_perturb:
        parts.append(f"Dice term averaged over {config.seg_perturb} input perturbations per step")
    return ["Regularizer: " + ", ".join(parts) + ".", ""]


def make_table(records: list[dict[str, Any]], config: Any, *, bjontegaard: dict[str, Any] | None) -> str:
    """Markdown table: mean ± standard deviation of PSNR, SSIM, MS-SSIM, the ROI figures and Dice per method and rate.

    The paper's figures stand beside the whole-slice ones; the Dice columns appear only when the
    run had a segmentation model. Then the section "Bjontegaard deltas against <anchor>" (or, with one
    target rate, a line saying why there is none).

    Args:
        records: benchmark records.
        config: the :class:`~sinco.benchmark.config.BenchmarkConfig`.
        bjontegaard: the deltas of :func:`sinco.benchmark.bjontegaard.bjontegaard_section` (``None``: one rate).

    Returns:
        The Markdown text.
    """
    images = sorted({r["image_id"] for r in records})
    lines = [
        "# Benchmark",
        "",
        f"Data `{config.data}`, cases `{config.cases}`, {len(images)} test slices; fitting (preset `{config.preset or 'each family default'}`): "
        f"{_describe_fits(config)}; SINCO lambda {', '.join(f'{v:g}' for v in config.lam_values)} "
        f"(regularizer every {config.reg_every} step(s)), seed {config.seed}; segmentation model "
        + (f"`{config.seg_model}`." if config.seg_model is not None else "none (no Dice)."),
        "",
        "Metrics are measured on the decoded files (INR: fp16 weights); `bpp (file)` is 8 x file bytes / pixels, header "
        "included; `bpp (params)` is the paper's 16 x parameters / pixels. Mean ± standard deviation over the slices. "
        "`PSNR ROI` and `SSIM ROI` are measured inside "
        + (f"each case's mask `{config.roi_glob}`" if config.roi_glob else "the head found automatically (`sinco.metrics.roi.head_mask`)")
        + ": the MSE over its pixels, and the mean of the SSIM map over its pixels. MS-SSIM is MONAI's (5 scales from "
        "176 x 176 pixels, fewer on smaller slices).",
        "",
        *(_regularizer_lines(config) if config.seg_model is not None else []),
    ]
    with_dice = config.seg_model is not None
    judge = config.eval_seg_model
    binding: dict[int, float] = {}  # bit depth -> PSNR ceiling, of the rows it binds
    by_rate: dict[float, dict[str, list[dict[str, Any]]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        by_rate[float(r["target_bpp"])][r["method"]].append(r)
    for bpp in sorted(by_rate):
        rows = by_rate[bpp]
        lines += [f"## Target {bpp:g} bpp", ""]
        header = ["method", "n", "bpp (file)", "bpp (params)", "PSNR (dB)", "paper PSNR", "SSIM", "paper SSIM", "MS-SSIM",
                  "PSNR ROI (dB)", "SSIM ROI"] + (["Dice (loss network)", "Dice (independent)", "paper Dice"] if with_dice else [])  # fmt: skip
        lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        if with_dice:
            reference = {r["image_id"]: r.get("dice_reference") for rs in rows.values() for r in rs}
            judged = {r["image_id"]: r["dice_eval_reference"] for rs in rows.values() for r in rs if "dice_eval_reference" in r}
            cells = (["uncompressed (reference)", str(len(reference))] + ["-"] * 9
                     + [_stat(list(reference.values()), 3), _stat(list(judged.values()), 3) if judge else "no judge", ""])  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        for method, lam, rs in rows_by_method(config, [r for group in rows.values() for r in group]):
            paper = PAPER_TABLE_1.get(method) if math.isclose(bpp, 1.2) and lam is None else None
            over = sum(1 for r in rs if r.get("within_budget") is False)
            label = method_label(method, lam) + (f" ({over} over budget)" if over else "") + _ceiling_note(rs, binding)
            params = [r["bpp_params"] for r in rs if r["bpp_params"] is not None]
            paper_cells = [f"{v:g}" for v in paper] if paper else ["", "", ""]
            cells = [
                label, str(len(rs)), _stat([r["bpp_file"] for r in rs], 3), _stat(params, 3) if params else "-",
                _psnr_cell([r["psnr"] for r in rs], 2), paper_cells[0], _stat([r["ssim"] for r in rs], 3), paper_cells[1],
                _stat([r.get("ms_ssim") for r in rs], 3), _psnr_cell([r.get("psnr_roi") for r in rs], 2),
                _stat([r.get("ssim_roi") for r in rs], 3),
            ] + ([_stat([r.get("dice") for r in rs], 3), _stat([r.get("dice_eval") for r in rs], 3) if judge else "no judge",
                  paper_cells[2]] if with_dice else [])  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if binding:
        ceilings = ", ".join(f"{depth}-bit {value:.1f} dB" for depth, value in sorted(binding.items()))
        lines += [
            f"Rows marked `(at the b-bit ceiling)` have a mean PSNR within {CEILING_MARGIN:g} dB of the PSNR their codec's "
            f"b-bit samples allow ({ceilings}: rounding to b bits alone gives MSE = 1 / (12 (2^b - 1)^2)): at least half of "
            "their error is that rounding, so more rate buys them little PSNR.",
            "",
        ]
    lines += [
        "The `paper` columns are the SINCO paper's Table 1 (their test slices, Decathlon Task01, 1.2 bpp, 50,000 steps), "
        "printed beside ours for reference; they are not measured by this run.",
        "",
    ]
    lines += _bjontegaard_lines(bjontegaard)
    if with_dice:
        lines += [
            "`Dice (loss network)` is measured by the network the SINCO regularizer optimized against, which an adversarial "
            "reconstruction can fool; " + (f"`Dice (independent)` by the judge `{judge}`, a network the fit never used: "
            "conclusions rest on it." if judge else "no independent judge was given (`--eval-seg-model`), so no Dice here "
            "is independent of the loss."),
            "",
        ]  # fmt: skip
    if len(config.lam_values) > 1:
        lines.append(paired_table(records, config=config))
    return "\n".join(lines)


def _ceiling_note(rows: list[dict[str, Any]], binding: dict[int, float]) -> str:
    """`` (at the b-bit ceiling)`` where the rows' mean PSNR is within :data:`CEILING_MARGIN` of their codec's PSNR
    ceiling (recorded by classical codecs), and the ceiling then noted in ``binding``."""
    ceilings = {(r["bit_depth"], r["psnr_ceiling"]) for r in rows if r.get("psnr_ceiling") is not None}
    if len(ceilings) != 1:
        return ""
    depth, ceiling = ceilings.pop()
    psnrs = [r["psnr"] for r in rows]
    if max(psnrs) >= LOSSLESS_PSNR or float(np.mean(psnrs)) < ceiling - CEILING_MARGIN:  # exact files reach no ceiling
        return ""
    binding[int(depth)] = float(ceiling)
    return f" (at the {depth}-bit ceiling)"


def _delta_cell(delta: dict[str, Any], digits: int, unit: str) -> str:
    if delta["value"] is None:
        return f"- ({delta['reason']})"
    note = "" if delta["degree"] == 3 else f" (degree {delta['degree']})"
    return f"{delta['value']:+.{digits}f}{unit}{note}"


def _summary_cell(summary: dict[str, Any], digits: int, unit: str, n_images: int) -> str:
    if summary["n"] == 0:
        return "- (no image has one, see below)"
    missing = f" ({n_images - summary['n']} image(s) without)" if summary["n"] < n_images else ""
    return f"{summary['mean']:+.{digits}f} ± {summary['std']:.{digits}f}{unit}{missing}"


def _bjontegaard_lines(deltas: dict[str, Any] | None) -> list[str]:
    """The Markdown section of the Bjontegaard deltas (see :func:`sinco.benchmark.bjontegaard.bjontegaard_section`): the
    deltas against the anchor, with BD-rate columns against each further reference (``also``)."""
    if deltas is None:
        return ["No Bjontegaard deltas: this run has one target rate (give several, e.g. `--bpp 0.3,0.6,1.2,2.0`).", ""]
    missing = [method_label(m) for m in deltas.get("missing", [])]
    not_run = f"{' and '.join(missing)} ran no record here (see the warnings of the run). " if missing else ""
    if deltas["anchor"] is None:
        return [f"No Bjontegaard deltas: {not_run or deltas['reason']}", ""]
    anchor = method_label(deltas["anchor"])
    also = deltas.get("also", {})
    lines = [
        f"## Bjontegaard deltas against {anchor}",
        "",
        f"{not_run}BD-rate: average rate change at equal PSNR (negative: fewer bits than {anchor}); BD-PSNR: average PSNR "
        f"change at equal rate (positive: better than {anchor}). Each image's curve is its records' file bpp and PSNR; fit: "
        f"{deltas['fit']}; {deltas['excluded']}. `per image` is the mean ± standard deviation of the images' deltas, "
        "`mean curves` the delta of the method's mean curve (mean bpp and PSNR at each target rate where no image is "
        "lossless) against the anchor's. A degree below 3 means fewer distinct points were left."
        + "".join(f" The last columns give BD-rate against {method_label(a)} the same way." for a in also),
        "",
    ]
    header = ["method", "BD-rate per image (%)", "BD-PSNR per image (dB)", "BD-rate mean curves (%)", "BD-PSNR mean curves (dB)"]
    for a in also:
        header += [f"BD-rate vs {method_label(a)} per image (%)", f"BD-rate vs {method_label(a)} mean curves (%)"]
    lines += ["| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
    for method, d in deltas["methods"].items():
        n = len(d["per_image"])
        cells = [method_label(method), _summary_cell(d["mean"]["bd_rate"], 1, "", n), _summary_cell(d["mean"]["bd_psnr"], 2, "", n),
                 _delta_cell(d["mean_curve"]["bd_rate"], 1, ""), _delta_cell(d["mean_curve"]["bd_psnr"], 2, "")]  # fmt: skip
        for section in also.values():
            other = section["methods"].get(method)
            cells += ["-", "-"] if other is None else [_summary_cell(other["mean"]["bd_rate"], 1, "", len(other["per_image"])),
                                                       _delta_cell(other["mean_curve"]["bd_rate"], 1, "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    images = sorted({i for d in deltas["methods"].values() for i in d["per_image"]})
    lines += ["", f"Per image, BD-rate (%) / BD-PSNR (dB) against {anchor}:", "", "| method | " + " | ".join(f"`{i}`" for i in images) + " |",
              "|" + " --- |" * (len(images) + 1)]  # fmt: skip
    for method, d in deltas["methods"].items():
        cells = [method_label(method)]
        for image in images:
            pair = d["per_image"].get(image)
            cells.append("-" if pair is None else f"{_delta_cell(pair['bd_rate'], 1, '')} / {_delta_cell(pair['bd_psnr'], 2, '')}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]
