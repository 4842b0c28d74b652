"""Compress an image into ``.sinco`` bytes, and decompress them.

Training (:func:`sinco.fit.loop.fit_inr_batch`, which uses the networks' ``forward``) is kept apart from
:func:`encode` / :func:`decode`, which produce and read the real bytes. :func:`compress_image` runs
the whole pipeline and measures everything on what :func:`decode` gives back from the bytes.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from sinco.codec.bitstream import SincoHeader, decode_file, encode_file
from sinco.codec.quantize import flatten_parameters, load_flat_parameters, quantize_fp16
from sinco.errors import BitstreamError, InputError
from sinco.fit.config import FitConfig
from sinco.fit.loop import FitResult, fit_inr_batch
from sinco.inr.encodings import make_coordinates
from sinco.inr.models import ARCHITECTURES, INR, build_inr
from sinco.inr.sizing import param_bpp, size_for_bpp
from sinco.seg.network import SegModel

if TYPE_CHECKING:
    from sinco.fit.losses import RegularizerOptions

BITS_PER_PARAM = 16
# Activation values per decoding chunk (rows x widest layer): bounds decoding memory to ~16 MB
# whatever the image size or network width a file announces.
DECODE_CHUNK_VALUES = 1 << 22


@dataclass(frozen=True)
class CodecConfig:
    """The architecture and rate of the codec.

    Args:
        arch: ``"siren"`` or ``"pe-mlp"``.
        bpp: target parameter bits per pixel; the widest network not exceeding it is used.
        depth: hidden layers (``None``: the architecture's default).
        w0: SIREN hidden-layer frequency.
        w0_first: SIREN first-layer frequency.
        n_freqs: PE-MLP encoding frequencies ``Lf``.
        skips: PE-MLP hidden layers that take the encoding again (``None``: the middle layer).

    Raises:
        InputError: if a value is out of range.
    """

    arch: str = "siren"
    bpp: float = 1.2
    depth: int | None = None
    w0: float = 30.0
    w0_first: float = 30.0
    n_freqs: int = 12
    skips: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"--arch {self.arch!r}: expected one of {', '.join(ARCHITECTURES)}")
        if not (math.isfinite(self.bpp) and self.bpp > 0):
            raise InputError(f"--bpp {self.bpp}: must be a positive number")
        if self.depth is not None and not 1 <= self.depth <= 255:
            raise InputError(f"--depth {self.depth}: must be in 1..255")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        return asdict(self)


@dataclass(frozen=True)
class CompressResult:
    """What :func:`compress_image` produced and measured.

    Args:
        data: the ``.sinco`` file's bytes.
        header: its parsed header.
        reconstruction: the image decoded from ``data``, ``(H, W)`` float32 in ``[0, 1]``.
        metrics: PSNR, SSIM, rates and sizes, all of the decoded file.
        fit: the fitting loop's report.
        seconds: wall-clock time of the whole compression (fit, encode, decode, metrics).
    """

    data: bytes
    header: SincoHeader
    reconstruction: np.ndarray
    metrics: dict[str, float | int]
    fit: FitResult
    seconds: float = field(default=0.0)


def encode(model: INR, *, height: int, width: int, vmin: float, vmax: float) -> bytes:
    """Quantise a fitted network to fp16 and serialise it as a ``.sinco`` file.

    Args:
        model: fitted :class:`~sinco.inr.models.Siren` or :class:`~sinco.inr.models.PEMLP`.
        height: image rows.
        width: image columns.
        vmin: original intensity of 0.
        vmax: original intensity of 1.

    Returns:
        The file's bytes.

    Raises:
        InputError: if the weights are not finite or overflow fp16.
    """
    header = SincoHeader(spec=model.spec, height=height, width=width, vmin=vmin, vmax=vmax)
    return encode_file(header, quantize_fp16(flatten_parameters(model)))


def decode(data: bytes) -> tuple[SincoHeader, np.ndarray]:
    """Decode a ``.sinco`` file to its ``[0, 1]`` image, deterministically, on the CPU in float32.

    Args:
        data: the whole file.

    Returns:
        ``(header, image)`` with ``image`` float32 ``(H, W)`` clipped to ``[0, 1]``.

    Raises:
        BitstreamError: if the file is not valid.
    """
    header, weights = decode_file(data)
    # Building the network draws initial weights; keep the caller's RNG stream untouched.
    with torch.random.fork_rng(devices=[]):
        model = build_inr(header.spec)
    load_flat_parameters(model, weights.astype(np.float32))
    model.eval()
    n_pixels = header.height * header.width
    spec = header.spec
    widest = spec.width + (4 * spec.n_freqs if spec.arch == "pe-mlp" else 0)  # a PE skip layer's input
    chunk = max(1, DECODE_CHUNK_VALUES // max(widest, 1))
    out = torch.empty(n_pixels, dtype=torch.float32)
    with torch.inference_mode():
        for start in range(0, n_pixels, chunk):
            stop = min(start + chunk, n_pixels)
            out[start:stop] = model(make_coordinates(header.height, header.width, start=start, stop=stop))[:, 0]
    if not torch.isfinite(out).all():
        # Valid-looking weights can still overflow float32 in a deep network: a hostile file.
        raise BitstreamError("corrupted .sinco file: the network's output is not finite")
    image = out.clamp_(0.0, 1.0).reshape(header.height, header.width).numpy()
    return header, image


def _fp32_psnr(model: INR, image: np.ndarray) -> float:
    """PSNR of the fitted fp32 network (before rounding and clipping) against ``image`` ``(H, W)``."""
    height, width = image.shape
    with torch.no_grad():
        out = model(make_coordinates(height, width)).reshape(height, width).double().numpy()
    mse = float(np.mean((out - image) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


def compress_image(
    image: np.ndarray,
    *,
    vmin: float,
    vmax: float,
    codec: CodecConfig,
    fit: FitConfig,
    device: torch.device,
    seg_model: SegModel | None = None,
    mask: np.ndarray | None = None,
    progress: bool = False,
) -> CompressResult:
    """Fit an INR to an image, store it as ``.sinco`` bytes, decode them and measure the result.

    With ``seg_model`` and ``mask`` the fit minimises the SINCO objective
    ``mse + fit.lam * (1 - soft Dice(sigmoid(g(x_hat)), mask))`` (``fit.lam = 0``: plain MSE) and
    the metrics add ``dice`` (of ``g``'s mask of the decoded image against ``mask``) and
    ``dice_reference`` (of ``g``'s mask of the uncompressed image).

    Args:
        image: image scaled to ``[0, 1]``, shape ``(H, W)`` (see
            :func:`sinco.data.intensity.normalize_minmax`).
        vmin: original intensity that 0 stands for.
        vmax: original intensity that 1 stands for.
        codec: architecture and rate.
        fit: fitting settings, including the seed and the regulariser's weight and period.
        device: where to fit (decoding always runs on the CPU).
        seg_model: frozen segmentation network ``g`` (needs ``mask``).
        mask: ground-truth tumour mask ``(H, W)``, nonzero = tumour (needs ``seg_model``).
        progress: show a progress bar.

    Returns:
        A :class:`CompressResult`; its metrics are computed on the decoded file.

    Raises:
        InputError: if the image is not a finite 2-D array in ``[0, 1]`` of at least 11 x 11, the
            rate is too low, only one of ``seg_model`` and ``mask`` is given, the mask's shape
            differs from the image's, or the mask is empty while ``fit.lam > 0``.
    """
    return compress_images(
        [image], ranges=[(vmin, vmax)], codec=codec, fit=fit, device=device, seg_model=seg_model,
        masks=None if mask is None else [mask], progress=progress,
    )[0]  # fmt: skip


def compress_images(
    images: Sequence[np.ndarray],
    *,
    ranges: Sequence[tuple[float, float]],
    codec: CodecConfig,
    fit: FitConfig,
    device: torch.device,
    seg_model: SegModel | None = None,
    masks: Sequence[np.ndarray] | None = None,
    allow_empty_masks: bool = False,
    progress: bool = False,
    desc: str | None = None,
    regularizer_options: RegularizerOptions | None = None,
    ensemble: Sequence[SegModel] = (),
    eval_seg_model: SegModel | None = None,
) -> list[CompressResult]:
    """Compress images of one shape with one batched fit (see :func:`compress_image` for one).

    Each image gets its own network, initialised from ``fit.seed`` exactly as
    :func:`compress_image` would, and its own file; the fits run as one computation
    (:func:`~sinco.fit.loop.fit_inr_batch`), which changes nothing but the floating-point
    summation order.

    Args:
        images: ``S`` images ``(H, W)`` scaled to ``[0, 1]``.
        ranges: ``S`` pairs ``(vmin, vmax)``: the original intensities of 0 and 1.
        codec: architecture and rate.
        fit: fitting settings.
        device: where to fit.
        seg_model: frozen segmentation network (needs ``masks``).
        masks: ``S`` ground-truth masks ``(H, W)``.
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
    from sinco.metrics import dice, psnr, ssim
    from sinco.metrics.image import SSIM_MIN_SIDE

    if not images or len(ranges) != len(images) or (masks is not None and len(masks) != len(images)):
        raise InputError(f"images: {len(images)} images, {len(ranges)} ranges and {None if masks is None else len(masks)} masks")
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
    self_target = regularizer_options is not None and regularizer_options.target == "self"
    if (seg_model is None) != (masks is None) and not (self_target and seg_model is not None):
        raise InputError("--mask and --seg-model go together: the regulariser segments the reconstruction with the model and compares it with the mask")
    if masks is not None:
        for mask in masks:
            if mask.shape != shape:
                raise InputError(f"--mask: shape {mask.shape} differs from the image's {shape}")
            if fit.lam > 0 and not np.any(mask) and not allow_empty_masks and not self_target:
                raise InputError("--mask: empty on this slice (no tumour); the Dice regulariser needs one (or use --lam 0)")
    start = time.perf_counter()
    height, width = shape
    spec = size_for_bpp(
        codec.arch, bpp=codec.bpp, height=height, width=width, depth=codec.depth,
        bits_per_param=BITS_PER_PARAM, w0=codec.w0, w0_first=codec.w0_first, n_freqs=codec.n_freqs,
        skips=codec.skips,
    )  # fmt: skip
    models = []
    for _ in images:
        torch.manual_seed(fit.seed)
        models.append(build_inr(spec))
    targets = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))
    regularizer = lam = None
    if seg_model is not None and fit.lam > 0:
        from sinco.fit.losses import StructuralRegularizer

        if regularizer_options is None and not ensemble:
            regularizer = StructuralRegularizer(seg_model, mask=np.stack([np.asarray(m) for m in masks]), device=device)
        else:
            from sinco.fit.losses import RegularizerOptions, build_regularizer

            regularizer = build_regularizer(
                [seg_model, *ensemble], options=regularizer_options or RegularizerOptions(seed=fit.seed), device=device,
                masks=None if masks is None else np.stack([np.asarray(m) for m in masks]), images=targets.numpy(),
            )  # fmt: skip
        lam = torch.tensor([fit.lam if self_target or np.any(m) else 0.0 for m in (images if masks is None else masks)])
    label = desc or f"fit {spec.arch}" + (f" lam={fit.lam:g}" if regularizer is not None else "")
    reports = fit_inr_batch(models, targets=targets, config=fit, device=device, regularizer=regularizer, lam=lam,
                            progress=progress, desc=label)  # fmt: skip
    if seg_model is not None:
        # Masks are always computed on the CPU, like decoding, so they do not depend on the fit device.
        seg_model.to("cpu")
    results = []
    n_pixels = height * width
    for k, (model, report) in enumerate(zip(models, reports, strict=True)):
        model.to("cpu")
        vmin, vmax = ranges[k]
        data = encode(model, height=height, width=width, vmin=vmin, vmax=vmax)
        header, recon = decode(data)
        metrics: dict[str, float | int] = {
            "psnr": psnr(pred=recon, target=images[k]),
            "ssim": ssim(pred=recon, target=images[k]),
            "bpp_params": param_bpp(spec.n_params(), bits_per_param=BITS_PER_PARAM, n_pixels=n_pixels),
            "bpp_file": 8 * len(data) / n_pixels,
            "n_params": spec.n_params(),
            "file_bytes": len(data),
            "psnr_fp32": _fp32_psnr(model, images[k]),
        }
        if seg_model is not None and masks is not None:
            metrics["dice"] = dice(pred=seg_model.predict(recon), target=masks[k])
            metrics["dice_reference"] = dice(pred=seg_model.predict(images[k]), target=masks[k])
        if seg_model is not None or eval_seg_model is not None:
            from sinco.eval.judge import judge_metrics

            metrics.update(judge_metrics(recon, images[k], mask=None if masks is None else masks[k], seg_model=seg_model,
                                         eval_seg_model=eval_seg_model))  # fmt: skip
        results.append(CompressResult(data=data, header=header, reconstruction=recon, metrics=metrics, fit=report, seconds=0.0))
    per_image = (time.perf_counter() - start) / len(images)
    return [dataclasses.replace(r, seconds=per_image) for r in results]
