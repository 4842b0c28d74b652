"""Image-quality and segmentation metrics, on NumPy arrays of shape ``(H, W)``."""

from sinco.metrics.image import psnr, ssim
from sinco.metrics.segmentation import dice

__all__ = ["dice", "psnr", "ssim"]
