"""The CUDA path: fits on the GPU, files decoded on the CPU (skipped on machines without CUDA, CI among them).

Run on a GPU machine with ``python -m pytest tests/test_cuda.py``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from sinco.codec.config import CodecConfig
from sinco.codec.files import decode_file
from sinco.compression.image import compress_images
from sinco.compression.measure import measure
from sinco.seg.network import SegModel, UNetConfig, build_unet, freeze

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")

CUDA = torch.device("cuda")
SIZE = 48


def _images(n: int) -> tuple[list[np.ndarray], list[np.ndarray]]:
    from conftest import make_phantom

    base = make_phantom(SIZE, SIZE)
    images = [((base + 10 * k) / (base.max() + 10 * k)).astype(np.float32) for k in range(n)]
    masks = [(im > 0.7).astype(np.uint8) for im in images]
    return images, masks


def _loss_network() -> SegModel:
    torch.manual_seed(0)
    config = UNetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    return SegModel(net=freeze(build_unet(config)), config=config)


def _codec(arch: str) -> CodecConfig:
    return CodecConfig(arch=arch, bpp=4.0, options={} if arch == "grid" else {"depth": 3})


def _fit(codec: CodecConfig, **overrides: float) -> object:
    """A short fit: the grid's fast preset at a fixed lambda_rd (no rate search), the MLPs' Adam-only paper preset."""
    if codec.arch == "grid":
        return codec.family.fit_config("fast", {"lambda_rd": 1e-3, **overrides})
    return codec.family.fit_config("paper", overrides)


@pytest.mark.parametrize("arch", ["siren", "pe-mlp", "grid"])
def test_a_gpu_fit_decodes_on_the_cpu_to_what_its_metrics_measured(arch):
    images, _ = _images(2)
    codec = _codec(arch)
    fit = _fit(codec, steps=400, seed=0)
    results = compress_images(images, ranges=[(0.0, 1.0)] * 2, codec=codec, fit_config=fit, device=CUDA)
    for image, result in zip(images, results, strict=True):
        parsed, decoded = decode_file(result.data)
        assert np.array_equal(decoded, result.reconstruction)
        # Not the decoder against itself: the independent references (int64 for the grid, float64 for the MLPs).
        if arch == "grid":
            import reference_grid

            from sinco.codec.format import unpack

            container = unpack(result.data)
            assert reference_grid.decode(container.payload, container.block, SIZE, SIZE).image.tobytes() == decoded.tobytes()
        else:
            from test_inr_determinism import REFERENCE_BOUND, reference_decode

            assert np.abs(decoded - reference_decode(parsed.spec, parsed.payload, SIZE, SIZE)).max() <= REFERENCE_BOUND
        assert measure(decoded, target=image, file_bytes=len(result.data))["psnr"] == pytest.approx(result.metrics["psnr"])
        flat = np.full_like(image, image.mean())
        assert result.metrics["psnr"] > measure(flat, target=image, file_bytes=1)["psnr"] + 3  # it learnt the image


@pytest.mark.parametrize("arch", ["siren", "grid"])
def test_the_regularizer_on_the_gpu_raises_the_loss_networks_dice_and_leaves_the_unet_frozen(arch):
    from test_regularizer_direction import box_mask, soft_dice, threshold_network

    images, _ = _images(1)
    mask = box_mask(images[0].shape)
    assert images[0][mask == 1].max() < 0.6  # the plain fit's segmentation misses the box: lambda must brighten it
    seg = threshold_network(0.6)
    unet = _loss_network()  # a U-Net in the ensemble: it must stay frozen on the GPU
    before = {k: v.clone() for k, v in unet.net.state_dict().items()}
    codec = _codec(arch)
    common = dict(ranges=[(0.0, 1.0)], codec=codec, device=CUDA, seg_model=seg, masks=[mask], ensemble=[unet])
    plain = compress_images(images, fit_config=_fit(codec, steps=150, seed=0, lam=0.0), **common)[0]
    regularized = compress_images(images, fit_config=_fit(codec, steps=150, seed=0, lam=30.0), **common)[0]
    _, plain_image = decode_file(plain.data)
    _, regularized_image = decode_file(regularized.data)
    assert soft_dice(seg, mask, regularized_image) > soft_dice(seg, mask, plain_image) + 0.1
    assert regularized.metrics["dice"] >= plain.metrics["dice"]
    assert all(torch.equal(before[k], v.cpu()) for k, v in unet.net.state_dict().items())


def test_the_same_gpu_fit_twice_gives_the_same_file():
    images, _ = _images(2)
    codec = _codec("siren")
    fit = _fit(codec, steps=60, seed=3)
    first = compress_images(images, ranges=[(0.0, 1.0)] * 2, codec=codec, fit_config=fit, device=CUDA)
    second = compress_images(images, ranges=[(0.0, 1.0)] * 2, codec=codec, fit_config=fit, device=CUDA)
    assert [r.data for r in first] == [r.data for r in second]
