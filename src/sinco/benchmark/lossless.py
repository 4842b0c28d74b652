"""``sinco benchmark --lossless``: sinco's lossless and near-lossless coder against the classical lossless codecs.

The test slices are those of the slice benchmark (:func:`~sinco.benchmark.selection.select_test_slices`). Each slice
is taken on its own integer grey levels (:func:`~sinco.classical.lossless.image_levels`: integers minus the slice's
minimum, or a float lattice's steps, as ``sinco compress --lossless`` takes them) and coded by every method at every
bound ``K`` it takes (``0``: lossless; ``K > 0``: every level within ``K``, JPEG-LS's ``NEAR``). Every file is decoded
back and checked: a decoded level off by more than ``K`` makes an error record, never a number. Rates are the files'
real bytes, kept under ``OUTDIR/files``; ``results.json`` is written after every record, so a rerun resumes (records
that failed are tried again).
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from sinco.errors import InputError
from sinco.version import __version__

#: Version of the lossless benchmark's ``results.json``.
LOSSLESS_RESULTS_FORMAT = 1
#: sinco's own method: the grid family's lossless and near-lossless mode (its context coder).
SINCO_METHOD = "grid"
SINCO_LABEL = "sinco (grid, context coder)"


def lossless_methods() -> tuple[str, ...]:
    """Every method of the lossless benchmark: sinco's first, then :data:`~sinco.classical.registry.LOSSLESS_CODECS`."""
    from sinco.classical.registry import LOSSLESS_CODECS

    return (SINCO_METHOD, *LOSSLESS_CODECS)


def _takes_max_error(method: str) -> bool:
    from sinco.classical.registry import LOSSLESS_CODECS

    return method == SINCO_METHOD or LOSSLESS_CODECS[method].supports_max_error


def method_label(method: str) -> str:
    """The name tables show for a lossless method."""
    from sinco.classical.registry import LOSSLESS_CODECS

    return SINCO_LABEL if method == SINCO_METHOD else LOSSLESS_CODECS[method].label


@dataclass(frozen=True)
class LosslessConfig:
    """Everything that decides a lossless benchmark's records (saved in ``results.json``).

    Args:
        data: dataset folder.
        layout: dataset layout (``auto``, ``decathlon``, ``folders``, ``images``).
        image_glob: ``folders``/``images`` layout image pattern.
        label_glob: tumour labels' pattern (``None``: no labels); with labels, test slices have at least
            ``min_tumour`` tumour, as in the slice benchmark.
        channel: modality of 4-D volumes.
        cases: ``"all"`` or comma-separated case ids.
        methods: from :func:`lossless_methods` (default: all of them).
        max_errors: the bounds ``K`` (``0`` = lossless); methods without a near-lossless mode run at ``K = 0`` only.
        images: number of test slices.
        min_tumour: minimum tumour fraction of a test slice (with labels).
        steps: fitting steps of sinco's context model (``None``: its default).
        seed: seed of sinco's context model.

    Raises:
        InputError: if a value is out of range.
    """

    data: str
    layout: str = "auto"
    image_glob: str = "Flair*.nii.gz"
    label_glob: str | None = "OTMultiClass.nii.gz"
    channel: int = 0
    cases: str = "all"
    methods: tuple[str, ...] = ()
    max_errors: tuple[int, ...] = (0,)
    images: int = 10
    min_tumour: float = 0.01
    steps: int | None = None
    seed: int = 0
    #: The slice benchmark's region-of-interest pattern (case discovery reads it): no ROI metrics here.
    roi_glob = None

    def __post_init__(self) -> None:
        known = lossless_methods()
        if not self.methods:
            object.__setattr__(self, "methods", known)
        unknown = [m for m in self.methods if m not in known]
        if unknown:
            raise InputError(
                f"--methods {','.join(self.methods)!r}: unknown with --lossless {unknown}; expected names from {', '.join(known)}"
            )
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"--methods {','.join(self.methods)!r}: a method is listed twice")
        bounds = self.max_errors
        if (
            not bounds
            or any(isinstance(k, bool) or not isinstance(k, int) or k < 0 for k in bounds)
            or len(set(bounds)) != len(bounds)
        ):
            raise InputError(f"--max-error {','.join(map(str, bounds))!r}: expected distinct non-negative integers")
        if self.images < 1:
            raise InputError(f"--images {self.images}: must be at least 1")
        if self.steps is not None and self.steps < 0:
            raise InputError(f"--steps {self.steps}: must be a non-negative integer")
        if self.seed < 0:
            raise InputError(f"--seed {self.seed}: must be a non-negative integer")
        if self.cases == "val":
            raise InputError(
                "--cases val: the validation cases come from --seg-model, which --lossless does not take; use --cases all or ID,..."
            )

    def bounds_of(self, method: str) -> tuple[int, ...]:
        """The bounds a method runs at: every one of :attr:`max_errors` if it has a near-lossless mode, else 0 alone."""
        return self.max_errors if _takes_max_error(method) else tuple(k for k in self.max_errors if k == 0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists)."""
        return json.loads(json.dumps({"mode": "lossless", **asdict(self)}))


def record_key(record: dict[str, Any]) -> tuple[str, str, int]:
    """``(image_id, method, max_error)``: what a record is of."""
    return record["image_id"], record["method"], int(record["max_error"])


def _load(out: Path, config: LosslessConfig) -> list[dict[str, Any]]:
    path = out / "results.json"
    if not path.exists():
        return []
    try:
        saved = json.loads(path.read_text())
        saved_config, records = saved["config"], list(saved["records"])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"--out {str(out)!r}: unreadable results.json ({exc}); use another --out") from None
    mine = config.to_dict()
    differs = sorted(k for k in set(mine) | set(saved_config) if mine.get(k) != saved_config.get(k))
    if differs:
        raise InputError(f"--out {str(out)!r}: holds a run with another configuration (differs in {', '.join(differs)}); "
                         "use another --out to start a new run")  # fmt: skip
    return records


def _save(out: Path, config: LosslessConfig, records: list[dict[str, Any]], slices: list[dict[str, Any]]) -> None:
    from sinco.utils.atomic import atomic_write_bytes

    payload = {
        "format": LOSSLESS_RESULTS_FORMAT,
        "sinco_version": __version__,
        "config": config.to_dict(),
        "slices": slices,
        "records": records,
    }
    atomic_write_bytes(out / "results.json", (json.dumps(payload, indent=1, allow_nan=False) + "\n").encode())


def stored_bits(volume: np.ndarray, *, source: str, name: str) -> int | None:
    """The bit depth a volume is stored at: the integer type of its file (a NIfTI header's, or the array's when it
    comes as integers), else, for floats on an integer lattice, the bits of that lattice's levels (the BraTS z-scores:
    those of the scan's integers); None for floats on no lattice."""
    from sinco.codec.grid.lossless import find_lattice

    dtype = volume.dtype
    if source.endswith((".nii", ".nii.gz")):
        import nibabel as nib

        try:
            dtype = np.dtype(nib.load(source).get_data_dtype())  # the reader gives float32 whatever the file holds
        except Exception:  # noqa: BLE001 - the volume was read already; its header only names the depth
            dtype = volume.dtype
    if dtype.kind in "biu":
        return 1 if dtype.kind == "b" else 8 * dtype.itemsize
    try:
        return max(1, find_lattice(volume, name=name).top.bit_length())
    except InputError:
        return None


def run_lossless_benchmark(config: LosslessConfig, *, outdir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a lossless benchmark and write ``results.json`` and ``table.md``.

    Args:
        config: what to run.
        outdir: output folder (created if needed); an earlier run of the same configuration there is resumed.
        progress: show a progress bar.

    Returns:
        ``{"records": [...], "table": str, "outdir": str}``.

    Raises:
        InputError: for bad inputs (unknown cases, no slice, ``outdir`` holding another configuration).

    Example::

        result = run_lossless_benchmark(LosslessConfig(data="brats2013", max_errors=(0, 2), images=3), outdir="out")
        print(result["table"])
    """
    from sinco.benchmark.runner import resolve_cases
    from sinco.benchmark.selection import select_test_slices
    from sinco.data.datasets import load_case_volumes
    from sinco.utils.atomic import atomic_write_bytes
    from sinco.utils.progress import progress_bar

    out = Path(outdir)
    cases = resolve_cases(config, {})  # type: ignore[arg-type]  # reads the dataset fields both configurations share
    out.mkdir(parents=True, exist_ok=True)
    (out / "files").mkdir(exist_ok=True)
    records = [r for r in _load(out, config) if "error" not in r]  # failed records are tried again
    done = {record_key(r) for r in records}
    slices = select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour)
    slice_info = [
        {"image_id": s.image_id, "case": s.case.case_id, "slice": s.index, "source": s.case.source(s.index)} for s in slices
    ]
    jobs = [(s.image_id, m, k) for s in slices for m in config.methods for k in config.bounds_of(m)]
    bar = (
        progress_bar(total=len(jobs), initial=sum(j in done for j in jobs), desc="lossless", unit="record", leave=True)
        if progress
        else None
    )
    loaded: tuple[str, np.ndarray, int | None] | None = None
    for ref in slices:
        todo = [(m, k) for m in config.methods for k in config.bounds_of(m) if (ref.image_id, m, k) not in done]
        if not todo:
            continue
        if loaded is None or loaded[0] != ref.case.case_id:
            volume = load_case_volumes(ref.case)[0]
            loaded = (ref.case.case_id, volume, stored_bits(volume, source=ref.case.source(ref.index), name=ref.case.case_id))
        for method, bound in todo:
            if bar is not None:
                bar.set_postfix_str(f"{ref.image_id} {method} K={bound}")
            record = _run_one(config, ref, method, bound, volume=loaded[1], stored=loaded[2], out=out)
            if "error" in record:
                print(
                    f"sinco: warning: {method} on {ref.image_id} (K={bound}): {record['error']}; recorded as failed",
                    file=sys.stderr,
                )
            records.append(record)
            _save(out, config, records, slice_info)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    records.sort(key=lambda r: jobs.index(record_key(r)) if record_key(r) in jobs else len(jobs))
    _save(out, config, records, slice_info)
    table = make_lossless_table(records, config)
    atomic_write_bytes(out / "table.md", table.encode())
    return {"records": records, "table": table, "outdir": str(out)}


def _run_one(
    config: LosslessConfig, ref: Any, method: str, bound: int, *, volume: np.ndarray, stored: int | None, out: Path
) -> dict[str, Any]:
    """One method on one slice at one bound: the record (with ``error`` for a refusal or a failed check)."""
    from sinco.classical.lossless import image_levels
    from sinco.codec.grid.lossless import check_max_error
    from sinco.data.io import select_slice
    from sinco.utils.atomic import atomic_write_bytes

    record: dict[str, Any] = {
        "image_id": ref.image_id,
        "case": ref.case.case_id,
        "slice": ref.index,
        "method": method,
        "max_error": bound,
    }
    try:
        levels, lattice, bits = image_levels(select_slice(volume, slice_index=ref.index), name=ref.image_id)
        check_max_error(bound, top=lattice.top)
        data, coded_bits, library, extension, encode_seconds = _encode(
            config, method, levels, bits=bits, lattice=lattice, bound=bound
        )
        started = time.perf_counter()
        decoded = _decode(method, data)
        decode_seconds = time.perf_counter() - started
    except (InputError, ValueError, RuntimeError, OSError) as exc:
        return {**record, "error": " ".join(str(exc).split()) or type(exc).__name__}
    if decoded.shape != levels.shape:
        return {**record, "error": f"decoded shape {decoded.shape} is not the slice's {levels.shape}"}
    error = int(np.abs(decoded - levels).max())
    if error > bound:
        return {**record, "error": f"the decoded file is {error} levels off, above the bound {bound}: not counted"}
    name = f"{ref.image_id.replace(':', '_').replace(os.sep, '_')}__{method}__k{bound}{extension}"
    atomic_write_bytes(out / "files" / name, data)
    bpp = 8 * len(data) / levels.size
    depth = stored if stored is not None else bits
    return {**record, "levels": int(lattice.top) + 1, "bits": bits, "coded_bits": coded_bits, "stored_bits": depth,
            "pixels": int(levels.size), "file_bytes": len(data), "bpp_file": bpp, "ratio": depth / bpp, "measured_max_error": error,
            "encode_seconds": encode_seconds, "decode_seconds": decode_seconds, "library": library, "file": f"files/{name}"}  # fmt: skip


def _encode(
    config: LosslessConfig, method: str, levels: np.ndarray, *, bits: int, lattice: Any, bound: int
) -> tuple[bytes, int, str, str, float]:
    """``(file, the sample depth the coder saw, library, file suffix, encode seconds)``; sinco's file carries the
    slice's lattice (its header's range), so it decodes to the slice's values, as ``sinco compress --lossless`` writes."""
    if method == SINCO_METHOD:
        from sinco.codec.grid.context_fit import ContextFitConfig
        from sinco.codec.grid.lossless import encode_levels

        fit = ContextFitConfig(seed=config.seed, **({} if config.steps is None else {"steps": config.steps}))
        started = time.perf_counter()
        data = encode_levels(levels, top=lattice.top, max_error=bound, offset=lattice.offset, step=lattice.step, config=fit)
        return data, bits, "sinco", ".sinco", time.perf_counter() - started
    from sinco.classical.registry import LOSSLESS_CODECS

    codec = LOSSLESS_CODECS[method]()
    started = time.perf_counter()
    data = codec.encode(levels, bits=bits, max_error=bound)
    return data, codec.coded_bits(bits), codec.library, codec.extension, time.perf_counter() - started


def _decode(method: str, data: bytes) -> np.ndarray:
    if method == SINCO_METHOD:
        from sinco.codec.grid.lossless import decode_levels

        return decode_levels(data)
    from sinco.classical.registry import LOSSLESS_CODECS

    return LOSSLESS_CODECS[method]().decode(data)


def make_lossless_table(records: list[dict[str, Any]], config: LosslessConfig) -> str:
    """The Markdown summary: per method and bound, bits per pixel and ratio over every slice (total bits over total
    pixels), mean encode and decode seconds a slice, the largest error measured, and failed records; then each
    slice's bits per pixel."""
    good = [r for r in records if "error" not in r]
    lines = [
        f"Lossless and near-lossless benchmark: {len({r['image_id'] for r in records})} slice(s) of {config.data}; every decoded file "
        "checked against its bound K (0 = exact). Bits per pixel from the files' bytes; ratio = stored bits per pixel / bits per pixel; "
        "sample bits = the depth the coder was given (the levels need the depth of the slice table's levels).",
        "",
        "| method | K | N | bits per pixel | ratio | sample bits | encode s | decode s | max error | failed |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]  # fmt: skip
    for method in config.methods:
        for bound in config.bounds_of(method):
            rows = [r for r in good if r["method"] == method and r["max_error"] == bound]
            failed = sum(1 for r in records if "error" in r and r["method"] == method and r["max_error"] == bound)
            if not rows:
                lines.append(f"| {method_label(method)} | {bound} | 0 | | | | | | | {failed} |")
                continue
            pixels = sum(r["pixels"] for r in rows)
            bits = sum(8 * r["file_bytes"] for r in rows)
            stored = sum(r["stored_bits"] * r["pixels"] for r in rows)
            depths = sorted({r["coded_bits"] for r in rows})
            sample = str(depths[0]) if len(depths) == 1 else f"{depths[0]}-{depths[-1]}"
            lines.append(f"| {method_label(method)} | {bound} | {len(rows)} | {bits / pixels:.3f} | {stored / bits:.2f} | {sample} | "
                         f"{np.mean([r['encode_seconds'] for r in rows]):.3f} | {np.mean([r['decode_seconds'] for r in rows]):.3f} | "
                         f"{max(r['measured_max_error'] for r in rows)} | {failed} |")  # fmt: skip
    columns = [(m, k) for m in config.methods for k in config.bounds_of(m)]
    lines += ["", "Bits per pixel of each slice (levels, stored bits):", "",
              "| slice | " + " | ".join(f"{m} K={k}" for m, k in columns) + " |", "|---|" + "---|" * len(columns)]  # fmt: skip
    for image_id in dict.fromkeys(r["image_id"] for r in records):
        mine = {(r["method"], r["max_error"]): r for r in records if r["image_id"] == image_id}
        some = next((r for r in mine.values() if "error" not in r), None)
        head = image_id if some is None else f"{image_id} ({some['levels']} levels, {some['stored_bits']}-bit)"
        cells = []
        for key in columns:
            r = mine.get(key)
            cells.append("" if r is None else ("failed" if "error" in r else f"{r['bpp_file']:.3f}"))
        lines.append(f"| {head} | " + " | ".join(cells) + " |")
    failures = [r for r in records if "error" in r]
    if failures:
        lines += ["", "Failed records:", ""] + [
            f"- {r['method']} on {r['image_id']} (K={r['max_error']}): {r['error']}" for r in failures
        ]
    return "\n".join(lines) + "\n"
