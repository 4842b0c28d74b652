"""DICOM input: files and series written with pydicom's writer, geometry, rescale, and refusals."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from dicom_files import write_dicom, write_jpeg_ls, write_series

from sinco.cli import main
from sinco.data.dicom import read_dicom
from sinco.data.io import load_affine, load_array, load_slice
from sinco.errors import InputError


def _volume(h: int = 24, w: int = 20, d: int = 5) -> np.ndarray:
    rows, cols = np.meshgrid(np.arange(h), np.arange(w), indexing="ij")
    return np.stack([(rows * 7 + cols * 3 + 50 * k) for k in range(d)], axis=-1).astype(np.uint16)


def test_series_sorted_by_position_and_rescaled(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol, slope=0.5, intercept=-20)
    (tmp_path / "s" / "notes.txt").write_text("not DICOM, skipped")
    array = load_array(tmp_path / "s")
    assert array.shape == vol.shape
    np.testing.assert_array_equal(array, vol * 0.5 - 20)


def test_series_affine_maps_voxels_to_patient_positions(tmp_path: Path) -> None:
    vol = _volume()
    write_series(tmp_path / "s", vol, step=2.5, spacing=(0.5, 0.75))
    affine = load_affine(tmp_path / "s")
    # Voxel (row r, column c, slice k): LPS = (-5 + 0.75 c, 7 + 0.5 r, 10 + 2.5 k); RAS negates x and y.
    r, c, k = 3, 4, 2
    world = affine @ np.array([r, c, k, 1.0])
    np.testing.assert_allclose(world[:3], [-(-5 + 0.75 * c), -(7 + 0.5 * r), 10 + 2.5 * k])


def test_series_without_geometry_falls_back_to_instance_number(tmp_path: Path) -> None:
    vol = _volume(d=4)
    folder = tmp_path / "s"
    folder.mkdir()
    for n, k in enumerate([2, 0, 3, 1]):
        write_dicom(folder / f"x{n}.dcm", vol[:, :, k], position=None, orientation=None, instance=k + 1)
    np.testing.assert_array_equal(load_array(folder), vol)


def test_multiframe_file(tmp_path: Path) -> None:
    vol = _volume(d=3)
    path = write_dicom(tmp_path / "mf.dcm", np.moveaxis(vol, -1, 0), slope=2.0, intercept=1.0)
    np.testing.assert_array_equal(load_array(path), vol * 2.0 + 1.0)
    assert load_slice(path, slice_index=1).shape == vol.shape[:2]


def test_single_frame_without_suffix_is_a_2d_image(tmp_path: Path) -> None:
    vol = _volume(d=1)
    path = write_dicom(tmp_path / "IM0001", vol[:, :, 0])
    assert load_slice(path).shape == vol.shape[:2]


def test_shipped_test_file_reads() -> None:
    from pydicom.data import get_testdata_file

    volume = read_dicom(get_testdata_file("CT_small.dcm"))
    assert volume.array.shape == (128, 128)
    assert volume.array.min() < -500  # Hounsfield units: the intercept -1024 was applied


def test_several_series_refused(tmp_path: Path) -> None:
    vol = _volume(d=2)
    write_dicom(tmp_path / "a.dcm", vol[:, :, 0], series_uid="1.2.3.1")
    write_dicom(tmp_path / "b.dcm", vol[:, :, 1], series_uid="1.2.3.2")
    with pytest.raises(InputError, match="2 DICOM series"):
        load_array(tmp_path)


def test_missing_pixel_data_refused(tmp_path: Path) -> None:
    path = write_dicom(tmp_path / "empty.dcm", _volume(d=1)[:, :, 0], with_pixels=False)
    with pytest.raises(InputError, match="without pixel data") as info:
        load_array(path)
    assert "empty.dcm" in str(info.value)


def test_undecodable_transfer_syntax_refused(tmp_path: Path) -> None:
    """JPEG-LS pixel data that are not JPEG-LS: refused in one line, whether or not a JPEG-LS handler (pyjpegls, a
    dependency) is installed."""
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    path = write_jpeg_ls(tmp_path / "jls.dcm", _volume(d=1)[:, :, 0])
    handled = get_decoder(JPEGLSLossless).is_available
    expected = "cannot decode the DICOM pixel data" if handled else "cannot be decoded by the installed handlers"
    with pytest.raises(InputError, match=expected) as info:
        load_array(path)
    assert "jls.dcm" in str(info.value) and "\n" not in str(info.value)


def test_jpeg_ls_dicom_decodes_to_its_pixels(tmp_path: Path) -> None:
    """With pyjpegls installed, JPEG-LS lossless DICOM is read exactly."""
    import imagecodecs
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.pixels import get_decoder
    from pydicom.uid import JPEGLSLossless

    if not get_decoder(JPEGLSLossless).is_available:
        pytest.skip("no JPEG-LS handler for pydicom (pyjpegls) installed")
    pixels = np.random.default_rng(0).integers(0, 4096, size=(16, 12)).astype(np.uint16)
    plain = write_dicom(tmp_path / "plain.dcm", pixels)
    ds = pydicom.dcmread(plain)
    ds.PixelData = encapsulate([bytes(imagecodecs.jpegls_encode(ds.pixel_array))])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(tmp_path / "jls.dcm", enforce_file_format=True)
    assert np.array_equal(load_array(tmp_path / "jls.dcm"), load_array(plain))


def test_slices_at_one_position_refused(tmp_path: Path) -> None:
    vol = _volume(d=2)
    write_dicom(tmp_path / "a.dcm", vol[:, :, 0], position=(0, 0, 5))
    write_dicom(tmp_path / "b.dcm", vol[:, :, 1], position=(0, 0, 5))
    with pytest.raises(InputError, match="same position"):
        load_array(tmp_path)


def test_cli_bad_dicom_is_one_line_exit_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write_dicom(tmp_path / "empty.dcm", _volume(d=1)[:, :, 0], with_pixels=False)
    assert main(["compress", str(path), "-o", str(tmp_path / "x.sinco"), "--steps", "5", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sinco: error:") and err.count("\n") == 1 and "empty.dcm" in err
    assert not (tmp_path / "x.sinco").exists()


def test_cli_compress_series_volume_decompresses_with_dicom_geometry(tmp_path: Path) -> None:
    import nibabel as nib

    vol = _volume(h=16, w=16, d=3)
    write_series(tmp_path / "s", vol, step=3.0)
    out = tmp_path / "s.sinco"
    assert main(["compress", str(tmp_path / "s"), "-o", str(out), "--slices", "all", "--arch", "siren", "--steps", "5", "--bpp", "8",
                 "--quiet"]) == 0
    assert main(["decompress", str(out), "-o", str(tmp_path / "s.nii.gz")]) == 0
    image = nib.load(str(tmp_path / "s.nii.gz"))
    assert image.shape == vol.shape
    np.testing.assert_allclose(image.affine, load_affine(tmp_path / "s"), atol=1e-6)
    assert image.affine[2, 2] == pytest.approx(3.0)


def test_cli_compress_dicom_slice_records_roi_metrics(tmp_path: Path) -> None:
    vol = _volume(h=24, w=24, d=1)
    path = write_dicom(tmp_path / "one.dcm", vol[:, :, 0], slope=2.0)
    out = tmp_path / "one.sinco"
    assert main(["compress", str(path), "-o", str(out), "--arch", "siren", "--steps", "5", "--quiet"]) == 0
    record = json.loads((tmp_path / "one.sinco.json").read_text())
    assert record["input"]["vmax"] == pytest.approx(2.0 * vol.max())
    result = record["result"]
    assert result["roi"] == "auto" and {"psnr_roi", "ssim_roi", "ms_ssim"} <= set(result)


def test_cli_volume_records_roi_metrics_per_slice(tmp_path: Path) -> None:
    import nibabel as nib

    vol = np.stack([np.pad(np.full((12, 12), 100.0 + k), 6) for k in range(2)], axis=-1).astype(np.float32)
    roi = np.zeros(vol.shape, np.uint8)
    roi[4:20, 4:20] = 1
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    nib.save(nib.Nifti1Image(roi, np.eye(4)), str(tmp_path / "roi.nii.gz"))
    out = tmp_path / "v.sinco"
    argv = ["compress", str(tmp_path / "v.nii.gz"), "-o", str(out), "--slices", "all", "--arch", "siren", "--steps", "3", "--quiet"]
    assert main([*argv, "--roi", str(tmp_path / "roi.nii.gz")]) == 0
    record = json.loads((tmp_path / "v.sinco.json").read_text())
    assert all(row["roi"] == "mask" and row["roi_fraction"] == pytest.approx(256 / 576) for row in record["slices"])
    assert record["result"]["psnr_roi_mean"] == pytest.approx(np.mean([row["psnr_roi"] for row in record["slices"]]))


def test_folders_layout_reads_a_dicom_series_per_case(tmp_path: Path) -> None:
    from sinco.data.datasets import discover_cases, load_case_volumes, load_slices

    vol = _volume(h=16, w=16, d=3)
    for name in ("c1", "c2"):
        write_series(tmp_path / name / "flair", vol)
        label = np.zeros(vol.shape, np.uint8)
        label[4:8, 4:8] = 1
        np.save(tmp_path / name / "seg.npy", label)
    cases = discover_cases(tmp_path, layout="folders", image_glob="flair", label_glob="seg.npy")
    image, label = load_case_volumes(cases[0])
    np.testing.assert_array_equal(image, vol)
    assert load_slices(cases).masks.sum() == 2 * 3 * 16
    unlabelled = discover_cases(tmp_path, layout="folders", image_glob="flair", label_glob=None)
    assert all(not c.has_labels for c in unlabelled) and load_case_volumes(unlabelled[0])[1] is None


@pytest.mark.parametrize("case", ["several series", "undecodable"])
def test_cli_refusals_name_the_input(tmp_path: Path, capsys: pytest.CaptureFixture[str], case: str) -> None:
    vol = _volume(d=2)
    if case == "several series":
        write_dicom(tmp_path / "a.dcm", vol[:, :, 0], series_uid="1.2.3.1")
        write_dicom(tmp_path / "b.dcm", vol[:, :, 1], series_uid="1.2.3.2")
        target, expected = tmp_path, "2 DICOM series"
    else:
        target = write_jpeg_ls(tmp_path / "jls.dcm", vol[:, :, 0])
        expected = "JPEG-LS"
    assert main(["compress", str(target), "-o", str(tmp_path / "x.sinco"), "--slices", "all", "--steps", "2", "--quiet"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("sinco: error:") and err.count("\n") == 1 and expected in err and str(target) in err, err


def test_cli_segment_reads_dicom(tmp_path: Path) -> None:
    from importlib.resources import files

    from pydicom.data import get_testdata_file

    out = tmp_path / "mask.npy"
    assert main(["segment", get_testdata_file("CT_small.dcm"), "-m", str(files("sinco") / "assets" / "demo_seg.pt"), "-o", str(out)]) == 0
    assert np.load(out).shape == (128, 128)


def test_affine_from_headers_equals_the_full_read(tmp_path: Path) -> None:
    vol = _volume(d=3)
    write_series(tmp_path / "s", vol, step=1.5)
    write_dicom(tmp_path / "mf.dcm", np.moveaxis(vol, -1, 0))
    for path in (tmp_path / "s", tmp_path / "mf.dcm", tmp_path / "s" / "IM0000"):
        np.testing.assert_array_equal(load_affine(path), read_dicom(path).affine)
