"""The SINCO structural regulariser: ``1 - soft Dice(sigmoid(g(x_hat)), s)`` with ``g`` frozen."""

from __future__ import annotations

import copy

import numpy as np
import torch
from torch import nn

from sinco.errors import InputError
from sinco.seg.network import SegModel, freeze, seg_logits


class StructuralRegularizer(nn.Module):
    """Soft-Dice disagreement between the segmentation of reconstructions and the true masks.

    ``g`` is frozen (eval mode, no parameter gradients): gradients reach only the reconstruction,
    hence only the INR. The soft Dice is MONAI's :class:`~monai.losses.DiceLoss` with
    ``sigmoid=True`` (smoothing 1e-5 in numerator and denominator), one value per slice.

    Args:
        seg_model: the trained segmentation network.
        mask: ground-truth mask ``(H, W)`` or masks ``(S, H, W)`` of a batch of slices, nonzero = tumour.
        device: where the regulariser runs (the fitting device).

    Raises:
        InputError: if the mask is not 2-D or 3-D.
    """

    def __init__(self, seg_model: SegModel, *, mask: np.ndarray, device: torch.device) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        if mask.ndim not in (2, 3):
            raise InputError(f"--mask: expected a 2-D mask (or a stack of them), got shape {mask.shape}")
        masks = mask[None] if mask.ndim == 2 else mask
        self.net = freeze(seg_model.net).to(device)
        self.multiple = seg_model.config.size_multiple
        self.register_buffer("mask", torch.from_numpy((masks != 0).astype(np.float32))[:, None].to(device))
        self.dice_loss = DiceLoss(sigmoid=True, reduction="none")

    def subset(self, index: int) -> StructuralRegularizer:
        """The same regulariser (same frozen ``g``) for slice ``index`` of the batch alone."""
        if not 0 <= index < self.mask.shape[0]:
            raise InputError(f"index {index}: the regulariser holds {self.mask.shape[0]} masks")
        other = copy.copy(self)
        other._buffers = {**self._buffers, "mask": self.mask[index : index + 1]}
        return other

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Regulariser values.

        Args:
            image: reconstructions ``(S, 1, H, W)`` (the INR output, scaled like the codec's input),
                ``S`` the number of masks.

        Returns:
            ``1 - soft Dice`` per slice, shape ``(S,)``.
        """
        # Eval mode each call: .train() on a parent module would otherwise switch g's norm layers.
        self.net.eval()
        return self.dice_loss(seg_logits(self.net, image, multiple=self.multiple), self.mask).reshape(-1)
