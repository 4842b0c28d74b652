"""``sinco compress-batch``: compress an archive of scans on a Dask cluster, one task per slice, resumably.

Every non-constant slice of every input is one task. A worker fits it exactly as
``sinco compress --slices all --batch-slices 1`` would (the same call of
:func:`~sinco.compression.image.compress_images`), then saves the slice's ``.sinco`` file atomically as a
record in the work folder ``OUT/.sinco-work/``. When every slice of an input has its record, the
client assembles the records into the input's volume file with :func:`~sinco.codec.volume.encode_volume`,
so the output holds the same bytes as the sequential command run with the same settings and the
same number of torch threads (the floating-point summation order, hence the file, depends on it).

Because records are written by the workers, the work folder must be on a file system that the
workers and the client share (any local cluster; a SLURM cluster's shared scratch). A rerun skips
every slice whose record exists; a task whose record already exists returns it without fitting,
so a result that Dask recomputes after losing a worker is not fitted twice. Every fit is appended
to ``OUT/.sinco-work/fits.jsonl`` (slice, worker, seconds).

A family that codes slabs (``grid3d``) has one task per slab instead: the client cuts each volume into slabs and
computes every slab's rate budget from the whole volume (:func:`~sinco.compression.volume.slab_layout`) before any work
starts, so the tasks are independent; a worker fits its slab exactly as ``sinco compress --slices ... --arch grid3d``
does (:func:`~sinco.compression.volume.fit_volume_slab`) and saves its payload as a record, and the client assembles
the records into the same version-3 volume file.
"""

from __future__ import annotations

import glob
import hashlib
import json
import math
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from sinco.errors import InputError

if TYPE_CHECKING:
    from sinco.codec.config import CodecConfig

WORK_FOLDER = ".sinco-work"
MANIFEST_NAME = "manifest.json"
MANIFEST_FORMAT = 1
FIT_LOG = "fits.jsonl"
_GLOB_CHARS = "*?["
# compress_images seeds torch's global generator before building each network, and the torch thread
# count is process-wide: two fits in one worker process at once would draw each other's initial weights.
_FIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class BatchConfig:
    """Everything that decides the bytes of a batch's files (saved in the manifest).

    Args:
        codec: architecture and rate.
        fit_config: fitting settings (seed included).
        slices: ``all`` or ``A:B``, applied to every 3-D/4-D input (2-D inputs are one slice).
        axis: slicing axis of every input.
        channel: channel of 4-D inputs.
        device: ``auto``, ``cpu``, ``cuda`` or ``cuda:N`` (see :func:`sinco.utils.device.resolve_device`).
        torch_threads: torch threads of each fit. Files are byte-identical to a sequential run with
            the same number of torch threads.
        seg_model: segmentation checkpoint of the SINCO regularizer (needs ``mask_glob``).
        mask_glob: pattern, in each input's folder, of that input's label file; ``{stem}`` stands for
            the input's name without its suffix (``case7.nii.gz`` -> ``case7``).

    Raises:
        InputError: if a value is out of range or only one of ``seg_model`` and ``mask_glob`` is given.
    """

    codec: CodecConfig
    fit_config: Any
    slices: str = "all"
    axis: int = 2
    channel: int = 0
    device: str = "auto"
    torch_threads: int = 1
    seg_model: str | None = None
    mask_glob: str | None = None

    def __post_init__(self) -> None:
        if self.axis not in (0, 1, 2):
            raise InputError(f"--axis {self.axis}: must be 0, 1 or 2")
        if not isinstance(self.torch_threads, int) or self.torch_threads < 1:
            raise InputError(f"--threads-per-worker {self.torch_threads}: must be a positive integer")
        if (self.seg_model is None) != (self.mask_glob is None):
            given, missing = ("--mask-glob", "--seg-model") if self.seg_model is None else ("--seg-model", "--mask-glob")
            raise InputError(f"{given} needs {missing}: the regularizer segments each reconstruction and compares it with its mask")
        if self.codec.family.codes_slabs:
            for flag, value in (("--seg-model", self.seg_model), ("--mask-glob", self.mask_glob)):
                if value is not None:
                    raise InputError(f"{flag}: does not apply to --arch {self.codec.arch} (it codes slabs, without the regularizer)")  # fmt: skip

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        return {**asdict(self), "codec": self.codec.to_dict(), "fit": self.fit_config.to_dict()}


@dataclass(frozen=True)
class ClusterConfig:
    """Where the tasks run.

    Args:
        scheduler: ``local`` (a ``LocalCluster`` on this machine) or the address of a running
            scheduler, ``tcp://HOST:PORT``.
        workers: local worker processes (``None``: one per CPU core divided by ``threads_per_worker``,
            or one per GPU when fitting on CUDA).
        threads_per_worker: torch threads of each local worker; each worker fits one slice at a time.

    Raises:
        InputError: if a value is out of range or the scheduler is neither ``local`` nor an address.
    """

    scheduler: str = "local"
    workers: int | None = None
    threads_per_worker: int = 1

    def __post_init__(self) -> None:
        if self.scheduler != "local" and not (self.scheduler.startswith(("tcp://", "tls://")) and ":" in self.scheduler[6:]):
            raise InputError(f"--scheduler {self.scheduler!r}: expected 'local' or an address tcp://HOST:PORT")
        if self.workers is not None and (not isinstance(self.workers, int) or self.workers < 1):
            raise InputError(f"--workers {self.workers}: must be a positive integer")
        if not isinstance(self.threads_per_worker, int) or self.threads_per_worker < 1:
            raise InputError(f"--threads-per-worker {self.threads_per_worker}: must be a positive integer")


@dataclass(frozen=True)
class VolumePlan:
    """One input: what is stored where, and which of its slices need a fit.

    Args:
        input: the image file.
        mask: its label file (``None`` without the regularizer).
        output: the ``.sinco`` file to write.
        work: its folder of slice records.
        is_volume: ``False`` for a 2-D input, whose output is a single-slice ``.sinco`` file.
        first_index: source index of the first slice.
        height: rows of each slice.
        width: columns of each slice.
        affine: the source's voxel-to-world matrix ``(4, 4)``.
        constants: source index -> value of each constant slice (stored without a fit); with ``slabs``, first source
            index -> value of each constant slab.
        fitted: source indices of the slices to fit, ascending; with ``slabs``, the first source index of each slab to fit.
        slabs: for a family that codes slabs, each slab's ``(first, stop)`` source indices (empty otherwise): the units
            of work are then slabs, named by their first source index.
        layout: with ``slabs``, the volume's :class:`~sinco.compression.volume.SlabLayout` (spec, family block, budgets).
    """

    input: Path
    mask: Path | None
    output: Path
    work: Path
    is_volume: bool
    first_index: int
    height: int
    width: int
    affine: np.ndarray = field(repr=False)
    constants: dict[int, float]
    fitted: tuple[int, ...]
    slabs: tuple[tuple[int, int], ...] = ()
    layout: Any = field(default=None, repr=False)

    @property
    def n_slices(self) -> int:
        """Slices stored in the output."""
        if self.slabs:
            return sum(stop - first for first, stop in self.slabs)
        return len(self.constants) + len(self.fitted)

    @property
    def units(self) -> list[int]:
        """The units of work in file order (slices, or slabs by their first source index)."""
        if self.slabs:
            return [first for first, _ in self.slabs]
        return list(range(self.first_index, self.first_index + self.n_slices))

    def unit_slices(self, index: int) -> int:
        """Slices in unit ``index`` (1 for a slice)."""
        return dict(self.slabs)[index] - index if self.slabs else 1

    def unit_name(self, index: int | None) -> str:
        """``slice N`` or ``slab A:B`` (source indices, half-open)."""
        return f"slab {index}:{index + self.unit_slices(index)}" if self.slabs and index is not None else f"slice {index}"

    def record(self, index: int) -> Path:
        """The ``.sinco`` record of slice (or slab) ``index``."""
        return self.work / f"{'slab' if self.slabs else 'slice'}_{index:05d}.sinco"

    def record_meta(self, index: int) -> Path:
        """The JSON metrics of slice (or slab) ``index``'s record (written before the record)."""
        return self.work / f"{'slab' if self.slabs else 'slice'}_{index:05d}.json"

    def is_done(self, index: int) -> bool:
        """Whether slice ``index`` has its record."""
        return self.record(index).is_file() and self.record_meta(index).is_file()


@dataclass(frozen=True)
class SliceTask:
    """What a worker needs to fit one slice (small; the worker reads the slice itself).

    Args:
        input: the image file.
        mask: its label file, or ``None``.
        index: source index of the slice (``None`` for a 2-D input).
        config: the batch's settings.
        gpu_per_worker: pick the CUDA device from the worker's number (local GPU clusters).
        record: the ``.sinco`` record to write.
        meta: the record's JSON metrics to write first.
        log: the fit log to append to.
    """

    input: str
    mask: str | None
    index: int | None
    config: BatchConfig
    gpu_per_worker: bool
    record: str
    meta: str
    log: str


@dataclass(frozen=True)
class SlabTask:
    """What a worker needs to fit one slab of a volume with a family that codes slabs (the worker reads its slices).

    Args:
        input: the image file.
        first: source index of the slab's first slice.
        stop: source index one past its last slice.
        slab: its number in the output file.
        budget_bits: its payload budget, computed from the whole volume (:func:`~sinco.compression.volume.slab_layout`).
        layout: the volume's slab layout (spec, family block).
        config: the batch's settings.
        gpu_per_worker: pick the CUDA device from the worker's number (local GPU clusters).
        record: the payload record to write.
        meta: the record's JSON metrics to write first.
        log: the fit log to append to.
    """

    input: str
    first: int
    stop: int
    slab: int
    budget_bits: float
    layout: Any
    config: BatchConfig
    gpu_per_worker: bool
    record: str
    meta: str
    log: str


@dataclass(frozen=True)
class BatchResult:
    """What :func:`run_batch` did.

    Args:
        manifest: the manifest written to ``OUT/manifest.json``.
        failed: slices (or slabs, by their first source index) that failed twice, as ``(input, index, error)``.
        fitted: slices (or slabs) fitted by this run.
        skipped: slices (or slabs) whose record a previous run had left.
        failed_units: the name of each failed unit, ``slice N`` or ``slab A:B``, in the order of ``failed``.
    """

    manifest: dict[str, Any]
    failed: list[tuple[str, int | None, str]]
    fitted: int
    skipped: int
    failed_units: list[str] = field(default_factory=list)


def expand_inputs(patterns: Sequence[str]) -> list[Path]:
    """Turn the command's INPUT arguments into image files: a folder gives its image files (not its
    subfolders'), a glob (``*``, ``?``, ``[``; ``**`` recurses) its matches, a file itself.

    Args:
        patterns: files, folders or glob patterns.

    Returns:
        The files, each once, in the order given (a folder's or a glob's sorted by name).

    Raises:
        InputError: if nothing is given, a path does not exist, or a folder or glob holds no image file.
    """
    from sinco.data.io import INPUT_SUFFIXES, image_suffix

    if not patterns:
        raise InputError("INPUT: give at least one image file, folder or glob")
    files: list[Path] = []
    for pattern in patterns:
        path = Path(pattern)
        if path.is_dir():
            found = sorted(p for p in path.iterdir() if p.is_file() and image_suffix(p) in INPUT_SUFFIXES)
            if not found:
                raise InputError(f"INPUT {pattern!r}: folder holds no image file ({', '.join(INPUT_SUFFIXES)})")
        elif any(c in pattern for c in _GLOB_CHARS):
            matches = sorted(Path(p) for p in glob.glob(pattern, recursive=True))
            found = [p for p in matches if p.is_file() and image_suffix(p) in INPUT_SUFFIXES]
            if not found:
                raise InputError(f"INPUT {pattern!r}: matches no image file ({', '.join(INPUT_SUFFIXES)})")
        elif path.is_file():
            found = [path]
        else:
            raise InputError(f"INPUT {pattern!r}: no such file or folder")
        files.extend(found)
    unique: dict[Path, Path] = {}
    for f in files:
        unique.setdefault(f.resolve(), f)
    return list(unique.values())


def find_mask(image: Path, mask_glob: str) -> Path:
    """The label file of ``image``: the one match of ``mask_glob`` in its folder.

    Args:
        image: an input file.
        mask_glob: pattern relative to the input's folder; ``{stem}`` is replaced by the input's name
            without its image suffix.

    Returns:
        The label file.

    Raises:
        InputError: if no file or more than one matches.
    """
    from sinco.data.io import image_suffix

    stem = image.name[: len(image.name) - len(image_suffix(image))]
    pattern = mask_glob.replace("{stem}", glob.escape(stem))
    matches = sorted(p for p in image.parent.glob(pattern) if p.is_file() and p.resolve() != image.resolve())
    if len(matches) != 1:
        found = "no file" if not matches else f"{len(matches)} files ({', '.join(m.name for m in matches[:3])}...)"
        raise InputError(f"--mask-glob {mask_glob!r}: {found} in {str(image.parent)!r} for INPUT {str(image)!r}; it must match exactly one")
    return matches[0]


def _file_identity(path: Path) -> list[Any]:
    stat = path.stat()
    return [str(path.resolve()), stat.st_size, stat.st_mtime_ns]


def work_key(config: BatchConfig, *, image: Path, mask: Path | None) -> str:
    """A name for the records of one input under one configuration.

    Records depend on the input's content (path, size and modification time stand for it), the
    codec and fitting settings, the device kind, the torch threads and the sinco version; the
    slice range does not enter, so a run over ``--slices 0:80`` and one over ``all`` share records.
    """
    from sinco.version import __version__

    settings = config.to_dict()
    # A slab's budget is its share of the whole selection's bits: slab records depend on the slice range.
    for key in ("mask_glob",) if config.codec.family.codes_slabs else ("slices", "mask_glob"):
        settings.pop(key)
    settings["device"] = "cuda" if config.device.startswith("cuda") else config.device
    if config.seg_model is not None:
        settings["seg_model"] = _file_identity(Path(config.seg_model))
    payload = {"version": __version__, "settings": settings, "input": _file_identity(image),
               "mask": None if mask is None else _file_identity(mask)}  # fmt: skip
    return hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]


def _output_names(images: list[Path]) -> list[Path]:
    """Output paths relative to the folder: the inputs' paths below their common folder, suffix ``.sinco``."""
    from sinco.data.io import image_suffix

    parents = [str(p.resolve().parent) for p in images]
    root = Path(os.path.commonpath(parents))
    names = []
    for image in images:
        rel = image.resolve().relative_to(root)
        names.append(rel.with_name(rel.name[: len(rel.name) - len(image_suffix(rel))] + ".sinco"))
    seen: dict[Path, Path] = {}
    for image, name in zip(images, names, strict=True):
        if name in seen:
            raise InputError(f"INPUT {str(image)!r} and {str(seen[name])!r}: both would be written to {str(name)!r}; rename one")
        seen[name] = image
    return names


def plan_input(image: Path, *, config: BatchConfig, output: Path, work_root: Path) -> VolumePlan:
    """Read one input, check it as ``sinco compress`` would, and list its constant and fitted slices.

    Args:
        image: the input file.
        config: the batch's settings.
        output: its ``.sinco`` file.
        work_root: the work folder of the batch.

    Returns:
        Its plan.

    Raises:
        InputError: if the file cannot be read, the slice range or channel does not fit it, a slice
            is too small or not finite, or its mask is missing or of another shape.
    """
    from sinco.data.io import load_affine, load_array, select_slice, select_slices
    from sinco.metrics.image import SSIM_MIN_SIDE

    arg = f"INPUT {str(image)!r}"
    mask = None if config.mask_glob is None else find_mask(image, config.mask_glob)
    array = load_array(image, arg=arg)
    is_volume = array.ndim != 2
    if array.ndim == 2:
        stack, first = select_slice(array, slice_index=None, axis=config.axis, channel=config.channel, arg=arg)[None], 0
    else:
        stack, indices = select_slices(array, slices=config.slices, axis=config.axis, channel=config.channel, arg=arg)
        first = indices.start
    del array
    if min(stack.shape[1:]) < SSIM_MIN_SIDE:
        raise InputError(f"{arg}: slices of {stack.shape[1]}x{stack.shape[2]} are below {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, the SSIM window every result is measured with")
    if not np.all(np.isfinite(stack)):
        raise InputError(f"{arg}: contains NaN or Inf voxels")
    if mask is not None:
        labels = load_array(mask, arg="--mask")
        if is_volume:
            labels = select_slices(labels, slices=config.slices, axis=config.axis, arg="--mask")[0]
        else:
            labels = select_slice(labels, slice_index=None, axis=config.axis, arg="--mask")[None]
        if labels.shape != stack.shape:
            raise InputError(f"--mask {str(mask)!r}: slices of shape {labels.shape[1:]} differ from {arg}'s {stack.shape[1:]}")
    if config.codec.family.codes_slabs:
        if not is_volume:
            raise InputError(f"{arg}: a 2-D image; --arch {config.codec.arch} codes volumes (a single image: --arch grid)")
        return _plan_slabs(stack, image=image, first=first, config=config, output=output, work_root=work_root)
    constants: dict[int, float] = {}
    fitted: list[int] = []
    for k in range(stack.shape[0]):
        # The same test as compress_volume, so constant slices are stored the same way.
        if is_volume and np.all(stack[k] == stack[k].flat[0]):
            constants[first + k] = float(stack[k].flat[0])
        else:
            fitted.append(first + k)
    if not is_volume and not fitted:
        raise InputError(f"{arg}: constant image; nothing to compress")
    _check_rate(config.codec, height=stack.shape[1], width=stack.shape[2])
    key = work_key(config, image=image, mask=mask)
    affine = load_affine(image) if is_volume else np.eye(4)
    return VolumePlan(input=image, mask=mask, output=output, work=work_root / f"{output.name}-{key}", is_volume=is_volume,
                      first_index=first, height=stack.shape[1], width=stack.shape[2], affine=affine, constants=constants,
                      fitted=tuple(fitted))  # fmt: skip


def _plan_slabs(stack: np.ndarray, *, image: Path, first: int, config: BatchConfig, output: Path, work_root: Path) -> VolumePlan:
    """The plan of a volume coded as slabs: its layout and budgets from the whole selection, its constant slabs."""
    from sinco.compression.volume import slab_layout, slab_range
    from sinco.data.io import load_affine

    affine = load_affine(image)
    layout = slab_layout(stack.shape, codec=config.codec, affine=affine, axis=config.axis)
    constants: dict[int, float] = {}
    fitted: list[int] = []
    for lo, hi in layout.bounds:
        vmin, vmax = slab_range(stack[lo:hi])
        if vmin == vmax:
            constants[first + lo] = vmin
        else:
            fitted.append(first + lo)
    key = work_key(config, image=image, mask=None)
    return VolumePlan(input=image, mask=None, output=output, work=work_root / f"{output.name}-{key}", is_volume=True, first_index=first,
                      height=stack.shape[1], width=stack.shape[2], affine=affine, constants=constants, fitted=tuple(fitted),
                      slabs=tuple((first + lo, first + hi) for lo, hi in layout.bounds), layout=layout)  # fmt: skip


def _check_rate(codec: CodecConfig, *, height: int, width: int) -> None:
    # The sizing every fit will do: a rate too low for the slices fails here, before any work starts.
    codec.family.check_rate(bpp=codec.bpp, height=height, width=width, options=codec.options)


def plan_batch(patterns: Sequence[str], *, config: BatchConfig, out_dir: str | os.PathLike[str], force: bool) -> list[VolumePlan]:
    """Expand the inputs and plan each of them, before any work starts.

    Args:
        patterns: the INPUT arguments (files, folders, globs).
        config: the batch's settings.
        out_dir: the output folder (created when missing).
        force: replace existing output files that this configuration did not produce.

    Returns:
        One plan per input.

    Raises:
        InputError: on any bad input (see :func:`expand_inputs`, :func:`plan_input`), an input that is
            also another input's mask, or an existing output file whose records are not all present
            (without ``force``).
    """
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {str(out)!r}: is a file, expected a folder")
    if config.seg_model is not None and not Path(config.seg_model).is_file():
        raise InputError(f"--seg-model {config.seg_model!r}: no such file")
    images = expand_inputs(patterns)
    names = _output_names(images)
    plans = [plan_input(image, config=config, output=out / name, work_root=out / WORK_FOLDER) for image, name in zip(images, names, strict=True)]
    resolved = {p.input.resolve(): p.input for p in plans}
    for plan in plans:
        if plan.mask is not None and plan.mask.resolve() in resolved:
            raise InputError(f"INPUT {str(resolved[plan.mask.resolve()])!r}: is the mask of {str(plan.input)!r}; select the images with a glob")
        if plan.output.exists() and not force and not all(plan.is_done(i) for i in plan.fitted):
            raise InputError(f"--out {str(out)!r}: {str(plan.output)!r} exists (pass --force to replace it)")
    return plans


@lru_cache(maxsize=2)
def _cached_array(path: str, arg: str) -> np.ndarray:
    from sinco.data.io import load_array

    return load_array(path, arg=arg)


@lru_cache(maxsize=1)
def _cached_seg_model(path: str) -> Any:
    from sinco.seg.network import load_seg_model

    return load_seg_model(path)


def _read_slice(path: str, *, index: int | None, config: BatchConfig, arg: str) -> np.ndarray:
    from sinco.data.io import select_slice, select_slices

    array = _cached_array(path, arg)
    channel = config.channel if arg == "INPUT" else 0
    if index is None:
        return select_slice(array, slice_index=None, axis=config.axis, channel=channel, arg=arg)
    return select_slices(array, slices=f"{index}:{index + 1}", axis=config.axis, channel=channel, arg=arg)[0][0]


def _worker_device(task: SliceTask) -> Any:
    import torch

    from sinco.utils.device import resolve_device

    device = resolve_device(task.config.device)
    if task.gpu_per_worker and device.type == "cuda":
        from distributed import get_worker

        name = get_worker().name
        if isinstance(name, int):
            device = torch.device(f"cuda:{name % torch.cuda.device_count()}")
    return device


def fit_slice(task: SliceTask | SlabTask) -> dict[str, Any]:
    """Fit one slice (or one slab) on a worker and save its record; a unit whose record exists is not fitted again.

    Args:
        task: the slice (or slab) and where its record goes.

    Returns:
        The record's JSON metrics (for a slice ``index``, ``kind``, ``bytes``, ``psnr``, ``ssim``, ...; for a slab its
        fit report with ``vmin``, ``vmax`` and ``psnr``; both with ``seconds`` and ``worker``) with ``fitted`` true when
        this call ran the fit.

    Raises:
        InputError: if the slice cannot be read or fitted (the message names it).
    """
    import torch

    record, meta = Path(task.record), Path(task.meta)
    with _FIT_LOCK:
        if record.is_file() and meta.is_file():
            return {**json.loads(meta.read_text()), "fitted": False}
        torch.set_num_threads(task.config.torch_threads)
        return _fit_and_save(task, record=record, meta=meta)


def _fit_and_save(task: SliceTask | SlabTask, *, record: Path, meta: Path) -> dict[str, Any]:
    import torch

    from sinco.utils.atomic import atomic_write_bytes

    device = _worker_device(task)
    start, cpu_start = time.perf_counter(), time.process_time()
    row, data = _fit_slab(task, device) if isinstance(task, SlabTask) else _fit_one_slice(task, device)
    row.update({
        "seconds": time.perf_counter() - start,
        # CPU seconds of the worker process: the fit's cost in core-seconds, whatever else shares the machine.
        "cpu_seconds": time.process_time() - cpu_start,
        "worker": f"{socket.gethostname()}:{os.getpid()}", "device": str(device), "torch_threads": torch.get_num_threads(),
    })  # fmt: skip
    # The metrics go first: a record file is only ever present with its metrics beside it.
    atomic_write_bytes(meta, (json.dumps(row, default=str) + "\n").encode())
    atomic_write_bytes(record, data)
    index = task.first if isinstance(task, SlabTask) else task.index
    _append_log(Path(task.log), {"input": task.input, "index": index, "worker": row["worker"], "seconds": row["seconds"],
                                 "cpu_seconds": row["cpu_seconds"], "finished": time.time()})  # fmt: skip
    return {**row, "fitted": True}


def _fit_one_slice(task: SliceTask, device: Any) -> tuple[dict[str, Any], bytes]:
    """One slice's fit, as ``compress --slices all --batch-slices 1``: its metrics row and its ``.sinco`` file."""
    from sinco.compression.image import compress_images
    from sinco.data.intensity import normalize_minmax

    name = f"slice {task.index} of {task.input!r}" if task.index is not None else f"INPUT {task.input!r}"
    scaled, vmin, vmax = normalize_minmax(_read_slice(task.input, index=task.index, config=task.config, arg="INPUT"), name=name)
    seg_model = masks = None
    if task.config.seg_model is not None and task.mask is not None:
        seg_model = _cached_seg_model(task.config.seg_model)
        masks = [_read_slice(task.mask, index=task.index, config=task.config, arg="--mask") > 0]
    # One slice per call, as compress --slices all --batch-slices 1 (and compress for a 2-D input) does.
    result = compress_images(
        [scaled], ranges=[(vmin, vmax)], codec=task.config.codec, fit_config=task.config.fit_config, device=device, seg_model=seg_model,
        masks=masks, allow_empty_masks=task.index is not None, progress=False,
    )[0]  # fmt: skip
    m = result.metrics
    row: dict[str, Any] = {"index": task.index, "kind": "fitted", "bytes": 5 + len(result.data), "psnr": m["psnr"], "ssim": m["ssim"],
                           **result.report.to_dict()}  # fmt: skip
    if "dice" in m:
        row.update(dice=m["dice"], dice_reference=m["dice_reference"])
    return row, result.data


def _fit_slab(task: SlabTask, device: Any) -> tuple[dict[str, Any], bytes]:
    """One slab's fit, as ``compress --slices ... --arch grid3d`` fits it: its report (with the PSNR of its decoded
    payload on its own range) and its payload."""
    from sinco.compression.volume import fit_volume_slab
    from sinco.data.intensity import restore_intensity
    from sinco.data.io import select_slices

    config = task.config
    values = select_slices(_cached_array(task.input, "INPUT"), slices=f"{task.first}:{task.stop}", axis=config.axis, channel=config.channel,
                           arg="INPUT")[0]  # fmt: skip
    if not np.all(np.isfinite(values)):
        raise InputError(f"slab {task.first}:{task.stop} of {task.input!r}: contains NaN or Inf voxels")
    slab, report = fit_volume_slab(values, slab=task.slab, first_index=task.first, budget_bits=task.budget_bits, layout=task.layout,
                                   codec=config.codec, fit_config=config.fit_config, device=device)  # fmt: skip
    row: dict[str, Any] = {"index": task.first, "kind": "slab", "vmin": slab.vmin, "vmax": slab.vmax, **report, "psnr": None}
    if slab.payload:
        decoded = config.codec.family.decode_slab(task.layout.spec, slab.payload, depth=slab.slices, height=values.shape[1],
                                                  width=values.shape[2], slices=range(slab.slices))  # fmt: skip
        error = restore_intensity(decoded, vmin=slab.vmin, vmax=slab.vmax).astype(np.float64) - values
        mse = float(np.mean(error**2))
        row["psnr"] = math.inf if mse == 0 else 10 * math.log10((slab.vmax - slab.vmin) ** 2 / mse)
    return row, slab.payload


def _append_log(path: Path, event: dict[str, Any]) -> None:
    # One short write with O_APPEND: lines from concurrent workers do not interleave on a local file system.
    line = (json.dumps(event, default=str) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        os.write(fd, line)
    finally:
        os.close(fd)


def assemble(plan: VolumePlan, *, config: BatchConfig) -> bytes:
    """The output file of an input whose slices (or slabs) all have their records.

    Args:
        plan: the input's plan.
        config: the batch's settings (the slicing axis is stored in the volume header).

    Returns:
        A ``.sinco`` volume file (the bytes of ``compress --slices``; of slabs for a family that codes slabs), or
        for a 2-D input its single-slice ``.sinco`` file (the bytes of ``compress``).

    Raises:
        InputError: if a record is missing or does not fit the volume.
    """
    from sinco.codec.volume import SlabRecord, SliceRecord, VolumeHeader, encode_slab_volume, encode_volume

    missing = [i for i in plan.fitted if not plan.is_done(i)]
    if missing:
        raise InputError(f"INPUT {str(plan.input)!r}: {plan.unit_name(missing[0])} has no record yet")
    if not plan.is_volume:
        return plan.record(plan.fitted[0]).read_bytes()
    header = VolumeHeader(axis=config.axis, height=plan.height, width=plan.width, n_slices=plan.n_slices,
                          first_index=plan.first_index, affine=plan.affine)  # fmt: skip
    if plan.slabs:
        slabs = []
        for first, stop in plan.slabs:
            if first in plan.constants:
                slabs.append(SlabRecord(slices=stop - first, vmin=plan.constants[first], vmax=plan.constants[first]))
            else:
                meta = json.loads(plan.record_meta(first).read_text())
                payload = plan.record(first).read_bytes()
                slabs.append(SlabRecord(slices=stop - first, vmin=meta["vmin"], vmax=meta["vmax"], payload=payload))
        return encode_slab_volume(header, family_id=config.codec.family.family_id, block=plan.layout.block, slabs=slabs)
    records = [SliceRecord(constant=plan.constants[i]) if i in plan.constants else SliceRecord(data=plan.record(i).read_bytes())
               for i in range(plan.first_index, plan.first_index + plan.n_slices)]  # fmt: skip
    return encode_volume(header, records)


def _local_workers(cluster: ClusterConfig, *, gpus: int) -> int:
    if cluster.workers is not None:
        return cluster.workers
    if gpus:
        return gpus
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return max(1, cores // cluster.threads_per_worker)


def connect(cluster: ClusterConfig, *, gpus: int = 0) -> tuple[Any, Any]:
    """Start a ``LocalCluster`` or connect to a running scheduler.

    Local workers are processes that fit one slice at a time with ``threads_per_worker`` torch
    threads (their ``OMP_NUM_THREADS`` is set before torch loads); a worker that dies twice under
    the same task fails that task (``distributed.scheduler.allowed-failures = 1``).

    Args:
        cluster: where to run.
        gpus: CUDA devices to use locally: one worker per device (0 = CPU workers).

    Returns:
        ``(client, local_cluster)``; ``local_cluster`` is ``None`` for a remote scheduler.

    Raises:
        InputError: if dask.distributed is not installed or the scheduler cannot be reached.
    """
    try:
        import dask
        from distributed import Client, LocalCluster
    except ImportError:
        raise InputError("compress-batch needs dask.distributed: pip install 'sinco[cluster]'") from None
    import logging

    if cluster.scheduler != "local":
        try:
            return Client(cluster.scheduler, timeout="20s"), None
        except OSError as exc:
            raise InputError(f"--scheduler {cluster.scheduler!r}: cannot connect ({exc})") from None
    threads = str(cluster.threads_per_worker)
    env = {"OMP_NUM_THREADS": threads, "MKL_NUM_THREADS": threads, "OPENBLAS_NUM_THREADS": threads}
    with dask.config.set({"distributed.scheduler.allowed-failures": 1, "distributed.nanny.pre-spawn-environ": env}):
        local = LocalCluster(n_workers=_local_workers(cluster, gpus=gpus), threads_per_worker=1, processes=True,
                             dashboard_address=":0", silence_logs=logging.ERROR, env=env)  # fmt: skip
        return Client(local), local


def dashboard_link(client: Any) -> str | None:
    """The Dask dashboard's address, or ``None`` when the scheduler serves none (bokeh missing)."""
    try:
        if "dashboard" not in client.scheduler_info().get("services", {}):
            return None
        return str(client.dashboard_link)
    except Exception:  # noqa: BLE001 - the address is informative only
        return None


def _unit_row(plan: VolumePlan, index: int, *, rows: dict[int, dict], errors: dict[int, str]) -> dict[str, Any]:
    """The manifest row of one slice (or slab)."""
    where = {"index": index, "slices": [index, index + plan.unit_slices(index)]} if plan.slabs else {"index": index}
    kind = "slab" if plan.slabs else "fitted"
    if index in plan.constants:
        return {**where, "kind": "constant", "value": plan.constants[index], "bytes": 0 if plan.slabs else 9, "status": "done"}
    if index in rows:
        row = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in rows[index].items() if k != "fitted"}
        return {**row, **where, "index": index if plan.is_volume else None, "status": "done"}
    if index in errors:
        return {**where, "kind": kind, "status": "failed", "error": errors[index]}
    return {**where, "kind": kind, "status": "pending"}


def _input_entry(plan: VolumePlan, *, rows: dict[int, dict], errors: dict[int, str], written: bool) -> dict[str, Any]:
    units = [_unit_row(plan, index, rows=rows, errors=errors) for index in plan.units]
    done = [u for u in units if u["status"] == "done"]
    fitted = [u for u in done if u["kind"] != "constant"]
    entry: dict[str, Any] = {
        "input": str(plan.input), "mask": None if plan.mask is None else str(plan.mask), "output": str(plan.output),
        "records": str(plan.work), "kind": "volume" if plan.is_volume else "image",
        "status": "done" if written else ("failed" if errors else "pending"),
        "slice_range": [plan.first_index, plan.first_index + plan.n_slices], "shape": [plan.n_slices, plan.height, plan.width],
        "slices_done": sum(plan.unit_slices(u["index"]) for u in done), "slices_failed": sum(plan.unit_slices(i) for i in errors),
    }  # fmt: skip
    if written:
        size = plan.output.stat().st_size
        entry.update(file_bytes=size, bpp_file=8 * size / (plan.n_slices * plan.height * plan.width))
    psnrs = [u["psnr"] for u in fitted if u.get("psnr") is not None]
    if psnrs:
        entry["psnr_mean"] = float(np.mean(psnrs))
    if fitted and all("ssim" in u for u in fitted):
        entry["ssim_mean"] = float(np.mean([u["ssim"] for u in fitted]))
    entry["slabs" if plan.slabs else "slices"] = units
    return entry


def _write_manifest(path: Path, manifest: dict[str, Any]) -> None:
    from sinco.utils.atomic import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(manifest, indent=2, default=str) + "\n").encode())


class _BatchState:
    """What a run knows about its slices (results, errors, outputs written) and the manifest it makes of it."""

    def __init__(self, plans: Sequence[VolumePlan], *, config: BatchConfig, cluster: ClusterConfig, gpus: int,
                 manifest_path: Path, argv: Sequence[str] | None) -> None:  # fmt: skip
        self.plans, self.config, self.cluster, self.gpus = list(plans), config, cluster, gpus
        self.manifest_path, self.argv = manifest_path, argv
        self.rows: list[dict[int, dict]] = [{} for _ in plans]
        self.errors: list[dict[int, str]] = [{} for _ in plans]
        self.written = [False] * len(plans)
        self.status, self.fitted, self.fitted_slices = "running", 0, 0
        self.started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        self.todo: list[tuple[int, int]] = []
        for p, plan in enumerate(plans):
            for index in plan.fitted:
                if plan.is_done(index):
                    self.rows[p][index] = json.loads(plan.record_meta(index).read_text())
                else:
                    self.todo.append((p, index))
        self.skipped = sum(len(r) for r in self.rows)

    def done(self, p: int, index: int, row: dict[str, Any]) -> None:
        # The record did not exist when the run began, so it was fitted in this run: by this task, or by an
        # earlier run of it whose result Dask lost with its worker (the task then found the record).
        self.rows[p][index] = row
        self.fitted += 1
        self.fitted_slices += self.plans[p].unit_slices(index)
        self.finish_input(p)

    def failed(self, p: int, index: int, exc: BaseException) -> None:
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        self.errors[p][index] = f"{type(exc).__name__}: {message}"

    def collect_records(self) -> None:
        """Count the fits that finished after their results stopped being collected (Ctrl-C, a lost client)."""
        for p, index in self.todo:
            if index not in self.rows[p] and index not in self.errors[p] and self.plans[p].is_done(index):
                self.done(p, index, json.loads(self.plans[p].record_meta(index).read_text()))

    def finish_input(self, p: int) -> None:
        """Write input ``p``'s file once all its slices have their records (and none failed)."""
        from sinco.utils.atomic import atomic_write_bytes

        plan = self.plans[p]
        if self.written[p] or self.errors[p] or any(i not in self.rows[p] for i in plan.fitted):
            return
        data = assemble(plan, config=self.config)
        if not (plan.output.exists() and plan.output.read_bytes() == data):
            atomic_write_bytes(plan.output, data)
        self.written[p] = True
        self.write_manifest()

    def failures(self) -> list[tuple[str, int | None, str]]:
        """``(input, index, error)`` of each failed slice (or slab, by its first source index)."""
        return [(str(plan.input), i if plan.is_volume else None, e) for plan, errors in zip(self.plans, self.errors, strict=True)
                for i, e in sorted(errors.items())]  # fmt: skip

    def failed_units(self) -> list[str]:
        """``slice N`` or ``slab A:B`` of each failed unit, in the order of :meth:`failures`."""
        return [plan.unit_name(i if plan.is_volume else None) for plan, errors in zip(self.plans, self.errors, strict=True)
                for i in sorted(errors)]  # fmt: skip

    def manifest(self) -> dict[str, Any]:
        """The manifest's content now."""
        import torch

        from sinco.version import __version__

        entries = [_input_entry(plan, rows=self.rows[p], errors=self.errors[p], written=self.written[p]) for p, plan in enumerate(self.plans)]
        return {
            "format": MANIFEST_FORMAT, "sinco_version": __version__, "torch_version": torch.__version__,
            "command": None if self.argv is None else list(self.argv), "status": self.status, "started": self.started,
            "updated": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "config": self.config.to_dict(), "cluster": {**asdict(self.cluster), "gpus": self.gpus},
            "counts": {"inputs": len(self.plans), "outputs_written": sum(self.written), "slices": sum(p.n_slices for p in self.plans),
                       "done": sum(e["slices_done"] for e in entries), "failed": sum(e["slices_failed"] for e in entries),
                       "fitted_this_run": self.fitted, "skipped_done_before": self.skipped},
            "inputs": entries,
        }  # fmt: skip

    def write_manifest(self) -> None:
        """Write ``manifest.json`` atomically."""
        _write_manifest(self.manifest_path, self.manifest())

    def result(self) -> BatchResult:
        """The run's :class:`BatchResult`."""
        return BatchResult(manifest=self.manifest(), failed=self.failures(), fitted=self.fitted, skipped=self.skipped,
                           failed_units=self.failed_units())  # fmt: skip


def _progress_bar(state: _BatchState) -> Any:
    from sinco.utils.progress import progress_bar

    total = sum(plan.n_slices for plan in state.plans)
    todo = sum(state.plans[p].unit_slices(index) for p, index in state.todo)
    # Slices per minute (this run's fits only) go in the postfix; tqdm's own rate would be per second.
    return progress_bar(total=total, initial=total - todo, desc="compress-batch", unit="slice", leave=True,
                        bar_format="{desc}: {percentage:3.0f}%|{bar}| {n_fmt}/{total_fmt} slices [{elapsed}<{remaining}{postfix}]")  # fmt: skip


def _submit(client: Any, state: _BatchState, *, log: Path, token: str) -> dict[Any, tuple[int, int]]:
    futures = {}
    for p, index in state.todo:
        plan = state.plans[p]
        if plan.slabs:
            slab = plan.units.index(index)
            task = SlabTask(input=str(plan.input.resolve()), first=index, stop=index + plan.unit_slices(index), slab=slab,
                            budget_bits=plan.layout.budgets[slab], layout=plan.layout, config=state.config, gpu_per_worker=state.gpus > 0,
                            record=str(plan.record(index)), meta=str(plan.record_meta(index)), log=str(log))  # fmt: skip
            futures[client.submit(fit_slice, task, key=f"sinco-slab-{token}-{p}-{index}", retries=1, pure=False)] = (p, index)
            continue
        task = SliceTask(input=str(plan.input.resolve()), mask=None if plan.mask is None else str(plan.mask.resolve()),
                         index=index if plan.is_volume else None, config=state.config, gpu_per_worker=state.gpus > 0,
                         record=str(plan.record(index)), meta=str(plan.record_meta(index)), log=str(log))  # fmt: skip
        futures[client.submit(fit_slice, task, key=f"sinco-slice-{token}-{p}-{index}", retries=1, pure=False)] = (p, index)
    return futures


def run_batch(
    plans: Sequence[VolumePlan],
    *,
    config: BatchConfig,
    cluster: ClusterConfig,
    out_dir: str | os.PathLike[str],
    progress: bool = True,
    argv: Sequence[str] | None = None,
    client: Any = None,
) -> BatchResult:
    """Fit every slice that has no record on the cluster, and write each input's file once its slices are done.

    Each slice is one Dask task (``retries=1``); a slice that fails twice is reported in the manifest
    with its error and the rest go on. ``OUT/manifest.json`` is written (atomically) at the start, after
    each output file, and at the end, also after Ctrl-C.

    Args:
        plans: the inputs (see :func:`plan_batch`).
        config: the batch's settings.
        cluster: where to run.
        out_dir: the output folder.
        progress: one progress bar over all slices (slices/minute, ETA) on stderr.
        argv: the command line, for the manifest.
        client: a ``distributed.Client`` to run on instead of the one ``cluster`` describes; the caller
            keeps it open (its workers' torch threads are set by each task).

    Returns:
        A :class:`BatchResult`.

    Raises:
        InputError: if the cluster cannot be started or reached.
        KeyboardInterrupt: on Ctrl-C, after cancelling the tasks and writing the manifest.
    """
    import torch

    from sinco.utils.device import resolve_device

    out = Path(out_dir).resolve()
    gpus = 0
    # A remote cluster's workers resolve the device themselves: the client may be a login node without a GPU.
    if cluster.scheduler == "local" and client is None and resolve_device(config.device).type == "cuda" and ":" not in config.device:
        gpus = torch.cuda.device_count()
    for plan in plans:
        plan.work.mkdir(parents=True, exist_ok=True)
        plan.output.parent.mkdir(parents=True, exist_ok=True)
    state = _BatchState(plans, config=config, cluster=cluster, gpus=gpus, manifest_path=out / MANIFEST_NAME, argv=argv)
    for p in range(len(plans)):
        state.finish_input(p)
    state.write_manifest()
    if not state.todo:
        state.status = "complete"
        state.write_manifest()
        return state.result()
    own_client, local = client is None, None
    bar = None
    futures: dict[Any, tuple[int, int]] = {}
    try:
        if own_client:
            client, local = connect(cluster, gpus=gpus)
        link = dashboard_link(client)
        if link and progress:
            print(f"sinco: Dask dashboard at {link}", file=sys.stderr)
        from distributed import as_completed

        token = hashlib.sha1(f"{out}{time.time()}{os.getpid()}".encode()).hexdigest()[:8]
        futures = _submit(client, state, log=out / WORK_FOLDER / FIT_LOG, token=token)
        bar = _progress_bar(state) if progress else None
        begin = time.perf_counter()
        for future in as_completed(futures):
            p, index = futures.pop(future)
            if future.status == "finished":
                state.done(p, index, future.result())
            else:
                state.failed(p, index, future.exception())
            future.release()
            if bar is not None:
                bar.update(state.plans[p].unit_slices(index))
                speed = 60 * state.fitted_slices / max(time.perf_counter() - begin, 1e-9)
                bar.set_postfix_str(f"{speed:.2f} slices/min", refresh=True)
        state.status = "complete" if not any(state.errors) else "incomplete"
    except KeyboardInterrupt:
        state.status = "interrupted"
        raise
    except BaseException:
        state.status = "error"  # the cluster could not be reached, or the client failed: see the command's message
        raise
    finally:
        if bar is not None:
            bar.close()
        if futures:
            client.cancel(list(futures))
        if own_client and client is not None:
            client.close()
            if local is not None:
                local.close()
        # The local workers are stopped by now, so the manifest counts every fit that left its record.
        state.collect_records()
        if state.status == "running":
            state.status = "interrupted"
        state.write_manifest()
    return state.result()
