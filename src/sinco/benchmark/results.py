"""A benchmark's records on disk: ``results.json`` (written atomically after every record, so a run resumes), the
names of the files kept under ``OUTDIR/files``, and the grouping of records into table rows."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from sinco.benchmark.config import BenchmarkConfig
from sinco.errors import InputError
from sinco.version import __version__

RESULTS_FORMAT = 3
# Configuration that only changes the summaries: a run may be resumed (or summarized again) with another value.
# Records are keyed by method and rate, so a run may also be extended with more methods or rates.
_NOT_RECORDS = ("anchor", "methods", "bpps")


def record_key(record: dict[str, Any]) -> tuple[str, str, float, float]:
    return record["image_id"], record["method"], float(record["target_bpp"]), float(record.get("lam_setting", 0.0))


def file_name(image_id: str, method: str, bpp: float, extension: str, lam: float | None = None) -> str:
    tag = "" if lam is None else f"__lam{lam:g}"
    return f"{image_id.replace(':', '_').replace(os.sep, '_')}__{method}{tag}__{bpp:g}bpp{extension}"


def load_results(outdir: Path, config: BenchmarkConfig) -> list[dict[str, Any]]:
    """Records of an earlier run of the same configuration in ``outdir`` (empty if none); it may have run other methods
    or rates (see :func:`with_recorded_methods`).

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
    # The resolved fitting configurations must agree for the methods both runs name (the others add or keep records).
    common = set(mine.get("fit", {})) & set(saved_config.get("fit", {}))
    mine["fit"] = {m: mine["fit"][m] for m in common}
    saved_config = {**saved_config, "fit": {m: saved_config["fit"][m] for m in common}}
    differs = sorted(k for k in (set(mine) | set(saved_config)) - set(_NOT_RECORDS) if mine.get(k) != saved_config.get(k))
    if differs:
        raise InputError(
            f"--out {str(outdir)!r}: holds a run with another configuration (differs in {', '.join(differs)}); "
            "use another --out to start a new run"
        )
    return list(records)


def with_recorded_methods(config: BenchmarkConfig, records: list[dict[str, Any]]) -> BenchmarkConfig:
    """``config`` with the methods and rates of ``records`` it does not name (an earlier run extended by this one)
    added, so that summaries cover every record: methods after the configured ones, rates in increasing order."""
    from dataclasses import replace

    methods = list(config.methods)
    methods += [m for m in dict.fromkeys(r["method"] for r in records) if m not in methods]
    bpps = sorted({float(b) for b in config.bpps} | {float(r["target_bpp"]) for r in records})
    return replace(config, methods=tuple(methods), bpps=tuple(bpps))


def save_results(outdir: Path, config: BenchmarkConfig, records: list[dict[str, Any]], *, slices: list[dict[str, Any]] | None,
                 bjontegaard: dict[str, Any] | None = None, extra: dict[str, Any] | None = None) -> None:  # fmt: skip
    """Write ``results.json`` atomically (with a ``bjontegaard`` section when given, see
    :func:`sinco.benchmark.bjontegaard.benchmark_deltas`; ``slices`` left out when ``None``; ``extra``: further
    top-level sections, e.g. the volume benchmark's ``volumes``)."""
    import torch

    from sinco.utils.atomic import atomic_write_bytes

    payload = {
        "format": RESULTS_FORMAT, "sinco_version": __version__, "torch_version": torch.__version__,
        "config": config.to_dict(), **({} if slices is None else {"slices": slices}), **(extra or {}), "records": records,
    }  # fmt: skip
    if bjontegaard is not None:
        payload["bjontegaard"] = bjontegaard
    atomic_write_bytes(outdir / "results.json", (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())



def rows_by_method(config: Any, records: list[dict[str, Any]]) -> list[tuple[str, float | None, list[dict[str, Any]]]]:
    """``(method, lam or None, records)`` per table row, in the configured order (``lam`` only in a sweep)."""
    rows = []
    for method in config.methods:
        lams = config.lams_of(method)
        for lam in lams:
            rs = [r for r in records if r["method"] == method and float(r.get("lam_setting", 0.0)) == float(lam)]
            if rs:
                rows.append((method, lam if len(lams) > 1 else None, rs))
    return rows
