"""Whole volumes: a ``.sinco`` volume file holds one ``.sinco`` record per slice.

All integers and floats are little-endian. Layout (format version 1)::

    offset  size  field
    0       4     magic b"SNCV"
    4       1     format version (1)
    5       1     slicing axis of the source volume (0, 1 or 2)
    6       2     reserved, 0
    8       4     slice rows H, uint32
    12      4     slice columns W, uint32
    16      4     number of slices S, uint32
    20      4     source index of the first slice (the slices are consecutive), uint32
    24      128   voxel-to-world affine of the source, 4 x 4 float64, row-major (identity if unknown)
    152     ...   S records, each
                    kind uint8 = 0: a constant slice, followed by its value, float64
                    kind uint8 = 1: an INR slice, followed by a length L (uint32) and L bytes
                                    of a complete ``.sinco`` v1 file of an H x W image
    end-4   4     CRC-32 (zlib) of every byte before it

A constant slice (empty background at the ends of a scan) costs 9 bytes and no fit; an INR
record costs its ``.sinco`` file plus 5 bytes.
"""

from __future__ import annotations

import math
import struct
import time
import zlib
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import torch

from sinco.codec.bitstream import MAX_FILE_BYTES, MAX_PIXELS, MAX_SIDE, SincoHeader
from sinco.errors import BitstreamError, InputError

if TYPE_CHECKING:
    from sinco.codec.inr_codec import CodecConfig
    from sinco.fit.config import FitConfig
    from sinco.seg.network import SegModel

VOLUME_MAGIC = b"SNCV"
VOLUME_VERSION = 1
MAX_SLICES = 65535
# Decoding holds the volume as float32: 2 GiB at most, whatever a file announces.
MAX_VOXELS = 1 << 29
_HEAD = struct.Struct("<4sBBHIIII16d")
_CONSTANT, _INR = 0, 1


@dataclass(frozen=True)
class VolumeHeader:
    """What a ``.sinco`` volume file says about its content.

    Args:
        axis: slicing axis of the source volume.
        height: rows of every slice.
        width: columns of every slice.
        n_slices: slices stored.
        first_index: source index of the first stored slice.
        affine: the source's voxel-to-world matrix ``(4, 4)``.
    """

    axis: int
    height: int
    width: int
    n_slices: int
    first_index: int
    affine: np.ndarray

    @property
    def n_voxels(self) -> int:
        """``S * H * W``."""
        return self.n_slices * self.height * self.width


@dataclass(frozen=True)
class SliceRecord:
    """One stored slice: a constant value, or the bytes of a ``.sinco`` file.

    Args:
        constant: the value of a constant slice (``None`` for an INR slice).
        data: the ``.sinco`` v1 file of an INR slice (``None`` for a constant slice).
    """

    constant: float | None = None
    data: bytes | None = None


def is_volume_file(data: bytes) -> bool:
    """Whether ``data`` starts like a ``.sinco`` volume file."""
    return data[: len(VOLUME_MAGIC)] == VOLUME_MAGIC


def encode_volume(header: VolumeHeader, records: list[SliceRecord]) -> bytes:
    """Serialise slice records into the bytes of a ``.sinco`` volume file.

    Args:
        header: geometry of the stored slices.
        records: one per slice, in order.

    Returns:
        The file's bytes.

    Raises:
        InputError: if the records do not match the header or a value does not fit the format.
    """
    from sinco.codec.bitstream import decode_header

    if header.axis not in (0, 1, 2):
        raise InputError(f"--axis {header.axis}: must be 0, 1 or 2")
    if len(records) != header.n_slices or not 1 <= header.n_slices <= MAX_SLICES:
        raise InputError(f"volume: {len(records)} slice records for {header.n_slices} slices (1..{MAX_SLICES} allowed)")
    affine = np.asarray(header.affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise InputError(f"affine: expected a finite 4 x 4 matrix, got shape {affine.shape}")
    parts = [_HEAD.pack(VOLUME_MAGIC, VOLUME_VERSION, header.axis, 0, header.height, header.width, header.n_slices,
                        header.first_index, *affine.reshape(-1).tolist())]  # fmt: skip
    for index, record in enumerate(records):
        if record.data is None:
            if record.constant is None or not math.isfinite(record.constant):
                raise InputError(f"slice {header.first_index + index}: a constant slice needs a finite value")
            parts.append(struct.pack("<Bd", _CONSTANT, record.constant))
        else:
            inner = decode_header(record.data)
            if (inner.height, inner.width) != (header.height, header.width):
                raise InputError(f"slice {header.first_index + index}: {inner.height}x{inner.width}, the volume's slices are {header.height}x{header.width}")
            parts.append(struct.pack("<BI", _INR, len(record.data)) + record.data)
    body = b"".join(parts)
    return body + struct.pack("<I", zlib.crc32(body))


def decode_volume_file(data: bytes) -> tuple[VolumeHeader, list[SliceRecord]]:
    """Parse and validate a ``.sinco`` volume file (every slice record is checked too).

    Args:
        data: the whole file.

    Returns:
        ``(header, records)``.

    Raises:
        BitstreamError: naming what is wrong: wrong magic, unsupported version, truncation, CRC
            mismatch, implausible geometry, or an invalid slice record.
    """
    from sinco.codec.bitstream import decode_header

    if not is_volume_file(data):
        raise BitstreamError("not a .sinco volume file (wrong magic bytes)")
    if len(data) < _HEAD.size + 4:
        raise BitstreamError(f"truncated .sinco volume file: {len(data)} bytes, the header alone needs {_HEAD.size + 4}")
    if len(data) > MAX_FILE_BYTES:
        raise BitstreamError(f"implausible .sinco volume file: larger than {MAX_FILE_BYTES >> 20} MiB")
    magic, version, axis, reserved, height, width, n_slices, first, *affine = _HEAD.unpack_from(data, 0)
    if version != VOLUME_VERSION:
        raise BitstreamError(f"unsupported .sinco volume format version {version} (this sinco reads version {VOLUME_VERSION})")
    (crc,) = struct.unpack_from("<I", data, len(data) - 4)
    if zlib.crc32(data[:-4]) != crc:
        raise BitstreamError("corrupted .sinco volume file: CRC-32 mismatch (or truncated)")
    if axis not in (0, 1, 2) or reserved != 0:
        raise BitstreamError("corrupted .sinco volume header: bad axis or reserved bytes")
    if not (1 <= height <= MAX_SIDE and 1 <= width <= MAX_SIDE and height * width <= MAX_PIXELS):
        raise BitstreamError(f"implausible .sinco volume header: slices of {height}x{width}")
    if not 1 <= n_slices <= MAX_SLICES or n_slices * height * width > MAX_VOXELS:
        raise BitstreamError(f"implausible .sinco volume header: {n_slices} slices of {height}x{width}")
    if not all(math.isfinite(v) for v in affine):
        raise BitstreamError("corrupted .sinco volume header: non-finite affine")
    records: list[SliceRecord] = []
    offset, end = _HEAD.size, len(data) - 4
    for index in range(n_slices):
        if offset >= end:
            raise BitstreamError(f"truncated .sinco volume file: {index} of {n_slices} slice records present")
        kind = data[offset]
        if kind == _CONSTANT:
            if offset + 9 > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            (value,) = struct.unpack_from("<d", data, offset + 1)
            if not math.isfinite(value):
                raise BitstreamError(f"corrupted .sinco volume file: slice record {index} holds a non-finite value")
            records.append(SliceRecord(constant=value))
            offset += 9
        elif kind == _INR:
            if offset + 5 > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            (length,) = struct.unpack_from("<I", data, offset + 1)
            inner = data[offset + 5 : offset + 5 + length]
            if len(inner) != length or offset + 5 + length > end:
                raise BitstreamError(f"truncated .sinco volume file in slice record {index}")
            try:
                slice_header = decode_header(inner)
            except BitstreamError as exc:
                raise BitstreamError(f"slice record {index}: {exc}") from None
            if (slice_header.height, slice_header.width) != (height, width):
                raise BitstreamError(f"corrupted .sinco volume file: slice record {index} is {slice_header.height}x{slice_header.width}")
            records.append(SliceRecord(data=inner))
            offset += 5 + length
        else:
            raise BitstreamError(f"corrupted .sinco volume file: unknown kind {kind} of slice record {index}")
    if offset != end:
        raise BitstreamError(f"corrupted .sinco volume file: {end - offset} bytes after the last slice record")
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first,
                          affine=np.asarray(affine, dtype=np.float64).reshape(4, 4))  # fmt: skip
    return header, records


def decode_volume(data: bytes) -> tuple[VolumeHeader, np.ndarray, list[SincoHeader | None]]:
    """Decode a ``.sinco`` volume file to restored intensities, slices stacked along the first axis.

    Args:
        data: the whole file.

    Returns:
        ``(header, volume, slice_headers)``: ``volume`` float32 ``(S, H, W)`` in the source's
        intensity units; ``slice_headers[i]`` is ``None`` for a constant slice.

    Raises:
        BitstreamError: if the file is not valid.
    """
    from sinco.codec.inr_codec import decode
    from sinco.data.intensity import restore_intensity

    header, records = decode_volume_file(data)
    volume = np.empty((header.n_slices, header.height, header.width), dtype=np.float32)
    slice_headers: list[SincoHeader | None] = []
    for index, record in enumerate(records):
        if record.data is None:
            volume[index] = record.constant
            slice_headers.append(None)
        else:
            slice_header, image = decode(record.data)
            volume[index] = restore_intensity(image, vmin=slice_header.vmin, vmax=slice_header.vmax)
            slice_headers.append(slice_header)
    return header, volume, slice_headers


@dataclass(frozen=True)
class VolumeResult:
    """What :func:`compress_volume` produced and measured.

    Args:
        data: the ``.sinco`` volume file's bytes.
        header: its header.
        slices: per stored slice, a JSON-ready record (index, kind, metrics of the decoded file).
        metrics: whole-volume figures: rates from the real bytes, mean PSNR/SSIM of the INR slices,
            fitting time and slices per minute.
        seconds: wall-clock time of the whole compression.
    """

    data: bytes
    header: VolumeHeader
    slices: list[dict]
    metrics: dict[str, float | int]
    seconds: float = field(default=0.0)


def compress_volume(
    volume: np.ndarray,
    *,
    first_index: int,
    axis: int,
    affine: np.ndarray,
    codec: CodecConfig,
    fit: FitConfig,
    device: torch.device,
    batch_slices: int = 1,
    seg_model: SegModel | None = None,
    masks: np.ndarray | None = None,
    progress: bool = False,
    rois: np.ndarray | None = None,
) -> VolumeResult:
    """Compress consecutive slices of a volume, fitting ``batch_slices`` of them at a time as one batch.

    Every non-constant slice is scaled to ``[0, 1]`` on its own and fitted from the same seeded
    initialisation as :func:`~sinco.codec.inr_codec.compress_image` uses, so its record matches
    a single-slice compression up to floating-point summation order. With ``seg_model`` and
    ``masks`` the SINCO regulariser applies (weight ``fit.lam``) on the slices whose mask is not
    empty; the others are fitted on the MSE alone.

    Args:
        volume: slices ``(S, H, W)`` (already taken along ``axis`` and stacked first).
        first_index: source index of ``volume[0]``.
        axis: slicing axis in the source (stored for decoding back to its layout).
        affine: source voxel-to-world matrix ``(4, 4)``.
        codec: architecture and rate.
        fit: fitting settings.
        device: where to fit.
        batch_slices: slices per batched fit (1 = one at a time).
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ground-truth masks ``(S, H, W)``, nonzero = tumour.
        progress: progress bars.
        rois: regions of interest ``(S, H, W)`` (a brain mask) for each slice's ``psnr_roi`` and
            ``ssim_roi``; ``None``: the head found by :func:`sinco.metrics.roi.head_mask`.

    Returns:
        A :class:`VolumeResult`; its metrics are computed on the decoded file.

    Raises:
        InputError: for a non-3-D or non-finite volume, mismatched masks, or a bad ``batch_slices``.
    """
    from sinco.codec.inr_codec import compress_images
    from sinco.data.intensity import normalize_minmax
    from sinco.metrics.image import SSIM_MIN_SIDE
    from sinco.metrics.roi import quality_metrics

    if volume.ndim != 3:
        raise InputError(f"volume: expected slices (S, H, W), got shape {volume.shape}")
    if min(volume.shape[1:]) < SSIM_MIN_SIDE:
        raise InputError(f"volume: slices of {volume.shape[1]}x{volume.shape[2]} are below {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, the SSIM window every result is measured with")
    if not np.all(np.isfinite(volume)):
        raise InputError("volume: contains NaN or Inf voxels")
    if not isinstance(batch_slices, int) or batch_slices < 1:
        raise InputError(f"--batch-slices {batch_slices}: must be a positive integer")
    if (seg_model is None) != (masks is None):
        raise InputError("--mask and --seg-model go together")
    if masks is not None and masks.shape != volume.shape:
        raise InputError(f"--mask: shape {masks.shape} differs from the slices' {volume.shape}")
    if rois is not None and rois.shape != volume.shape:
        raise InputError(f"--roi: shape {rois.shape} differs from the slices' {volume.shape}")
    start = time.perf_counter()
    n_slices, height, width = volume.shape
    records: list[SliceRecord | None] = [None] * n_slices
    scaled: dict[int, tuple[np.ndarray, float, float]] = {}
    for index in range(n_slices):
        if np.all(volume[index] == volume[index].flat[0]):
            records[index] = SliceRecord(constant=float(volume[index].flat[0]))
        else:
            scaled[index] = normalize_minmax(volume[index], name=f"slice {first_index + index}")
    results: dict = {}
    order = sorted(scaled)
    for begin in range(0, len(order), batch_slices):
        batch = order[begin : begin + batch_slices]
        batch_results = compress_images(
            [scaled[i][0] for i in batch], ranges=[scaled[i][1:] for i in batch], codec=codec, fit=fit, device=device,
            seg_model=seg_model, masks=None if masks is None else [masks[i] for i in batch], allow_empty_masks=True,
            progress=progress, desc=f"slices {first_index + batch[0]}..{first_index + batch[-1]}",
        )  # fmt: skip
        for index, result in zip(batch, batch_results, strict=True):
            records[index] = SliceRecord(data=result.data)
            results[index] = result
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first_index,
                          affine=np.asarray(affine, dtype=np.float64))  # fmt: skip
    data = encode_volume(header, [r for r in records if r is not None])
    # The stored records are the files whose decoding compress_images measured; check they parse back.
    _, stored = decode_volume_file(data)
    per_slice: list[dict] = []
    for index, record in enumerate(stored):
        row: dict = {"index": first_index + index}
        if record.data is None:
            row.update(kind="constant", value=record.constant, bytes=9)
        else:
            result = results[index]
            if record.data != result.data:
                raise RuntimeError(f"internal error: slice {first_index + index} does not read back as written")
            m = result.metrics
            row.update(kind="inr", bytes=5 + len(record.data), psnr=m["psnr"], ssim=m["ssim"], psnr_fp32=m["psnr_fp32"],
                       best_step=result.fit.best_step, evaluations=result.fit.evaluations, divergences=result.fit.divergences, lam=result.fit.lam)  # fmt: skip
            if "dice" in m:
                row.update(dice=m["dice"], dice_reference=m["dice_reference"])
            quality = quality_metrics(pred=result.reconstruction, target=scaled[index][0], roi=None if rois is None else rois[index])
            row.update({k: v for k, v in quality.items() if k not in ("psnr", "ssim")})
        per_slice.append(row)
    inr_rows = [r for r in per_slice if r["kind"] == "inr"]
    compress_seconds = sum(r.seconds for r in results.values())
    any_result = next(iter(results.values()), None)
    metrics: dict[str, float | int] = {
        "slices": n_slices,
        "inr_slices": len(inr_rows),
        "constant_slices": n_slices - len(inr_rows),
        "file_bytes": len(data),
        "bpp_file": 8 * len(data) / (n_slices * height * width),
        "bpp_params_per_slice": any_result.metrics["bpp_params"] if any_result else math.nan,
        "n_params_per_slice": any_result.metrics["n_params"] if any_result else 0,
        "psnr_mean": float(np.mean([r["psnr"] for r in inr_rows])) if inr_rows else math.nan,
        "ssim_mean": float(np.mean([r["ssim"] for r in inr_rows])) if inr_rows else math.nan,
        "psnr_roi_mean": _mean([r["psnr_roi"] for r in inr_rows]),
        "ssim_roi_mean": _mean([r["ssim_roi"] for r in inr_rows]),
        "ms_ssim_mean": _mean([r["ms_ssim"] for r in inr_rows]),
        "compress_seconds": compress_seconds,
        "slices_per_minute": 60 * len(inr_rows) / compress_seconds if compress_seconds > 0 else math.nan,
        "batch_slices": batch_slices,
        "divergences": sum(r["divergences"] for r in inr_rows),
    }
    if seg_model is not None and inr_rows:
        metrics["dice_mean"] = float(np.mean([r["dice"] for r in inr_rows]))
        metrics["dice_reference_mean"] = float(np.mean([r["dice_reference"] for r in inr_rows]))
    return VolumeResult(data=data, header=header, slices=per_slice, metrics=metrics, seconds=time.perf_counter() - start)


def _mean(values: list[float | None]) -> float:
    """Mean of the values that exist (an empty region has none); NaN when none does."""
    present = [v for v in values if v is not None]
    return float(np.mean(present)) if present else math.nan


def default_batch_slices(device: torch.device) -> int:
    """Slices per batched fit when the user does not say: 1 on the CPU, 16 on CUDA.

    On 2 CPU cores a batch is not faster per slice than one slice at a time
    (``benchmarks/batch_speed.py``); a GPU is far from busy with one 4,300-parameter network.
    """
    return 16 if device.type == "cuda" else 1
