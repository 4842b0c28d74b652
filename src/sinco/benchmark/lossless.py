"""``sinco benchmark --lossless``: sinco's lossless and near-lossless coder against the classical lossless codecs.

The test slices are those of the slice benchmark (:func:`~sinco.benchmark.selection.select_test_slices`). Each slice
is taken on its own integer grey levels (:func:`~sinco.classical.lossless.image_levels`: integers minus the slice's
minimum, or a float lattice's steps, as ``sinco compress --lossless`` takes them) and coded by every method at every
bound ``K`` it takes (``0``: lossless; ``K > 0``: every level within ``K``, JPEG-LS's ``NEAR``). Every file is decoded
back and checked: a decoded level off by more than ``K`` makes an error record, never a number. Rates are the files'
real bytes, kept under ``OUTDIR/files``; ``results.json`` is written after every record, so a rerun resumes (records
that failed are tried again).

With ``slices`` set (``--volumes``), each case's volume, or its slab ``A:B`` (0-based, half-open), is one record per
method and bound instead, taken on the slab's own levels (one lattice for the whole slab) and coded as one whole:
sinco by :func:`~sinco.codec.grid.lossless.compress_exact_volume` (one context model for the slab, as
``sinco compress --lossless --slices`` writes it), a volume codec (FFV1) with the slices as the frames of one file, and
the image codecs slice by slice, one file a slice, their bytes summed (kept under ``files/<record>/``). Rates are then
bits per voxel; a record's ``pixels`` counts the slab's voxels.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable
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
        slices: ``None`` to code test slices; ``all`` or ``A:B`` to code each case's volume, or that slab of it, as one
            whole (``--volumes``; ``images`` and ``min_tumour`` then do not apply).

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
    slices: str | None = None
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
        if self.slices is not None:
            from sinco.benchmark.volumes import parse_slab

            parse_slab(self.slices)
        if self.cases == "val":
            raise InputError(
                "--cases val: the validation cases come from --seg-model, which --lossless does not take; use --cases all or ID,..."
            )

    def bounds_of(self, method: str) -> tuple[int, ...]:
        """The bounds a method runs at: every one of :attr:`max_errors` if it has a near-lossless mode, else 0 alone."""
        return self.max_errors if _takes_max_error(method) else tuple(k for k in self.max_errors if k == 0)

    @property
    def volumes(self) -> bool:
        """Whether records are of whole volumes (slabs) rather than test slices."""
        return self.slices is not None

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists); ``slices`` only for a volume run (slice runs saved before it resume)."""
        fields = asdict(self)
        if fields["slices"] is None:
            del fields["slices"]
        return json.loads(json.dumps({"mode": "lossless", **fields}))


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


def _save(out: Path, config: LosslessConfig, records: list[dict[str, Any]], units: list[dict[str, Any]]) -> None:
    from sinco.utils.atomic import atomic_write_bytes

    payload = {
        "format": LOSSLESS_RESULTS_FORMAT,
        "sinco_version": __version__,
        "config": config.to_dict(),
        "volumes" if config.volumes else "slices": units,
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


@dataclass(frozen=True)
class _Unit:
    """What one group of records is of: a test slice or a slab.

    Args:
        image_id: the records' ``image_id``.
        identity: what every record of it states (``image_id``, ``case``, the slice or the slab's slices).
        info: its entry in ``results.json``.
        load: its values (a slice ``(H, W)`` or a slab ``(S, H, W)``, as stored) and their stored bit depth.
    """

    image_id: str
    identity: dict[str, Any]
    info: dict[str, Any]
    load: Callable[[], tuple[np.ndarray, int | None]]


def _slice_units(cases: list[Any], config: LosslessConfig) -> list[_Unit]:
    """The slice benchmark's test slices; each case's volume is read once, for its slices in a row."""
    from sinco.benchmark.selection import select_test_slices
    from sinco.data.datasets import load_case_volumes
    from sinco.data.io import select_slice

    held: dict[str, tuple[np.ndarray, int | None]] = {}

    def load(ref: Any) -> tuple[np.ndarray, int | None]:
        if ref.case.case_id not in held:
            held.clear()
            volume = load_case_volumes(ref.case)[0]
            held[ref.case.case_id] = (volume, stored_bits(volume, source=ref.case.source(ref.index), name=ref.case.case_id))
        volume, stored = held[ref.case.case_id]
        return select_slice(volume, slice_index=ref.index), stored

    units = []
    for ref in select_test_slices(cases, n_images=config.images, min_tumour=config.min_tumour):
        identity = {"image_id": ref.image_id, "case": ref.case.case_id, "slice": ref.index}
        units.append(_Unit(ref.image_id, identity, {**identity, "source": ref.case.source(ref.index)}, lambda ref=ref: load(ref)))
    return units


def _volume_units(cases: list[Any], config: LosslessConfig) -> list[_Unit]:
    """Each case's slab (:func:`~sinco.benchmark.volumes.read_slab`); every slab is read, and checked, up front."""
    from sinco.benchmark.volumes import read_slab

    units = []
    for case in cases:
        voxels, first = read_slab(case, slices=str(config.slices))
        depth, height, width = voxels.shape
        stored = stored_bits(voxels, source=case.source(first), name=case.case_id)
        image_id = f"{case.case_id}:{first}:{first + depth}"
        identity = {"image_id": image_id, "case": case.case_id, "first_slice": first, "n_slices": depth}
        info = {**identity, "height": height, "width": width, "source": case.source(first)}
        units.append(_Unit(image_id, identity, info, lambda voxels=voxels, stored=stored: (voxels, stored)))
    return units


def run_lossless_benchmark(config: LosslessConfig, *, outdir: str | os.PathLike[str], progress: bool = True) -> dict[str, Any]:
    """Run (or resume) a lossless benchmark and write ``results.json`` and ``table.md``.

    Args:
        config: what to run (with ``config.slices``: whole volumes, see the module's docstring).
        outdir: output folder (created if needed); an earlier run of the same configuration there is resumed.
        progress: show a progress bar.

    Returns:
        ``{"records": [...], "table": str, "outdir": str}``.

    Raises:
        InputError: for bad inputs (unknown cases, no slice, a slab outside a volume, ``outdir`` holding another
            configuration).

    Example::

        result = run_lossless_benchmark(LosslessConfig(data="brats2013", max_errors=(0, 2), images=3), outdir="out")
        print(result["table"])
    """
    from sinco.benchmark.runner import resolve_cases
    from sinco.utils.atomic import atomic_write_bytes
    from sinco.utils.progress import progress_bar

    out = Path(outdir)
    cases = resolve_cases(config, {})  # type: ignore[arg-type]  # reads the dataset fields both configurations share
    units = _volume_units(cases, config) if config.volumes else _slice_units(cases, config)
    out.mkdir(parents=True, exist_ok=True)
    (out / "files").mkdir(exist_ok=True)
    records = [r for r in _load(out, config) if "error" not in r]  # failed records are tried again
    done = {record_key(r) for r in records}
    unit_info = [u.info for u in units]
    jobs = [(u.image_id, m, k) for u in units for m in config.methods for k in config.bounds_of(m)]
    bar = (
        progress_bar(total=len(jobs), initial=sum(j in done for j in jobs), desc="lossless", unit="record", leave=True)
        if progress
        else None
    )
    for unit in units:
        todo = [(m, k) for m in config.methods for k in config.bounds_of(m) if (unit.image_id, m, k) not in done]
        if not todo:
            continue
        values, stored = unit.load()
        for method, bound in todo:
            if bar is not None:
                bar.set_postfix_str(f"{unit.image_id} {method} K={bound}")
            record = _run_one(config, unit, method, bound, values=values, stored=stored, out=out)
            if "error" in record:
                print(
                    f"sinco: warning: {method} on {unit.image_id} (K={bound}): {record['error']}; recorded as failed",
                    file=sys.stderr,
                )
            records.append(record)
            _save(out, config, records, unit_info)
            if bar is not None:
                bar.update(1)
    if bar is not None:
        bar.close()
    records.sort(key=lambda r: jobs.index(record_key(r)) if record_key(r) in jobs else len(jobs))
    _save(out, config, records, unit_info)
    table = make_lossless_table(records, config)
    atomic_write_bytes(out / "table.md", table.encode())
    return {"records": records, "table": table, "outdir": str(out)}


@dataclass(frozen=True)
class _Coded:
    """What a method made of a slice or slab: its file(s) (one, or one a slice for an image codec on a slab), the
    sample depth the coder saw, its library, the files' suffix and the encode seconds."""

    files: list[bytes]
    coded_bits: int
    library: str
    extension: str
    encode_seconds: float


def _run_one(
    config: LosslessConfig, unit: _Unit, method: str, bound: int, *, values: np.ndarray, stored: int | None, out: Path
) -> dict[str, Any]:
    """One method on one slice or slab at one bound: the record (with ``error`` for a refusal or a failed check)."""
    from sinco.classical.lossless import image_levels
    from sinco.codec.grid.lossless import check_max_error
    from sinco.utils.atomic import atomic_write_bytes

    record: dict[str, Any] = {**unit.identity, "method": method, "max_error": bound}
    try:
        levels, lattice, bits = image_levels(values, name=unit.image_id)
        check_max_error(bound, top=lattice.top)
        coded = _encode(config, method, values, levels, bits=bits, lattice=lattice, bound=bound,
                        first_index=int(unit.identity.get("first_slice", 0)))  # fmt: skip
        started = time.perf_counter()
        decoded = _decode(method, coded.files, volume=levels.ndim == 3)
        decode_seconds = time.perf_counter() - started
    except (InputError, ValueError, RuntimeError, OSError) as exc:
        return {**record, "error": " ".join(str(exc).split()) or type(exc).__name__}
    if decoded.shape != levels.shape:
        return {**record, "error": f"decoded shape {decoded.shape} is not the input's {levels.shape}"}
    error = int(np.abs(decoded - levels).max())
    if error > bound:
        return {**record, "error": f"the decoded file is {error} levels off, above the bound {bound}: not counted"}
    name = f"{unit.image_id.replace(':', '_').replace(os.sep, '_')}__{method}__k{bound}"
    if len(coded.files) == 1:
        atomic_write_bytes(out / "files" / f"{name}{coded.extension}", coded.files[0])
        where: dict[str, Any] = {"file": f"files/{name}{coded.extension}"}
    else:  # an image codec on a slab: one file a slice
        (out / "files" / name).mkdir(exist_ok=True)
        paths = [f"files/{name}/{k:04d}{coded.extension}" for k in range(len(coded.files))]
        for path, data in zip(paths, coded.files, strict=True):
            atomic_write_bytes(out / path, data)
        where = {"files": paths}
    size = sum(len(data) for data in coded.files)
    bpp = 8 * size / levels.size
    depth = stored if stored is not None else bits
    return {**record, "levels": int(lattice.top) + 1, "bits": bits, "coded_bits": coded.coded_bits, "stored_bits": depth,
            "pixels": int(levels.size), "file_bytes": size, "bpp_file": bpp, "ratio": depth / bpp, "measured_max_error": error,
            "encode_seconds": coded.encode_seconds, "decode_seconds": decode_seconds, "library": coded.library, **where}  # fmt: skip


def _encode(config: LosslessConfig, method: str, values: np.ndarray, levels: np.ndarray, *, bits: int, lattice: Any, bound: int,
            first_index: int) -> _Coded:  # fmt: skip
    """Code a slice ``(H, W)`` or a slab ``(S, H, W)``. sinco's file carries the lattice (its header's range), so it
    decodes to the input's values, as ``sinco compress --lossless [--slices]`` writes it; a slab is one volume file with
    one context model (its encode seconds: fitting and coding, without the check decode the coder runs before it
    returns). An image codec codes a slab slice by slice."""
    from sinco.codec.grid.context_fit import ContextFitConfig

    if method == SINCO_METHOD:
        fit = ContextFitConfig(seed=config.seed, **({} if config.steps is None else {"steps": config.steps}))
        if levels.ndim == 3:
            from sinco.codec.grid.lossless import compress_exact_volume

            result = compress_exact_volume(values, max_error=bound, config=fit, first_index=first_index)
            return _Coded([result.data], bits, "sinco", ".sinco", result.encode_seconds)
        from sinco.codec.grid.lossless import encode_levels

        started = time.perf_counter()
        data = encode_levels(levels, top=lattice.top, max_error=bound, offset=lattice.offset, step=lattice.step, config=fit)
        return _Coded([data], bits, "sinco", ".sinco", time.perf_counter() - started)
    from sinco.classical.registry import LOSSLESS_CODECS

    codec = LOSSLESS_CODECS[method]()
    planes = [levels] if levels.ndim == 2 or codec.ndim == 3 else list(levels)
    started = time.perf_counter()
    files = [codec.encode(plane, bits=bits, max_error=bound) for plane in planes]
    return _Coded(files, codec.coded_bits(bits), codec.library, codec.extension, time.perf_counter() - started)


def _decode(method: str, files: list[bytes], *, volume: bool) -> np.ndarray:
    """The levels of a method's file(s): a slice ``(H, W)``, or with ``volume`` a slab ``(S, H, W)``."""
    if method == SINCO_METHOD:
        from sinco.codec.grid.lossless import decode_levels, exact_levels_of_volume

        if not volume:
            return decode_levels(files[0])
        decoded = exact_levels_of_volume(files[0])
        if decoded is None:
            raise ValueError("sinco's volume file is not one context-coded volume")
        return decoded
    from sinco.classical.registry import LOSSLESS_CODECS

    codec = LOSSLESS_CODECS[method]()
    if not volume:
        return codec.decode(files[0])
    if len(files) > 1:
        return np.stack([codec.decode(data) for data in files])
    decoded = codec.decode(files[0])
    return decoded[None] if decoded.ndim == 2 else decoded  # a one-slice slab comes back as one frame


def make_lossless_table(records: list[dict[str, Any]], config: LosslessConfig) -> str:
    """The Markdown summary: per method and bound, bits per pixel and ratio over every slice (total bits over total
    pixels), mean encode and decode seconds a slice, the largest error measured, and failed records; then each
    slice's bits per pixel. A volume run says the same of volumes and voxels."""
    good = [r for r in records if "error" not in r]
    unit, per = ("volume", "voxel") if config.volumes else ("slice", "pixel")
    how = (
        f" (slices `{config.slices}` of each, axial, on the slab's levels), each coded as one whole: sinco with one context "
        "model for the slab, FFV1 with the slices as the frames of one file, the image codecs slice by slice with their bytes summed"
        if config.volumes
        else ""
    )
    lines = [
        f"Lossless and near-lossless benchmark: {len({r['image_id'] for r in records})} {unit}(s) of {config.data}{how}; every decoded "
        f"file checked against its bound K (0 = exact). Bits per {per} from the files' bytes; ratio = stored bits per {per} / bits "
        f"per {per}; sample bits = the depth the coder was given (the levels need the depth of the {unit} table's levels).",
        "",
        f"| method | K | N | bits per {per} | ratio | sample bits | encode s | decode s | max error | failed |",
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
    lines += ["", f"Bits per {per} of each {unit} (levels, stored bits):", "",
              f"| {unit} | " + " | ".join(f"{m} K={k}" for m, k in columns) + " |", "|---|" + "---|" * len(columns)]  # fmt: skip
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
