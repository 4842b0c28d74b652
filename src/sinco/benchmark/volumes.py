"""``sinco benchmark --volumes``: every test case's volume (or the slab ``--slices A:B``) coded as one whole by every method.

All methods see one intensity range, the slab's minimum and maximum (the slab is scaled to ``[0, 1]`` on them), and
every figure is measured on the voxels decoded from the file the method wrote, at the rate of that file's real bytes.

How a method codes a slab ``(S, H, W)`` depends on its kind (:func:`method_kind`):

- ``family``: a neural codec family, slice by slice, through :func:`sinco.compression.volume.compress_volume` (what
  ``sinco compress --slices`` does): one ``.sinco`` volume file. Each slice's target is the slab's rate less the
  container's bytes spread over the voxels, so the whole file fits the budget wherever the family's own rate does
  (the INR families count their rate in parameters, as the paper does: their files carry a header on top).
- ``image-codec``: a classical still-image codec, slice by slice with one quality setting for every slice: the
  highest whose whole slab file (the slices' files, each with its length) fits the budget
  (:class:`~sinco.classical.slices.SliceBySlice` under :func:`~sinco.classical.base.encode_at_bpp`). That is what a
  user with a budget for the volume does with a codec that has one quality knob.
- ``volume-family``: a neural family that codes slabs (``grid3d``), through
  :func:`sinco.compression.volume.compress_volume_slabs` (what ``sinco compress --slices --arch grid3d`` does): one
  volume file of slabs at the slab's rate, header included, with the voxel spacing of the case's file.
- ``volume-codec``: a classical volume codec (:data:`~sinco.classical.registry.VOLUME_CODECS`, e.g. a video codec
  with the slices as frames) on the whole slab, its quality searched the same way. A codec's ``details`` (a JSON-ready
  dict of its settings: intra period, bit depth seen, ...) go into the record.

A new kind, e.g. a neural volume family fitting the whole slab: give :func:`method_kind` its rule and :data:`KINDS` an
entry ``(coder, decoder)``. The coder takes the slab and returns a :class:`Coded` (the file's bytes and what the
record should say about its settings); the decoder turns those bytes back into ``(S, H, W)``. The runner does the
rest: timing, metrics, records, resuming, tables and figures.
"""

from __future__ import annotations

import math
import os
import sys
import time
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sinco.benchmark.bjontegaard import LOSSLESS_PSNR, bjontegaard_section
from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.methods import all_methods, codec_methods, is_regularized, method_label, volume_methods
from sinco.benchmark.results import file_name, load_results, record_key, rows_by_method, save_results, with_recorded_methods
from sinco.benchmark.runner import resolve_cases
from sinco.benchmark.tables import CEILING_MARGIN, _bjontegaard_lines, _ceiling_note, _psnr_cell, _stat
from sinco.errors import InputError, SincoError
from sinco.utils.progress import progress_bar

if TYPE_CHECKING:
    import torch

#: The PSNR stored for an exact reconstruction (JSON has no infinity), as the slice benchmark stores it.
EXACT_PSNR = 999.0


def parse_slab(text: str) -> tuple[int, int | None]:
    """Parse ``--slices``: ``all``, or ``A:B`` (0-based, half-open like Python slicing; ``A:`` and ``:B`` too).

    Args:
        text: the range as typed.

    Returns:
        ``(start, stop)``; ``stop`` is ``None`` for "to the last slice".

    Raises:
        InputError: if the text is malformed or the range empty.
    """
    if text.strip().lower() == "all":
        return 0, None
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else None
    except ValueError:
        raise InputError(f"--slices {text!r}: expected 'all' or A:B (0-based, half-open, e.g. 40:104)") from None
    if start < 0 or (stop is not None and stop <= start):
        raise InputError(f"--slices {text!r}: need 0 <= A < B (0-based, half-open, e.g. 40:104)")
    return start, stop


@dataclass(frozen=True)
class VolumeBenchmarkConfig(BenchmarkConfig):
    """A :class:`~sinco.benchmark.config.BenchmarkConfig` for volumes: every case's slab coded whole by every method.

    ``images`` and ``min_tumour`` are not used (every case of ``cases`` is one test volume); ``batch_slices`` is the
    batch of the neural families' slice fits. No segmentation model: the volume benchmark measures no Dice and runs
    no regularized method.

    Args:
        slices: the slab of each volume along the axial axis: ``all`` or ``A:B`` (see :func:`parse_slab`).

    Raises:
        InputError: as :class:`~sinco.benchmark.config.BenchmarkConfig`, and for a segmentation model, a regularized
            method or a malformed ``slices``.
    """

    slices: str = "all"

    def known_methods(self) -> tuple[str, ...]:
        """The unregularized methods of the slice benchmark, and the volume codecs."""
        return (*(m for m in all_methods() if not is_regularized(m)), *volume_methods())

    def __post_init__(self) -> None:
        if self.seg_model is not None:
            raise InputError("--seg-model: the volume benchmark measures no Dice and runs no regularized method; drop --seg-model")
        regularized = [m for m in self.methods if is_regularized(m)]
        if regularized:
            raise InputError(f"--methods {','.join(regularized)}: regularized methods are not run on volumes (--volumes)")
        parse_slab(self.slices)
        super().__post_init__()

    def to_dict(self) -> dict[str, Any]:
        """As :meth:`BenchmarkConfig.to_dict`, with ``"benchmark": "volumes"``."""
        return {"benchmark": "volumes", **super().to_dict()}


@dataclass(frozen=True)
class Slab:
    """One test volume: consecutive axial slices of a case, scaled to ``[0, 1]`` on their own minimum and maximum.

    Args:
        case_id: the case.
        first: source index of the first slice.
        voxels: float32 ``(S, H, W)`` in ``[0, 1]``.
        vmin: the intensity 0 stands for.
        vmax: the intensity 1 stands for.
    """

    case_id: str
    first: int
    voxels: np.ndarray = field(repr=False)
    vmin: float
    vmax: float
    affine: np.ndarray = field(default_factory=lambda: np.eye(4), repr=False)

    @property
    def stop(self) -> int:
        """Source index after the last slice."""
        return self.first + self.voxels.shape[0]

    @property
    def volume_id(self) -> str:
        """``"case:A:B"``: the record's ``image_id``."""
        return f"{self.case_id}:{self.first}:{self.stop}"

    def info(self) -> dict[str, Any]:
        """JSON-ready description for ``results.json``."""
        n, height, width = self.voxels.shape
        return {"image_id": self.volume_id, "case": self.case_id, "first_slice": self.first, "stop_slice": self.stop, "n_slices": n,
                "height": height, "width": width, "vmin": self.vmin, "vmax": self.vmax}  # fmt: skip


def read_slab(case: Any, *, slices: str) -> tuple[np.ndarray, int]:
    """The slab of a case's volume (axial axis) as stored: its voxels ``(S, H, W)`` in the reader's type, unscaled.

    Args:
        case: the dataset case.
        slices: ``all`` or ``A:B`` (see :func:`parse_slab`).

    Returns:
        ``(voxels, first)``: the slab and the source index of its first slice.

    Raises:
        InputError: if the range leaves the volume, or the slab is not finite.
    """
    from sinco.data.datasets import load_case_volumes

    image, _ = load_case_volumes(case)
    start, stop = parse_slab(slices)
    depth = image.shape[2]
    stop = depth if stop is None else stop
    if stop > depth:
        raise InputError(f"--slices {slices!r}: case {case.case_id} has {depth} slices (0..{depth - 1})")
    stack = np.moveaxis(np.asarray(image[:, :, start:stop]), 2, 0)
    if not np.all(np.isfinite(stack)):
        raise InputError(f"case {case.case_id}: slices {start}:{stop} contain NaN or Inf voxels")
    return stack, start


def load_slab(case: Any, *, slices: str) -> Slab:
    """The slab of a case's volume (axial axis, :func:`read_slab`), scaled to ``[0, 1]`` on the slab's own range.

    Raises:
        InputError: if the range leaves the volume, or the slab is constant or not finite.
    """
    from sinco.metrics.image import SSIM_MIN_SIDE

    raw, start = read_slab(case, slices=slices)
    stack, stop = raw.astype(np.float64), start + raw.shape[0]
    if min(stack.shape[1:]) < SSIM_MIN_SIDE:
        raise InputError(f"case {case.case_id}: slices of {stack.shape[1]}x{stack.shape[2]} are below the SSIM window")
    vmin, vmax = float(stack.min()), float(stack.max())
    if vmax <= vmin:
        raise InputError(f"case {case.case_id}: slices {start}:{stop} are constant; nothing to compress")
    affine = np.eye(4)
    if getattr(case, "image", None) is not None and not getattr(case, "image_files", None):
        from sinco.data.io import load_affine

        affine = load_affine(case.image, arg=f"image of case {case.case_id}")  # the voxel spacing the volume families read
    return Slab(case_id=case.case_id, first=start, voxels=((stack - vmin) / (vmax - vmin)).astype(np.float32), vmin=vmin, vmax=vmax,
                affine=affine)  # fmt: skip


def volume_metrics(decoded: np.ndarray, *, target: np.ndarray) -> dict[str, Any]:
    """The figures of a decoded slab against the original, both ``(S, H, W)`` in ``[0, 1]`` (the slab's range).

    Returns:
        ``psnr`` (volume PSNR: the MSE over every voxel), ``psnr_slice_mean`` and ``ssim`` (means over the slices
        that are not constant in the original, each on the slab's range), ``slices_measured`` (how many), ``mse``.
        An exact reconstruction's PSNR is stored as :data:`EXACT_PSNR`.

    Raises:
        InputError: if the shapes differ.
    """
    from sinco.metrics import psnr, ssim

    if decoded.shape != target.shape:
        raise InputError(f"decoded slab of shape {tuple(decoded.shape)}, the original is {tuple(target.shape)}")
    error = decoded.astype(np.float64) - target.astype(np.float64)
    mse = float(np.mean(error**2))
    measured = [i for i in range(target.shape[0]) if target[i].max() > target[i].min()]
    slice_psnr = [min(psnr(pred=decoded[i], target=target[i]), EXACT_PSNR) for i in measured]
    return {
        "psnr": EXACT_PSNR if mse == 0 else min(10 * math.log10(1.0 / mse), EXACT_PSNR),
        "psnr_slice_mean": float(np.mean(slice_psnr)) if measured else None,
        "ssim": float(np.mean([ssim(pred=decoded[i], target=target[i]) for i in measured])) if measured else None,
        "slices_measured": len(measured),
        "mse": mse,
    }


@dataclass(frozen=True)
class Coded:
    """What a coder made of a slab: the file's bytes, its suffix, and the settings the record keeps.

    Args:
        data: the file's bytes (the rate is theirs).
        extension: the file's suffix.
        details: JSON-ready settings (quality chosen, intra period, slices fitted, ...).
    """

    data: bytes
    extension: str
    details: dict[str, Any]


def _code_with_family(slab: Slab, method: str, bpp: float, *, config: VolumeBenchmarkConfig, device: torch.device,
                      progress: bool) -> Coded:  # fmt: skip
    """A neural family, slice by slice, into one ``.sinco`` volume file whose container bytes come out of the budget."""
    from sinco.codec.volume import SliceRecord, VolumeHeader, encode_volume
    from sinco.compression.volume import compress_volume

    n, height, width = slab.voxels.shape
    # The container: its header and CRC (a one-slice file less its 9-byte constant record), 5 bytes per fitted slice.
    header = VolumeHeader(axis=2, height=height, width=width, n_slices=1, first_index=slab.first, affine=np.eye(4))
    container_bytes = len(encode_volume(header, [SliceRecord(constant=0.0)])) - 9 + 5 * n
    slice_bpp = bpp - 8 * container_bytes / slab.voxels.size
    if slice_bpp <= 0:
        raise InputError(f"--bpp {bpp:g}: below the {8 * container_bytes / slab.voxels.size:.4f} bpp of the volume file's container")
    result = compress_volume(slab.voxels, first_index=slab.first, axis=2, affine=np.eye(4), codec=config.codec_config(method, bpp=slice_bpp),
                             fit_config=config.fit_config(method), device=device, batch_slices=config.batch_slices, progress=progress)  # fmt: skip
    m = result.metrics
    keep = ("fitted_slices", "constant_slices", "n_params_per_slice", "bpp_params_per_slice", "batch_slices", "divergences")
    steps = [row["steps"] for row in result.slices if "steps" in row]
    return Coded(result.data, ".sinco", {"slice_bpp": slice_bpp, **{k: m[k] for k in keep if k in m},
                                         **({"steps_per_slice": float(np.mean(steps))} if steps else {})})  # fmt: skip


def _code_with_volume_family(slab: Slab, method: str, bpp: float, *, config: VolumeBenchmarkConfig, device: torch.device,
                             progress: bool) -> Coded:  # fmt: skip
    """A family that codes slabs (``grid3d``): the whole slab into one volume file of slabs within the budget."""
    from sinco.compression.volume import compress_volume_slabs

    result = compress_volume_slabs(slab.voxels, first_index=slab.first, axis=2, affine=slab.affine, codec=config.codec_config(method, bpp=bpp),
                                   fit_config=config.fit_config(method), device=device, progress=progress)  # fmt: skip
    m = result.metrics
    fits = m["slab_fits"]
    keep = ("slabs", "slab_size", "constant_slabs", "header_bytes", "depth_stages", "spacing", "fit_seconds", "decode_seconds")
    return Coded(result.data, ".sinco", {**{k: m[k] for k in keep}, "lambda_rd": [f.get("lambda_rd") for f in fits],
                                         "rate_trials": [f.get("trials") for f in fits],
                                         "steps": sum(f.get("steps", 0) for f in fits)})  # fmt: skip


def _decode_family(method: str, data: bytes) -> np.ndarray:
    from sinco.codec.volume import decode_volume

    return decode_volume(data)[1]


def _search_details(codec: Any, match: Any) -> dict[str, Any]:
    """The quality found, the encodings the search ran, and what the codec states of itself (its ``details``: a
    dict, or a method returning one; at least its library and bit depth)."""
    own = getattr(codec, "details", None)
    own = own() if callable(own) else own
    return {"library": codec.library, "bit_depth": codec.bit_depth, **dict(own or {}), "quality": match.quality,
            "search_trials": match.trials}  # fmt: skip


def _code_slice_by_slice(slab: Slab, method: str, bpp: float, *, config: VolumeBenchmarkConfig, device: torch.device,
                         progress: bool) -> Coded:  # fmt: skip
    """A still-image codec on every slice at one quality, the highest whose slab file fits the budget."""
    from sinco.classical.base import encode_at_bpp

    codec = _slice_codec(method)
    match = encode_at_bpp(codec, slab.voxels, target_bpp=bpp)
    return Coded(match.data, codec.extension, _search_details(codec, match))


def _slice_codec(method: str) -> Any:
    from sinco.classical.registry import get_codec
    from sinco.classical.slices import SliceBySlice

    return SliceBySlice(get_codec(method))


def _code_volume(slab: Slab, method: str, bpp: float, *, config: VolumeBenchmarkConfig, device: torch.device, progress: bool) -> Coded:
    """A volume codec on the whole slab, its quality the highest whose file fits the budget."""
    from sinco.classical.base import encode_at_bpp
    from sinco.classical.registry import VOLUME_CODECS

    codec = VOLUME_CODECS[method]()
    match = encode_at_bpp(codec, slab.voxels, target_bpp=bpp)
    return Coded(match.data, codec.extension, _search_details(codec, match))


def _decode_volume_codec(method: str, data: bytes) -> np.ndarray:
    from sinco.classical.registry import VOLUME_CODECS

    return VOLUME_CODECS[method]().decode(data)


Coder = Callable[..., Coded]
#: Each kind of method: how it codes a slab, and how its file is decoded (see the module's docstring).
KINDS: dict[str, tuple[Coder, Callable[[str, bytes], np.ndarray]]] = {
    "family": (_code_with_family, _decode_family),
    "volume-family": (_code_with_volume_family, _decode_family),
    "image-codec": (_code_slice_by_slice, lambda method, data: _slice_codec(method).decode(data)),
    "volume-codec": (_code_volume, _decode_volume_codec),
}


def method_kind(method: str) -> str:
    """The kind of a method (a key of :data:`KINDS`): ``volume-codec``, ``image-codec``, ``volume-family`` or ``family``.

    Raises:
        InputError: for a method of no kind.
    """
    from sinco.classical.registry import CLASSICAL_CODECS, VOLUME_CODECS

    if method in VOLUME_CODECS:
        return "volume-codec"
    if method in CLASSICAL_CODECS:
        return "image-codec"
    if method in codec_methods():
        return "volume-family" if codec_methods()[method][1].volumes else "family"
    raise InputError(f"--methods {method!r}: not a method of the volume benchmark")


def _finite(value: Any) -> Any:
    """``value`` with every non-finite float (a fit's figure that does not apply, kept as nan) as None: JSON has no nan."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def code_slab(slab: Slab, method: str, bpp: float, *, config: VolumeBenchmarkConfig, device: torch.device,
              progress: bool = False) -> tuple[dict[str, Any], Coded]:  # fmt: skip
    """Code one slab with one method at one rate, decode the file, and measure it.

    Returns:
        ``(record, coded)``: the record (identity, :func:`volume_metrics` of the decoded file, ``bpp_file`` from its
        bytes, ``within_budget``, encode and decode seconds, ``details``) and the file.
    """
    kind = method_kind(method)
    coder, decoder = KINDS[kind]
    start = time.perf_counter()
    coded = coder(slab, method, bpp, config=config, device=device, progress=progress)
    encode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    decoded = decoder(method, coded.data)
    decode_seconds = time.perf_counter() - start
    bpp_file = 8 * len(coded.data) / slab.voxels.size
    record = {"image_id": slab.volume_id, "case": slab.case_id, "first_slice": slab.first, "n_slices": slab.voxels.shape[0],
              "method": method, "kind": kind, "target_bpp": float(bpp), "lam_setting": 0.0, "bpp_file": bpp_file,
              "file_bytes": len(coded.data), "within_budget": bpp_file <= bpp, **volume_metrics(decoded, target=slab.voxels),
              "encode_seconds": encode_seconds, "decode_seconds": decode_seconds, "details": _finite(coded.details)}  # fmt: skip
    record.update({k: coded.details[k] for k in ("bit_depth", "psnr_ceiling") if k in coded.details})
    return record, coded


def run_volume_benchmark(config: VolumeBenchmarkConfig, *, outdir: str | os.PathLike[str], device: torch.device,
                         progress: bool = True) -> dict[str, Any]:  # fmt: skip
    """Run (or resume) a volume benchmark and write ``results.json``, ``table.md`` and the figures.

    Every slab (see :func:`load_slab`) is checked before anything is coded. A method that fails on a slab is
    reported on stderr and listed under ``failures`` in ``results.json`` and the table; the run goes on, and a rerun
    tries it again. Records already in ``outdir`` (the same configuration) are kept, not redone.

    Args:
        config: what to run.
        outdir: output folder (created if needed).
        device: where the neural families fit.
        progress: progress bars.

    Returns:
        ``{"records", "failures", "table", "figures", "outdir"}``; with several rates ``results.json`` also holds the
        Bjontegaard deltas of :func:`~sinco.benchmark.bjontegaard.bjontegaard_section` (against ``config.anchor``, or
        ``jpeg2000`` where the anchor has no record, and against ``jpeg2000`` too), one curve per volume.

    Raises:
        InputError: for bad inputs (cases, ``--slices`` outside a volume, another configuration in ``outdir``).
    """
    from sinco.utils.atomic import atomic_write_bytes

    out = Path(outdir)
    slabs = [load_slab(case, slices=config.slices) for case in resolve_cases(config, {})]
    out.mkdir(parents=True, exist_ok=True)
    (out / "files").mkdir(exist_ok=True)
    records = load_results(out, config)
    done = {record_key(r) for r in records}
    extra: dict[str, Any] = {"volumes": [s.info() for s in slabs], "failures": []}
    jobs = [(slab, method, float(bpp)) for bpp in config.bpps for method in config.methods for slab in slabs]
    bar = progress_bar(total=len(jobs), initial=len(jobs) - sum(_key(*j) not in done for j in jobs), desc="volumes", unit="record",
                       leave=True) if progress else None  # fmt: skip
    for slab, method, bpp in jobs:
        if _key(slab, method, bpp) in done:
            continue
        if bar is not None:
            bar.set_postfix_str(f"{slab.volume_id} {method} {bpp:g} bpp")
        try:
            record, coded = code_slab(slab, method, bpp, config=config, device=device, progress=progress)
        except Exception as exc:  # noqa: BLE001 -- any method may fail on any slab: recorded, and the run goes on
            message = str(exc) if isinstance(exc, SincoError) else f"{type(exc).__name__}: {exc}"
            message = " ".join(message.split())
            print(f"sinco: warning: {method} on {slab.volume_id} at {bpp:g} bpp failed: {message}; not recorded", file=sys.stderr)
            extra["failures"].append({"image_id": slab.volume_id, "method": method, "target_bpp": bpp, "error": message})
        else:
            name = file_name(slab.volume_id, method, bpp, coded.extension)
            atomic_write_bytes(out / "files" / name, coded.data)
            records.append({**record, "file": f"files/{name}"})
            done.add(record_key(record))
        save_results(out, config, records, slices=None, extra=extra)
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()
    # Summaries cover every record of the folder (an earlier run may have named other methods or rates).
    summarized = with_recorded_methods(config, records)
    deltas = bjontegaard_section(records, summarized)
    save_results(out, config, records, slices=None, bjontegaard=deltas, extra=extra)
    table = make_volume_table(records, summarized, deltas=deltas, failures=extra["failures"], volumes=extra["volumes"])
    atomic_write_bytes(out / "table.md", table.encode())
    figures = make_volume_figures(out, records, config=summarized, slabs=slabs)
    return {"records": records, "failures": extra["failures"], "table": table, "figures": [str(f) for f in figures], "outdir": str(out)}


def _key(slab: Slab, method: str, bpp: float) -> tuple[str, str, float, float]:
    return slab.volume_id, method, float(bpp), 0.0


_KIND_TEXT = {
    "family": "slice by slice, one `.sinco` volume file (each slice fitted on its own)",
    "image-codec": "slice by slice, one quality for every slice (the highest that fits the slab's budget)",
    "volume-family": "slabs of slices, each one 3-D fit, one `.sinco` volume file of slabs",
    "volume-codec": "the whole slab at once",
}


def _details_cell(rs: list[dict[str, Any]]) -> str:
    """The settings worth a glance per row: the quality each volume got, the bit depth the codec saw (and the PSNR
    ceiling it implies), the intra period; or the slices a family fitted and their target. The rest is in
    ``results.json`` and, once per method, above the tables."""
    first = rs[0]["details"]
    if rs[0]["kind"] == "volume-family":
        return f"{first['slabs']} slab(s) of at most {first['slab_size']} slices, slice-axis stages {first['depth_stages']}"
    if rs[0]["kind"] == "family":
        return f"{first.get('fitted_slices', '?')} fitted + {first.get('constant_slices', 0)} constant slices, {first['slice_bpp']:.3f} bpp each"
    parts = ["quality " + ", ".join(f"{r['details']['quality']:.4g}" for r in rs)]
    if "bit_depth" in first:
        ceiling = f" (PSNR ceiling {first['psnr_ceiling']:.1f} dB)" if "psnr_ceiling" in first else ""
        parts.append(f"{first['bit_depth']}-bit{ceiling}")
    if "intra_period" in first:
        parts.append(f"intra period {first['intra_period']}")
    return "; ".join(parts)


def _settings_lines(records: list[dict[str, Any]], config: VolumeBenchmarkConfig) -> list[str]:
    """One line per codec that states its settings (``details["settings"]``), and its library."""
    lines = []
    for method in config.methods:
        first = next((r["details"] for r in records if r["method"] == method), None)
        if first and ("settings" in first or first.get("library")):
            lines.append(f"- {method_label(method)}: " + "; ".join(str(first[k]) for k in ("library", "settings") if first.get(k)))
    return ["Codec settings:", "", *lines, ""] if lines else []


def make_volume_table(records: list[dict[str, Any]], config: VolumeBenchmarkConfig, *, deltas: dict[str, Any] | None,
                      failures: list[dict[str, Any]], volumes: list[dict[str, Any]]) -> str:  # fmt: skip
    """Markdown table of a volume run: per rate and method, the means over the volumes; then the failures and the
    Bjontegaard deltas (``deltas`` from :func:`~sinco.benchmark.bjontegaard.bjontegaard_section`; ``volumes``: the
    :meth:`Slab.info` of each volume, as ``results.json`` keeps them).

    Returns:
        The Markdown text.
    """
    kinds = {m: method_kind(m) for m in config.methods}
    lines = [
        "# Volume benchmark",
        "",
        f"Data `{config.data}`, cases `{config.cases}`, {len(volumes)} volume(s), slices `{config.slices}` of each (axial; "
        + ", ".join(f"`{v['image_id']}` {v['n_slices']} x {v['height']} x {v['width']}" for v in volumes)
        + f"); seed {config.seed}.",
        "",
        "Every method codes each volume as one whole, on one intensity range: the volume's own minimum and maximum. "
        "`bpp (file)` is 8 x file bytes / voxels. `PSNR` is the volume PSNR (the MSE over every voxel); `slice PSNR` "
        "and `SSIM` are means over the slices that are not constant, each on the volume's range. Seconds are wall "
        "time for the whole volume; encoding includes the rate search. Mean ± standard deviation over the volumes.",
        "",
        "How each method codes a volume: " + "; ".join(f"{method_label(m)}: {_KIND_TEXT.get(k, k)}" for m, k in kinds.items()) + ".",
        "",
        *_settings_lines(records, config),
    ]
    by_rate: dict[float, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_rate[float(r["target_bpp"])].append(r)
    header = ["method", "n", "bpp (file)", "PSNR (dB)", "slice PSNR (dB)", "SSIM", "encode (s)", "decode (s)", "settings"]
    binding: dict[int, float] = {}  # bit depth -> PSNR ceiling, of the rows it binds
    for bpp in sorted(by_rate):
        lines += [f"## Target {bpp:g} bpp", "", "| " + " | ".join(header) + " |", "|" + " --- |" * len(header)]
        for method, _, rs in rows_by_method(config, by_rate[bpp]):
            over = sum(1 for r in rs if not r["within_budget"])
            label = method_label(method) + (f" ({over} over budget)" if over else "") + _ceiling_note(rs, binding)
            cells = [label, str(len(rs)), _stat([r["bpp_file"] for r in rs], 3),
                     _psnr_cell([r["psnr"] for r in rs], 2), _psnr_cell([r["psnr_slice_mean"] for r in rs], 2), _stat([r["ssim"] for r in rs], 4),
                     _stat([r["encode_seconds"] for r in rs], 1), _stat([r["decode_seconds"] for r in rs], 2), _details_cell(rs)]  # fmt: skip
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    if failures:
        lines += ["## Failures", "", "Not recorded (a rerun with the same `--out` tries them again):", "",
                  "| volume | method | target bpp | error |", "| --- | --- | --- | --- |"]  # fmt: skip
        lines += [f"| `{f['image_id']}` | {method_label(f['method'])} | {f['target_bpp']:g} | {f['error']} |" for f in failures]
        lines.append("")
    if binding:
        ceilings = ", ".join(f"{depth}-bit {value:.1f} dB" for depth, value in sorted(binding.items()))
        lines += [f"Rows marked `(at the b-bit ceiling)` have a mean PSNR within {CEILING_MARGIN:g} dB of the PSNR their codec's "
                  f"b-bit samples allow ({ceilings}): more rate buys them little PSNR.", ""]  # fmt: skip
    if deltas is not None:
        lines += ["In the Bjontegaard sections an image is a volume: each curve is one volume's records of one method.", ""]
    lines += _bjontegaard_lines(deltas)
    return "\n".join(lines)


def _decode_record(outdir: Path, record: dict[str, Any]) -> np.ndarray:
    return KINDS[record["kind"]][1](record["method"], (outdir / record["file"]).read_bytes())


def make_volume_figures(outdir: Path, records: list[dict[str, Any]], *, config: VolumeBenchmarkConfig, slabs: list[Slab],
                        max_volumes: int = 2) -> list[Path]:  # fmt: skip
    """``slab_<id>.png``: the middle slice of the first ``max_volumes`` volumes at the first rate, as each method
    decodes it; with several rates ``rate_distortion.png``: volume PSNR and mean SSIM against file bpp (a rate where a
    method is lossless left out).

    Returns:
        The paths written.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from sinco.benchmark.figures import save_figure
    from sinco.utils.atomic import atomic_path

    written: list[Path] = []
    bpp = float(config.bpps[0])
    for slab in slabs[:max_volumes]:
        rs = [r for r in records if r["image_id"] == slab.volume_id and float(r["target_bpp"]) == bpp]
        if not rs:
            continue
        middle = slab.voxels.shape[0] // 2
        columns = [("original", slab.voxels[middle], "")] + [
            (method_label(r["method"]), _decode_record(outdir, r)[middle], f"{r['psnr']:.2f} dB (volume)\nSSIM {r['ssim']:.3f}\n{r['bpp_file']:.3f} bpp")
            for r in rs
        ]  # fmt: skip
        fig, axes = plt.subplots(1, len(columns), figsize=(2.4 * len(columns), 2.8), squeeze=False)
        for ax, (title, shown, text) in zip(axes[0], columns, strict=True):
            ax.imshow(shown, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=9)
            ax.text(0.02, 0.98, text, transform=ax.transAxes, va="top", ha="left", fontsize=7, color="yellow")
            ax.set_axis_off()
        fig.suptitle(f"{slab.volume_id}: slice {slab.first + middle} of the volume coded at {bpp:g} bpp", fontsize=9)
        fig.tight_layout()
        written.append(save_figure(fig, outdir / f"slab_{slab.volume_id.replace(':', '_')}.png", atomic_path))
        plt.close(fig)
    if len(config.bpps) > 1:
        fig, axes = plt.subplots(1, 2, figsize=(10, 4))
        styles = [(m, s) for s in ("-", "--", ":") for m in "os^vDP*X"]
        for k, (method, _, group) in enumerate(rows_by_method(config, records)):
            points = []
            for b in config.bpps:
                rs = [r for r in group if float(r["target_bpp"]) == float(b)]
                if rs and len(rs) == len(slabs) and all(r["psnr"] < LOSSLESS_PSNR for r in rs):
                    points.append((np.mean([r["bpp_file"] for r in rs]), np.mean([r["psnr"] for r in rs]), np.mean([r["ssim"] for r in rs])))
            if points:
                x, p, s = zip(*sorted(points), strict=True)
                marker, line = styles[k % len(styles)]
                axes[0].plot(x, p, marker=marker, linestyle=line, label=method_label(method))
                axes[1].plot(x, s, marker=marker, linestyle=line, label=method_label(method))
        axes[0].set(xlabel="bpp (file)", ylabel="volume PSNR (dB)", title="rate-distortion, volumes")
        axes[1].set(xlabel="bpp (file)", ylabel="mean slice SSIM", title="rate-SSIM, volumes")
        axes[0].legend(fontsize=7)
        fig.tight_layout()
        written.append(save_figure(fig, outdir / "rate_distortion.png", atomic_path))
        plt.close(fig)
    return written
