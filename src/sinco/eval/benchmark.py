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
        seg_model: segmentation checkpoint (its path).
        layout: dataset layout (``auto``, ``decathlon``, ``folders``).
        image_glob: ``folders`` layout image pattern.
        label_glob: ``folders`` layout label pattern.
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
        lams: several regulariser weights (``--lam 0,0.1,1``): the ``sinco-*`` methods run once per
            value, one record each (``None``: ``lam`` alone).
        data_term: the objective's data term, ``mse``, ``sse`` or ``l2`` (see :class:`FitConfig`).
        eval_seg_model: the independent judge's checkpoint (``None``: no judge; tables say so).
        ensemble: further loss networks (the regulariser is averaged over ``seg_model`` and these).
        seg_target: the regulariser's target, ``mask`` or ``self``.
        seg_perturb: perturbations of the loss network's input per step (0 = off).

    Raises:
        InputError: if a value is out of range.
    """

    data: str
    seg_model: str
    layout: str = "auto"
    image_glob: str = "Flair*.nii.gz"
    label_glob: str = "OTMultiClass.nii.gz"
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
    lams: tuple[float, ...] | None = None
    data_term: str = "mse"
    eval_seg_model: str | None = None
    ensemble: tuple[str, ...] = ()
    seg_target: str = "mask"
    seg_perturb: int = 0

    @property
    def lam_values(self) -> tuple[float, ...]:
        """The regulariser weights the ``sinco-*`` methods run with."""
        return (self.lam,) if self.lams is None else tuple(self.lams)

    def lams_of(self, method: str) -> tuple[float, ...]:
        """The weights a method runs with: :attr:`lam_values` for the ``sinco-*`` methods, ``(0.0,)`` for the others."""
        return self.lam_values if INR_METHODS.get(method, ("", False))[1] else (0.0,)

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
        for lam in self.lam_values:
            self.fit_config("siren", regularised=True, lam=lam)
        from sinco.fit.losses import RegularizerOptions

        RegularizerOptions(target=self.seg_target, perturb=self.seg_perturb)

    def fit_config(self, arch: str, *, regularised: bool, lam: float | None = None) -> FitConfig:
        """The fitting configuration of an INR method of this architecture (``lam``: one of :attr:`lam_values`)."""
        from sinco.fit.config import fit_config_from_preset

        weight = (self.lam if lam is None else lam) if regularised else 0.0
        return fit_config_from_preset(
            self.preset, arch=arch, steps=self.steps, lr=self.lr, schedule=self.schedule, warmup=self.warmup,
            optimizer=self.optimizer, seed=self.seed, lam=weight, reg_every=self.reg_every, data_term=self.data_term,
        )  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists), with the resolved fitting configuration of each architecture."""
        data = {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}
        data["fit"] = {arch: self.fit_config(arch, regularised=True).to_dict() for arch in ("siren", "pe-mlp")}
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
                           channel=config.channel)  # fmt: skip
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
    from sinco.data.datasets import load_case_volumes
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import select_slice
    from sinco.eval.judge import judge_metrics
    from sinco.eval.report import make_figures, make_table
    from sinco.eval.selection import select_test_slices
    from sinco.fit.losses import RegularizerOptions
    from sinco.metrics import dice, psnr, ssim
    from sinco.regularizer_cli import load_networks
    from sinco.utils.atomic import atomic_write_bytes

    out = Path(outdir)
    seg_models, judge = load_networks([config.seg_model, *config.ensemble], config.eval_seg_model)
    seg_model = seg_models[0]
    cases = resolve_cases(config, seg_model.training)
    out.mkdir(parents=True, exist_ok=True)
    (out / "files").mkdir(exist_ok=True)
    records = load_results(out, config)
    done = {_record_key(r) for r in records}
    slices = select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour)
    slice_info = [{"image_id": s.image_id, "case": s.case.case_id, "slice": s.index, "tumour_fraction": s.tumour_fraction}
                  for s in slices]  # fmt: skip
    jobs = [(s, b, m, lam) for s in slices for b in config.bpps for m in config.methods for lam in config.lams_of(m)]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(jobs), initial=sum(1 for s, b, m, lam in jobs if (s.image_id, m, float(b), lam) in done),
                   desc="benchmark", unit="record", file=sys.stderr, dynamic_ncols=True)  # fmt: skip
    # The test slices, loaded once (one case volume in memory at a time).
    prepared: dict[str, tuple[np.ndarray, float, float, np.ndarray, float]] = {}
    loaded: tuple[str, tuple[np.ndarray, np.ndarray]] | None = None
    for ref in slices:
        if all((ref.image_id, m, float(b), lam) in done for b in config.bpps for m in config.methods for lam in config.lams_of(m)):
            continue
        if loaded is None or loaded[0] != ref.case.case_id:
            loaded = (ref.case.case_id, load_case_volumes(ref.case))
        image_vol, label_vol = loaded[1]
        image, vmin, vmax = normalize_minmax(select_slice(image_vol, slice_index=ref.index), name=ref.image_id)
        mask = (select_slice(label_vol, slice_index=ref.index) > 0).astype(np.uint8)
        prepared[ref.image_id] = (image, vmin, vmax, mask, dice(pred=seg_model.to("cpu").predict(image), target=mask))

    def base_record(ref: Any, method: str, bpp: float, lam: float = 0.0) -> dict[str, Any]:
        return {"image_id": ref.image_id, "case": ref.case.case_id, "slice": ref.index, "method": method,
                "target_bpp": float(bpp), "lam_setting": float(lam), "dice_reference": prepared[ref.image_id][4]}  # fmt: skip

    def judged(ref: Any, decoded: np.ndarray) -> dict[str, Any]:
        image, mask = prepared[ref.image_id][0], prepared[ref.image_id][3]
        return judge_metrics(decoded, image, mask=mask, seg_model=None, eval_seg_model=judge)

    def store(record: dict[str, Any], data: bytes, extension: str) -> None:
        lam = record["lam_setting"] if len(config.lam_values) > 1 and INR_METHODS.get(record["method"], ("", False))[1] else None
        name = _file_name(record["image_id"], record["method"], record["target_bpp"], extension, lam)
        atomic_write_bytes(out / "files" / name, data)
        record["file"] = f"files/{name}"
        record["psnr"] = record["psnr"] if math.isfinite(record["psnr"]) else 999.0  # lossless: capped, JSON has no inf
        records.append(record)
        done.add(_record_key(record))
        save_results(out, config, records, slices=slice_info)
        if bar is not None:
            bar.update(1)

    for bpp in config.bpps:
        for method, lam in ((m, lam) for m in config.methods for lam in config.lams_of(m)):
            todo = [ref for ref in slices if (ref.image_id, method, float(bpp), lam) not in done]
            if method in INR_METHODS:
                arch, regularised = INR_METHODS[method]
                depth = config.depth_siren if arch == "siren" else config.depth_pe
                fit = config.fit_config(arch, regularised=regularised, lam=lam)
                for begin in range(0, len(todo), config.batch_slices):
                    batch = todo[begin : begin + config.batch_slices]
                    if bar is not None:
                        bar.set_postfix_str(f"{method} {bpp:g} bpp, {len(batch)} slice(s)")
                    results = compress_images(
                        [prepared[r.image_id][0] for r in batch], ranges=[prepared[r.image_id][1:3] for r in batch],
                        codec=CodecConfig(arch=arch, bpp=bpp, depth=depth), fit=fit, device=device, seg_model=seg_model,
                        masks=[prepared[r.image_id][3] for r in batch], progress=progress, ensemble=seg_models[1:],
                        regularizer_options=RegularizerOptions(target=config.seg_target, perturb=config.seg_perturb, seed=config.seed),
                    )  # fmt: skip
                    for ref, result in zip(batch, results, strict=True):
                        start = time.perf_counter()
                        decode(result.data)
                        decode_seconds = time.perf_counter() - start
                        spec, m = result.header.spec, result.metrics
                        record = {**base_record(ref, method, bpp, lam), **judged(ref, result.reconstruction),
                                  "bpp_params": m["bpp_params"], "bpp_file": m["bpp_file"],
                                  "psnr": m["psnr"], "ssim": m["ssim"], "dice": m["dice"], "steps": fit.steps,
                                  "encode_seconds": result.seconds, "decode_seconds": decode_seconds, "arch": spec.to_dict(),
                                  "n_params": spec.n_params(), "lam": result.fit.lam, "reg_every": result.fit.reg_every,
                                  "best_step": result.fit.best_step, "divergences": result.fit.divergences,
                                  "batch_slices": result.fit.batch,
                                  "evaluations": result.fit.evaluations}  # fmt: skip
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
                    record = {**base_record(ref, method, bpp), **judged(ref, decoded), "bpp_params": None, "bpp_file": match.bpp,
                              "psnr": psnr(pred=decoded, target=image), "ssim": ssim(pred=decoded, target=image),
                              "dice": dice(pred=seg_model.predict(decoded), target=mask), "steps": None,
                              "encode_seconds": encode_seconds, "decode_seconds": decode_seconds, "quality": match.quality,
                              "within_budget": match.within_budget, "bit_depth": codec.bit_depth, "library": codec.library,
                              "search_trials": match.trials}  # fmt: skip
                    store(record, match.data, codec.extension)
    if bar is not None:
        bar.close()
    save_results(out, config, records, slices=slice_info)
    table = make_table(records, config)
    atomic_write_bytes(out / "table.md", table.encode())
    figures = make_figures(out, records, config=config, seg_model=seg_model)
    if len(config.lam_values) > 1:
        from sinco.eval.frontier import make_frontier

        figures.append(make_frontier(out, records, config=config))
    return {"records": records, "table": table, "figures": [str(f) for f in figures], "outdir": str(out)}
