"""Training the tumour-segmentation U-Net on 2-D slices (binary cross-entropy, Adam)."""

from __future__ import annotations

import copy
import math
import time
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

from sinco.data.datasets import SliceSet
from sinco.errors import InputError
from sinco.seg.network import UNetConfig, build_unet, seg_logits
from sinco.utils.progress import progress_bar


@dataclass(frozen=True)
class TrainSegConfig:
    """How the segmentation network is trained.

    Args:
        epochs: passes over the (balanced) training slices; paper: 75.
        batch_size: slices per Adam step; paper: 8.
        lr: Adam learning rate; paper: 1e-4.
        val_cases: cases held out for validation (split by case, never by slice).
        seed: seeds the case split, the initialization, the sampling and the augmentation.
        negatives_per_positive: each epoch uses every slice with tumour and this many times as many
            slices without tumour, drawn afresh each epoch (all of them if there are fewer).
        flip: augment by random left-right flips.
        gamma: augment by a random intensity gamma ``x ** g``, ``log g`` uniform in
            ``[-log gamma, log gamma]`` (1 = off): tumour contrast varies from case to case, and with
            three training cases the net otherwise learns their particular brightness.
        threshold: probability above which a pixel counts as tumour.
        unet: the network's shape.

    Raises:
        InputError: if a value is out of range.
    """

    epochs: int = 75
    batch_size: int = 8
    lr: float = 1e-4
    val_cases: int = 1
    seed: int = 0
    negatives_per_positive: float = 1.0
    flip: bool = True
    gamma: float = 1.5
    threshold: float = 0.5
    unet: UNetConfig = field(default_factory=UNetConfig)

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise InputError(f"--epochs {self.epochs}: must be at least 1")
        if self.batch_size < 1:
            raise InputError(f"--batch-size {self.batch_size}: must be at least 1")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr {self.lr}: must be a positive number")
        if not (math.isfinite(self.negatives_per_positive) and self.negatives_per_positive >= 0):
            raise InputError(f"--negatives-per-positive {self.negatives_per_positive}: must be >= 0")
        if not (math.isfinite(self.gamma) and self.gamma >= 1):
            raise InputError(f"--gamma {self.gamma}: must be >= 1 (1 = no intensity augmentation)")
        if not 0 < self.threshold < 1:
            raise InputError(f"threshold={self.threshold}: must be in (0, 1)")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        data = asdict(self)
        data["unet"] = self.unet.to_dict()
        return data


@dataclass
class TrainSegResult:
    """Outcome of :func:`train_segmentation`.

    Args:
        net: the U-Net in the state of the best validation epoch (CPU).
        best_epoch: 1-based epoch whose weights are kept.
        history: one dictionary per epoch: ``epoch``, ``train_loss``, ``val_dice_tumour`` (mean
            per-slice Dice over validation slices with tumour), ``val_dice_global`` (Dice of all
            validation pixels pooled), ``seconds``.
        seconds: total training time.
    """

    net: nn.Module
    best_epoch: int
    history: list[dict[str, float]]
    seconds: float

    @property
    def best(self) -> dict[str, float]:
        """The history entry of the kept epoch."""
        return self.history[self.best_epoch - 1]


def evaluate(net: nn.Module, data: SliceSet, *, multiple: int, threshold: float, device: torch.device,
             batch_size: int = 16) -> dict[str, float]:  # fmt: skip
    """Validation Dice of a network on a slice set.

    Args:
        net: the U-Net.
        data: slices and masks.
        multiple: input size multiple of the network.
        threshold: mask threshold on the sigmoid.
        device: where to run.
        batch_size: slices per forward pass.

    Returns:
        ``{"val_dice_tumour": mean per-slice Dice on slices with tumour (nan if none),
        "val_dice_global": pooled Dice over all slices}``.
    """
    net.eval()
    per_slice, inter, total = [], 0.0, 0.0
    with torch.inference_mode():
        for start in range(0, len(data.ids), batch_size):
            x = torch.from_numpy(data.images[start : start + batch_size])[:, None].to(device)
            y = torch.from_numpy(data.masks[start : start + batch_size])[:, None].to(device).bool()
            pred = torch.sigmoid(seg_logits(net, x, multiple=multiple)) > threshold
            i = (pred & y).flatten(1).sum(1).double()
            s = pred.flatten(1).sum(1).double() + y.flatten(1).sum(1).double()
            inter, total = inter + float(i.sum()), total + float(s.sum())
            has = y.flatten(1).any(1)
            per_slice += (2 * i[has] / s[has]).cpu().tolist()
    return {
        "val_dice_tumour": float(np.mean(per_slice)) if per_slice else math.nan,
        "val_dice_global": 2 * inter / total if total > 0 else 1.0,
    }


def train_segmentation(
    train: SliceSet, val: SliceSet, *, config: TrainSegConfig, device: torch.device, progress: bool = True
) -> TrainSegResult:
    """Train a U-Net to segment whole tumour with binary cross-entropy, keeping the best validation epoch.

    Args:
        train: training slices (``images`` ``(N, H, W)`` in ``[0, 1]``, ``masks`` ``(N, H, W)``).
        val: validation slices from other cases.
        config: the training settings.
        device: where to train.
        progress: show a progress bar over all batches.

    Returns:
        A :class:`TrainSegResult`; the network is in the best epoch's state (by ``val_dice_tumour``,
        or ``val_dice_global`` when validation has no tumour).

    Raises:
        InputError: if the training slices hold no tumour.
    """
    positives = np.flatnonzero(train.has_tumour)
    negatives = np.flatnonzero(~train.has_tumour)
    if positives.size == 0:
        raise InputError("training slices contain no tumour: nothing to learn")
    start_time = time.perf_counter()
    torch.manual_seed(config.seed)
    rng = np.random.default_rng(config.seed)
    net = build_unet(config.unet).to(device)
    optimizer = torch.optim.Adam(net.parameters(), lr=config.lr)
    loss_fn = nn.BCEWithLogitsLoss()
    multiple = config.unet.size_multiple
    n_neg = min(negatives.size, int(round(config.negatives_per_positive * positives.size)))
    per_epoch = positives.size + n_neg
    batches = math.ceil(per_epoch / config.batch_size)
    key = "val_dice_tumour" if val.has_tumour.any() else "val_dice_global"

    bar = None
    if progress:
        bar = progress_bar(total=config.epochs * batches, desc="train-seg", unit="batch", leave=True)
    history: list[dict[str, float]] = []
    best_state, best_epoch, best_score = None, 0, -math.inf
    for epoch in range(1, config.epochs + 1):
        epoch_start = time.perf_counter()
        net.train()
        chosen = np.concatenate([positives, rng.choice(negatives, size=n_neg, replace=False)])
        rng.shuffle(chosen)
        losses = []
        for b in range(batches):
            idx = np.sort(chosen[b * config.batch_size : (b + 1) * config.batch_size])
            x = torch.from_numpy(train.images[idx])[:, None]
            y = torch.from_numpy(train.masks[idx])[:, None].float()
            if config.flip:
                flip = torch.from_numpy(rng.random(len(idx)) < 0.5)
                x = torch.where(flip[:, None, None, None], x.flip(-1), x)
                y = torch.where(flip[:, None, None, None], y.flip(-1), y)
            if config.gamma > 1:
                log_g = rng.uniform(-math.log(config.gamma), math.log(config.gamma), size=len(idx))
                x = x.clamp_min(0) ** torch.from_numpy(np.exp(log_g)).float()[:, None, None, None]
            x, y = x.to(device), y.to(device)
            optimizer.zero_grad(set_to_none=True)
            loss = loss_fn(seg_logits(net, x, multiple=multiple), y)
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if bar is not None:
                bar.update(1)
        scores = evaluate(net, val, multiple=multiple, threshold=config.threshold, device=device)
        entry = {"epoch": epoch, "train_loss": float(np.mean(losses)), **scores, "seconds": time.perf_counter() - epoch_start}
        history.append(entry)
        score = entry[key]
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy({k: v.detach().cpu() for k, v in net.state_dict().items()})
        if bar is not None:
            bar.set_postfix(epoch=epoch, loss=f"{entry['train_loss']:.4f}", dice=f"{score:.3f}", best=f"{best_score:.3f}")
    if bar is not None:
        bar.close()
    net.load_state_dict(best_state)
    return TrainSegResult(net=net.cpu(), best_epoch=best_epoch, history=history, seconds=time.perf_counter() - start_time)
