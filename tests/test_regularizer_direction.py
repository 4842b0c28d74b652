"""The SINCO regularizer pulls each codec family the right way: with lambda > 0 the loss network's Dice goes up.

A fixed, deterministic loss network (a 1x1 convolution that reads "tumour" where the intensity is above 0.6) and a
box mask over a region of the phantom that sits near 0.48 (so the plain fit's segmentation misses it) make the
regularizer's direction visible: a fit that minimizes ``data + lambda (1 - soft Dice)`` must brighten the box. Same
image, same seed, same schedule, lambda 0 against lambda > 0; every Dice is measured on the image decoded from the
file. A sign error in the loss (maximizing the disagreement) makes the Dice go down and these tests fail.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.files import decode_file
from sinco.compression.image import compress_images
from sinco.data.intensity import normalize_minmax
from sinco.regularizer.loss import StructuralRegularizer
from sinco.seg.network import SegModel, UNetConfig, freeze

#: Only its size multiple (2) is read: the network below is not a U-Net.
_CONFIG = UNetConfig(channels=(4, 8), strides=(2,), num_res_units=0)


def threshold_network(level: float, *, gain: float = 20.0) -> SegModel:
    """A frozen loss network whose logit is ``gain (x - level)``: deterministic, no training, no seed."""
    net = torch.nn.Conv2d(1, 1, 1)
    with torch.no_grad():
        net.weight.fill_(gain)
        net.bias.fill_(-gain * level)
    return SegModel(net=freeze(net), config=_CONFIG)


def box_mask(shape: tuple[int, int]) -> np.ndarray:
    """A box over the phantom's head, away from its bright disc: intensities near 0.48 of the range."""
    mask = np.zeros(shape, np.uint8)
    mask[8:16, 14:24] = 1
    return mask


def soft_dice(seg: SegModel, mask: np.ndarray, decoded: np.ndarray) -> float:
    """The regularizer's own soft Dice of ``seg`` on ``decoded`` (scaled to [0, 1]) against ``mask``."""
    reg = StructuralRegularizer(seg, mask=mask, device=torch.device("cpu"))
    with torch.no_grad():
        return 1.0 - float(reg(torch.from_numpy(decoded.astype(np.float32))[None, None])[0])


#: family -> (codec options, fit overrides, lambda, least soft-Dice gain). Measured on this phantom, soft Dice of the
#: loss network at lambda 0 -> lambda: siren 0.108 -> 0.545 (thresholded 0.06 -> 0.70), pe-mlp 0.085 -> 0.125 (its
#: 32 x 32 network at 4 bpp barely fits the image at all: thresholded Dice 0 both), grid at 40 steps 0.068 -> 0.51
#: (thresholded 0.016 -> 0.66; the judge's soft Dice 0.15 -> 0.41).
CASES = {
    "siren": ({"depth": 3}, {"steps": 150}, 30.0, 0.2),
    "pe-mlp": ({"depth": 3}, {"steps": 150}, 30.0, 0.02),
    "grid": ({}, {"steps": 40, "lambda_rd": 1e-3}, 30.0, 0.2),
}


@pytest.mark.parametrize("arch", list(CASES))
def test_the_regularizer_raises_the_loss_networks_dice_and_the_judges(arch, image):
    options, overrides, lam, least_gain = CASES[arch]
    scaled, vmin, vmax = normalize_minmax(image)
    mask = box_mask(image.shape)
    seg = threshold_network(0.6)
    judge = threshold_network(0.55, gain=12.0)  # another network: the gain must not be one network's blind spot
    codec = CodecConfig(arch=arch, bpp=4.0, options=options)
    preset = "fast" if arch == "grid" else "paper"
    outcome = {}
    for weight in (0.0, lam):
        fit = codec.family.fit_config(preset, {**overrides, "lam": weight, "seed": 0})
        (result,) = compress_images([scaled], ranges=[(vmin, vmax)], codec=codec, fit_config=fit, device=torch.device("cpu"),
                                    seg_model=seg, masks=[mask], eval_seg_model=judge)  # fmt: skip
        _, unit = decode_file(result.data)  # the [0, 1] image the loss network reads
        outcome[weight] = (result, soft_dice(seg, mask, unit), soft_dice(judge, mask, unit))
    (plain, plain_soft, plain_judge), (regularized, reg_soft, reg_judge) = outcome[0.0], outcome[lam]
    assert regularized.report.lam == lam and plain.report.lam == 0.0
    assert reg_soft > plain_soft + least_gain, (plain_soft, reg_soft)
    assert reg_judge > plain_judge, (plain_judge, reg_judge)
    # The thresholded Dice the metrics report (of the decoded image) never goes down, and goes up where it can move.
    assert regularized.metrics["dice"] >= plain.metrics["dice"]
    assert regularized.metrics["dice_eval"] >= plain.metrics["dice_eval"]
    if least_gain >= 0.2:
        assert regularized.metrics["dice"] > plain.metrics["dice"] + 0.3
    # Both runs segment the same uncompressed image: the reference Dice is the same.
    assert regularized.metrics["dice_reference"] == plain.metrics["dice_reference"]
