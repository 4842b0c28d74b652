"""``sinco benchmark``: the paper's comparison of INR methods (and classical codecs) on real slices.

Every record is measured on the real file the method produced (kept under ``OUTDIR/files``), at
the real rate of that file. Results are saved atomically after each record, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sinco.benchmark.bjontegaard import bjontegaard_section
from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.figures import make_figures
from sinco.benchmark.frontier import make_frontier
from sinco.benchmark.methods import codec_methods, is_regularized
from sinco.benchmark.results import file_name, load_results, record_key, save_results, with_recorded_methods
from sinco.benchmark.selection import select_test_slices
from sinco.benchmark.tables import make_table
from sinco.errors import EncoderError, InputError, RateUnreachableError
from sinco.utils.progress import progress_bar

if TYPE_CHECKING:
    import torch

# What every record carries from sinco.compression.measure.measure (Dice too, with a segmentation model).
_RECORD_METRICS = ("bpp_file", "psnr", "ssim", "ms_ssim", "ms_ssim_scales", "psnr_roi", "ssim_roi", "roi", "roi_fraction")
# The independent judge's (sinco.regularizer.judge.judge_metrics), when there is one.
_JUDGE_METRICS = ("dice_self", "dice_eval", "dice_eval_reference", "dice_eval_target")


def resolve_cases(config: BenchmarkConfig, seg_training: dict[str, Any]) -> list:
    """The cases the test slices are drawn from (see :attr:`BenchmarkConfig.cases`).

    Raises:
        InputError: if named cases are missing, or ``val`` is asked and the model records none here.
    """
    from sinco.data.datasets import discover_cases

    cases = discover_cases(config.data, layout=config.layout, image_glob=config.image_glob, label_glob=config.label_glob,
                           channel=config.channel, roi_glob=config.roi_glob)  # fmt: skip
    by_id = {c.case_id: c for c in cases}
    if config.cases == "all":
        return cases
    wanted = seg_training.get("val_cases", []) if config.cases == "val" else [c for c in config.cases.split(",") if c]
    missing = [w for w in wanted if w not in by_id]
    if config.cases == "val" and (not wanted or missing):
        raise InputError(
            f"--cases val: the segmentation model's validation cases {wanted} are not all in --data {config.data!r}; "
            "name the cases with --cases ID,... or use --cases all"
        )
    if missing:
        raise InputError(f"--cases: {', '.join(missing)} not found in --data {config.data!r}")
    return [by_id[w] for w in wanted]


@dataclass
class _Run:
    """A benchmark in progress: its configuration, output folder, prepared slices and records."""

    config: BenchmarkConfig
    out: Path
    seg_model: Any
    ensemble: list
    judge: Any
    slices: list
    slice_info: list[dict[str, Any]]
    records: list[dict[str, Any]]
    done: set
    prepared: dict[str, tuple[np.ndarray, float, float, np.ndarray, float]]
    bar: Any = None

    def todo(self, method: str, bpp: float, lam: float) -> list:
        return [ref for ref in self.slices if (ref.image_id, method, float(bpp), float(lam)) not in self.done]

    def record(self, ref: Any, method: str, bpp: float, setting: float, *, metrics: Mapping[str, Any], **fields: Any) -> dict[str, Any]:
        """The one record builder: identity, the metrics of the decoded file (see :func:`sinco.compression.measure.measure`;
        Dice only with a segmentation model, the judge's with one), then the runner's own fields. ``setting`` is the
        regularizer weight the method was asked for (one of :meth:`BenchmarkConfig.lams_of`)."""
        record = {"image_id": ref.image_id, "case": ref.case.case_id, "slice": ref.index, "method": method, "target_bpp": float(bpp),
                  "lam_setting": float(setting), **{k: metrics[k] for k in _RECORD_METRICS}}  # fmt: skip
        if self.seg_model is not None:
            record.update(dice=metrics.get("dice"), dice_reference=self.prepared[ref.image_id][4])
        record.update({k: metrics[k] for k in _JUDGE_METRICS if k in metrics})
        return {**record, **fields}

    def store(self, record: dict[str, Any], data: bytes, extension: str) -> None:
        from sinco.utils.atomic import atomic_write_bytes

        swept = len(self.config.lams_of(record["method"])) > 1
        name = file_name(record["image_id"], record["method"], record["target_bpp"], extension, record["lam_setting"] if swept else None)
        atomic_write_bytes(self.out / "files" / name, data)
        record["file"] = f"files/{name}"
        record["psnr"] = record["psnr"] if math.isfinite(record["psnr"]) else 999.0  # lossless: capped, JSON has no inf
        self.records.append(record)
        self.done.add(record_key(record))
        save_results(self.out, self.config, self.records, slices=self.slice_info)
        if self.bar is not None:
            self.bar.update(1)


def run_benchmark(config: BenchmarkConfig, *, outdir: str | os.PathLike[str], device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a benchmark and write ``results.json``, ``table.md`` and the figures.

    Args:
        config: what to run.
        outdir: output folder (created if needed); an earlier run of the same configuration there
            is resumed.
        device: where codecs are fitted.
        progress: show progress bars.

    Returns:
        ``{"records": [...], "table": str, "figures": [paths], "outdir": str}``; with several rates
        ``results.json`` also holds the Bjontegaard deltas against ``config.anchor``
        (:func:`~sinco.benchmark.bjontegaard.bjontegaard_section`).

    Raises:
        InputError: for bad inputs (see :func:`resolve_cases`, :func:`load_results`).
    """
    from sinco.utils.atomic import atomic_write_bytes

    run = _start(config, outdir=Path(outdir), progress=progress)
    for bpp in config.bpps:
        for method in config.methods:
            runner = _run_codec_method if method in codec_methods() else _run_classical_method
            for lam in config.lams_of(method):
                runner(run, method, bpp, lam, device=device, progress=progress)
    if run.bar is not None:
        run.bar.close()
    config = with_recorded_methods(config, run.records)
    deltas = bjontegaard_section(run.records, config)
    save_results(run.out, config, run.records, slices=run.slice_info, bjontegaard=deltas)
    table = make_table(run.records, config, bjontegaard=deltas)
    atomic_write_bytes(run.out / "table.md", table.encode())
    figures = make_figures(run.out, run.records, config=config, seg_model=run.seg_model)
    if len(config.lam_values) > 1:
        figures.append(make_frontier(run.out, run.records, config=config))
    return {"records": run.records, "table": table, "figures": [str(f) for f in figures], "outdir": str(run.out)}


def _start(config: BenchmarkConfig, *, outdir: Path, progress: bool) -> _Run:
    """Load the model, the earlier records and the test slices still to run."""
    from sinco.regularizer.judge import load_networks

    seg_models, judge = load_networks([] if config.seg_model is None else [config.seg_model, *config.ensemble], config.eval_seg_model)
    seg_model = seg_models[0] if seg_models else None
    cases = resolve_cases(config, {} if seg_model is None else seg_model.training)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "files").mkdir(exist_ok=True)
    records = load_results(outdir, config)
    done = {record_key(r) for r in records}
    slices = select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour)
    slice_info = [{"image_id": s.image_id, "case": s.case.case_id, "slice": s.index, "tumour_fraction": s.tumour_fraction,
                   "source": s.case.source(s.index)} for s in slices]  # fmt: skip
    run = _Run(config=config, out=outdir, seg_model=seg_model, ensemble=seg_models[1:], judge=judge, slices=slices, slice_info=slice_info, records=records, done=done,
               prepared=_prepare(slices, config=config, done=done, seg_model=seg_model))  # fmt: skip
    if progress:
        jobs = [(s.image_id, m, float(b), float(lam)) for s in slices for b in config.bpps for m in config.methods
                for lam in config.lams_of(m)]  # fmt: skip
        run.bar = progress_bar(total=len(jobs), initial=sum(1 for j in jobs if j in done), desc="benchmark", unit="record", leave=True)
    return run


def _prepare(slices: list, *, config: BenchmarkConfig, done: set, seg_model: Any) -> dict[str, tuple]:
    """The test slices still needed (one case volume in memory at a time): ``image_id -> (image, vmin, vmax,
    mask or None, the uncompressed slice's Dice or None, region of interest or None)``."""
    from sinco.data.datasets import load_case_roi, load_case_volumes
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import select_slice
    from sinco.metrics import dice

    prepared: dict[str, tuple] = {}
    loaded: tuple[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] | None = None
    for ref in slices:
        if all((ref.image_id, m, float(b), float(lam)) in done for b in config.bpps for m in config.methods for lam in config.lams_of(m)):
            continue
        if loaded is None or loaded[0] != ref.case.case_id:
            image_vol, label_vol = load_case_volumes(ref.case)
            loaded = (ref.case.case_id, (image_vol, label_vol, load_case_roi(ref.case, shape=image_vol.shape)))
        image_vol, label_vol, roi_vol = loaded[1]
        image, vmin, vmax = normalize_minmax(select_slice(image_vol, slice_index=ref.index), name=ref.image_id)
        mask = None if label_vol is None else (select_slice(label_vol, slice_index=ref.index) > 0).astype(np.uint8)
        roi = None if roi_vol is None else select_slice(roi_vol, slice_index=ref.index) > 0
        reference = None if seg_model is None else dice(pred=seg_model.to("cpu").predict(image), target=mask)
        prepared[ref.image_id] = (image, vmin, vmax, mask, reference, roi)
    return prepared


def _run_codec_method(run: _Run, method: str, bpp: float, lam: float, *, device: torch.device, progress: bool) -> None:
    """A codec family's method: fit the slices still to do, ``batch_slices`` at a time, and store each file."""
    from sinco.codec.files import decode_file
    from sinco.compression.image import compress_images

    config = run.config
    fit_config, codec = config.fit_config(method, lam=lam), config.codec_config(method, bpp=bpp)
    regularized = is_regularized(method)
    todo = run.todo(method, bpp, lam)
    for begin in range(0, len(todo), config.batch_slices):
        batch = todo[begin : begin + config.batch_slices]
        if run.bar is not None:
            run.bar.set_postfix_str(f"{method} {bpp:g} bpp, {len(batch)} slice(s)")
        try:
            results = compress_images(
                [run.prepared[r.image_id][0] for r in batch], ranges=[run.prepared[r.image_id][1:3] for r in batch], codec=codec,
                fit_config=fit_config, device=device, seg_model=run.seg_model,
                masks=None if run.seg_model is None else [run.prepared[r.image_id][3] for r in batch],
                rois=[run.prepared[r.image_id][5] for r in batch], progress=progress, eval_seg_model=run.judge,
                regularizer_options=config.regularizer_options() if regularized else None, ensemble=run.ensemble if regularized else (),
            )  # fmt: skip
        except RateUnreachableError as exc:
            # No file within the target: nothing honest to record for these slices; the rest of the run goes on
            # (the table's N column shows the missing records).
            print(f"sinco: warning: {method} on {', '.join(r.image_id for r in batch)}: {exc}; not recorded", file=sys.stderr)
            continue
        for ref, result in zip(batch, results, strict=True):
            start = time.perf_counter()
            decode_file(result.data)
            decode_seconds = time.perf_counter() - start
            m = result.metrics
            record = run.record(ref, method, bpp, lam, metrics=m, bpp_params=m.get("bpp_params"), encode_seconds=result.seconds,
                                decode_seconds=decode_seconds, arch=codec.family.describe(result.file.spec), n_params=m.get("n_params"),
                                **result.report.to_dict())  # fmt: skip
            run.store(record, result.data, ".sinco")


def _run_classical_method(run: _Run, method: str, bpp: float, lam: float, *, device: torch.device, progress: bool) -> None:
    """A classical codec: the highest quality within the rate, found by bisection on the real file size."""
    from sinco.classical.base import encode_at_bpp
    from sinco.classical.registry import get_codec
    from sinco.compression.measure import measure
    from sinco.regularizer.judge import judge_metrics

    codec = get_codec(method)
    for ref in run.todo(method, bpp, lam):
        if run.bar is not None:
            run.bar.set_postfix_str(f"{ref.image_id} {method} {bpp:g} bpp")
        image, _, _, mask, _, roi = run.prepared[ref.image_id]
        try:
            start = time.perf_counter()
            match = encode_at_bpp(codec, image, target_bpp=bpp)
            encode_seconds = time.perf_counter() - start
            start = time.perf_counter()
            decoded = codec.decode(match.data)
            decode_seconds = time.perf_counter() - start
        except (EncoderError, InputError) as exc:
            # A codec that cannot run here (an encoder missing from ffmpeg, ffmpeg failing) or cannot code this slice (its
            # size): the other methods go on, and the table's N column shows the missing records.
            print(f"sinco: warning: {method} on {ref.image_id}: {exc}; not recorded", file=sys.stderr)
            continue
        metrics = measure(decoded, target=image, file_bytes=len(match.data), seg_model=run.seg_model, mask=mask, roi=roi)
        metrics.update(judge_metrics(decoded, image, mask=mask, seg_model=None, eval_seg_model=run.judge))
        record = run.record(ref, method, bpp, lam, metrics=metrics, bpp_params=None, encode_seconds=encode_seconds, decode_seconds=decode_seconds, quality=match.quality,
                            within_budget=match.within_budget, bit_depth=codec.bit_depth, psnr_ceiling=round(codec.psnr_ceiling, 2),
                            library=codec.library, codec_details=codec.details, search_trials=match.trials)  # fmt: skip
        run.store(record, match.data, codec.extension)
