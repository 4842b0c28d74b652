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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from sinco.errors import InputError
from sinco.fit.config import FitConfig

INR_METHODS: dict[str, tuple[str, bool]] = {
    "coin": ("siren", False),
    "vanilla-inr": ("pe-mlp", False),
    "sinco-siren": ("siren", True),
    "sinco-inr": ("pe-mlp", True),
}
CLASSICAL_METHODS = ("jpeg", "jpeg2000", "jpegxl", "avif", "webp")
ALL_METHODS = (*INR_METHODS, *CLASSICAL_METHODS)
DEFAULT_METHODS = ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "jpeg", "jpeg2000")
RESULTS_FORMAT = 1


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
        methods: method names, see :data:`ALL_METHODS`.
        bpps: target rates.
        images: number of test slices.
        min_tumour: minimum tumour fraction of a test slice.
        preset: INR fitting preset (``paper`` or ``fast``, see :data:`sinco.fit.config.PRESETS`).
        steps: INR gradient evaluations (``None``: the preset's).
        lr: INR (peak) learning rate (``None``: the preset's).
        schedule: INR learning-rate schedule, ``constant`` or ``cosine`` (``None``: the preset's).
        warmup: warm-up steps of the cosine schedule (``None``: the preset's).
        optimizer: ``adam`` or ``adam+lbfgs`` (``None``: the preset's).
        lam: SINCO regulariser weight for the ``sinco-*`` methods.
        reg_every: apply the regulariser every K-th step.
        seed: INR initialisation seed.
        depth_siren: SIREN depth (None: the codec default).
        depth_pe: PE-MLP depth (None: the codec default).
        batch_slices: test slices of one INR method fitted together as one batch.
        roi_glob: pattern of each case's region-of-interest mask (``brainmask.nii.gz``); ``None``:
            the head found by :func:`sinco.metrics.roi.head_mask`.

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
    preset: str = "paper"
    steps: int | None = None
    lr: float | None = None
    schedule: str | None = None
    warmup: int | None = None
    optimizer: str | None = None
    lam: float = 1.0
    reg_every: int = 1
    seed: int = 0
    depth_siren: int | None = None
    depth_pe: int | None = None
    batch_slices: int = 1
    roi_glob: str | None = None

    def __post_init__(self) -> None:
        unknown = [m for m in self.methods if m not in ALL_METHODS]
        if unknown or not self.methods:
            raise InputError(f"--methods {','.join(self.methods)!r}: unknown {unknown}; expected names from {', '.join(ALL_METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"--methods {','.join(self.methods)!r}: a method is listed twice")
        if not self.bpps or any(not (math.isfinite(b) and b > 0) for b in self.bpps):
            raise InputError(f"--bpp {self.bpps}: need positive rates")
        if self.images < 1:
            raise InputError(f"--images {self.images}: must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps {self.steps}: must be at least 1")
        for arch in ("siren", "pe-mlp"):
            self.fit_config(arch, regularised=True)  # validates the preset and the overrides
        if self.batch_slices < 1:
            raise InputError(f"--batch-slices {self.batch_slices}: must be a positive integer")
        check_labels_and_model(self)

    def fit_config(self, arch: str, *, regularised: bool) -> FitConfig:
        """The fitting configuration of an INR method of this architecture."""
        from sinco.fit.config import fit_config_from_preset

        return fit_config_from_preset(
            self.preset, arch=arch, steps=self.steps, lr=self.lr, schedule=self.schedule, warmup=self.warmup,
            optimizer=self.optimizer, seed=self.seed, lam=self.lam if regularised else 0.0, reg_every=self.reg_every,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists), with the resolved fitting configuration of each architecture."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        data["fit"] = {arch: self.fit_config(arch, regularised=True).to_dict() for arch in ("siren", "pe-mlp")}
        return data


def check_labels_and_model(config: BenchmarkConfig) -> None:
    """Refuse what needs a segmentation model, or labels, when they are not given.

    Raises:
        InputError: naming the option.
    """
    if config.seg_model is None:
        needs = [m for m in config.methods if m in INR_METHODS and INR_METHODS[m][1]]
        if needs:
            raise InputError(f"--methods {','.join(needs)}: the SINCO regulariser needs --seg-model (or drop these methods)")
        if config.cases == "val":
            raise InputError("--cases val: the validation cases come from --seg-model; without one use --cases all or ID,...")
    elif config.label_glob is None:
        raise InputError("--seg-model: Dice needs tumour labels; give --label-glob")


def _record_key(record: dict[str, Any]) -> tuple[str, str, float]:
    return record["image_id"], record["method"], float(record["target_bpp"])


def _file_name(image_id: str, method: str, bpp: float, extension: str) -> str:
    return f"{image_id.replace(':', '_').replace(os.sep, '_')}__{method}__{bpp:g}bpp{extension}"


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
    differs = sorted(k for k in set(mine) | set(saved_config) if mine.get(k) != saved_config.get(k))
    if differs:
        raise InputError(
            f"--out {str(outdir)!r}: holds a run with another configuration (differs in {', '.join(differs)}); "
            "use another --out to start a new run"
        )
    return list(records)


def save_results(outdir: Path, config: BenchmarkConfig, records: list[dict[str, Any]], *, slices: list[dict[str, Any]]) -> None:
    """Write ``results.json`` atomically."""
    from sinco import __version__
    from sinco.utils.atomic import atomic_write_bytes

    payload = {
        "format": RESULTS_FORMAT, "sinco_version": __version__, "torch_version": torch.__version__,
        "config": config.to_dict(), "slices": slices, "records": records,
    }  # fmt: skip
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


def run_benchmark(config: BenchmarkConfig, *, outdir: str | os.PathLike[str], device: torch.device, progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a benchmark and write ``results.json``, ``table.md`` and the figures.

    Args:
        config: what to run.
        outdir: output folder (created if needed); an earlier run of the same configuration there
            is resumed.
        device: where INRs are fitted.
        progress: show progress bars.

    Returns:
        ``{"records": [...], "table": str, "figures": [paths], "outdir": str}``.

    Raises:
        InputError: for bad inputs (see :func:`resolve_cases`, :func:`load_results`).
    """
    from sinco.baselines.classical import encode_at_bpp, get_codec
    from sinco.codec.inr_codec import CodecConfig, compress_images, decode
    from sinco.data.datasets import load_case_roi, load_case_volumes
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import select_slice
    from sinco.eval.report import make_figures, make_table
    from sinco.eval.selection import select_test_slices
    from sinco.metrics import dice, psnr, ssim
    from sinco.seg.network import load_seg_model
    from sinco.utils.atomic import atomic_write_bytes

    out = Path(outdir)
    seg_model = load_seg_model(config.seg_model) if config.seg_model is not None else None
    cases = resolve_cases(config, seg_model.training if seg_model is not None else {})
    out.mkdir(parents=True, exist_ok=True)
    (out / "files").mkdir(exist_ok=True)
    records = load_results(out, config)
    done = {_record_key(r) for r in records}
    slices = select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour)
    slice_info = [{"image_id": s.image_id, "case": s.case.case_id, "slice": s.index, "tumour_fraction": s.tumour_fraction,
                   "source": s.case.source(s.index)} for s in slices]  # fmt: skip
    jobs = [(s, b, m) for s in slices for b in config.bpps for m in config.methods]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=sum(1 for s, b, m in jobs if (s.image_id, m, float(b)) in done),
                   desc="benchmark", unit="record", file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    # The test slices, loaded once (one case volume in memory at a time).
    # (image, vmin, vmax, mask or None, reference Dice or None, ROI mask or None)
    prepared: dict[str, tuple[np.ndarray, float, float, np.ndarray | None, float | None, np.ndarray | None]] = {}
    loaded: tuple[str, tuple[np.ndarray, np.ndarray | None, np.ndarray | None]] | None = None
    for ref in slices:
        if all((ref.image_id, m, float(b)) in done for b in config.bpps for m in config.methods):
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

    def base_record(ref: Any, method: str, bpp: float) -> dict[str, Any]:
        record = {"image_id": ref.image_id, "case": ref.case.case_id, "slice": ref.index, "method": method, "target_bpp": float(bpp)}
        if seg_model is not None:
            record["dice_reference"] = prepared[ref.image_id][4]
        return record

    def store(record: dict[str, Any], data: bytes, extension: str) -> None:
        name = _file_name(record["image_id"], record["method"], record["target_bpp"], extension)
        atomic_write_bytes(out / "files" / name, data)
        record["file"] = f"files/{name}"
        record["psnr"] = record["psnr"] if math.isfinite(record["psnr"]) else 999.0  # lossless: capped, JSON has no inf
        records.append(record)
        done.add(_record_key(record))
        save_results(out, config, records, slices=slice_info)
        if bar is not None:
            bar.update(1)

    for bpp in config.bpps:
        for method in config.methods:
            todo = [ref for ref in slices if (ref.image_id, method, float(bpp)) not in done]
            if method in INR_METHODS:
                arch, regularised = INR_METHODS[method]
                depth = config.depth_siren if arch == "siren" else config.depth_pe
                fit = config.fit_config(arch, regularised=regularised)
                for begin in range(0, len(todo), config.batch_slices):
                    batch = todo[begin : begin + config.batch_slices]
                    if bar is not None:
                        bar.set_postfix_str(f"{method} {bpp:g} bpp, {len(batch)} slice(s)")
                    results = compress_images(
                        [prepared[r.image_id][0] for r in batch], ranges=[prepared[r.image_id][1:3] for r in batch],
                        codec=CodecConfig(arch=arch, bpp=bpp, depth=depth), fit=fit, device=device, seg_model=seg_model,
                        masks=None if seg_model is None else [prepared[r.image_id][3] for r in batch], progress=progress,
                    )  # fmt: skip
                    for ref, result in zip(batch, results, strict=True):
                        start = time.perf_counter()
                        decode(result.data)
                        decode_seconds = time.perf_counter() - start
                        spec, m = result.header.spec, result.metrics
                        record = {**base_record(ref, method, bpp), "bpp_params": m["bpp_params"], "bpp_file": m["bpp_file"],
                                  "psnr": m["psnr"], "ssim": m["ssim"], "dice": m.get("dice"), "steps": fit.steps,
                                  "encode_seconds": result.seconds, "decode_seconds": decode_seconds, "arch": spec.to_dict(),
                                  "n_params": spec.n_params(), "lam": result.fit.lam, "reg_every": result.fit.reg_every,
                                  "best_step": result.fit.best_step, "divergences": result.fit.divergences,
                                  "batch_slices": result.fit.batch,
                                  "evaluations": result.fit.evaluations}  # fmt: skip
                        _add_quality(record, decoded=result.reconstruction, prepared=prepared[ref.image_id], has_seg=seg_model is not None)
                        store(record, result.data, ".sinco")
            else:
                codec = get_codec(method)
                for ref in todo:
                    if bar is not None:
                        bar.set_postfix_str(f"{ref.image_id} {method} {bpp:g} bpp")
                    image, mask = prepared[ref.image_id][0], prepared[ref.image_id][3]
                    start = time.perf_counter()
                    match = encode_at_bpp(codec, image, target_bpp=bpp)
                    encode_seconds = time.perf_counter() - start
                    start = time.perf_counter()
                    decoded = codec.decode(match.data)
                    decode_seconds = time.perf_counter() - start
                    record = {**base_record(ref, method, bpp), "bpp_params": None, "bpp_file": match.bpp,
                              "psnr": psnr(pred=decoded, target=image), "ssim": ssim(pred=decoded, target=image),
                              "dice": None if seg_model is None else dice(pred=seg_model.predict(decoded), target=mask), "steps": None,
                              "encode_seconds": encode_seconds, "decode_seconds": decode_seconds, "quality": match.quality,
                              "within_budget": match.within_budget, "bit_depth": codec.bit_depth, "library": codec.library,
                              "search_trials": match.trials}  # fmt: skip
                    _add_quality(record, decoded=decoded, prepared=prepared[ref.image_id], has_seg=seg_model is not None)
                    store(record, match.data, codec.extension)
    if bar is not None:
        bar.close()
    save_results(out, config, records, slices=slice_info)
    table = make_table(records, config)
    atomic_write_bytes(out / "table.md", table.encode())
    figures = make_figures(out, records, config=config, seg_model=seg_model)
    return {"records": records, "table": table, "figures": [str(f) for f in figures], "outdir": str(out)}


def _add_quality(record: dict[str, Any], *, decoded: np.ndarray, prepared: tuple, has_seg: bool) -> None:
    """Add MS-SSIM and the ROI figures of the decoded image to a record; drop Dice without a segmentation model."""
    from sinco.metrics.roi import quality_metrics

    record.update(quality_metrics(pred=decoded, target=prepared[0], roi=prepared[5]))
    if not has_seg:
        record.pop("dice", None)
