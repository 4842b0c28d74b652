"""Tables and figures of a benchmark run: the paper's Table 1 and Figures 3-4 for this run."""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from sinco.eval.benchmark import method_label
from sinco.eval.bjontegaard import LOSSLESS_PSNR

# The paper's Table 1: means over 10 Decathlon Task01 test slices at 1.2 bpp, 50,000 steps.
PAPER_TABLE_1 = {
    "coin": (34.49, 0.907, 0.892),
    "vanilla-inr": (35.18, 0.923, 0.877),
    "sinco-siren": (34.93, 0.915, 0.894),
    "sinco-inr": (35.69, 0.952, 0.895),
}
CLASSICAL_LABELS = {"jpeg": "JPEG", "jpeg2000": "JPEG 2000", "jpegxl": "JPEG XL", "avif": "AVIF", "webp": "WebP"}


def _stat(values: list[float | None], digits: int) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    mean, std = float(np.mean(values)), float(np.std(values))
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def _describe_fits(config: Any) -> str:
    from sinco.eval.benchmark import codec_methods

    described: dict[str, str] = {}
    for method in config.methods:
        if method in codec_methods():
            family = codec_methods()[method][0]
            described.setdefault(family.name, f"{family.describe_fit(config.fit_config(method))} for {family.name}")
    return "; ".join(described.values()) or "no codec family"


def _label(method: str, lam: float | None = None) -> str:
    """A method's name in tables and figures, with its lambda when a sweep ran several."""
    return method_label(method) + ("" if lam is None else f", lambda {lam:g}")


def _rows(config: Any, records: list[dict[str, Any]]) -> list[tuple[str, float | None, list[dict[str, Any]]]]:
    """``(method, lam or None, records)`` per table row, in the configured order (``lam`` only in a sweep)."""
    rows = []
    for method in config.methods:
        lams = config.lams_of(method)
        for lam in lams:
            rs = [r for r in records if r["method"] == method and float(r.get("lam_setting", 0.0)) == float(lam)]
            if rs:
                rows.append((method, lam if len(lams) > 1 else None, rs))
    return rows


def _regularised_data_terms(config: Any) -> str:
    """The data terms the regularised methods were fitted with (as their fitting configurations resolved them), e.g. ``sse``."""
    from sinco.eval.benchmark import codec_methods

    methods = codec_methods()
    terms = {getattr(config.fit_config(m), "data_term", None) for m in config.methods if m in methods and methods[m][1].regularised}
    return ", ".join(sorted(t for t in terms if t))


def _regularizer_lines(config: Any) -> list[str]:
    """The regulariser's settings, for the table's preamble."""
    terms = _regularised_data_terms(config)
    parts = ([f"data term `{terms}`"] if terms else []) + [f"target `{config.seg_target}`"]
    if config.ensemble:
        parts.append(f"ensemble of {1 + len(config.ensemble)} loss networks ({', '.join(f'`{e}`' for e in config.ensemble)} added)")
    if config.seg_perturb:
        parts.append(f"Dice term averaged over {config.seg_perturb} input perturbations per step")
    return ["Regulariser: " + ", ".join(parts) + ".", ""]


def make_table(records: list[dict[str, Any]], config: Any, *, bjontegaard: dict[str, Any] | None = None) -> str:
    """Markdown table: mean ± standard deviation of PSNR, SSIM, MS-SSIM, the ROI figures and Dice per method and rate.

    The paper's figures stand beside the whole-slice ones; the Dice columns appear only when the
    run had a segmentation model. Then the section "Bjontegaard deltas against <anchor>" (or, with one
    target rate, a line saying why there is none).

    Args:
        records: benchmark records.
        config: the :class:`~sinco.eval.benchmark.BenchmarkConfig`.
        bjontegaard: the deltas of :func:`sinco.eval.benchmark.bjontegaard_section` (``None``: computed here).

    Returns:
        The Markdown text.
    """
    images = sorted({r["image_id"] for r in records})
    lines = [
        "# Benchmark",
        "",
        f"Data `{config.data}`, cases `{config.cases}`, {len(images)} test slices; fitting (preset `{config.preset or 'each family default'}`): "
        f"{_describe_fits(config)}; SINCO lambda {', '.join(f'{v:g}' for v in config.lam_values)} "
        f"(regulariser every {config.reg_every} step(s)), seed {config.seed}; segmentation model "
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
        for method, lam, rs in _rows(config, [r for group in rows.values() for r in group]):
            paper = PAPER_TABLE_1.get(method) if math.isclose(bpp, 1.2) and lam is None else None
            over = sum(1 for r in rs if r.get("within_budget") is False)
            label = _label(method, lam) + (f" ({over} over budget)" if over else "")
            params = [r["bpp_params"] for r in rs if r["bpp_params"] is not None]
            paper_cells = [f"{v:g}" for v in paper] if paper else ["", "", ""]
            cells = [
                label, str(len(rs)), _stat([r["bpp_file"] for r in rs], 3), _stat(params, 3) if params else "-",
                _stat([r["psnr"] for r in rs], 2), paper_cells[0], _stat([r["ssim"] for r in rs], 3), paper_cells[1],
                _stat([r.get("ms_ssim") for r in rs], 3), _stat([r.get("psnr_roi") for r in rs], 2),
                _stat([r.get("ssim_roi") for r in rs], 3),
            ] + ([_stat([r.get("dice") for r in rs], 3), _stat([r.get("dice_eval") for r in rs], 3) if judge else "no judge",
                  paper_cells[2]] if with_dice else [])  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    lines += [
        "The `paper` columns are the SINCO paper's Table 1 (their test slices, Decathlon Task01, 1.2 bpp, 50,000 steps), "
        "printed beside ours for reference; they are not measured by this run.",
        "",
    ]
    if bjontegaard is None:
        from sinco.eval.benchmark import bjontegaard_section

        bjontegaard = bjontegaard_section(records, config)
    lines += _bjontegaard_lines(bjontegaard)
    if with_dice:
        lines += [
            "`Dice (loss network)` is measured by the network the SINCO regulariser optimised against, which an adversarial "
            "reconstruction can fool; " + (f"`Dice (independent)` by the judge `{judge}`, a network the fit never used: "
            "conclusions rest on it." if judge else "no independent judge was given (`--eval-seg-model`), so no Dice here "
            "is independent of the loss."),
            "",
        ]  # fmt: skip
    if len(config.lam_values) > 1:
        from sinco.eval.frontier import paired_table

        lines.append(paired_table(records, config=config))
    return "\n".join(lines)


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
    """The Markdown section of the Bjontegaard deltas (see :func:`sinco.eval.bjontegaard.benchmark_deltas`)."""
    if deltas is None:
        return ["No Bjontegaard deltas: this run has one target rate (give several, e.g. `--bpp 0.3,0.6,1.2,2.0`).", ""]
    anchor = method_label(deltas["anchor"])
    lines = [
        f"## Bjontegaard deltas against {anchor}",
        "",
        f"BD-rate: average rate change at equal PSNR (negative: fewer bits than {anchor}); BD-PSNR: average PSNR change at "
        f"equal rate (positive: better than {anchor}). Each image's curve is its records' file bpp and PSNR; fit: "
        f"{deltas['fit']}; {deltas['excluded']}. `per image` is the mean ± standard deviation of the images' deltas, "
        "`mean curves` the delta of the method's mean curve (mean bpp and PSNR at each target rate where no image is "
        "lossless) against the anchor's. A degree below 3 means fewer distinct points were left.",
        "",
        "| method | BD-rate per image (%) | BD-PSNR per image (dB) | BD-rate mean curves (%) | BD-PSNR mean curves (dB) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for method, d in deltas["methods"].items():
        n = len(d["per_image"])
        cells = [method_label(method), _summary_cell(d["mean"]["bd_rate"], 1, "", n), _summary_cell(d["mean"]["bd_psnr"], 2, "", n),
                 _delta_cell(d["mean_curve"]["bd_rate"], 1, ""), _delta_cell(d["mean_curve"]["bd_psnr"], 2, "")]  # fmt: skip
        lines.append("| " + " | ".join(cells) + " |")
    images = sorted({i for d in deltas["methods"].values() for i in d["per_image"]})
    lines += ["", "Per image, BD-rate (%) / BD-PSNR (dB):", "", "| method | " + " | ".join(f"`{i}`" for i in images) + " |",
              "|" + " --- |" * (len(images) + 1)]  # fmt: skip
    for method, d in deltas["methods"].items():
        cells = [method_label(method)]
        for image in images:
            pair = d["per_image"].get(image)
            cells.append("-" if pair is None else f"{_delta_cell(pair['bd_rate'], 1, '')} / {_delta_cell(pair['bd_psnr'], 2, '')}")
        lines.append("| " + " | ".join(cells) + " |")
    return [*lines, ""]


def _load_reference(config: Any, record: dict[str, Any]) -> tuple[np.ndarray, np.ndarray | None]:
    from sinco.data.datasets import discover_cases, load_case_volumes
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import select_slice

    cases = {c.case_id: c for c in discover_cases(config.data, layout=config.layout, image_glob=config.image_glob,
                                                   label_glob=config.label_glob, channel=config.channel)}  # fmt: skip
    image_vol, label_vol = load_case_volumes(cases[record["case"]])
    image, _, _ = normalize_minmax(select_slice(image_vol, slice_index=record["slice"]))
    mask = None if label_vol is None else (select_slice(label_vol, slice_index=record["slice"]) > 0).astype(np.uint8)
    return image, mask


def _decode_record(outdir: Path, record: dict[str, Any]) -> np.ndarray:
    from sinco.baselines.classical import get_codec
    from sinco.codec.files import decode_file

    data = (outdir / record["file"]).read_bytes()
    return decode_file(data)[1] if record["file"].endswith(".sinco") else get_codec(record["method"]).decode(data)


def make_figures(outdir: Path, records: list[dict[str, Any]], *, config: Any, seg_model: Any, max_images: int = 2) -> list[Path]:
    """The paper's Figures 3 and 4 for this run, error maps, and a rate-distortion plot.

    For the first ``max_images`` test slices at the first target rate: ``figure_<id>.png`` (ground
    truth and each method's reconstruction with PSNR/ROI PSNR/SSIM/Dice in the corner; below, with a
    segmentation model, the predicted mask in red over the ground-truth outline in green) and
    ``errors_<id>.png`` (absolute error). With several rates, ``rate_distortion.png`` (mean PSNR,
    and Dice or without a segmentation model ROI PSNR, against mean file bpp; every method, a rate where
    one of its files is lossless left out).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinco.utils.atomic import atomic_path

    written: list[Path] = []
    bpp = float(config.bpps[0])
    order = list(dict.fromkeys(r["image_id"] for r in records))
    for image_id in order[:max_images]:
        mine = [r for r in records if r["image_id"] == image_id and float(r["target_bpp"]) == bpp]
        # One column per method, and per lambda in a sweep: the labels are the keys.
        rs = {_label(method, lam): group[0] for method, lam, group in _rows(config, mine)}
        methods = list(rs)
        if not methods:
            continue
        image, mask = _load_reference(config, rs[methods[0]])
        recons = {m: _decode_record(outdir, rs[m]) for m in methods}
        with_seg = seg_model is not None and mask is not None
        if with_seg:
            masks = {"ground truth": seg_model.predict(image), **{m: seg_model.predict(recons[m]) for m in methods}}
        columns = ["ground truth", *methods]
        fig, axes = plt.subplots(2 if with_seg else 1, len(columns), figsize=(2.4 * len(columns), 5.2 if with_seg else 2.8), squeeze=False)
        for j, col in enumerate(columns):
            shown = image if col == "ground truth" else recons[col]
            axes[0, j].imshow(shown, cmap="gray", vmin=0, vmax=1)
            title = col
            axes[0, j].set_title(title, fontsize=9)
            if col == "ground truth":
                text = f"Dice {rs[methods[0]]['dice_reference']:.3f}" if with_seg else ""
            else:
                r = rs[col]
                roi = f"\nROI {r['psnr_roi']:.2f} dB" if r.get("psnr_roi") is not None else ""
                dice_text = f"\nDice {r['dice']:.3f}" if with_seg else ""
                text = f"{r['psnr']:.2f} dB{roi}\nSSIM {r['ssim']:.3f}{dice_text}\n{r['bpp_file']:.3f} bpp"
            axes[0, j].text(0.02, 0.98, text, transform=axes[0, j].transAxes, va="top", ha="left", fontsize=7, color="yellow")
            if not with_seg:
                axes[0, j].set_axis_off()
                continue
            axes[1, j].imshow(shown, cmap="gray", vmin=0, vmax=1)
            overlay = np.zeros((*mask.shape, 4))
            overlay[masks[col] > 0] = (1, 0, 0, 0.45)
            axes[1, j].imshow(overlay)
            axes[1, j].contour(mask, levels=[0.5], colors="lime", linewidths=0.6)
            for ax in axes[:, j]:
                ax.set_axis_off()
        fig.suptitle(f"{image_id} at {bpp:g} bpp: reconstructions" + (" (top), predicted mask in red, ground truth outlined (bottom)"
                     if with_seg else ""), fontsize=9)  # fmt: skip
        fig.tight_layout()
        written.append(_save(fig, outdir / f"figure_{image_id.replace(':', '_')}.png", atomic_path))
        plt.close(fig)

        errors = {m: np.abs(recons[m] - image) for m in methods}
        top = max(float(np.percentile(e, 99.5)) for e in errors.values()) or 1.0
        fig, axes = plt.subplots(1, len(methods), figsize=(2.4 * len(methods) + 0.6, 2.8), squeeze=False)
        for j, m in enumerate(methods):
            im = axes[0, j].imshow(errors[m], cmap="magma", vmin=0, vmax=top)
            axes[0, j].set_title(f"{m}\nmean |err| {errors[m].mean():.4f}", fontsize=8)
            axes[0, j].set_axis_off()
        fig.colorbar(im, ax=axes[0, :].tolist(), shrink=0.8)
        fig.suptitle(f"{image_id}: absolute error at {bpp:g} bpp (intensities scaled to [0, 1])", fontsize=9)
        written.append(_save(fig, outdir / f"errors_{image_id.replace(':', '_')}.png", atomic_path))
        plt.close(fig)

    if len(config.bpps) > 1:
        with_dice = all(r.get("dice") is not None for r in records)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        # More methods than the colour cycle: marker and line style keep every curve apart.
        styles = [(m, s) for s in ("-", "--", ":") for m in "os^vDP*X"]
        for k, (method, lam, group) in enumerate(_rows(config, records)):
            points = []
            for b in config.bpps:
                rs = [r for r in group if float(r["target_bpp"]) == float(b)]
                # A lossless file (stored at 999 dB, or ~160 dB within float32 rounding) would flatten every other curve.
                if rs and all(r["psnr"] < LOSSLESS_PSNR for r in rs):
                    points.append((np.mean([r["bpp_file"] for r in rs]), np.mean([r["psnr"] for r in rs]),
                                   np.mean([r["dice"] for r in rs]) if with_dice else np.mean([r["psnr_roi"] for r in rs])))  # fmt: skip
            if points:
                x, p, d = zip(*sorted(points), strict=True)
                marker, line = styles[k % len(styles)]
                axes[0].plot(x, p, marker=marker, linestyle=line, label=_label(method, lam))
                axes[1].plot(x, d, marker=marker, linestyle=line, label=_label(method, lam))
        axes[0].set(xlabel="bpp (file)", ylabel="PSNR (dB)", title="rate-distortion")
        if with_dice:
            axes[1].set(xlabel="bpp (file)", ylabel="Dice", title="rate-segmentation")
        else:
            axes[1].set(xlabel="bpp (file)", ylabel="PSNR ROI (dB)", title="rate-distortion inside the ROI")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        written.append(_save(fig, outdir / "rate_distortion.png", atomic_path))
        plt.close(fig)
    return written


def _save(fig: Any, path: Path, atomic_path: Any) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
