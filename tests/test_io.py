from pathlib import Path

import numpy as np
import pytest
import tifffile
from conftest import make_phantom
from PIL import Image

from sinco.data.intensity import normalize_minmax, restore_intensity
from sinco.data.io import load_slice, save_image
from sinco.errors import InputError


def test_nifti_volume_slices_along_each_axis(nifti_volume):
    np.testing.assert_allclose(load_slice(nifti_volume, slice_index=3), make_phantom() + 3, rtol=1e-6)
    assert load_slice(nifti_volume, slice_index=0, axis=0).shape == (32, 5)
    assert load_slice(nifti_volume, slice_index=31, axis=1).shape == (32, 5)


def test_decathlon_4d_volume_takes_the_channel(nifti_4d):
    np.testing.assert_allclose(load_slice(nifti_4d, slice_index=2), make_phantom() + 2, rtol=1e-6)
    np.testing.assert_allclose(load_slice(nifti_4d, slice_index=1, channel=3), make_phantom() * 4 + 1, rtol=1e-6)


def test_npy_png_and_tiff_inputs(tmp_path: Path):
    img16 = (make_phantom() * 300).astype(np.uint16)
    np.save(tmp_path / "a.npy", img16.astype(np.float32))
    Image.fromarray(img16).save(tmp_path / "a16.png")
    Image.fromarray((img16 // 256).astype(np.uint8)).save(tmp_path / "a8.png")
    tifffile.imwrite(tmp_path / "a.tif", img16)
    np.testing.assert_array_equal(load_slice(tmp_path / "a.npy"), img16)
    np.testing.assert_array_equal(load_slice(tmp_path / "a16.png"), img16)
    np.testing.assert_array_equal(load_slice(tmp_path / "a8.png"), img16 // 256)
    np.testing.assert_array_equal(load_slice(tmp_path / "a.tif"), img16)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({}, "choose a 2-D slice with --slice"),
        ({"slice_index": 5}, r"--slice 5: out of range for axis 2 of size 5 \(0..4\)"),
        ({"slice_index": -1}, "--slice -1: out of range"),
        ({"slice_index": 0, "channel": 1}, "--channel 1: .* has no channel axis"),
    ],
)
def test_volume_errors_name_the_argument(nifti_volume, kwargs, match):
    with pytest.raises(InputError, match=match):
        load_slice(nifti_volume, **kwargs)


def test_input_errors(tmp_path: Path, nifti_4d):
    with pytest.raises(InputError, match="no such file"):
        load_slice(tmp_path / "missing.nii.gz", slice_index=0)
    with pytest.raises(InputError, match="--channel 4: out of range"):
        load_slice(nifti_4d, slice_index=0, channel=4)
    (tmp_path / "junk.nii.gz").write_bytes(b"not a nifti file at all")
    with pytest.raises(InputError, match="cannot read"):
        load_slice(tmp_path / "junk.nii.gz", slice_index=0)
    (tmp_path / "x.jpg").write_bytes(b"")
    with pytest.raises(InputError, match="unsupported format '.jpg'"):
        load_slice(tmp_path / "x.jpg")
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "rgb.png")
    with pytest.raises(InputError, match="RGB image"):
        load_slice(tmp_path / "rgb.png")
    np.save(tmp_path / "two.npy", np.zeros((4, 4)))
    with pytest.raises(InputError, match="already 2-D"):
        load_slice(tmp_path / "two.npy", slice_index=0)


def test_normalization_round_trip_and_errors():
    img = make_phantom() - 50.0
    scaled, vmin, vmax = normalize_minmax(img)
    assert scaled.dtype == np.float32 and scaled.min() == 0.0 and scaled.max() == 1.0
    assert (vmin, vmax) == (img.min(), img.max())
    np.testing.assert_allclose(restore_intensity(scaled, vmin=vmin, vmax=vmax), img, atol=1e-4)
    with pytest.raises(InputError, match="constant image"):
        normalize_minmax(np.full((4, 4), 3.0))
    bad = img.copy()
    bad[0, 0] = np.nan
    with pytest.raises(InputError, match="1 NaN or Inf"):
        normalize_minmax(bad)


def test_save_image_formats(tmp_path: Path):
    import nibabel as nib

    scaled = np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8)
    save_image(tmp_path / "o.npy", scaled=scaled, vmin=-2.0, vmax=6.0)
    np.testing.assert_array_equal(np.load(tmp_path / "o.npy"), restore_intensity(scaled, vmin=-2.0, vmax=6.0))
    save_image(tmp_path / "o.nii.gz", scaled=scaled, vmin=-2.0, vmax=6.0)
    np.testing.assert_array_equal(np.asarray(nib.load(tmp_path / "o.nii.gz").dataobj), np.load(tmp_path / "o.npy"))
    save_image(tmp_path / "o.png", scaled=scaled, vmin=-2.0, vmax=6.0)  # range not integer: full 16-bit scale
    assert np.array(Image.open(tmp_path / "o.png")).max() == 65535
    save_image(tmp_path / "i.png", scaled=scaled, vmin=0.0, vmax=4095.0)  # a 12-bit source: restored values
    restored = np.array(Image.open(tmp_path / "i.png"))
    assert restored.max() == 4095 and restored.min() == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["i.png", "o.nii.gz", "o.npy", "o.png"]  # no temp files left
    with pytest.raises(InputError, match="unsupported output format"):
        save_image(tmp_path / "o.jpg", scaled=scaled, vmin=0.0, vmax=1.0)
