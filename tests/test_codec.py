import subprocess
import sys

import numpy as np
import pytest
import torch
from test_inr_determinism import REFERENCE_BOUND, reference_decode

from sinco.codec.config import CodecConfig
from sinco.codec.files import decode_file
from sinco.codec.inr.config import INRFitConfig
from sinco.compression.image import compress_image
from sinco.data.intensity import normalize_minmax
from sinco.errors import InputError
from sinco.metrics import psnr

CPU = torch.device("cpu")


@pytest.fixture
def scaled(image):
    return normalize_minmax(image)


# A 32 x 32 image has no detail above 16 cycles: 4 encoding frequencies suit it.
@pytest.mark.parametrize("arch, bpp, n_freqs", [("siren", 4.0, 12), ("pe-mlp", 8.0, 4)])
def test_compress_measures_what_the_file_decodes_to(scaled, arch, bpp, n_freqs):
    img, vmin, vmax = scaled
    codec = CodecConfig(arch=arch, bpp=bpp, options={"depth": 3, "n_freqs": n_freqs} if arch == "pe-mlp" else {"depth": 3})
    result = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=100), device=CPU)
    parsed, decoded = decode_file(result.data)
    np.testing.assert_array_equal(decoded, result.reconstruction)
    # Not the decoder against itself: a fresh process decodes the file to the same bytes, and an independent float64
    # implementation of the network the format describes agrees within float32 rounding.
    code = "import sys; from sinco.codec.files import decode_file; sys.stdout.buffer.write(decode_file(sys.stdin.buffer.read())[1].tobytes())"
    fresh = subprocess.run([sys.executable, "-c", code], input=result.data, capture_output=True, check=True, timeout=120).stdout
    assert fresh == decoded.tobytes()
    reference = reference_decode(parsed.spec, parsed.payload, *img.shape)
    assert np.abs(decoded.astype(np.float64) - reference).max() <= REFERENCE_BOUND
    assert result.metrics["psnr"] == psnr(pred=decoded, target=img)
    assert result.metrics["bpp_params"] <= bpp
    assert result.metrics["bpp_file"] == 8 * len(result.data) / img.size
    assert result.metrics["bpp_file"] > result.metrics["bpp_params"]
    assert parsed.spec.arch == arch and parsed.family == arch and (parsed.vmin, parsed.vmax) == (vmin, vmax)
    # fp16 quantization costs little on such a small network, and fitting beats a flat grey image.
    assert result.metrics["psnr"] > psnr(pred=np.full_like(img, img.mean()), target=img) + 3
    assert abs(result.metrics["psnr"] - result.report.details["psnr_fp32"]) < 1.0


def test_fitting_improves_with_steps(scaled):
    img, vmin, vmax = scaled
    codec = CodecConfig(arch="siren", bpp=4.0, options={"depth": 3})
    short = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=5), device=CPU)
    long = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=150), device=CPU)
    assert long.metrics["psnr"] > short.metrics["psnr"] + 2


def test_same_seed_same_bytes_other_seed_other_bytes(scaled):
    img, vmin, vmax = scaled
    codec = CodecConfig(arch="siren", bpp=4.0, options={"depth": 3})
    a = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=20, seed=3), device=CPU)
    b = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=20, seed=3), device=CPU)
    c = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=20, seed=4), device=CPU)
    assert a.data == b.data
    assert a.data != c.data


def test_decoding_is_deterministic_and_leaves_the_rng_alone(scaled):
    img, vmin, vmax = scaled
    data = compress_image(img, vmin=vmin, vmax=vmax, codec=CodecConfig(arch="siren", bpp=4.0, options={"depth": 3}), fit_config=INRFitConfig(steps=5), device=CPU).data
    torch.manual_seed(7)
    expected_draw = torch.rand(1)
    torch.manual_seed(7)
    first = decode_file(data)[1]
    assert torch.rand(1) == expected_draw
    np.testing.assert_array_equal(first, decode_file(data)[1])


def test_best_state_is_kept_when_the_fit_diverges(scaled):
    img, vmin, vmax = scaled
    # A huge learning rate sends SIREN far from the image; the best (early) state is what gets stored.
    result = compress_image(img, vmin=vmin, vmax=vmax, codec=CodecConfig(arch="siren", bpp=4.0, options={"depth": 3}), fit_config=INRFitConfig(steps=40, lr=10.0), device=CPU)
    assert result.report.details["best_step"] < 40
    assert np.isfinite(result.metrics["psnr"])
    assert result.metrics["psnr"] == pytest.approx(result.report.details["best_psnr"], abs=1.0)


def test_config_validation():
    with pytest.raises(InputError, match="--steps -1"):
        INRFitConfig(steps=-1)
    with pytest.raises(InputError, match="--lr 0"):
        INRFitConfig(lr=0)
    with pytest.raises(InputError, match="--bpp -1"):
        CodecConfig(bpp=-1)
    with pytest.raises(InputError, match="--arch 'mlp'"):
        CodecConfig(arch="mlp")
    with pytest.raises(InputError, match="--n-freqs: does not apply to --arch siren"):
        CodecConfig(arch="siren", options={"n_freqs": 4})
    with pytest.raises(InputError, match="values must be finite and in"):
        compress_image(np.full((12, 12), 2.0), vmin=0, vmax=1, codec=CodecConfig(arch="siren"), fit_config=INRFitConfig(steps=1), device=CPU)
    with pytest.raises(InputError, match="8x8 is below 11x11"):
        compress_image(np.full((8, 8), 0.5), vmin=0, vmax=1, codec=CodecConfig(arch="siren"), fit_config=INRFitConfig(steps=1), device=CPU)
    # The default family is grid: an INR fitting configuration given to it is refused by name, before any fit.
    with pytest.raises(InputError, match="fit_config: a INRFitConfig does not configure --arch grid, which takes a GridFamilyFit"):
        compress_image(np.full((16, 16), 0.5), vmin=0, vmax=1, codec=CodecConfig(), fit_config=INRFitConfig(steps=1), device=CPU)
