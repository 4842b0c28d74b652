"""The objective's terms: the data term and the SINCO structural regularizer.

The regularizer is ``1 - soft Dice(sigmoid(g(x_hat)), s)`` with ``g`` frozen, and its options:
the target ``s`` (the ground-truth mask, or ``g``'s own mask of the uncompressed slice), an
ensemble of networks ``g`` (the term averaged over them), and random perturbations of ``g``'s
input (the term averaged over them), both of which make an image that fools one fixed network
harder to find.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from sinco.errors import InputError
from sinco.regularizer.terms import DATA_TERMS
from sinco.seg.network import SegModel, freeze, seg_logits

SEG_TARGETS = ("mask", "self")


def data_term(pred: torch.Tensor, target: torch.Tensor, *, kind: str) -> torch.Tensor:
    """The data term of the objective, one value per slice.

    ``mse`` is the mean squared error; ``sse`` the sum of squared errors (the squared l2 norm
    ``||x_hat - x||^2``); ``l2`` the l2 norm ``||x_hat - x||`` itself. They differ only in scale
    against the regularizer: on a 240 x 240 slice, ``sse = 57,600 mse``.

    Args:
        pred: reconstructions ``(S, N, 1)`` (or any ``(S, ...)``).
        target: images of the same shape.
        kind: one of :data:`DATA_TERMS`.

    Returns:
        ``(S,)``.

    Raises:
        InputError: if ``kind`` is unknown.
    """
    squared = (pred - target).square().flatten(1)
    if kind == "mse":
        return squared.mean(dim=1)
    if kind == "sse":
        return squared.sum(dim=1)
    if kind == "l2":
        return squared.sum(dim=1).sqrt()
    raise InputError(f"--data-term {kind!r}: expected one of {', '.join(DATA_TERMS)}")


@dataclass(frozen=True)
class RegularizerOptions:
    """How the structural regularizer is built (beyond its networks and weight).

    Args:
        target: ``"mask"`` (the ground-truth mask) or ``"self"`` (the loss network's own thresholded
            segmentation of the uncompressed slice: no ground truth needed at compression time).
        perturb: average the Dice term over this many random perturbations of ``g``'s input, drawn
            afresh at every evaluation (0 = the plain input). A perturbation is a left-right flip
            (probability 1/2), an intensity scaling by a factor uniform in ``[1 - scale, 1 + scale]``
            and Gaussian noise of standard deviation ``noise``.
        scale: intensity scaling range of a perturbation.
        noise: noise level of a perturbation (intensities in ``[0, 1]``).
        seed: seeds the perturbations; the same seed gives the same draws.

    Raises:
        InputError: if a value is out of range.
    """

    target: str = "mask"
    perturb: int = 0
    scale: float = 0.1
    noise: float = 0.02
    seed: int = 0

    def __post_init__(self) -> None:
        if self.target not in SEG_TARGETS:
            raise InputError(f"--seg-target {self.target!r}: expected one of {', '.join(SEG_TARGETS)}")
        if not isinstance(self.perturb, int) or not 0 <= self.perturb <= 64:
            raise InputError(f"--seg-perturb {self.perturb}: must be an integer in 0..64")
        if not (math.isfinite(self.scale) and 0 <= self.scale < 1):
            raise InputError(f"perturbation scale={self.scale}: must be in [0, 1)")
        if not (math.isfinite(self.noise) and self.noise >= 0):
            raise InputError(f"perturbation noise={self.noise}: must be >= 0")


def self_targets(seg_model: SegModel, images: np.ndarray) -> np.ndarray:
    """``g``'s thresholded masks of uncompressed slices: the target of ``--seg-target self``.

    Args:
        seg_model: the network.
        images: ``(S, H, W)`` (or one ``(H, W)``) scaled to ``[0, 1]``.

    Returns:
        uint8 masks of the same shape, 1 = tumour.
    """
    device = next(seg_model.net.parameters()).device
    seg_model.to("cpu")
    try:
        stack = images[None] if images.ndim == 2 else images
        masks = np.stack([seg_model.predict(np.asarray(image, dtype=np.float32)) for image in stack])
    finally:
        seg_model.to(device)
    return masks[0] if images.ndim == 2 else masks


class StructuralRegularizer(nn.Module):
    """Soft-Dice disagreement between the segmentation of reconstructions and target masks.

    Every ``g`` is frozen (eval mode, no parameter gradients): gradients reach only the
    reconstruction, hence only the INR. The soft Dice is MONAI's :class:`~monai.losses.DiceLoss`
    with ``sigmoid=True`` (smoothing 1e-5 in numerator and denominator), one value per slice,
    averaged over the networks and over the perturbations.

    Args:
        seg_model: the trained segmentation network, or several (an ensemble).
        mask: target mask ``(H, W)`` or masks ``(S, H, W)`` of a batch of slices, nonzero = tumour;
            shared by every network (``--seg-target mask``).
        self_reference: instead of ``mask``, the uncompressed slices ``(S, H, W)``: each network's
            target is its own thresholded segmentation of them (``--seg-target self``).
        device: where the regularizer runs (the fitting device).
        perturb: perturbations of ``g``'s input per evaluation (see :class:`RegularizerOptions`).
        scale: intensity scaling range of a perturbation.
        noise: noise level of a perturbation.
        seed: seeds the perturbations.

    Raises:
        InputError: if not exactly one of ``mask`` and ``self_reference`` is given, or it is not 2-D or 3-D.
    """

    def __init__(
        self,
        seg_model: SegModel | Sequence[SegModel],
        *,
        mask: np.ndarray | None = None,
        self_reference: np.ndarray | None = None,
        device: torch.device,
        perturb: int = 0,
        scale: float = 0.1,
        noise: float = 0.02,
        seed: int = 0,
    ) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        models = [seg_model] if isinstance(seg_model, SegModel) else list(seg_model)
        if not models:
            raise InputError("--seg-model: the regularizer needs at least one segmentation network")
        if (mask is None) == (self_reference is None):
            raise InputError("regularizer: give a target mask or the uncompressed slices (--seg-target self), not both")
        given = mask if mask is not None else self_reference
        if given.ndim not in (2, 3):
            raise InputError(f"--mask: expected a 2-D mask (or a stack of them), got shape {given.shape}")
        given = given[None] if given.ndim == 2 else given
        if mask is not None:
            targets = [(given != 0).astype(np.float32)] * len(models)
        else:
            targets = [self_targets(m, given).astype(np.float32) for m in models]
        self.nets = nn.ModuleList(freeze(m.net).to(device) for m in models)
        self.multiples = [m.config.size_multiple for m in models]
        # (M, S, 1, H, W): one target stack per network.
        self.register_buffer("mask", torch.from_numpy(np.stack(targets))[:, :, None].to(device))
        self.perturb, self.scale, self.noise = int(perturb), float(scale), float(noise)
        self.generator = torch.Generator().manual_seed(int(seed)) if self.perturb else None
        self.dice_loss = DiceLoss(sigmoid=True, reduction="none")

    @property
    def n_slices(self) -> int:
        """Number of slices (targets) the regularizer holds."""
        return int(self.mask.shape[1])

    def subset(self, index: int) -> StructuralRegularizer:
        """The same regularizer (same frozen networks, same perturbation stream) for slice ``index`` alone."""
        if not 0 <= index < self.n_slices:
            raise InputError(f"index {index}: the regularizer holds {self.n_slices} masks")
        other = copy.copy(self)
        other._buffers = {**self._buffers, "mask": self.mask[:, index : index + 1]}
        return other

    def _perturbations(self, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``perturb`` perturbed copies ``(P * S, 1, H, W)`` of ``image`` and their flip flags ``(P * S,)``."""
        count = self.perturb * image.shape[0]
        # Drawn on the CPU from the regularizer's own generator: reproducible on any device.
        flips = torch.rand(count, generator=self.generator) < 0.5
        gains = 1 + self.scale * (2 * torch.rand(count, generator=self.generator) - 1)
        noise = self.noise * torch.randn((count, *image.shape[1:]), generator=self.generator)
        device = image.device
        batch = image.repeat(self.perturb, 1, 1, 1) * gains.to(device)[:, None, None, None] + noise.to(device)
        flips = flips.to(device)
        return torch.where(flips[:, None, None, None], batch.flip(-1), batch), flips

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Regularizer values.

        Args:
            image: reconstructions ``(S, 1, H, W)`` (the INR output, scaled like the codec's input),
                ``S`` the number of masks.

        Returns:
            ``1 - soft Dice`` per slice, averaged over networks and perturbations, shape ``(S,)``.
        """
        n = image.shape[0]
        inputs, flips = (image, None) if not self.perturb else self._perturbations(image)
        copies = inputs.shape[0] // n
        total = image.new_zeros(n)
        for net, multiple, target in zip(self.nets, self.multiples, self.mask, strict=True):
            # Eval mode each call: .train() on a parent module would otherwise switch g's norm layers.
            net.eval()
            logits = seg_logits(net, inputs, multiple=multiple)
            if flips is not None:
                # Undo the flip on the output, so each perturbation is compared with the same target.
                logits = torch.where(flips[:, None, None, None], logits.flip(-1), logits)
            losses = self.dice_loss(logits, target.repeat(copies, 1, 1, 1)).reshape(copies, n)
            total = total + losses.mean(dim=0)
        return total / len(self.nets)


def build_regularizer(
    seg_models: Sequence[SegModel],
    *,
    options: RegularizerOptions,
    masks: np.ndarray | None,
    images: np.ndarray,
    device: torch.device,
) -> StructuralRegularizer:
    """The regularizer a compression asks for: networks, target and perturbations.

    Args:
        seg_models: the loss network(s); more than one is an ensemble.
        options: target and perturbations.
        masks: ground-truth masks ``(S, H, W)`` (needed for ``target="mask"``, ignored for ``"self"``).
        images: the uncompressed slices ``(S, H, W)`` in ``[0, 1]``.
        device: the fitting device.

    Returns:
        The :class:`StructuralRegularizer`.

    Raises:
        InputError: if ``target="mask"`` and no masks are given.
    """
    common = {"device": device, "perturb": options.perturb, "scale": options.scale, "noise": options.noise, "seed": options.seed}
    if options.target == "self":
        return StructuralRegularizer(list(seg_models), self_reference=images, **common)
    if masks is None:
        raise InputError("--seg-target mask needs --mask (or use --seg-target self)")
    return StructuralRegularizer(list(seg_models), mask=masks, **common)


def same_network(a: SegModel, b: SegModel) -> bool:
    """Whether two loaded segmentation networks are the same file or hold identical weights."""
    from pathlib import Path

    if a.path and b.path and Path(a.path).resolve() == Path(b.path).resolve():
        return True
    sa, sb = a.net.state_dict(), b.net.state_dict()
    if sa.keys() != sb.keys():
        return False
    return all(sa[k].shape == sb[k].shape and torch.equal(sa[k].cpu(), sb[k].cpu()) for k in sa)
