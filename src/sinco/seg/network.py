"""The tumour-segmentation U-Net, its checkpoint format, and inference.

A checkpoint (``torch.save`` of a plain dictionary, loadable with ``weights_only=True``) holds::

    kind            "sinco-seg"
    format          1
    unet            UNetConfig fields (MONAI UNet, 2-D, 1 input and 1 output channel)
    normalization   "per-slice min-max to [0, 1]" (the codec's scaling; inputs must match)
    threshold       probability above which a pixel is tumour
    state_dict      the U-Net weights
    training        configuration, cases, per-epoch history and the chosen epoch
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from sinco.errors import InputError

CHECKPOINT_KIND = "sinco-seg"
CHECKPOINT_FORMAT = 1
NORMALIZATION = "per-slice min-max to [0, 1]"
SEG_NETS = ("unet", "attention-unet")


@dataclass(frozen=True)
class UNetConfig:
    """Shape of the MONAI U-Net.

    Args:
        channels: feature channels per level.
        strides: down-sampling stride between levels (``len(channels) - 1`` values).
        num_res_units: residual units per block. The default 0 matters: with residual units,
            MONAI's top up-sampling block instance-normalizes and PReLU-activates the single output
            channel before the last convolution adds it back, which pins the logit map to zero
            mean and unit variance per image; on BraTS slices such a net hardly learned.
        net: ``"unet"`` (MONAI ``UNet``) or ``"attention-unet"`` (MONAI ``AttentionUnet``: two
            convolutions per level, attention gates on the skip connections, no residual units).
            A second architecture gives a judge whose weaknesses differ from the loss network's.

    Raises:
        InputError: if the lists do not fit together.
    """

    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2)
    num_res_units: int = 0
    net: str = "unet"

    def __post_init__(self) -> None:
        object.__setattr__(self, "channels", tuple(int(c) for c in self.channels))
        object.__setattr__(self, "strides", tuple(int(s) for s in self.strides))
        if len(self.channels) < 2 or any(c < 1 for c in self.channels):
            raise InputError(f"--channels {self.channels}: need at least two positive channel counts")
        if len(self.strides) != len(self.channels) - 1 or any(s < 1 for s in self.strides):
            raise InputError(f"strides {self.strides}: need {len(self.channels) - 1} positive values for channels {self.channels}")
        if self.num_res_units < 0:
            raise InputError(f"num_res_units={self.num_res_units}: must be >= 0")
        if self.net not in SEG_NETS:
            raise InputError(f"--net {self.net!r}: expected one of {', '.join(SEG_NETS)}")
        if self.net == "attention-unet" and self.num_res_units:
            raise InputError(f"--res-units {self.num_res_units}: --net attention-unet has no residual units (0)")

    @property
    def size_multiple(self) -> int:
        """Input sides must be multiples of this; :func:`seg_logits` pads to it."""
        return int(np.prod(self.strides))

    def to_dict(self) -> dict[str, Any]:
        """JSON- and checkpoint-ready copy."""
        data = asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in data.items()}


def build_unet(config: UNetConfig) -> nn.Module:
    """A MONAI 2-D U-Net with one input and one output (logit) channel.

    Args:
        config: channels, strides, residual units.

    Returns:
        The network (float32, CPU, training mode).
    """
    from monai.networks.nets import AttentionUnet, UNet

    if config.net == "attention-unet":
        return AttentionUnet(spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels, strides=config.strides)
    return UNet(
        spatial_dims=2, in_channels=1, out_channels=1, channels=config.channels, strides=config.strides,
        num_res_units=config.num_res_units,
    )  # fmt: skip


def seg_logits(net: nn.Module, images: torch.Tensor, *, multiple: int) -> torch.Tensor:
    """Run the U-Net on images of any size: zero-pad (the background value) to ``multiple``, then crop.

    Args:
        net: the U-Net.
        images: ``(B, 1, H, W)`` in ``[0, 1]``.
        multiple: the size multiple the network needs (:attr:`UNetConfig.size_multiple`).

    Returns:
        Logits ``(B, 1, H, W)``; differentiable with respect to ``images``.
    """
    height, width = images.shape[-2:]
    pad_h, pad_w = (-height) % multiple, (-width) % multiple
    if pad_h or pad_w:
        images = F.pad(images, (0, pad_w, 0, pad_h))
    return net(images)[..., :height, :width]


@dataclass
class SegModel:
    """A loaded, frozen segmentation network.

    Args:
        net: the U-Net, in eval mode with ``requires_grad`` off.
        config: its shape.
        threshold: probability threshold of the binary mask.
        training: the training metadata from the checkpoint.
        path: where it was loaded from.
    """

    net: nn.Module
    config: UNetConfig
    threshold: float = 0.5
    training: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    def logits(self, images: torch.Tensor) -> torch.Tensor:
        """Args: images ``(B, 1, H, W)`` in ``[0, 1]``. Returns: logits ``(B, 1, H, W)``."""
        return seg_logits(self.net, images, multiple=self.config.size_multiple)

    def to(self, device: torch.device | str) -> SegModel:
        """Move the network to ``device``; returns ``self``."""
        self.net.to(device)
        return self

    def predict(self, image: np.ndarray) -> np.ndarray:
        """Binary tumour mask of one image.

        Args:
            image: ``(H, W)`` scaled to ``[0, 1]`` as the codec scales it.

        Returns:
            uint8 ``(H, W)``, 1 = tumour.
        """
        if image.ndim != 2:
            raise InputError(f"image: expected shape (H, W), got {image.shape}")
        device = next(self.net.parameters()).device
        x = torch.from_numpy(np.ascontiguousarray(image, dtype=np.float32))[None, None].to(device)
        with torch.inference_mode():
            prob = torch.sigmoid(self.logits(x))[0, 0]
        return (prob > self.threshold).to(torch.uint8).cpu().numpy()


def freeze(net: nn.Module) -> nn.Module:
    """Eval mode and no parameter gradients: the regularizer must never train ``g``. Returns ``net``."""
    net.eval()
    for p in net.parameters():
        p.requires_grad_(False)
    return net


def save_checkpoint(
    path: str | os.PathLike[str], *, net: nn.Module, config: UNetConfig, threshold: float, training: dict[str, Any]
) -> None:
    """Write a segmentation checkpoint atomically.

    Args:
        path: output ``.pt`` file.
        net: the trained U-Net.
        config: its shape.
        threshold: mask threshold to use with it.
        training: JSON-like training metadata (configuration, cases, history).
    """
    from sinco.utils.atomic import atomic_path

    payload = {
        "kind": CHECKPOINT_KIND,
        "format": CHECKPOINT_FORMAT,
        "unet": config.to_dict(),
        "normalization": NORMALIZATION,
        "threshold": float(threshold),
        "state_dict": {k: v.detach().cpu().clone() for k, v in net.state_dict().items()},
        "training": training,
    }
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)


def load_seg_model(path: str | os.PathLike[str], *, device: torch.device | str = "cpu", arg: str = "--seg-model") -> SegModel:
    """Load a checkpoint written by ``sinco train-seg``, frozen.

    Args:
        path: the ``.pt`` file.
        device: where to put the network.
        arg: the command-line argument the path came from, for error messages.

    Returns:
        The :class:`SegModel`.

    Raises:
        InputError: if the file is missing, is not a sinco segmentation checkpoint, has an unknown
            format or normalization, or its weights do not fit its configuration.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{arg} {str(path)!r}: no such file")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any failure here means "not a checkpoint we can read"
        reason = str(exc).splitlines()[0][:160] if str(exc) else type(exc).__name__
        raise InputError(f"{arg} {str(path)!r}: not a sinco segmentation checkpoint ({reason})") from None
    if not isinstance(payload, dict) or payload.get("kind") != CHECKPOINT_KIND:
        raise InputError(f"{arg} {str(path)!r}: not a sinco segmentation checkpoint (made by 'sinco train-seg')")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise InputError(f"{arg} {str(path)!r}: unsupported checkpoint format {payload.get('format')!r}")
    if payload.get("normalization") != NORMALIZATION:
        raise InputError(f"{arg} {str(path)!r}: trained with normalization {payload.get('normalization')!r}, sinco feeds {NORMALIZATION!r}")
    try:
        config = UNetConfig(**payload["unet"])
        net = build_unet(config)
        net.load_state_dict(payload["state_dict"])
        threshold = float(payload["threshold"])
    except (KeyError, TypeError, RuntimeError, InputError) as exc:
        reason = str(exc).splitlines()[0][:160]
        raise InputError(f"{arg} {str(path)!r}: damaged checkpoint ({reason})") from None
    freeze(net).to(device)
    return SegModel(net=net, config=config, threshold=threshold, training=payload.get("training", {}), path=str(path))
