"""The Python API (``sinco.compression``, ``sinco.decompress`` and their file and volume forms): round trips, the same bytes
as the command line, and one-line errors naming the parameter."""

from __future__ import annotations

import numpy as np
import pytest

import sinco
from sinco.errors import BitstreamError, InputError

# Small fits: the API's job is plumbing; the codecs' quality has tests of its own.
SIREN = {"arch": "siren", "bpp": 8.0, "fit_options": {"steps": 300}, "device": "cpu"}
GRID = {"arch": "grid", "bpp": 6.0, "fit_options": {"steps": 150, "lambda_rd": 1e-4}, "device": "cpu"}


def _psnr_of(restored: np.ndarray, original: np.ndarray) -> float:
    """PSNR on the original's range, of images or volumes."""
    mse = float(np.mean(((restored.astype(np.float64) - original) / np.ptp(original)) ** 2))
    return -10 * np.log10(mse)


@pytest.mark.parametrize("settings", [SIREN, GRID], ids=["siren", "grid"])
def test_an_array_round_trip_restores_its_intensities(phantom, settings):
    image = phantom(32, 32) * 7.0 + 300.0  # intensities far from [0, 1]: the header carries the range
    data = sinco.compress(image, **settings)
    assert isinstance(data, bytes) and data[:4] == b"SNCO"
    restored = sinco.decompress(data)
    assert restored.shape == image.shape and restored.dtype == np.float32
    assert abs(float(restored.min()) - image.min()) < 0.05 * np.ptp(image)
    assert _psnr_of(restored, image) > _psnr_of(np.full_like(restored, image.mean()), image) + 5  # a fit, not a flat guess
    assert sinco.compress(image, **settings) == data  # same seed, same bytes


def test_the_api_writes_the_bytes_the_command_line_writes(phantom, tmp_path, run):
    image = phantom(32, 32)
    np.save(tmp_path / "img.npy", image)
    code, _, err = run(["compress", tmp_path / "img.npy", "-o", tmp_path / "cli.sinco", "--arch", "siren", "--bpp", 8, "--steps", 300,
                        "--device", "cpu", "--quiet"])  # fmt: skip
    assert code == 0, err
    size = sinco.compress_file(tmp_path / "img.npy", tmp_path / "api.sinco", **SIREN)
    assert (tmp_path / "api.sinco").read_bytes() == (tmp_path / "cli.sinco").read_bytes()
    assert size == (tmp_path / "api.sinco").stat().st_size
    out = sinco.decompress_file(tmp_path / "api.sinco", tmp_path / "back.npy")
    assert np.array_equal(np.load(out), sinco.decompress((tmp_path / "api.sinco").read_bytes()))


def test_a_volume_round_trip_and_a_volume_file(nifti_volume, tmp_path):
    import nibabel as nib

    volume = np.moveaxis(np.asarray(nib.load(str(nifti_volume)).dataobj), -1, 0)  # (S, H, W)
    data = sinco.compress_volume(volume[1:4], first_index=1, **SIREN)
    restored = sinco.decompress(data)
    flat = np.full_like(restored, volume[1:4].mean())
    assert restored.shape == (3, 32, 32) and _psnr_of(restored, volume[1:4]) > _psnr_of(flat, volume[1:4]) + 5
    sinco.compress_file(nifti_volume, tmp_path / "v.sinco", slices="1:4", **SIREN)
    assert (tmp_path / "v.sinco").read_bytes() == data  # the slices along axis 2, first index 1: the same file
    out = sinco.decompress_file(tmp_path / "v.sinco", tmp_path / "v.nii.gz")
    assert np.asarray(nib.load(str(out)).dataobj).shape == (32, 32, 3)


@pytest.mark.parametrize(("call", "message"), [
    (lambda img: sinco.compress(img, bpp=-1), "--bpp -1"),
    (lambda img: sinco.compress(img, arch="jpeg"), "--arch 'jpeg'"),
    (lambda img: sinco.compress(img, seed=-3), "seed -3"),
    (lambda img: sinco.compress(img, preset="paper"), "--preset 'paper'"),
    (lambda img: sinco.compress(img, fit_options={"lbfgs_after": 5}), "--lbfgs-after: does not apply to --arch grid"),
    (lambda img: sinco.compress(img[0]), "image: expected a real 2-D array"),
    (lambda img: sinco.compress(np.full((16, 16), np.nan)), "image: contains NaN or Inf"),
    (lambda img: sinco.compress(img, device="tpu"), "--device 'tpu'"),
    (lambda img: sinco.compress_volume(img, arch="siren"), "volume: expected a real 3-D array"),
    (lambda img: sinco.decompress("not bytes"), "data: expected the bytes of a .sinco file"),
])  # fmt: skip
def test_bad_arguments_are_refused_naming_the_parameter(phantom, call, message):
    with pytest.raises(InputError, match=message.replace("(", r"\(").replace("[", r"\[")) as info:
        call(phantom(16, 16))
    assert "\n" not in str(info.value)


def test_invalid_bytes_are_a_bitstream_error():
    with pytest.raises(BitstreamError, match="not a .sinco file"):
        sinco.decompress(b"definitely not a sinco file")


def test_importing_sinco_imports_no_torch():
    import subprocess
    import sys

    code = "import sys, sinco; assert 'torch' not in sys.modules, 'torch imported'; assert callable(sinco.compress)"
    subprocess.run([sys.executable, "-c", code], check=True)
