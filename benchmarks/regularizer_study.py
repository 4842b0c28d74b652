"""The structural regularizer study (issue 14): every variant against lambda 0, judged independently.

Runs ``sinco benchmark`` once per (variant, dataset, rate), several at a time (``--parallel``), each into
its own folder under ``--out`` (a rerun resumes: the benchmark keeps finished records), then pools the
records of all datasets and prints, per variant and rate, the paired difference to the same family at
lambda 0 over the same slices: the independent judge's Dice, PSNR and the loss network's Dice, with
the Wilcoxon signed-rank and paired t-test p-values (``sinco.benchmark.frontier.paired_comparison``).

Usage (from the repository root; the networks are ``sinco train-seg`` checkpoints, see docs/regularizer.md):

    python benchmarks/regularizer_study.py run --lgg ../shared/data/lgg --lgg-cases $TEST \\
        --brats ../shared/data/brats2013 --brats-case brats_2013_pat0004_1 \\
        --seg-model lossnet5.pt --second-seg-model lossnet.pt --judge judge.pt \\
        --device cuda --parallel 8 --out runs/regularizer-study
    python benchmarks/regularizer_study.py summarize --out runs/regularizer-study

``summarize`` writes ``summary.md`` and ``summary.json`` beside the runs; ``run`` ends with it.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Variant:
    """One regularizer setting: a benchmark method, data term, lambdas and extra benchmark flags."""

    name: str
    method: str
    data_term: str
    lams: str
    extra: tuple[str, ...] = ()
    second_network: bool = False  # adds --seg-model SECOND (an ensemble of two loss networks)


# In priority order: the runner starts them in this order, so a cut-short run has the first ones.
VARIANTS: tuple[Variant, ...] = (
    Variant("siren-sse", "sinco-siren", "sse", "0,1,10,100,1000"),
    Variant("siren-mse", "sinco-siren", "mse", "1"),
    Variant("siren-l2", "sinco-siren", "l2", "1"),
    Variant("inr-sse", "sinco-inr", "sse", "0,1,100"),
    Variant("siren-self", "sinco-siren", "sse", "1,100", ("--seg-target", "self")),
    Variant("siren-perturb", "sinco-siren", "sse", "1,100", ("--seg-perturb", "4")),
    Variant("siren-ensemble", "sinco-siren", "sse", "1,100", second_network=True),
    Variant("inr-l2", "sinco-inr", "l2", "1"),
)
# The lambda-0 run each family's variants are paired with.
BASELINES = {"sinco-siren": "siren-sse", "sinco-inr": "inr-sse"}


@dataclass(frozen=True)
class StudyConfig:
    """Everything a study run depends on (saved as ``study.json`` beside the runs)."""

    lgg: str
    lgg_cases: str
    lgg_images: int
    brats: str
    brats_case: str
    brats_images: int
    seg_model: str
    second_seg_model: str
    judge: str
    bpps: tuple[float, ...]
    preset: str
    seed: int
    device: str
    parallel: int
    variants: tuple[str, ...] = field(default_factory=lambda: tuple(v.name for v in VARIANTS))
    extra: tuple[str, ...] = ()


def datasets(config: StudyConfig) -> dict[str, list[str]]:
    """Benchmark arguments selecting each dataset's held-out tumour slices."""
    return {
        "lgg": ["--data", config.lgg, "--image-glob", "flair.nii.gz", "--label-glob", "mask.nii.gz",
                "--cases", config.lgg_cases, "--images", str(config.lgg_images), "--batch-slices", str(config.lgg_images)],
        "brats": ["--data", config.brats, "--cases", config.brats_case, "--images", str(config.brats_images),
                  "--batch-slices", str(config.brats_images)],
    }  # fmt: skip


def command(config: StudyConfig, variant: Variant, dataset: list[str], bpp: float, out: Path) -> list[str]:
    """The ``sinco benchmark`` command line of one (variant, dataset, rate)."""
    networks = ["--seg-model", config.seg_model] + (["--seg-model", config.second_seg_model] if variant.second_network else [])
    return [sys.executable, "-m", "sinco", "benchmark", *dataset, *networks, "--eval-seg-model", config.judge,
            "--methods", variant.method, "--bpp", f"{bpp:g}", "--preset", config.preset, "--seed", str(config.seed),
            "--lam", variant.lams, "--data-term", variant.data_term, *variant.extra, *config.extra,
            "--device", config.device, "--quiet", "--out", str(out)]  # fmt: skip


def run_one(cmd: list[str], out: Path) -> tuple[str, int, float]:
    """Run one benchmark, its output in ``out.log``; returns (folder name, exit status, seconds)."""
    start = time.perf_counter()
    out.parent.mkdir(parents=True, exist_ok=True)
    with open(f"{out}.log", "w") as log:
        log.write(" ".join(cmd) + "\n")
        log.flush()
        status = subprocess.call(cmd, stdout=log, stderr=subprocess.STDOUT)
    seconds = time.perf_counter() - start
    print(f"{out.name}: exit {status}, {seconds:.0f} s", flush=True)
    return out.name, status, seconds


def run_study(config: StudyConfig, root: Path) -> None:
    """Run every (variant, rate, dataset), ``config.parallel`` at a time, in :data:`VARIANTS` order."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "study.json").write_text(json.dumps(asdict(config), indent=2))
    chosen = [v for v in VARIANTS if v.name in config.variants]
    jobs = [(command(config, v, args, bpp, root / f"{v.name}-{name}-{bpp:g}"), root / f"{v.name}-{name}-{bpp:g}")
            for v in chosen for bpp in config.bpps for name, args in datasets(config).items()]  # fmt: skip
    with ThreadPoolExecutor(max_workers=config.parallel) as pool:
        list(pool.map(lambda job: run_one(*job), jobs))


def load_records(root: Path) -> list[dict[str, Any]]:
    """Every record of every run under ``root``, its method renamed to the variant (``siren-sse``, ...).

    A run's folder is ``VARIANT-DATASET-BPP``, optionally followed by ``+TAG`` (a further run of the
    same variant at other lambdas, e.g. ``siren-sse-lgg-0.2+lam10``).
    """
    records = []
    for results in sorted(root.glob("*/results.json")):
        name = results.parent.name.split("+", 1)[0]
        variant = next(v for v in VARIANTS if name.startswith(v.name + "-"))
        dataset = name[len(variant.name) + 1 :].rsplit("-", 1)[0]
        run = json.loads(results.read_text())
        for record in run["records"]:
            records.append({**record, "family": record["method"], "method": variant.name, "dataset": dataset,
                            "image_id": f"{dataset}/{record['image_id']}", "slice_id": record["image_id"],
                            "run": str(results.parent)})  # fmt: skip
    return records


def add_decoded_metrics(records: list[dict[str, Any]], *, grow: int = 8, second_judge: str | None = None) -> None:
    """Add to every record, from its decoded file and the slice's ground truth: ``psnr_tumour`` and
    ``psnr_tumour_border`` (the PSNR inside the tumour mask, and inside it grown by ``grow`` pixels), and with
    ``second_judge`` (a ``sinco train-seg`` checkpoint) ``dice_judge2`` and ``dice_judge2_reference``: that
    network's Dice on the decoded and on the uncompressed slice.

    The PSNRs involve no segmentation network: they tell a more faithful tumour from a network fooled. A
    second judge of another architecture tells whether a judge's gain transfers beyond the loss network's kind.
    """
    import numpy as np
    from scipy.ndimage import binary_dilation

    from sinco.codec.files import decode_file
    from sinco.data.datasets import discover_cases, load_case_volumes
    from sinco.data.intensity import normalize_minmax
    from sinco.data.io import select_slice
    from sinco.metrics import dice
    from sinco.seg.network import load_seg_model

    judge = None if second_judge is None else load_seg_model(second_judge)
    judge_on_original: dict[str, float] = {}  # image_id -> its Dice on the uncompressed slice (shared by every run)

    def psnr_in(a: np.ndarray, b: np.ndarray, region: np.ndarray) -> float:
        mse = float(np.mean((a[region].astype(np.float64) - b[region]) ** 2))
        return 10 * math.log10(1 / mse) if mse > 0 else 999.0

    for run in sorted({r["run"] for r in records}):
        config = json.loads((Path(run) / "results.json").read_text())["config"]
        cases = {c.case_id: c for c in discover_cases(config["data"], layout=config["layout"], image_glob=config["image_glob"],
                                                      label_glob=config["label_glob"], channel=config["channel"])}  # fmt: skip
        mine = sorted((r for r in records if r["run"] == run), key=lambda r: r["slice_id"])
        volumes: dict[str, Any] = {}
        for record in mine:
            case_id, index = record["slice_id"].rsplit(":", 1)
            if case_id not in volumes:
                volumes = {case_id: load_case_volumes(cases[case_id])}
            image_vol, label_vol = volumes[case_id]
            image, _, _ = normalize_minmax(select_slice(image_vol, slice_index=int(index)))
            mask = select_slice(label_vol, slice_index=int(index)) > 0
            _, decoded = decode_file((Path(run) / record["file"]).read_bytes())
            record["psnr_tumour"] = psnr_in(decoded, image, mask)
            record["psnr_tumour_border"] = psnr_in(decoded, image, binary_dilation(mask, iterations=grow))
            if judge is not None:
                record["dice_judge2"] = dice(pred=judge.predict(decoded), target=mask)
                if record["image_id"] not in judge_on_original:
                    judge_on_original[record["image_id"]] = dice(pred=judge.predict(image), target=mask)
                record["dice_judge2_reference"] = judge_on_original[record["image_id"]]


_METRICS = ("dice_eval", "psnr", "dice", "psnr_tumour", "psnr_tumour_border")
_HEADER = [
    "| variant | slices | bpp | lambda | PSNR (dB) | PSNR vs lambda 0 (dB) | Dice (independent) vs lambda 0 | p Wilcoxon | p t-test "
    "| Dice (loss network) vs lambda 0 | PSNR in tumour vs lambda 0 (dB, p Wilcoxon) | PSNR in tumour + 8 px (dB, p) |",
    "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
]
_JUDGE2_HEADER = (" Dice (second judge) vs lambda 0 (p Wilcoxon, p t-test) |", " --- |")


def summarize(root: Path, *, second_judge: str | None = None) -> str:
    """Markdown tables of every variant against its family's lambda 0: pooled over datasets, then per dataset;
    writes ``summary.md`` and ``summary.json``. With ``second_judge`` (a checkpoint of another architecture)
    the tables add its Dice (see :func:`add_decoded_metrics`)."""
    records = load_records(root)
    add_decoded_metrics(records, second_judge=second_judge)
    metrics = _METRICS + (("dice_judge2",) if second_judge else ())
    rows, table = _paired_rows(records, subset="pooled", metrics=metrics)
    for dataset in sorted({r["dataset"] for r in records}):
        more_rows, more_lines = _paired_rows([r for r in records if r["dataset"] == dataset], subset=dataset, metrics=metrics)
        rows += more_rows
        table += more_lines
    header = [line + extra for line, extra in zip(_HEADER, _JUDGE2_HEADER, strict=True)] if second_judge else _HEADER
    preamble = f"Second judge: {second_judge}.\n\n" if second_judge else ""
    versus_rows, versus_lines = _versus_sse(records)
    text = preamble + "\n".join([_baseline_lines(records), "", *header, *table, "", *versus_lines]) + "\n"
    (root / "summary.md").write_text(text)
    (root / "summary.json").write_text(json.dumps({"second_judge": second_judge, "rows": rows, "versus_sse": versus_rows,
                                                   "baselines": _all_baselines(records)}, indent=2, allow_nan=True))  # fmt: skip
    return text


def _versus_sse(records: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[str]]:
    """Each other SIREN variant paired with ``siren-sse`` at the same rate and lambda, on the slices both have:
    does the variant (self target, ensemble, perturbations, another data term) do better than the plain term?"""
    from sinco.benchmark.frontier import paired_comparison
    from sinco.errors import InputError

    rows = []
    lines = ["Against `siren-sse` at the same rate and lambda (paired over the slices both have):", "",
             "| variant | bpp | lambda | slices | Dice (independent) vs siren-sse | p Wilcoxon | p t-test | PSNR vs siren-sse (dB) |",
             "| --- | --- | --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    settings = sorted({(r["method"], float(r["target_bpp"]), float(r["lam_setting"])) for r in records
                       if r["family"] == "sinco-siren" and r["method"] != "siren-sse" and float(r["lam_setting"]) > 0})  # fmt: skip
    for name, bpp, lam in settings:
        try:
            de, dp = (paired_comparison(records, method=name, bpp=bpp, lam=lam, baseline=("siren-sse", lam), metric=m)
                      for m in ("dice_eval", "psnr"))  # fmt: skip
        except InputError:
            continue
        rows.append({"variant": name, "bpp": bpp, "lam": lam, "d_dice_eval": de, "d_psnr": dp})
        lines.append(f"| {name} | {bpp:g} | {lam:g} | {de['n']} | {de['mean']:+.4f} ± {de['std']:.4f} | {de['p_wilcoxon']:.3g} | "
                     f"{de['p_ttest']:.3g} | {dp['mean']:+.2f} ± {dp['std']:.2f} |")  # fmt: skip
    return rows, lines


def _paired_rows(records: list[dict[str, Any]], *, subset: str, metrics: tuple[str, ...]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every (variant, rate, lambda > 0) of ``records`` paired with its family's lambda 0: JSON rows and table lines."""
    from sinco.benchmark.frontier import paired_comparison
    from sinco.errors import InputError

    rows, lines = [], []
    settings = sorted({(r["method"], r["family"], float(r["target_bpp"]), float(r["lam_setting"])) for r in records},
                      key=lambda s: (s[2], s[1], [v.name for v in VARIANTS].index(s[0]), s[3]))  # fmt: skip
    for name, family, bpp, lam in settings:
        base = (BASELINES[family], 0.0)
        if (name, lam) == base:
            continue
        try:
            diffs = {m: paired_comparison(records, method=name, bpp=bpp, lam=lam, baseline=base, metric=m) for m in metrics}
        except InputError:
            continue
        mean_psnr = _mean(records, name, bpp, lam, "psnr")
        rows.append({"subset": subset, "variant": name, "family": family, "bpp": bpp, "lam": lam, "psnr": mean_psnr,
                     **{f"d_{m}": d for m, d in diffs.items()}})  # fmt: skip
        de, dp, dl, dt, db = (diffs[k] for k in _METRICS)
        line = (f"| {name} | {subset} ({de['n']}) | {bpp:g} | {lam:g} | {mean_psnr:.2f} | {dp['mean']:+.2f} ± {dp['std']:.2f} | "
                f"{de['mean']:+.4f} ± {de['std']:.4f} | {de['p_wilcoxon']:.3g} | {de['p_ttest']:.3g} | "
                f"{dl['mean']:+.4f} ± {dl['std']:.4f} | {dt['mean']:+.2f} ± {dt['std']:.2f} ({dt['p_wilcoxon']:.2g}) | "
                f"{db['mean']:+.2f} ± {db['std']:.2f} ({db['p_wilcoxon']:.2g}) |")  # fmt: skip
        if "dice_judge2" in diffs:
            d2 = diffs["dice_judge2"]
            line += f" {d2['mean']:+.4f} ± {d2['std']:.4f} ({d2['p_wilcoxon']:.3g}, {d2['p_ttest']:.3g}) |"
        lines.append(line)
    return rows, lines


def _mean(records: list[dict[str, Any]], name: str, bpp: float, lam: float, key: str) -> float:
    values = [float(r[key]) for r in records if r["method"] == name and float(r["target_bpp"]) == bpp and float(r["lam_setting"]) == lam]
    return sum(values) / len(values) if values else math.nan


def _baselines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Lambda 0 of each family and rate: mean PSNR, the judge's Dice of the fit and of the uncompressed slice."""
    out = []
    for family, name in BASELINES.items():
        for bpp in sorted({float(r["target_bpp"]) for r in records}):
            chosen = [r for r in records if r["method"] == name and float(r["target_bpp"]) == bpp and float(r["lam_setting"]) == 0.0]
            if chosen:
                n = len(chosen)
                out.append({"family": family, "bpp": bpp, "slices": n, "file_bpp": sum(r["bpp_file"] for r in chosen) / n,
                            "psnr": sum(r["psnr"] for r in chosen) / n,
                            "dice_eval": sum(r["dice_eval"] for r in chosen) / n,
                            "dice_eval_uncompressed": sum(r["dice_eval_reference"] for r in chosen) / n,
                            "dice": sum(r["dice"] for r in chosen) / n, "dice_uncompressed": sum(r["dice_reference"] for r in chosen) / n,
                            **({"dice_judge2": sum(r["dice_judge2"] for r in chosen) / n,
                                "dice_judge2_uncompressed": sum(r["dice_judge2_reference"] for r in chosen) / n}
                               if "dice_judge2" in chosen[0] else {}),
                            "datasets": {d: sum(r["dataset"] == d for r in chosen) for d in sorted({r["dataset"] for r in chosen})}})  # fmt: skip
    return out


def _all_baselines(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """:func:`_baselines` pooled over the datasets, then of each dataset alone."""
    subsets = [records] + [[r for r in records if r["dataset"] == d] for d in sorted({r["dataset"] for r in records})]
    return [b for subset in subsets for b in _baselines(subset)]


def _baseline_lines(records: list[dict[str, Any]]) -> str:
    second = any("dice_judge2" in r for r in records)
    lines = ["| lambda 0 of | bpp | slices | file bpp | PSNR (dB) | Dice (independent) | its uncompressed | Dice (loss network) | its uncompressed |"
             + (" Dice (second judge) | its uncompressed |" if second else ""),
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |" + (" --- | --- |" if second else "")]  # fmt: skip
    for b in _all_baselines(records):
        line = (f"| {b['family']} | {b['bpp']:g} | {b['slices']} ({', '.join(f'{k} {v}' for k, v in b['datasets'].items())}) | "
                f"{b['file_bpp']:.3f} | {b['psnr']:.2f} | {b['dice_eval']:.4f} | {b['dice_eval_uncompressed']:.4f} | "
                f"{b['dice']:.4f} | {b['dice_uncompressed']:.4f} |")  # fmt: skip
        if second:
            line += f" {b['dice_judge2']:.4f} | {b['dice_judge2_uncompressed']:.4f} |"
        lines.append(line)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the benchmarks, then summarize")
    run.add_argument("--lgg", required=True)
    run.add_argument("--lgg-cases", required=True, help="held-out LGG patients, comma-separated")
    run.add_argument("--lgg-images", type=int, default=16)
    run.add_argument("--brats", required=True)
    run.add_argument("--brats-case", required=True)
    run.add_argument("--brats-images", type=int, default=6)
    run.add_argument("--seg-model", required=True, help="the loss network")
    run.add_argument("--second-seg-model", required=True, help="the ensemble's second loss network")
    run.add_argument("--judge", required=True, help="the independent judge")
    run.add_argument("--bpp", default="1.2,0.2")
    run.add_argument("--preset", default="fast")
    run.add_argument("--seed", type=int, default=0)
    run.add_argument("--device", default="auto")
    run.add_argument("--parallel", type=int, default=1, help="benchmarks run at a time")
    run.add_argument("--variants", default=",".join(v.name for v in VARIANTS))
    run.add_argument("--extra", default="", help="more benchmark flags, space-separated (e.g. '--steps 20' for a dry run)")
    run.add_argument("--out", required=True)
    summary = sub.add_parser("summarize", help="pool the finished records and print the paired table")
    summary.add_argument("--out", required=True)
    for command in (run, summary):
        command.add_argument("--second-judge", default=None, metavar="J2.pt",
                             help="a further judge, ideally of another architecture (sinco train-seg --net attention-unet): "
                                  "its Dice on every decoded file joins the tables")  # fmt: skip
    args = parser.parse_args()
    root = Path(args.out)
    if args.command == "run":
        unknown = set(args.variants.split(",")) - {v.name for v in VARIANTS}
        if unknown:
            parser.error(f"--variants: unknown {', '.join(sorted(unknown))}")
        config = StudyConfig(lgg=args.lgg, lgg_cases=args.lgg_cases, lgg_images=args.lgg_images, brats=args.brats,
                             brats_case=args.brats_case, brats_images=args.brats_images, seg_model=args.seg_model,
                             second_seg_model=args.second_seg_model, judge=args.judge,
                             bpps=tuple(float(b) for b in args.bpp.split(",")), preset=args.preset, seed=args.seed,
                             device=args.device, parallel=args.parallel, variants=tuple(args.variants.split(",")),
                             extra=tuple(args.extra.split()))  # fmt: skip
        os.environ.setdefault("PYTHONUNBUFFERED", "1")
        run_study(config, root)
    print(summarize(root, second_judge=args.second_judge))


if __name__ == "__main__":
    main()
