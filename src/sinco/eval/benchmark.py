"""``sinco benchmark``: the paper's comparison of INR methods (and classical codecs) on real slices.

Every record is measured on the real file the method produced (kept under ``OUTDIR/files``), at
the real rate of that file. Results are saved atomically after each record, so an interrupted run
resumes where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import sys
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sinco.errors import InputError, RateUnreachableError

if TYPE_CHECKING:
    import torch

CLASSICAL_METHODS = ("jpeg", "jpeg2000", "jpegxl", "avif", "webp")
DEFAULT_METHODS = ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "jpeg", "jpeg2000")
RESULTS_FORMAT = 2
# Configuration that only changes the summaries: a run may be resumed (or summarised again) with another value.
_NOT_RECORDS = ("anchor",)
# What every record carries from sinco.pipeline.measure (Dice too, with a segmentation model).
_RECORD_METRICS = ("bpp_file", "psnr", "ssim", "ms_ssim", "ms_ssim_scales", "psnr_roi", "ssim_roi", "roi", "roi_fraction")
# The independent judge's (sinco.eval.judge.judge_metrics), when there is one.
_JUDGE_METRICS = ("dice_self", "dice_eval", "dice_eval_reference", "dice_eval_target")


def codec_methods() -> dict[str, tuple[Any, Any]]:
    """The neural codec methods, from the registry: name -> (family, :class:`~sinco.codec.families.BenchmarkMethod`)."""
    from sinco.codec.families import benchmark_methods

    return benchmark_methods()


def all_methods() -> tuple[str, ...]:
    """Every benchmark method: the codec families' (plain fits first, then the regularised ones, as
    the paper's Table 1 orders them) and the classical codecs."""
    methods = codec_methods()
    plain = [m for m, (_, info) in methods.items() if not info.regularised]
    return (*plain, *(m for m in methods if m not in plain), *CLASSICAL_METHODS)


def method_label(method: str) -> str:
    """The name tables and figures show for a method."""
    from sinco.eval.report import CLASSICAL_LABELS

    if "@" in method:  # one lambda of a swept method (see swept_key)
        base, lam = method.split("@", 1)
        return f"{method_label(base)}, lambda {lam}"
    known = codec_methods()
    return known[method][1].label if method in known else CLASSICAL_LABELS.get(method, method)


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides a benchmark's records (saved in ``results.json``).

    Args:
        data: dataset folder.
        seg_model: segmentation checkpoint (its path), or ``None``: records then carry rate, PSNR,
            SSIM, MS-SSIM and the ROI figures, but no Dice and no regularised method.
        layout: dataset layout (``auto``, ``decathlon``, ``folders``, ``images``).
        image_glob: ``folders``/``images`` layout image pattern.
        label_glob: ``folders``/``images`` layout label pattern (``None``: no labels).
        channel: modality of 4-D volumes.
        cases: ``"val"`` (the segmentation model's validation cases), ``"all"``, or comma-separated ids.
        methods: method names, see :func:`all_methods`.
        bpps: target rates.
        images: number of test slices.
        min_tumour: minimum tumour fraction of a test slice.
        preset: fitting preset of the codec families (``None``, or a preset a family lacks: that family's default,
            ``paper`` for the INR families and ``fast`` for ``grid``).
        steps: gradient evaluations (``None``: the preset's).
        lr: (peak) learning rate (``None``: the preset's).
        lam: SINCO regulariser weight of the regularised methods.
        reg_every: apply the regulariser every K-th step.
        seed: initialisation seed.
        fit_options: family fitting options (e.g. ``optimizer``); each family takes those it declares.
        codec_options: family name -> codec options (e.g. ``{"siren": {"depth": 3}}``).
        batch_slices: test slices of one codec method fitted together as one batch.
        roi_glob: pattern of each case's region-of-interest mask (``brainmask.nii.gz``); ``None``:
            the head found by :func:`sinco.metrics.roi.head_mask`.
        anchor: the method every other is compared with by Bjontegaard deltas when there are several rates
            (it must then be among ``methods``); it does not change the records.
        lams: several regulariser weights (``--lam 0,0.1,1``): the regularised methods run once per
            value, one record each (``None``: ``lam`` alone).
        eval_seg_model: the independent judge's checkpoint (``None``: no judge; tables say so).
        ensemble: further loss networks (the regulariser is averaged over ``seg_model`` and these).
        seg_target: the regulariser's target, ``mask`` or ``self``.
        seg_perturb: perturbations of the loss network's input per step (0 = off).

    Raises:
        InputError: if a value is out of range.
    """

    data: str
    seg_model: str | None
    layout: str = "auto"
    image_glob: str = "Flair*.nii.gz"
    label_glob: str | None = "OTMultiClass.nii.gz"
    channel: int = 0
    cases: str = "val"
    methods: tuple[str, ...] = DEFAULT_METHODS
    bpps: tuple[float, ...] = (1.2,)
    images: int = 10
    min_tumour: float = 0.01
    preset: str | None = None
    steps: int | None = None
    lr: float | None = None
    lam: float = 1.0
    reg_every: int = 1
    seed: int = 0
    fit_options: Mapping[str, Any] = field(default_factory=dict)
    codec_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_slices: int = 1
    roi_glob: str | None = None
    anchor: str = "jpeg2000"
    lams: tuple[float, ...] | None = None
    eval_seg_model: str | None = None
    ensemble: tuple[str, ...] = ()
    seg_target: str = "mask"
    seg_perturb: int = 0

    @property
    def lam_values(self) -> tuple[float, ...]:
        """The regulariser weights the regularised methods run with."""
        return (self.lam,) if self.lams is None else tuple(self.lams)

    def lams_of(self, method: str) -> tuple[float, ...]:
        """The weights a method runs with: :attr:`lam_values` for the regularised methods, ``(0.0,)`` for the others."""
        return self.lam_values if method in codec_methods() and codec_methods()[method][1].regularised else (0.0,)

    def regularizer_options(self) -> Any:
        """The :class:`~sinco.fit.losses.RegularizerOptions` of the regularised methods."""
        from sinco.fit.losses import RegularizerOptions

        return RegularizerOptions(target=self.seg_target, perturb=self.seg_perturb, seed=self.seed)

    def __post_init__(self) -> None:
        known = all_methods()
        unknown = [m for m in self.methods if m not in known]
        if unknown or not self.methods:
            raise InputError(f"--methods {','.join(self.methods)!r}: unknown {unknown}; expected names from {', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"--methods {','.join(self.methods)!r}: a method is listed twice")
        if self.anchor not in known or (len(self.bpps) > 1 and self.anchor not in self.methods):
            raise InputError(f"--anchor {self.anchor!r}: the Bjontegaard anchor must be one of --methods {','.join(self.methods)!r}")
        if not self.bpps or any(not (math.isfinite(b) and b > 0) for b in self.bpps):
            raise InputError(f"--bpp {self.bpps}: need positive rates")
        if self.images < 1:
            raise InputError(f"--images {self.images}: must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps {self.steps}: must be at least 1")
        if self.batch_slices < 1:
            raise InputError(f"--batch-slices {self.batch_slices}: must be a positive integer")
        families = [codec_methods()[m][0] for m in self.methods if m in codec_methods()]
        if self.preset is not None and families and not any(self.preset in f.presets for f in families):
            raise InputError(f"--preset {self.preset!r}: expected one of {', '.join(sorted({p for f in families for p in f.presets}))}")
        for method in self.methods:
            if method in codec_methods():
                for lam in self.lams_of(method):
                    self.fit_config(method, lam=lam)  # validates the preset and the overrides
                self.codec_config(method, bpp=self.bpps[0])
        self.regularizer_options()
        self._check_labels_and_model()

    def _check_labels_and_model(self) -> None:
        """Refuse what needs a segmentation model, or labels, when they are not given."""
        if self.seg_model is None:
            needs = [m for m in self.methods if m in codec_methods() and codec_methods()[m][1].regularised]
            if needs:
                raise InputError(f"--methods {','.join(needs)}: the SINCO regulariser needs --seg-model (or drop these methods)")
            if self.cases == "val":
                raise InputError("--cases val: the validation cases come from --seg-model; without one use --cases all or ID,...")
        elif self.label_glob is None:
            raise InputError("--seg-model: Dice needs tumour labels; give --label-glob")

    def fit_config(self, method: str, *, lam: float | None = None) -> Any:
        """The fitting configuration of a codec method (its family's preset, the overrides, ``lam`` (default:
        :attr:`lam`) for a regularised method, 0 for the others; a regularised method's data term defaults to
        :data:`~sinco.fit.config.REGULARISED_DATA_TERM`)."""
        from sinco.fit.config import with_resolved_data_term

        family, info = codec_methods()[method]
        preset = self.preset if self.preset in family.presets else family.default_preset
        accepted = {o.dest for o in family.fit_options}
        overrides = {k: v for k, v in self.fit_options.items() if k in accepted}
        weight = (self.lam if lam is None else lam) if info.regularised else 0.0
        overrides.update(steps=self.steps, lr=self.lr, seed=self.seed, lam=weight, reg_every=self.reg_every)
        overrides = with_resolved_data_term(overrides, regularised=info.regularised, accepted=accepted)
        return family.fit_config(preset, overrides)

    def codec_config(self, method: str, *, bpp: float) -> Any:
        """The codec configuration of a codec method at one rate."""
        from sinco.codec.config import CodecConfig

        family = codec_methods()[method][0]
        return CodecConfig(arch=family.name, bpp=bpp, options=dict(self.codec_options.get(family.name, {})))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists), with the resolved fitting configuration of each codec method."""
        data = json.loads(json.dumps(asdict(self), default=list))
        data["fit"] = {m: self.fit_config(m).to_dict() for m in self.methods if m in codec_methods()}
        return data


def _record_key(record: dict[str, Any]) -> tuple[str, str, float, float]:
    return record["image_id"], record["method"], float(record["target_bpp"]), float(record.get("lam_setting", 0.0))


def _file_name(image_id: str, method: str, bpp: float, extension: str, lam: float | None = None) -> str:
    tag = "" if lam is None else f"__lam{lam:g}"
    return f"{image_id.replace(':', '_').replace(os.sep, '_')}__{method}{tag}__{bpp:g}bpp{extension}"


def load_results(outdir: Path, config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Records of an earlier run of the same configuration in ``outdir`` (empty if none).

    Raises:
        InputError: if ``outdir`` holds results of another configuration, or an unreadable file.
    """
    path = outdir / "results.json"
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        saved_config, records = saved["config"], saved["records"]
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--out {str(outdir)!r}: unreadable results.json ({exc}); use another --out") from None
    mine = json.loads(json.dumps(config.to_dict()))
    differs = sorted(k for k in (set(mine) | set(saved_config)) - set(_NOT_RECORDS) if mine.get(k) != saved_config.get(k))
    if differs:
        raise InputError(
            f"--out {str(outdir)!r}: holds a run with another configuration (differs in {', '.join(differs)}); "
            "use another --out to start a new run"
        )
    return list(records)


def save_results(outdir: Path, config: BenchmarkConfig, records: list[dict[str, Any]], *, slices: list[dict[str, Any]],
                 bjontegaard: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write ``results.json`` atomically (with a ``bjontegaard`` section when given, see
    :func:`sinco.eval.bjontegaard.benchmark_deltas`)."""
    import torch

    from sinco import __version__
    from sinco.utils.atomic import atomic_write_bytes

    payload = {
        "format": RESULTS_FORMAT, "sinco_version": __version__, "torch_version": torch.__version__,
        "config": config.to_dict(), "slices": slices, "records": records,
    }  # fmt: skip
    if bjontegaard is not None:
        payload["bjontegaard"] = bjontegaard
    atomic_write_bytes(outdir / "results.json", (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())


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
        """The one record builder: identity, the metrics of the decoded file (see :func:`sinco.pipeline.measure`;
        Dice only with a segmentation model, the judge's with one), then the runner's own fields. ``setting`` is the
        regulariser weight the method was asked for (one of :meth:`BenchmarkConfig.lams_of`)."""
        record = {"image_id": ref.image_id, "case": ref.case.case_id, "slice": ref.index, "method": method, "target_bpp": float(bpp),
                  "lam_setting": float(setting), **{k: metrics[k] for k in _RECORD_METRICS}}  # fmt: skip
        if self.seg_model is not None:
            record.update(dice=metrics.get("dice"), dice_reference=self.prepared[ref.image_id][4])
        record.update({k: metrics[k] for k in _JUDGE_METRICS if k in metrics})
        return {**record, **fields}

    def store(self, record: dict[str, Any], data: bytes, extension: str) -> None:
        from sinco.utils.atomic import atomic_write_bytes

        swept = len(self.config.lams_of(record["method"])) > 1
        name = _file_name(record["image_id"], record["method"], record["target_bpp"], extension, record["lam_setting"] if swept else None)
        atomic_write_bytes(self.out / "files" / name, data)
        record["file"] = f"files/{name}"
        record["psnr"] = record["psnr"] if math.isfinite(record["psnr"]) else 999.0  # lossless: capped, JSON has no inf
        self.records.append(record)
        self.done.add(_record_key(record))
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
        ``results.json`` also holds the Bjontegaard deltas against ``config.anchor`` (see :func:`bjontegaard_section`).

    Raises:
        InputError: for bad inputs (see :func:`resolve_cases`, :func:`load_results`).
    """
    from sinco.eval.report import make_figures, make_table
    from sinco.utils.atomic import atomic_write_bytes

    run = _start(config, outdir=Path(outdir), progress=progress)
    for bpp in config.bpps:
        for method in config.methods:
            runner = _run_codec_method if method in codec_methods() else _run_classical_method
            for lam in config.lams_of(method):
                runner(run, method, bpp, lam, device=device, progress=progress)
    if run.bar is not None:
        run.bar.close()
    deltas = bjontegaard_section(run.records, config)
    save_results(run.out, config, run.records, slices=run.slice_info, bjontegaard=deltas)
    table = make_table(run.records, config, bjontegaard=deltas)
    atomic_write_bytes(run.out / "table.md", table.encode())
    figures = make_figures(run.out, run.records, config=config, seg_model=run.seg_model)
    if len(config.lam_values) > 1:
        from sinco.eval.frontier import make_frontier

        figures.append(make_frontier(run.out, run.records, config=config))
    return {"records": run.records, "table": table, "figures": [str(f) for f in figures], "outdir": str(run.out)}


def bjontegaard_section(records: list[dict[str, Any]], config: BenchmarkConfig) -> dict[str, Any] | None:
    """The Bjontegaard deltas of every method against ``config.anchor`` (see
    :func:`sinco.eval.bjontegaard.benchmark_deltas`), or ``None`` with a single target rate (no curve)."""
    from sinco.eval.bjontegaard import benchmark_deltas

    if len(config.bpps) < 2:
        return None
    # A method swept over several lambdas has one curve per lambda (``method@lambda``), never one mixing them.
    swept = {m: config.lams_of(m) for m in config.methods if len(config.lams_of(m)) > 1}
    if not swept:
        return benchmark_deltas(records, methods=config.methods, anchor=config.anchor)
    keyed = [{**r, "method": swept_key(r["method"], float(r.get("lam_setting", 0.0)))} if r["method"] in swept else r for r in records]
    methods = [k for m in config.methods for k in ([swept_key(m, lam) for lam in swept[m]] if m in swept else [m])]
    anchor = swept_key(config.anchor, swept[config.anchor][0]) if config.anchor in swept else config.anchor
    return benchmark_deltas(keyed, methods=methods, anchor=anchor)


def swept_key(method: str, lam: float) -> str:
    """The name of one lambda of a swept method in the Bjontegaard section, e.g. ``sinco-siren@0.1``
    (:func:`method_label` shows it as "SINCO (SIREN), lambda 0.1")."""
    return f"{method}@{lam:g}"


def _start(config: BenchmarkConfig, *, outdir: Path, progress: bool) -> _Run:
    """Load the model, the earlier records and the test slices still to run."""
    from sinco.eval.selection import select_test_slices
    from sinco.regularizer_cli import load_networks

    seg_models, judge = load_networks([] if config.seg_model is None else [config.seg_model, *config.ensemble], config.eval_seg_model)
    seg_model = seg_models[0] if seg_models else None
    cases = resolve_cases(config, {} if seg_model is None else seg_model.training)
    outdir.mkdir(parents=True, exist_ok=True)
    (outdir / "files").mkdir(exist_ok=True)
    records = load_results(outdir, config)
    done = {_record_key(r) for r in records}
    slices = select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour)
    slice_info = [{"image_id": s.image_id, "case": s.case.case_id, "slice": s.index, "tumour_fraction": s.tumour_fraction,
                   "source": s.case.source(s.index)} for s in slices]  # fmt: skip
    run = _Run(config=config, out=outdir, seg_model=seg_model, ensemble=seg_models[1:], judge=judge, slices=slices, slice_info=slice_info, records=records, done=done,
               prepared=_prepare(slices, config=config, done=done, seg_model=seg_model))  # fmt: skip
    if progress:
        from tqdm.auto import tqdm

        jobs = [(s.image_id, m, float(b), float(lam)) for s in slices for b in config.bpps for m in config.methods
                for lam in config.lams_of(m)]  # fmt: skip
        run.bar = tqdm(total=len(jobs), initial=sum(1 for j in jobs if j in done), desc="benchmark", unit="record", file=sys.stderr,
                       dynamic_ncols=True)  # fmt: skip
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
    from sinco.pipeline import RATE_SEARCH_FIELDS, compress_images

    config = run.config
    fit, codec = config.fit_config(method, lam=lam), config.codec_config(method, bpp=bpp)
    regularised = codec_methods()[method][1].regularised
    todo = run.todo(method, bpp, lam)
    for begin in range(0, len(todo), config.batch_slices):
        batch = todo[begin : begin + config.batch_slices]
        if run.bar is not None:
            run.bar.set_postfix_str(f"{method} {bpp:g} bpp, {len(batch)} slice(s)")
        try:
            results = compress_images(
                [run.prepared[r.image_id][0] for r in batch], ranges=[run.prepared[r.image_id][1:3] for r in batch], codec=codec,
                fit=fit, device=device, seg_model=run.seg_model,
                masks=None if run.seg_model is None else [run.prepared[r.image_id][3] for r in batch],
                rois=[run.prepared[r.image_id][5] for r in batch], progress=progress, eval_seg_model=run.judge,
                regularizer_options=config.regularizer_options() if regularised else None, ensemble=run.ensemble if regularised else (),
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
            report, m = result.fit, result.metrics
            record = run.record(ref, method, bpp, lam, metrics=m, bpp_params=m.get("bpp_params"), steps=fit.steps,
                                encode_seconds=result.seconds, decode_seconds=decode_seconds,
                                arch=codec.family.describe(result.file.spec), n_params=m.get("n_params"), lam=report.lam, reg_every=report.reg_every,
                                best_step=report.best_step, divergences=report.divergences, batch_slices=report.batch,
                                evaluations=report.evaluations, phase_seconds=report.phase_seconds,
                                **{k: m[k] for k in RATE_SEARCH_FIELDS if k in m})  # fmt: skip
            run.store(record, result.data, ".sinco")


def _run_classical_method(run: _Run, method: str, bpp: float, lam: float, *, device: torch.device, progress: bool) -> None:
    """A classical codec: the highest quality within the rate, found by bisection on the real file size."""
    from sinco.baselines.classical import encode_at_bpp, get_codec
    from sinco.eval.judge import judge_metrics
    from sinco.pipeline import measure

    codec = get_codec(method)
    for ref in run.todo(method, bpp, lam):
        if run.bar is not None:
            run.bar.set_postfix_str(f"{ref.image_id} {method} {bpp:g} bpp")
        image, _, _, mask, _, roi = run.prepared[ref.image_id]
        start = time.perf_counter()
        match = encode_at_bpp(codec, image, target_bpp=bpp)
        encode_seconds = time.perf_counter() - start
        start = time.perf_counter()
        decoded = codec.decode(match.data)
        decode_seconds = time.perf_counter() - start
        metrics = measure(decoded, target=image, file_bytes=len(match.data), seg_model=run.seg_model, mask=mask, roi=roi)
        metrics.update(judge_metrics(decoded, image, mask=mask, seg_model=None, eval_seg_model=run.judge))
        record = run.record(ref, method, bpp, lam, metrics=metrics, bpp_params=None, steps=None,
                            encode_seconds=encode_seconds, decode_seconds=decode_seconds, quality=match.quality,
                            within_budget=match.within_budget, bit_depth=codec.bit_depth, library=codec.library,
                            search_trials=match.trials)  # fmt: skip
        run.store(record, match.data, codec.extension)
