"""Compressing images: validate, fit, encode, decode, measure.

The codec families (:mod:`sinco.codec.registry`) fit and turn fits into bytes; this module runs the same steps
around any of them and measures everything on what decoding the real bytes gives back.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.family import FitReport
from sinco.codec.files import SincoFile, decode_file, write_file
from sinco.codec.registry import get_family
from sinco.compression.measure import measure
from sinco.compression.records import finite
from sinco.errors import InputError
from sinco.seg.network import SegModel

if TYPE_CHECKING:
    from sinco.regularizer.loss import RegularizerOptions


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress_image` produced and measured.

    Args:
        data: the ``.sinco`` file's bytes.
        file: the parsed file (header, family, spec).
        reconstruction: the image decoded from ``data``, ``(H, W)`` float32 in ``[0, 1]``.
        metrics: PSNR, SSIM, rates and sizes, all of the decoded file (and the family's rate figures).
        report: how the fit went (:class:`~sinco.codec.family.FitReport`).
        seconds: wall-clock time of the whole compression (fit, encode, decode, metrics).
    """

    data: bytes
    file: SincoFile
    reconstruction: np.ndarray
    metrics: dict[str, Any]
    report: FitReport
    seconds: float = field(default=0.0)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready summary: metrics, architecture and the fit's report (non-finite values as ``None``)."""
        family = get_family(self.file.family)
        return {**{k: finite(v) for k, v in self.metrics.items()}, "seconds": self.seconds, "arch": family.describe(self.file.spec),
                "shape": [self.file.height, self.file.width], **self.report.to_dict()}  # fmt: skip


def compress_image(
    image: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    codec: CodecConfig,
    fit_config: Any,
    device: torch.device,
    seg_model: SegModel | None = None,
    mask: np.ndarray | None = None,
    roi: np.ndarray | None = None,
    progress: bool = False,
) -> CompressResult:
    """Fit a codec of the chosen family to an image, store it as ``.sinco`` bytes, decode them and measure the result.

    With ``seg_model`` and ``mask`` the fit minimizes the SINCO objective
    ``mse + fit_config.lam * (1 - soft Dice(sigmoid(g(x_hat)), mask))`` (``fit_config.lam = 0``: plain MSE) and
    the metrics add ``dice`` (of ``g``'s mask of the decoded image against ``mask``) and
    ``dice_reference`` (of ``g``'s mask of the uncompressed image).

    Args:
        image: image scaled to ``[0, 1]``, shape ``(H, W)`` (see
            :func:`sinco.data.intensity.normalize_minmax`).
        vmin: original intensity that 0 stands for.
        vmax: original intensity that 1 stands for.
        codec: family, rate and family options.
        fit_config: the family's fitting configuration (:func:`sinco.codec.registry.fit_config`), with the seed.
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
            differs from the image's, the mask is empty while ``fit_config.lam > 0``, or ``fit_config`` is not a
            fitting configuration of ``codec``'s family.
    """
    return compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit_config=fit_config, device=device, seg_model=seg_model,
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
        raise InputError("--mask and --seg-model go together: the regularizer segments the reconstruction with the model and compares it with the mask")
    for mask in masks or ():
        if mask.shape != shape:
            raise InputError(f"--mask: shape {mask.shape} differs from the image's {shape}")
        if lam > 0 and not np.any(mask) and not allow_empty_masks and not self_target:
            raise InputError("--mask: empty on this slice (no tumour); the Dice regularizer needs one (or use --lam 0)")


def compress_images(
    images: Sequence[np.ndarray],
    *,
    ranges: Sequence[tuple[float, float]],
    codec: CodecConfig,
    fit_config: Any,
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

    Each image gets its own codec, initialized from ``fit_config.seed`` exactly as
    :func:`compress_image` would, and its own file; the family may fit them as one computation,
    which changes nothing but the floating-point summation order.

    Args:
        images: ``S`` images ``(H, W)`` scaled to ``[0, 1]``.
        ranges: ``S`` pairs ``(vmin, vmax)``: the original intensities of 0 and 1.
        codec: family, rate and options.
        fit_config: the family's fitting configuration; a data term ``"auto"`` becomes ``"sse"`` with
            ``seg_model``, else ``"mse"`` (:func:`sinco.regularizer.terms.resolve_data_term`).
        device: where to fit.
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ``S`` ground-truth masks ``(H, W)``.
        rois: ``S`` regions of interest ``(H, W)`` (or ``None`` entries: the head, found automatically).
        allow_empty_masks: fit slices whose mask is empty on the MSE alone instead of refusing them.
        progress: show a progress bar.
        desc: label of the progress bar.
        regularizer_options: the regularizer's target and perturbations (``None``: the ground-truth
            mask, no perturbation). With ``target="self"`` no ``masks`` are needed.
        ensemble: further loss networks; the regularizer is averaged over ``seg_model`` and these.
        eval_seg_model: an independent judge: the metrics add ``dice_eval`` (and
            ``dice_eval_reference``, of the uncompressed slice), see :func:`sinco.regularizer.judge.judge_metrics`.

    Returns:
        One :class:`CompressResult` per image; ``seconds`` is the batch's time divided by ``S``.

    Raises:
        InputError: see :func:`compress_image`; also if the images differ in shape.
    """
    codec.family.check_fit_config(fit_config)
    self_target = regularizer_options is not None and regularizer_options.target == "self"
    _check_images(images, n_ranges=len(ranges), masks=masks, lam=fit_config.lam, seg_model=seg_model, allow_empty_masks=allow_empty_masks,
                  self_target=self_target)  # fmt: skip
    if rois is not None and (len(rois) != len(images) or any(r is not None and r.shape != images[0].shape for r in rois)):
        raise InputError(f"--roi: {len(rois)} regions for {len(images)} images, each of the images' shape {images[0].shape}")
    # A seg_model at lambda 0 still counts: a method's lambda-0 baseline fits the data term of its regularized runs.
    fit_config = fit_config.resolved(regularized=seg_model is not None)
    start = time.perf_counter()
    family = codec.family
    height, width = images[0].shape
    targets = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))
    regularizer = lam = None
    if seg_model is not None and fit_config.lam > 0:
        regularizer, lam = batch_regularizer(seg_model, ensemble=ensemble, options=regularizer_options, fit_config=fit_config, masks=masks,
                                        targets=targets, device=device)  # fmt: skip
    label = desc or f"fit {codec.arch}" + (f" lam={fit_config.lam:g}" if regularizer is not None else "")
    outcomes = family.fit(targets, bpp=codec.bpp, options=codec.options, config=fit_config, device=device, regularizer=regularizer,
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
            from sinco.regularizer.judge import judge_metrics

            metrics.update(judge_metrics(recon, images[k], mask=mask, seg_model=seg_model, eval_seg_model=eval_seg_model))
        metrics.update(family.rate_fields(outcome.spec, n_pixels=height * width))
        results.append(CompressResult(data=data, file=parsed, reconstruction=recon, metrics=metrics, report=outcome.report))
    per_image = (time.perf_counter() - start) / len(images)
    return [dataclasses.replace(r, seconds=per_image) for r in results]


def batch_regularizer(seg_model: SegModel, *, ensemble: Sequence[SegModel], options: RegularizerOptions | None, fit_config: Any,
                 masks: Sequence[np.ndarray] | None, targets: torch.Tensor, device: torch.device) -> tuple[Any, torch.Tensor]:  # fmt: skip
    """The structural regularizer of a batch of images ``targets (S, H, W)`` and its weights ``(S,)``: ``fit_config.lam``
    per image, 0 for an empty mask (unless the target is ``self``)."""
    from sinco.regularizer.loss import RegularizerOptions, StructuralRegularizer, build_regularizer

    stacked = None if masks is None else np.stack([np.asarray(m) for m in masks])
    if options is None and not ensemble:
        regularizer = StructuralRegularizer(seg_model, mask=stacked, device=device)
    else:
        regularizer = build_regularizer([seg_model, *ensemble], options=options or RegularizerOptions(seed=fit_config.seed), device=device,
                                        masks=stacked, images=targets.numpy())  # fmt: skip
    self_target = options is not None and options.target == "self"
    weights = [fit_config.lam if self_target or masks is None or np.any(m) else 0.0 for m in (masks if masks is not None else targets)]
    return regularizer, torch.tensor(weights)


