"""``sinco report``: a benchmark's table and rate-distortion figure, redrawn from its ``results.json`` alone.

The benchmark keeps its results as data (``results.json``: the full configuration, every record, the version that made
it). This module redraws the summaries from that file, without the data set or the coded files, so the figures of the
documentation can be remade from the JSON kept under ``results/``.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from sinco.benchmark.bjontegaard import bjontegaard_section
from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.figures import plot_rate_distortion, save_figure
from sinco.benchmark.methods import method_label
from sinco.benchmark.results import rows_by_method, with_recorded_methods
from sinco.benchmark.tables import make_table
from sinco.benchmark.volumes import VolumeBenchmarkConfig, make_volume_table
from sinco.errors import InputError


@dataclass(frozen=True)
class SavedRun:
    """A benchmark run read back from its ``results.json``.

    Args:
        path: the file.
        config: the run's configuration.
        records: its records.
        version: the sinco version that wrote it.
        volumes: the volumes of a volume benchmark (``benchmark --volumes``); ``None`` for slices.
        failures: a volume benchmark's failed records.
    """

    path: Path
    config: BenchmarkConfig
    records: list[dict[str, Any]]
    version: str
    volumes: list[dict[str, Any]] | None = None
    failures: tuple[dict[str, Any], ...] = ()


def load_run(path: str | os.PathLike[str], *, anchor: str | None = None) -> SavedRun:
    """Read a benchmark's ``results.json``.

    Args:
        path: the file (or the run's folder).
        anchor: the method of the Bjontegaard deltas (default: the run's own anchor).

    Returns:
        The :class:`SavedRun`.

    Raises:
        InputError: if the file is missing or not a benchmark's results, or ``anchor`` did not run.
    """
    path = Path(path)
    path = path / "results.json" if path.is_dir() else path
    try:
        saved = json.loads(path.read_text())
        kind = VolumeBenchmarkConfig if saved["config"].get("benchmark") == "volumes" else BenchmarkConfig
        known = {f.name for f in fields(kind)}
        settings = {k: tuple(v) if isinstance(v, list) else v for k, v in saved["config"].items() if k in known}
        records = list(saved["records"])
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{str(path)!r}: not a benchmark's results.json ({exc})") from None
    if saved["config"].get("mode") == "lossless":
        raise InputError(f"{str(path)!r}: a lossless benchmark's results (no rates to draw); its table.md is its report")
    if not records:
        raise InputError(f"{str(path)!r}: holds no records")
    config = with_recorded_methods(kind(**settings), records)
    if anchor is not None:
        if anchor not in config.methods:
            raise InputError(f"--anchor {anchor!r}: not a method of {str(path)!r} ({', '.join(config.methods)})")
        config = replace(config, anchor=anchor)
    elif config.anchor not in config.methods:
        config = replace(config, anchor=config.methods[0])
    volumes = saved.get("volumes") if kind is VolumeBenchmarkConfig else None
    return SavedRun(path=path, config=config, records=records, version=str(saved.get("sinco_version", "unknown")), volumes=volumes,
                    failures=tuple(saved.get("failures", ())))  # fmt: skip


def write_report(paths: list[str | os.PathLike[str]], *, outdir: str | os.PathLike[str], anchor: str | None = None) -> list[Path]:
    """Redraw the tables and one rate-distortion figure of several benchmark runs.

    Writes ``OUTDIR/<name>.md`` per run (the benchmark's table with its Bjontegaard deltas; ``<name>`` is the run's
    folder name) and ``OUTDIR/rate_distortion.png`` with one panel per run.

    Args:
        paths: ``results.json`` files (or run folders).
        outdir: where the report goes (created if needed).
        anchor: the Bjontegaard anchor of every table (default: each run's own).

    Returns:
        The paths written.

    Raises:
        InputError: for an unreadable results file or an anchor that did not run.

    Example::

        write_report(["results/brats-fast/results.json", "results/lgg-fast/results.json"], outdir="report")
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinco.utils.atomic import atomic_path, atomic_write_bytes

    runs = [load_run(p, anchor=anchor) for p in paths]
    out = Path(outdir)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for run in runs:
        deltas = bjontegaard_section(run.records, run.config)
        if run.volumes is None:
            table = make_table(run.records, run.config, bjontegaard=deltas)
        else:
            table = make_volume_table(run.records, run.config, deltas=deltas, failures=list(run.failures), volumes=run.volumes)
        name = out / f"{run.path.parent.name or 'results'}.md"
        atomic_write_bytes(name, f"{table}\nMade by sinco {run.version}; redrawn from `{run.path}`.\n".encode())
        written.append(name)
    order = list(dict.fromkeys(method_label(m, lam) for run in runs for m, lam, _ in rows_by_method(run.config, run.records)))
    fig, axes = plt.subplots(1, len(runs), figsize=(5.2 * len(runs), 4.2), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        plot_rate_distortion(ax, run.records, config=run.config, order=order)
        images = len({r["image_id"] for r in run.records})
        ax.set_title(f"{run.path.parent.name}: {images} {'slice' if run.volumes is None else 'volume'}(s)", fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    written.append(save_figure(fig, out / "rate_distortion.png", atomic_path))
    plt.close(fig)
    return written
