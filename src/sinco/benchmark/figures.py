"""The figures of a benchmark run: the paper's Figures 3 and 4 (reconstructions, masks), error maps and the
rate-distortion plot."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from sinco.benchmark.bjontegaard import LOSSLESS_PSNR
from sinco.benchmark.methods import method_label
from sinco.benchmark.results import rows_by_method


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
    from sinco.classical.registry import get_codec
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
        rs = {method_label(method, lam): group[0] for method, lam, group in rows_by_method(config, mine)}
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
        written.append(save_figure(fig, outdir / f"figure_{image_id.replace(':', '_')}.png", atomic_path))
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
        written.append(save_figure(fig, outdir / f"errors_{image_id.replace(':', '_')}.png", atomic_path))
        plt.close(fig)

    if len(config.bpps) > 1:
        with_dice = all(r.get("dice") is not None for r in records)
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        plot_rate_distortion(axes[0], records, config=config, metric="psnr")
        plot_rate_distortion(axes[1], records, config=config, metric="dice" if with_dice else "psnr_roi")
        axes[0].set_title("rate-distortion")
        axes[1].set_title("rate-segmentation" if with_dice else "rate-distortion inside the ROI")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        written.append(save_figure(fig, outdir / "rate_distortion.png", atomic_path))
        plt.close(fig)
    return written


#: Axis labels of the metrics :func:`plot_rate_distortion` draws.
METRIC_LABELS = {"psnr": "PSNR (dB)", "psnr_roi": "PSNR ROI (dB)", "dice": "Dice", "ssim": "SSIM"}


def plot_rate_distortion(ax: Any, records: list[dict[str, Any]], *, config: Any, metric: str = "psnr",
                         order: list[str] | None = None) -> None:  # fmt: skip
    """One curve per method (and per lambda in a sweep) of ``metric`` against the mean file rate, on a matplotlib axis.

    A rate where one of a method's files is lossless is left out: its 999 dB (or ~160 dB within float32 rounding) would
    flatten every other curve.

    Args:
        ax: the matplotlib axis.
        records: benchmark records.
        config: their :class:`~sinco.benchmark.config.BenchmarkConfig`.
        metric: the record field on the vertical axis (a key of :data:`METRIC_LABELS`).
        order: labels in the order that picks their colour and marker, so that several panels draw a method alike
            (default: the rows' order).
    """
    # More methods than the colour cycle: marker and line style keep every curve apart.
    styles = [(m, s) for s in ("-", "--", ":") for m in "os^vDP*X"]
    rows = rows_by_method(config, records)
    order = order if order is not None else [method_label(method, lam) for method, lam, _ in rows]
    for method, lam, group in rows:
        k = order.index(method_label(method, lam))
        points = []
        for b in config.bpps:
            rs = [r for r in group if float(r["target_bpp"]) == float(b)]
            if rs and all(r["psnr"] < LOSSLESS_PSNR for r in rs) and all(r.get(metric) is not None for r in rs):
                points.append((np.mean([r["bpp_file"] for r in rs]), np.mean([r[metric] for r in rs])))
        if points:
            x, y = zip(*sorted(points), strict=True)
            marker, line = styles[k % len(styles)]
            ax.plot(x, y, marker=marker, linestyle=line, color=f"C{k % 10}", label=method_label(method, lam))
    ax.set(xlabel="bpp (file)", ylabel=METRIC_LABELS.get(metric, metric))


def save_figure(fig: Any, path: Path, atomic_path: Any) -> Path:
    """Write a matplotlib figure as PNG atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    return path
