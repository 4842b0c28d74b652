"""The independent judge: Dice measured by a segmentation network that the regularizer did not use.

A reconstruction optimized against the loss network ``g`` can fool ``g`` (an adversarial image that
``g`` segments "perfectly"); its Dice by ``g`` then says nothing about the image. The judge is another
network, trained on other patients (or with another seed and shape), that the fit never saw.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np

from sinco.errors import InputError
from sinco.seg.network import SegModel


def load_judge(path: str | os.PathLike[str], *, loss_models: Sequence[SegModel], arg: str = "--eval-seg-model") -> SegModel:
    """Load the judge and refuse one that is a loss network itself.

    Args:
        path: the judge's checkpoint (from ``sinco train-seg``).
        loss_models: the networks the regularizer uses.
        arg: the command-line argument, for error messages.

    Returns:
        The judge, frozen, on the CPU.

    Raises:
        InputError: if the file cannot be loaded, or it is a loss network's file or holds its weights.
    """
    from sinco.regularizer.loss import same_network
    from sinco.seg.network import load_seg_model

    judge = load_seg_model(path, arg=arg)
    for loss_model in loss_models:
        if same_network(judge, loss_model):
            raise InputError(
                f"{arg} {str(path)!r}: the same network as the loss network {loss_model.path!r}; the judge must be "
                "independent (trained on other patients, or another seed)"
            )
    return judge


def judge_metrics(
    recon: np.ndarray, image: np.ndarray, *, mask: np.ndarray | None, seg_model: SegModel | None, eval_seg_model: SegModel | None
) -> dict[str, Any]:
    """Dice metrics of a decoded image beyond the loss network's Dice against the mask.

    With a judge and a mask: ``dice_eval`` (judge's mask of ``recon`` against ``mask``) and
    ``dice_eval_reference`` (of ``image``). Without a mask (``--seg-target self``), every Dice is the
    agreement of a network's mask of ``recon`` with its own mask of ``image``: ``dice_self`` (loss
    network) and ``dice_eval`` (judge), with ``dice_eval_target = "self"``.

    Args:
        recon: decoded image ``(H, W)`` in ``[0, 1]``.
        image: the uncompressed image ``(H, W)``.
        mask: ground-truth mask ``(H, W)`` or ``None``.
        seg_model: the loss network (or ``None``).
        eval_seg_model: the judge (or ``None``).

    Returns:
        The metrics (possibly empty).
    """
    from sinco.metrics import dice

    out: dict[str, Any] = {}
    if mask is None and seg_model is not None:
        out["dice_self"] = dice(pred=seg_model.predict(recon), target=seg_model.predict(image))
    if eval_seg_model is None:
        return out
    eval_seg_model.to("cpu")
    if mask is not None:
        out["dice_eval"] = dice(pred=eval_seg_model.predict(recon), target=mask)
        out["dice_eval_reference"] = dice(pred=eval_seg_model.predict(image), target=mask)
        out["dice_eval_target"] = "mask"
    else:
        out["dice_eval"] = dice(pred=eval_seg_model.predict(recon), target=eval_seg_model.predict(image))
        out["dice_eval_target"] = "self"
    return out


def load_networks(seg_paths: list[str] | None, judge_path: str | None) -> tuple[list[Any], Any]:
    """Load the loss network(s) and the judge, refusing a judge that is a loss network.

    Returns:
        ``(seg_models, judge)``; ``judge`` is ``None`` without ``--eval-seg-model``.

    Raises:
        InputError: for an unreadable checkpoint, or a judge equal to a loss network.
    """
    from sinco.seg.network import load_seg_model

    seg_models = [load_seg_model(path) for path in seg_paths or []]
    judge = None if judge_path is None else load_judge(judge_path, loss_models=seg_models)
    return seg_models, judge
