"""Compressing images and volumes: validate, fit, encode, decode, measure.

The codec families (:mod:`sinco.codec.families`) fit and turn fits into bytes; this module runs
the same pipeline around any of them and measures everything on what decoding the real bytes
gives back. It also builds the JSON records saved beside every output.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.files import SincoFile, decode_file, write_file
from sinco.codec.volume import SliceRecord, VolumeHeader, decode_volume_file, encode_volume
from sinco.errors import InputError
from sinco.seg.network import SegModel

if TYPE_CHECKING:
    from sinco.fit.losses import RegularizerOptions


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress_image` produced and measured.

    Args:
        data: the ``.sinco`` file's bytes.
        file: the parsed file (header, family, spec).
        reconstruction: the image decoded from ``data``, ``(H, W)`` float32 in ``[0, 1]``.
        metrics: PSNR, SSIM, rates and sizes, all of the decoded file, plus the family's figures.
        fit: the fitting loop's report.
        seconds: wall-clock time of the whole compression (fit, encode, decode, metrics).
    """

    data: bytes
    file: SincoFile
    reconstruction: np.ndarray
    metrics: dict[str, Any]
    fit: Any
    seconds: float = field(default=0.0)

    def report(self) -> dict[str, Any]:
        """JSON-ready summary: metrics, architecture and the fit's bookkeeping (non-finite values as ``None``)."""
        from sinco.codec.families import get_family

        fit = self.fit
        report = {
            **{k: _finite(v) for k, v in self.metrics.items()},
            "seconds": self.seconds, "arch": get_family(self.file.family).describe(self.file.spec),
            "shape": [self.file.height, self.file.width], "best_step": fit.best_step, "steps": fit.steps,
            "evaluations": fit.evaluations, "divergences": fit.divergences, "lr_final": fit.lr_final, "compiled": fit.compiled,
            "lam": fit.lam, "reg_every": fit.reg_every, "phase_seconds": fit.phase_seconds,
        }  # fmt: skip
        return report


def _finite(value: Any) -> Any:
    return None if isinstance(value, float) and not math.isfinite(value) else value


def compress_image(
    image: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    codec: CodecConfig,
    fit: Any,
    device: torch.device,
    seg_model: SegModel | None = None,
    mask: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    progress: bool = False,
) -> CompressResult:
    """Fit a codec of the chosen family to an image, store it as ``.sinco`` bytes, decode them and measure the result.

    With ``seg_model`` and ``mask`` the fit minimises the SINCO objective
    ``mse + fit.lam * (1 - soft Dice(sigmoid(g(x_hat)), mask))`` (``fit.lam = 0``: plain MSE) and
    the metrics add ``dice`` (of ``g``'s mask of the decoded image against ``mask``) and
    ``dice_reference`` (of ``g``'s mask of the uncompressed image).

    Args:
        image: image scaled to ``[0, 1]``, shape ``(H, W)`` (see
            :func:`sinco.data.intensity.normalize_minmax`).
        vmin: original intensity that 0 stands for.
        vmax: original intensity that 1 stands for.
        codec: family, rate and family options.
        fit: the family's fitting configuration (``codec.family.fit_config(...)``), with the seed.
        device: where to fit (decoding always runs on the CPU).
        seg_model: frozen segmentation network ``g`` (needs ``mask``).
        mask: ground-truth tumour mask ``(H, W)``, nonzero = tumour (needs ``seg_model``).
        roi: region of interest ``(H, W)`` of the ROI metrics (``None``: the head, found automatically).
        progress: show a progress bar.

    Returns:
        A :class:`CompressResult`; its metrics are computed on the decoded file.

    Raises:
        InputError: if the image is not a finite 2-D array in ``[0, 1]`` of at least 11 x 11, the
            rate is too low, only one of ``seg_model`` and ``mask`` is given, the mask's shape
            differs from the image's, the mask is empty while ``fit.lam > 0``, or ``fit`` is not a
            fitting configuration of ``codec``'s family.
    """
    return compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit=fit, device=device, seg_model=seg_model,
        masks=None if mask is None else [mask], rois=None if roi is None else [roi], progress=progress,
    )[0]  # fmt: skip


def _check_images(images: Sequence[np.ndarray], *, n_ranges: int, masks: Sequence[np.ndarray] | None, lam: float,
                  seg_model: SegModel | None, allow_empty_masks: bool, self_target: bool) -> None:  # fmt: skip
    from sinco.metrics.image import SSIM_MIN_SIDE

    if not images or n_ranges != len(images) or (masks is not None and len(masks) != len(images)):
        raise InputError(f"images: {len(images)} images, {n_ranges} ranges and {None if masks is None else len(masks)} masks")
    shape = images[0].shape
    for image in images:
        if image.ndim != 2:
            raise InputError(f"image: expected shape (H, W), got {image.shape}")
        if image.shape != shape:
            raise InputError(f"images: a batch needs one shape, got {shape} and {image.shape}")
        if min(image.shape) < SSIM_MIN_SIDE:
            raise InputError(f"image: {image.shape[0]}x{image.shape[1]} is below {SSIM_MIN_SIDE}x{SSIM_MIN_SIDE}, the SSIM window every result is measured with")
        if not np.all(np.isfinite(image)) or image.min() < 0 or image.max() > 1:
            raise InputError("image: values must be finite and in [0, 1] (scale it with normalize_minmax)")
    # With --seg-target self the loss network's own mask of the uncompressed image is the target: no mask needed.
    if (seg_model is None) != (masks is None) and not (self_target and seg_model is not None):
        raise InputError("--mask and --seg-model go together: the regulariser segments the reconstruction with the model and compares it with the mask")
    for mask in masks or ():
        if mask.shape != shape:
            raise InputError(f"--mask: shape {mask.shape} differs from the image's {shape}")
        if lam > 0 and not np.any(mask) and not allow_empty_masks and not self_target:
            raise InputError("--mask: empty on this slice (no tumour); the Dice regulariser needs one (or use --lam 0)")


def compress_images(
    images: Sequence[np.ndarray],
    *,
    ranges: Sequence[tuple[float, float]],
    codec: CodecConfig,
    fit: Any,
    device: torch.device,
    seg_model: SegModel | None = None,
    masks: Sequence[np.ndarray] | None = None,
    rois: Sequence[np.ndarray | None] | None = None,
    allow_empty_masks: bool = False,
    progress: bool = False,
    desc: str | None = None,
    regularizer_options: RegularizerOptions | None = None,
    ensemble: Sequence[SegModel] = (),
    eval_seg_model: SegModel | None = None,
) -> list[CompressResult]:
    """Compress images of one shape with one batched fit (see :func:`compress_image` for one).

    Each image gets its own codec, initialised from ``fit.seed`` exactly as
    :func:`compress_image` would, and its own file; the family may fit them as one computation,
    which changes nothing but the floating-point summation order.

    Args:
        images: ``S`` images ``(H, W)`` scaled to ``[0, 1]``.
        ranges: ``S`` pairs ``(vmin, vmax)``: the original intensities of 0 and 1.
        codec: family, rate and options.
        fit: the family's fitting configuration; a data term ``"auto"`` becomes ``"sse"`` with
            ``seg_model``, else ``"mse"`` (:func:`sinco.fit.config.resolve_data_term`).
        device: where to fit.
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ``S`` ground-truth masks ``(H, W)``.
        rois: ``S`` regions of interest ``(H, W)`` (or ``None`` entries: the head, found automatically).
        allow_empty_masks: fit slices whose mask is empty on the MSE alone instead of refusing them.
        progress: show a progress bar.
        desc: label of the progress bar.
        regularizer_options: the regulariser's target and perturbations (``None``: the ground-truth
            mask, no perturbation). With ``target="self"`` no ``masks`` are needed.
        ensemble: further loss networks; the regulariser is averaged over ``seg_model`` and these.
        eval_seg_model: an independent judge: the metrics add ``dice_eval`` (and
            ``dice_eval_reference``, of the uncompressed slice), see :func:`sinco.eval.judge.judge_metrics`.

    Returns:
        One :class:`CompressResult` per image; ``seconds`` is the batch's time divided by ``S``.

    Raises:
        InputError: see :func:`compress_image`; also if the images differ in shape.
    """
    codec.family.check_fit_config(fit)
    self_target = regularizer_options is not None and regularizer_options.target == "self"
    _check_images(images, n_ranges=len(ranges), masks=masks, lam=fit.lam, seg_model=seg_model, allow_empty_masks=allow_empty_masks,
                  self_target=self_target)  # fmt: skip
    if rois is not None and (len(rois) != len(images) or any(r is not None and r.shape != images[0].shape for r in rois)):
        raise InputError(f"--roi: {len(rois)} regions for {len(images)} images, each of the images' shape {images[0].shape}")
    # A seg_model at lambda 0 still counts: a method's lambda-0 baseline fits the data term of its regularised runs.
    fit = fit.resolved(regularised=seg_model is not None)
    start = time.perf_counter()
    family = codec.family
    height, width = images[0].shape
    targets = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))
    regularizer = lam = None
    if seg_model is not None and fit.lam > 0:
        regularizer, lam = _regularizer(seg_model, ensemble=ensemble, options=regularizer_options, fit=fit, masks=masks,
                                        targets=targets, device=device)  # fmt: skip
    label = desc or f"fit {codec.arch}" + (f" lam={fit.lam:g}" if regularizer is not None else "")
    outcomes = family.fit(targets, bpp=codec.bpp, options=codec.options, config=fit, device=device, regularizer=regularizer,
                          lam=lam, progress=progress, desc=label)  # fmt: skip
    if seg_model is not None:
        # Masks are always computed on the CPU, like decoding, so they do not depend on the fit device.
        seg_model.to("cpu")
    results = []
    for k, outcome in enumerate(outcomes):
        vmin, vmax = ranges[k]
        data = write_file(family=codec.arch, spec=outcome.spec, payload=outcome.payload, height=height, width=width, vmin=vmin, vmax=vmax)
        parsed, recon = decode_file(data)
        mask = None if masks is None else masks[k]
        metrics = measure(recon, target=images[k], file_bytes=len(data), seg_model=seg_model, mask=mask,
                          roi=None if rois is None else rois[k])  # fmt: skip
        if seg_model is not None or eval_seg_model is not None:
            from sinco.eval.judge import judge_metrics

            metrics.update(judge_metrics(recon, images[k], mask=mask, seg_model=seg_model, eval_seg_model=eval_seg_model))
        metrics.update(family.rate_fields(outcome.spec, n_pixels=height * width), **outcome.extras)
        results.append(CompressResult(data=data, file=parsed, reconstruction=recon, metrics=metrics, fit=outcome.report))
    per_image = (time.perf_counter() - start) / len(images)
    return [dataclasses.replace(r, seconds=per_image) for r in results]


def _regularizer(seg_model: SegModel, *, ensemble: Sequence[SegModel], options: RegularizerOptions | None, fit: Any,
                 masks: Sequence[np.ndarray] | None, targets: torch.Tensor, device: torch.device) -> tuple[Any, torch.Tensor]:  # fmt: skip
    """The structural regulariser of a batch and its per-image weights (0 for an empty mask, unless the target is ``self``)."""
    from sinco.fit.losses import RegularizerOptions, StructuralRegularizer, build_regularizer

    stacked = None if masks is None else np.stack([np.asarray(m) for m in masks])
    if options is None and not ensemble:
        regularizer = StructuralRegularizer(seg_model, mask=stacked, device=device)
    else:
        regularizer = build_regularizer([seg_model, *ensemble], options=options or RegularizerOptions(seed=fit.seed), device=device,
                                        masks=stacked, images=targets.numpy())  # fmt: skip
    self_target = options is not None and options.target == "self"
    weights = [fit.lam if self_target or masks is None or np.any(m) else 0.0 for m in (masks if masks is not None else targets)]
    return regularizer, torch.tensor(weights)


def measure(decoded: np.ndarray, *, target: np.ndarray, file_bytes: int | None = None, seg_model: SegModel | None = None,
            mask: np.ndarray | None = None, roi: np.ndarray | None = None) -> dict[str, Any]:  # fmt: skip
    """The figures every record carries, of a decoded image against its original.

    Args:
        decoded: the image decoded from the file, ``(H, W)`` in ``[0, 1]``.
        target: the original, ``(H, W)`` in ``[0, 1]``.
        file_bytes: the file's size (adds ``bpp_file`` and ``file_bytes``).
        seg_model: with ``mask``, adds ``dice`` (of ``g``'s mask of ``decoded``) and ``dice_reference`` (of the original).
        mask: ground-truth mask ``(H, W)``.
        roi: the region of interest ``(H, W)`` (a brain mask) of ``psnr_roi`` and ``ssim_roi``; ``None``:
            the head found by :func:`sinco.metrics.roi.head_mask`.

    Returns:
        ``psnr``, ``ssim``, the MS-SSIM and ROI figures of :func:`sinco.metrics.roi.quality_metrics`,
        and the optional fields.
    """
    from sinco.metrics import dice, psnr, ssim
    from sinco.metrics.roi import quality_metrics

    metrics: dict[str, Any] = {"psnr": psnr(pred=decoded, target=target), "ssim": ssim(pred=decoded, target=target),
                               **quality_metrics(pred=decoded, target=target, roi=roi)}  # fmt: skip
    if file_bytes is not None:
        metrics.update(bpp_file=8 * file_bytes / target.size, file_bytes=file_bytes)
    if seg_model is not None and mask is not None:
        metrics["dice"] = dice(pred=seg_model.predict(decoded), target=mask)
        metrics["dice_reference"] = dice(pred=seg_model.predict(target), target=mask)
    return metrics


# The figures of sinco.metrics.roi.quality_metrics that volume slice rows carry.
_QUALITY_KEYS = ("ms_ssim", "ms_ssim_scales", "psnr_roi", "ssim_roi", "roi", "roi_fraction")
#: A family's rate search (the grid family's), when it ran one: how it ended, its residual layer, the seed it kept.
RATE_SEARCH_FIELDS = ("lambda_rd", "rate_trials", "within_band", "network_rate_weight", "residual_levels", "residual_step",
                      "residual_bits", "candidate_seed")  # fmt: skip


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
    if (seg_model is None) != (masks is None):
        raise InputError("--mask and --seg-model go together")
    if masks is not None and masks.shape != volume.shape:
        raise InputError(f"--mask: shape {masks.shape} differs from the slices' {volume.shape}")
    if rois is not None and rois.shape != volume.shape:
        raise InputError(f"--roi: shape {rois.shape} differs from the slices' {volume.shape}")


def compress_volume(
    volume: np.ndarray,
    *,
    first_index: int,
    axis: int,
    affine: np.ndarray,
    codec: CodecConfig,
    fit: Any,
    device: torch.device,
    batch_slices: int = 1,
    seg_model: SegModel | None = None,
    masks: np.ndarray | None = None,
    rois: np.ndarray | None = None,
    progress: bool = False,
) -> VolumeResult:
    """Compress consecutive slices of a volume, fitting ``batch_slices`` of them at a time as one batch.

    Every non-constant slice is scaled to ``[0, 1]`` on its own and fitted from the same seeded
    initialisation as :func:`compress_image` uses, so its record matches a single-slice
    compression up to floating-point summation order. With ``seg_model`` and ``masks`` the SINCO
    regulariser applies (weight ``fit.lam``) on the slices whose mask is not empty; the others
    are fitted on the MSE alone.

    Args:
        volume: slices ``(S, H, W)`` (already taken along ``axis`` and stacked first).
        first_index: source index of ``volume[0]``.
        axis: slicing axis in the source (stored for decoding back to its layout).
        affine: source voxel-to-world matrix ``(4, 4)``.
        codec: family, rate and options.
        fit: the family's fitting configuration.
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
    from sinco.data.intensity import normalize_minmax

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
            [scaled[i][0] for i in batch], ranges=[scaled[i][1:] for i in batch], codec=codec, fit=fit, device=device,
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
            row.update(kind="inr", family=result.file.family, bytes=5 + len(record.data), psnr=m["psnr"], ssim=m["ssim"],
                       best_step=result.fit.best_step, evaluations=result.fit.evaluations, divergences=result.fit.divergences,
                       lam=result.fit.lam)  # fmt: skip
            row.update({k: m[k] for k in ("psnr_fp32", "dice", "dice_reference", *_QUALITY_KEYS, *RATE_SEARCH_FIELDS) if k in m})
        rows.append(row)
    return rows


def _volume_metrics(rows: list[dict], results: dict[int, CompressResult], *, n_voxels: int, file_bytes: int,
                    batch_slices: int) -> dict[str, Any]:  # fmt: skip
    fitted = [r for r in rows if r["kind"] == "inr"]
    compress_seconds = sum(r.seconds for r in results.values())
    first = next(iter(results.values()), None)
    metrics: dict[str, Any] = {
        "slices": len(rows),
        "inr_slices": len(fitted),
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
        "divergences": sum(r["divergences"] for r in fitted),
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


def sidecar_record(*, input: dict[str, Any], codec: CodecConfig, fit: Any, device: str, result: dict[str, Any],
                   regularizer: dict[str, Any] | None = None, slices: list[dict] | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON record saved beside every output: the input, the full configuration, the seed and the result.

    Args:
        input: where the image came from (path, slice(s), axis, channel, range...).
        codec: the codec configuration.
        fit: the fitting configuration (with the seed).
        device: the ``--device`` asked for.
        result: the measured result (:meth:`CompressResult.report` or a volume's metrics).
        regularizer: the regulariser's inputs, if any.
        slices: per-slice rows of a volume.

    Returns:
        A JSON-ready dictionary (non-finite floats as ``None``).
    """
    from sinco import __version__

    # The thread count changes a fit's floating-point rounding (so its bytes), not the decoder's integer arithmetic.
    record = {"sinco_version": __version__, "input": input, "codec": codec.to_dict(), "fit": fit.to_dict(),
              "regularizer": regularizer, "device": device, "torch_threads": torch.get_num_threads(), "result": result}  # fmt: skip
    if slices is not None:
        record["slices"] = [{k: _finite(v) for k, v in row.items()} for row in slices]
    return record
