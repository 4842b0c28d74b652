"""Compressing the slices of a volume, each a fit of its own, into one ``.sinco`` volume file."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.volume import SliceRecord, VolumeHeader, decode_volume_file, encode_volume
from sinco.compression.image import CompressResult, compress_images
from sinco.data.intensity import normalize_minmax
from sinco.errors import InputError
from sinco.seg.network import SegModel

# The figures of sinco.metrics.roi.quality_metrics that volume slice rows carry.
_QUALITY_KEYS = ("ms_ssim", "ms_ssim_scales", "psnr_roi", "ssim_roi", "roi", "roi_fraction")


@dataclass(frozen=True)
class VolumeResult:
    """What :func:`compress_volume` produced and measured.

    Args:
        data: the ``.sinco`` volume file's bytes.
        header: its header.
        slices: per stored slice, a JSON-ready record (index, kind, metrics of the decoded file).
        metrics: whole-volume figures: rates from the real bytes, mean PSNR/SSIM of the fitted slices,
            fitting time and slices per minute.
        seconds: wall-clock time of the whole compression.
    """

    data: bytes
    header: VolumeHeader
    slices: list[dict]
    metrics: dict[str, Any]
    seconds: float = field(default=0.0)


def _check_volume(volume: np.ndarray, *, batch_slices: int, seg_model: SegModel | None, masks: np.ndarray | None,
                  rois: np.ndarray | None) -> None:  # fmt: skip
    from sinco.metrics.image import SSIM_MIN_SIDE

    if volume.ndim != 3:
        raise InputError(f"volume: expected slices (S, H, W), got shape {volume.shape}")
    if min(volume.shape[1:]) < SSIM_MIN_SIDE:
        raise InputError(f"volume: slices of {volume.shape[1]}x{volume.shape[2]} are below {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, the SSIM window every result is measured with")
    if not np.all(np.isfinite(volume)):
        raise InputError("volume: contains NaN or Inf voxels")
    if not isinstance(batch_slices, int) or batch_slices < 1:
        raise InputError(f"--batch-slices {batch_slices}: must be a positive integer")
    _check_masks(volume, seg_model=seg_model, masks=masks)
    if rois is not None and rois.shape != volume.shape:
        raise InputError(f"--roi: shape {rois.shape} differs from the slices' {volume.shape}")


def _check_masks(volume: np.ndarray, *, seg_model: SegModel | None, masks: np.ndarray | None) -> None:
    if (seg_model is None) != (masks is None):
        raise InputError("--mask and --seg-model go together")
    if masks is not None and np.shape(masks) != volume.shape:
        raise InputError(f"--mask: shape {np.shape(masks)} differs from the slices' {volume.shape}")


def compress_volume(
    volume: np.ndarray,
    *,
    first_index: int,
    axis: int,
    affine: np.ndarray,
    codec: CodecConfig,
    fit_config: Any,
    device: torch.device,
    batch_slices: int = 1,
    seg_model: SegModel | None = None,
    masks: np.ndarray | None = None,
    rois: np.ndarray | None = None,
    progress: bool = False,
) -> VolumeResult:
    """Compress consecutive slices of a volume, fitting ``batch_slices`` of them at a time as one batch.

    Every non-constant slice is scaled to ``[0, 1]`` on its own and fitted from the same seeded
    initialization as :func:`~sinco.compression.image.compress_image` uses, so its record matches a single-slice
    compression up to floating-point summation order. With ``seg_model`` and ``masks`` the SINCO
    regularizer applies (weight ``fit_config.lam``) on the slices whose mask is not empty; the others
    are fitted on the MSE alone.

    Args:
        volume: slices ``(S, H, W)`` (already taken along ``axis`` and stacked first).
        first_index: source index of ``volume[0]``.
        axis: slicing axis in the source (stored for decoding back to its layout).
        affine: source voxel-to-world matrix ``(4, 4)``.
        codec: family, rate and options.
        fit_config: the family's fitting configuration.
        device: where to fit.
        batch_slices: slices per batched fit (1 = one at a time).
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ground-truth masks ``(S, H, W)``, nonzero = tumour.
        rois: regions of interest ``(S, H, W)`` (a brain mask) of each slice's ``psnr_roi`` and
            ``ssim_roi``; ``None``: the head found by :func:`sinco.metrics.roi.head_mask`.
        progress: progress bars.

    Returns:
        A :class:`VolumeResult`; its metrics are computed on the decoded file.

    Raises:
        InputError: for a non-3-D or non-finite volume, mismatched masks, or a bad ``batch_slices``.
    """
    _check_volume(volume, batch_slices=batch_slices, seg_model=seg_model, masks=masks, rois=rois)
    start = time.perf_counter()
    n_slices, height, width = volume.shape
    records: list[SliceRecord | None] = [None] * n_slices
    scaled: dict[int, tuple[np.ndarray, float, float]] = {}
    for index in range(n_slices):
        if np.all(volume[index] == volume[index].flat[0]):
            records[index] = SliceRecord(constant=float(volume[index].flat[0]))
        else:
            scaled[index] = normalize_minmax(volume[index], name=f"slice {first_index + index}")
    results: dict[int, CompressResult] = {}
    order = sorted(scaled)
    for begin in range(0, len(order), batch_slices):
        batch = order[begin : begin + batch_slices]
        batch_results = compress_images(
            [scaled[i][0] for i in batch], ranges=[scaled[i][1:] for i in batch], codec=codec, fit_config=fit_config, device=device,
            seg_model=seg_model, masks=None if masks is None else [masks[i] for i in batch],
            rois=None if rois is None else [rois[i] for i in batch], allow_empty_masks=True,
            progress=progress, desc=f"slices {first_index + batch[0]}..{first_index + batch[-1]}",
        )  # fmt: skip
        for index, result in zip(batch, batch_results, strict=True):
            records[index] = SliceRecord(data=result.data)
            results[index] = result
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first_index,
                          affine=np.asarray(affine, dtype=np.float64))  # fmt: skip
    data = encode_volume(header, [r for r in records if r is not None])
    per_slice = _slice_rows(data, results, first_index=first_index)
    metrics = _volume_metrics(per_slice, results, n_voxels=n_slices * height * width, file_bytes=len(data), batch_slices=batch_slices)
    return VolumeResult(data=data, header=header, slices=per_slice, metrics=metrics, seconds=time.perf_counter() - start)


def _slice_rows(data: bytes, results: dict[int, CompressResult], *, first_index: int) -> list[dict]:
    """One JSON-ready row per stored slice; checks that the stored records are the files that were measured."""
    _, stored = decode_volume_file(data)
    rows: list[dict] = []
    for index, record in enumerate(stored):
        row: dict = {"index": first_index + index}
        if record.data is None:
            row.update(kind="constant", value=record.constant, bytes=9)
        else:
            result = results[index]
            if record.data != result.data:
                raise RuntimeError(f"internal error: slice {first_index + index} does not read back as written")
            m = result.metrics
            row.update(kind="fitted", family=result.file.family, bytes=5 + len(record.data), psnr=m["psnr"], ssim=m["ssim"])
            row.update({k: m[k] for k in ("dice", "dice_reference", *_QUALITY_KEYS) if k in m})
            row.update(result.report.to_dict())
        rows.append(row)
    return rows


def _volume_metrics(rows: list[dict], results: dict[int, CompressResult], *, n_voxels: int, file_bytes: int,
                    batch_slices: int) -> dict[str, Any]:  # fmt: skip
    fitted = [r for r in rows if r["kind"] == "fitted"]
    compress_seconds = sum(r.seconds for r in results.values())
    first = next(iter(results.values()), None)
    metrics: dict[str, Any] = {
        "slices": len(rows),
        "fitted_slices": len(fitted),
        "constant_slices": len(rows) - len(fitted),
        "file_bytes": file_bytes,
        "bpp_file": 8 * file_bytes / n_voxels,
        "bpp_params_per_slice": first.metrics.get("bpp_params", math.nan) if first else math.nan,
        "n_params_per_slice": first.metrics.get("n_params", 0) if first else 0,
        "psnr_mean": float(np.mean([r["psnr"] for r in fitted])) if fitted else math.nan,
        "ssim_mean": float(np.mean([r["ssim"] for r in fitted])) if fitted else math.nan,
        "psnr_roi_mean": _mean([r["psnr_roi"] for r in fitted]),
        "ssim_roi_mean": _mean([r["ssim_roi"] for r in fitted]),
        "ms_ssim_mean": _mean([r["ms_ssim"] for r in fitted]),
        "compress_seconds": compress_seconds,
        "slices_per_minute": 60 * len(fitted) / compress_seconds if compress_seconds > 0 else math.nan,
        "batch_slices": batch_slices,
        "divergences": sum(result.report.divergences for result in results.values()),
    }
    if fitted and "dice" in fitted[0]:
        metrics["dice_mean"] = float(np.mean([r["dice"] for r in fitted]))
        metrics["dice_reference_mean"] = float(np.mean([r["dice_reference"] for r in fitted]))
    return metrics


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




def voxel_spacing(affine: np.ndarray, *, axis: int) -> tuple[float, float, float]:
    """The voxel spacing ``(slice, row, column)`` of slices taken along ``axis`` of a volume with this voxel-to-world
    ``affine`` (its columns' lengths; 1 where a column is degenerate)."""
    lengths = [float(np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, k])) for k in range(3)]
    lengths = [v if math.isfinite(v) and v > 0 else 1.0 for v in lengths]
    rest = [k for k in range(3) if k != axis]
    return lengths[axis], lengths[rest[0]], lengths[rest[1]]


@dataclass(frozen=True)
class SlabLayout:
    """How the slices of a volume are cut into slabs, and what each slab may spend.

    Args:
        spec: the family's decoder spec (its pyramid from the voxel spacing), shared by every slab.
        block: the spec's bytes (the file's family block).
        size: slices per slab (``--slab``; the last slab may be shorter).
        bounds: each slab's ``(first, stop)`` positions in the sliced volume.
        budgets: each slab's payload budget in bits (:func:`~sinco.codec.grid3d.rate_search.slab_budgets`).
        header_bytes: bytes of the file besides its payloads.
    """

    spec: Any
    block: bytes
    size: int
    bounds: tuple[tuple[int, int], ...]
    budgets: tuple[float, ...]
    header_bytes: int


def slab_layout(shape: tuple[int, ...], *, codec: CodecConfig, affine: np.ndarray, axis: int) -> SlabLayout:
    """The slabs of a volume of ``shape = (S, H, W)`` and their budgets, computed from the whole volume before any fit,
    so that every slab's fit is independent of the others (``sinco compress`` fits them in turn, ``compress-batch`` as
    one task each).

    Args:
        shape: ``(S, H, W)`` of the sliced volume.
        codec: family (one that codes slabs), rate (``codec.bpp`` per voxel of the whole file) and options.
        affine: source voxel-to-world matrix ``(4, 4)`` (the voxel spacing picks the pyramid).
        axis: slicing axis in the source.

    Returns:
        The :class:`SlabLayout`.

    Raises:
        InputError: for a family that codes no slabs, a slab the spec cannot code, or a rate below the file's header.
    """
    from sinco.codec.grid3d.rate_search import slab_budgets
    from sinco.codec.volume import slab_header_bytes

    family = codec.family
    if not family.codes_slabs:
        raise InputError(f"--arch {codec.arch}: codes single images; compress_volume codes its slices one by one")
    n_slices, height, width = shape
    size = family.slab_size(codec.options)
    spec = family.make_spec(codec.options, spacing=voxel_spacing(affine, axis=axis))
    bounds = tuple((b, min(b + size, n_slices)) for b in range(0, n_slices, size))
    for lo, hi in bounds:
        spec.validate_for(hi - lo, height, width)
    block = family.encode_spec(spec)
    header_bytes = slab_header_bytes(n_slabs=len(bounds), block_bytes=len(block))
    budgets = slab_budgets([(hi - lo) * height * width for lo, hi in bounds], target_bpp=codec.bpp, header_bytes=header_bytes)
    return SlabLayout(spec=spec, block=block, size=size, bounds=bounds, budgets=tuple(budgets), header_bytes=header_bytes)


def slab_range(values: np.ndarray) -> tuple[float, float]:
    """The intensity range ``(vmin, vmax)`` a slab is scaled from (float64; equal for a constant slab, which is not fitted)."""
    values = np.asarray(values, dtype=np.float64)
    return float(values.min()), float(values.max())


def fit_volume_slab(
    values: np.ndarray, *, slab: int, first_index: int, budget_bits: float, layout: SlabLayout, codec: CodecConfig, fit_config: Any,
    device: torch.device, seg_model: SegModel | None = None, masks: np.ndarray | None = None, progress: bool = False,
) -> tuple[Any, dict[str, Any]]:  # fmt: skip
    """Fit one slab of a volume: scaled to ``[0, 1]`` on its own range, within ``budget_bits`` of payload (or at the fixed
    ``--lambda-rd``); a constant slab is stored without a fit.

    Args:
        values: the slab's slices ``(D, H, W)``.
        slab: its number in the file.
        first_index: source index of its first slice.
        budget_bits: its payload budget (``layout.budgets[slab]``).
        layout: the volume's :class:`SlabLayout`.
        codec: family and options.
        fit_config: the family's fitting configuration (already resolved for the regularizer).
        device: where to fit.
        seg_model: frozen segmentation network of the structural regularizer (needs ``masks``).
        masks: the slab's masks ``(D, H, W)``, nonzero = tumour.
        progress: progress bars.

    Returns:
        ``(record, report)``: the :class:`~sinco.codec.volume.SlabRecord` and a JSON-ready report of the fit.

    Raises:
        InputError: for a bad slab; RateUnreachableError if no trial fits the budget.
    """
    from sinco.codec.volume import SlabRecord

    depth = values.shape[0]
    vmin, vmax = slab_range(values)
    report: dict[str, Any] = {"slab": slab, "slices": [first_index, first_index + depth]}
    if vmax == vmin:
        return SlabRecord(slices=depth, vmin=vmin, vmax=vmax), {**report, "constant": True, "payload_bytes": 0}
    fixed = getattr(fit_config, "fixed_lambda", False)
    target = torch.from_numpy(((np.asarray(values, dtype=np.float64) - vmin) / (vmax - vmin)).astype(np.float32))
    regularizer, lam = (None, None) if seg_model is None else _slab_regularizer(seg_model, target, masks=masks, fit_config=fit_config,
                                                                                 device=device)  # fmt: skip
    result = codec.family.fit_slab(target, spec=layout.spec, budget_bits=None if fixed else budget_bits, config=fit_config,
                                   device=device, regularizer=regularizer, lam=lam, progress=progress)  # fmt: skip
    report.update(constant=False, payload_bytes=len(result.payload), budget_bytes=None if fixed else budget_bits / 8,
                  lambda_rd=result.lambda_rd, trials=result.trials, steps=result.steps, network_bits=result.network_bits,
                  fit_seconds=result.seconds, lam=fit_config.lam if regularizer is not None else 0.0,
                  regularized_slices=0 if lam is None else int((lam > 0).sum()))  # fmt: skip
    return SlabRecord(slices=depth, vmin=vmin, vmax=vmax, payload=result.payload), report


def compress_volume_slabs(
    volume: np.ndarray, *, first_index: int, axis: int, affine: np.ndarray, codec: CodecConfig, fit_config: Any, device: torch.device,
    seg_model: SegModel | None = None, masks: np.ndarray | None = None, progress: bool = False,
) -> VolumeResult:  # fmt: skip
    """Compress consecutive slices of a volume with a family that codes slabs (``grid3d``) into a version-3 volume file.

    The slices are cut into slabs of the family's ``--slab`` slices (the last one shorter); each slab is scaled to
    ``[0, 1]`` on its own minimum and maximum and fitted on its own, with its share of the file's bits (``codec.bpp``
    per voxel of the whole file, header included, in proportion to its voxels; :func:`~sinco.codec.grid3d.rate_search.slab_budgets`).
    A constant slab costs its table entry only. The spec's pyramid follows the voxel spacing of ``affine``.

    With ``seg_model`` and ``masks`` the SINCO regularizer applies to the slices of each slab, as ``grid`` applies it to a
    slice: the frozen 2-D network segments the slab's reconstructed slices as one batch ``(D, 1, H, W)``, each slice
    scaled to ``[0, 1]`` on its own range as the network expects, and the loss adds ``fit_config.lam`` times each
    slice's ``1 - soft Dice`` against its mask (``lam / (H W)`` with the ``sse`` data term), averaged over the slab as
    the MSE is; slices with an empty mask are fitted without it. The rows and metrics then carry the network's Dice of
    each decoded slice and of the original one.

    Args:
        volume: slices ``(S, H, W)`` (already taken along ``axis`` and stacked first).
        first_index: source index of ``volume[0]``.
        axis: slicing axis in the source.
        affine: source voxel-to-world matrix ``(4, 4)``.
        codec: family (one that codes slabs), rate and options.
        fit_config: the family's fitting configuration.
        device: where to fit.
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ground-truth masks ``(S, H, W)`` of the slices, nonzero = tumour.
        progress: progress bars.

    Returns:
        A :class:`VolumeResult`; its figures are measured on the decoded file (``slices``: one row per slice).

    Raises:
        InputError: for a non-3-D or non-finite volume, a family that codes no slabs, masks without a network (or the
            reverse) or of another shape than the volume's, or a rate the slabs cannot meet.
    """
    from sinco.codec.volume import decode_slab_volume, encode_slab_volume

    if volume.ndim != 3 or not np.all(np.isfinite(volume)):
        raise InputError(f"volume: expected finite slices (S, H, W), got shape {volume.shape}")
    _check_masks(volume, seg_model=seg_model, masks=masks)
    codec.family.check_fit_config(fit_config)
    fit_config = fit_config.resolved(regularized=seg_model is not None)
    start = time.perf_counter()
    n_slices, height, width = volume.shape
    layout = slab_layout(volume.shape, codec=codec, affine=affine, axis=axis)
    family, spec, size, bounds, header_bytes = codec.family, layout.spec, layout.size, layout.bounds, layout.header_bytes
    slabs, reports = [], []
    for k, ((lo, hi), budget) in enumerate(zip(bounds, layout.budgets, strict=True)):
        record, report = fit_volume_slab(volume[lo:hi], slab=k, first_index=first_index + lo, budget_bits=budget, layout=layout,
                                         codec=codec, fit_config=fit_config, device=device, seg_model=seg_model,
                                         masks=None if masks is None else masks[lo:hi], progress=progress)  # fmt: skip
        slabs.append(record)
        reports.append(report)
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=n_slices, first_index=first_index,
                          affine=np.asarray(affine, dtype=np.float64))  # fmt: skip
    data = encode_slab_volume(header, family_id=family.family_id, block=layout.block, slabs=slabs)
    decode_start = time.perf_counter()
    _, decoded = decode_slab_volume(data)
    decode_seconds = time.perf_counter() - decode_start
    if seg_model is not None:
        seg_model.to("cpu")  # masks are computed on the CPU, as decoding runs, whatever the fit device
    rows = _slab_slice_rows(volume, decoded, first_index=first_index, size=size, seg_model=seg_model, masks=masks)
    measured = [r["psnr"] for r in rows if r["psnr"] is not None]
    vrange = float(volume.max() - volume.min())
    mse = float(np.mean((decoded.astype(np.float64) - volume.astype(np.float64)) ** 2))
    metrics: dict[str, Any] = {
        "slices": n_slices, "slabs": len(bounds), "slab_size": size, "constant_slabs": sum(r["constant"] for r in reports),
        "file_bytes": len(data), "header_bytes": header_bytes, "bpp_file": 8 * len(data) / volume.size,
        "psnr_volume": 10 * math.log10(vrange**2 / mse) if mse > 0 and vrange > 0 else math.inf,
        "psnr_mean": float(np.mean(measured)) if measured else math.nan,
        "depth_stages": [int(s) for s in spec.depth_stages], "spacing": list(voxel_spacing(affine, axis=axis)),
        "fit_seconds": sum(r.get("fit_seconds", 0.0) for r in reports), "decode_seconds": decode_seconds, "slab_fits": reports,
    }  # fmt: skip
    if seg_model is not None:
        scored = [r for r in rows if "dice" in r]
        metrics.update(lam=fit_config.lam, data_term=fit_config.data_term, regularized_slices=sum(r.get("regularized_slices", 0) for r in reports),
                       dice_mean=_mean([r["dice"] for r in scored]), dice_reference_mean=_mean([r["dice_reference"] for r in scored]))  # fmt: skip
    return VolumeResult(data=data, header=header, slices=rows, metrics=metrics, seconds=time.perf_counter() - start)


def _slab_regularizer(seg_model: SegModel, target: torch.Tensor, *, masks: np.ndarray, fit_config: Any,
                      device: torch.device) -> tuple[Any, torch.Tensor | None]:  # fmt: skip
    """The structural regularizer of a slab ``target (D, H, W)`` (scaled on the slab's range) and its weights ``(D,)``:
    the network sees each reconstructed slice scaled to ``[0, 1]`` on the original slice's own range (as ``grid``
    codes and the network was trained); a slice with an empty mask, or constant, weighs 0. ``(None, None)`` where no
    slice of the slab is regularized (``lam`` 0, or no mask in it)."""
    from sinco.compression.image import batch_regularizer

    low, high = target.amin(dim=(1, 2)), target.amax(dim=(1, 2))
    varies = high > low
    if fit_config.lam <= 0 or not bool((varies & torch.from_numpy(np.any(masks, axis=(1, 2)))).any()):
        return None, None
    structural, lam = batch_regularizer(seg_model, ensemble=(), options=None, fit_config=fit_config, masks=list(masks), targets=target,
                                        device=device)  # fmt: skip
    offset = low.to(device)[:, None, None, None]
    gain = torch.where(varies, 1 / torch.where(varies, high - low, 1), 1).to(device)[:, None, None, None]

    def regularizer(slices: torch.Tensor) -> torch.Tensor:
        return structural((slices - offset) * gain)

    return regularizer, torch.where(varies, lam, 0.0)


def _slab_slice_rows(volume: np.ndarray, decoded: np.ndarray, *, first_index: int, size: int, seg_model: SegModel | None = None,
                     masks: np.ndarray | None = None) -> list[dict]:  # fmt: skip
    """One row per slice: its slab and its PSNR on its own range (as a slice file's, None for a constant slice); with a
    network and masks, its Dice (``dice``: of the decoded slice, ``dice_reference``: of the original, each scaled to
    ``[0, 1]`` on the original slice's range)."""
    from sinco.metrics import dice

    rows = []
    for index in range(volume.shape[0]):
        original = volume[index].astype(np.float64)
        low, span = float(original.min()), float(original.max() - original.min())
        mse = float(np.mean((decoded[index].astype(np.float64) - original) ** 2))
        psnr = None if span == 0 else (math.inf if mse == 0 else 10 * math.log10(span**2 / mse))
        row = {"index": first_index + index, "slab": index // size, "psnr": psnr}
        if seg_model is not None and masks is not None and span > 0:
            for key, image in (("dice", decoded[index]), ("dice_reference", original)):
                scaled = ((image.astype(np.float64) - low) / span).astype(np.float32)
                row[key] = dice(pred=seg_model.predict(scaled), target=masks[index])
        rows.append(row)
    return rows
