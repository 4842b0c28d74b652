"""The SINCO structural regulariser: ``1 - soft Dice(sigmoid(g(x_hat)), s)`` with ``g`` frozen."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from sinco.errors import InputError
from sinco.seg.network import SegModel, freeze, seg_logits


class StructuralRegularizer(nn.Module):
    """Soft-Dice disagreement between the segmentation of a reconstruction and the true mask.

    ``g`` is frozen (eval mode, no parameter gradients): gradients reach only the reconstruction,
    hence only the INR. The soft Dice is MONAI's :class:`~monai.losses.DiceLoss` with
    ``sigmoid=True`` (smoothing 1e-5 in numerator and denominator).

    Args:
        seg_model: the trained segmentation network.
        mask: ground-truth mask ``(H, W)``, nonzero = tumour.
        device: where the regulariser runs (the fitting device).

    Raises:
        InputError: if the mask is not 2-D.
    """

    def __init__(self, seg_model: SegModel, *, mask: np.ndarray, device: torch.device) -> None:
        super().__init__()
        from monai.losses import DiceLoss

        if mask.ndim != 2:
            raise InputError(f"--mask: expected a 2-D mask, got shape {mask.shape}")
        self.net = freeze(seg_model.net).to(device)
        self.multiple = seg_model.config.size_multiple
        self.register_buffer("mask", torch.from_numpy((mask != 0).astype(np.float32))[None, None].to(device))
        self.dice_loss = DiceLoss(sigmoid=True)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        """Regulariser value.

        Args:
            image: reconstruction ``(1, 1, H, W)`` (the INR output, scaled like the codec's input).

        Returns:
            Scalar tensor ``1 - soft Dice``.
        """
        # Eval mode each call: .train() on a parent module would otherwise switch g's norm layers.
        self.net.eval()
        return self.dice_loss(seg_logits(self.net, image, multiple=self.multiple), self.mask)
