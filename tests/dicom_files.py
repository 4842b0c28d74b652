"""Tiny DICOM files written with pydicom's writer, for the tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def write_dicom(
    path: Path,
    pixels: np.ndarray,
    *,
    position: tuple[float, float, float] | None = (0.0, 0.0, 0.0),
    orientation: tuple[float, ...] | None = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0),
    spacing: tuple[float, float] = (0.5, 0.75),
    slope: float = 1.0,
    intercept: float = 0.0,
    series_uid: str = "1.2.826.0.1.3680043.8.498.1",
    instance: int | None = 1,
    thickness: float | None = 2.0,
    with_pixels: bool = True,
) -> Path:
    """Write ``pixels`` (uint16 ``(H, W)`` or ``(F, H, W)``) as an explicit-VR little-endian DICOM file."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = MRImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MRImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "MR"
    ds.SeriesInstanceUID = series_uid
    ds.StudyInstanceUID = "1.2.826.0.1.3680043.8.498.2"
    ds.PixelSpacing = [f"{spacing[0]:g}", f"{spacing[1]:g}"]
    if thickness is not None:
        ds.SliceThickness = f"{thickness:g}"
    if instance is not None:
        ds.InstanceNumber = instance
    if position is not None:
        ds.ImagePositionPatient = [f"{v:g}" for v in position]
    if orientation is not None:
        ds.ImageOrientationPatient = [f"{v:g}" for v in orientation]
    ds.RescaleSlope = f"{slope:g}"
    ds.RescaleIntercept = f"{intercept:g}"
    if with_pixels:
        ds.set_pixel_data(np.asarray(pixels, dtype=np.uint16), photometric_interpretation="MONOCHROME2", bits_stored=16)
    else:
        ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.save_as(path, enforce_file_format=True)
    return path


def write_series(folder: Path, volume: np.ndarray, *, step: float = 2.0, shuffle: bool = True, **kwargs) -> list[Path]:
    """Write ``volume`` ``(H, W, D)`` as one file per slice, slice k at z = 10 + k * step, in shuffled file order."""
    folder.mkdir(parents=True, exist_ok=True)
    depth = volume.shape[2]
    order = np.random.default_rng(0).permutation(depth) if shuffle else np.arange(depth)
    paths = []
    for n, k in enumerate(order):
        paths.append(write_dicom(folder / f"IM{n:04d}", volume[:, :, k], position=(-5.0, 7.0, 10.0 + k * step),
                                 instance=int(k) + 1, **kwargs))  # fmt: skip
    return paths


def write_jpeg_ls(path: Path, pixels: np.ndarray) -> Path:
    """A file declaring JPEG-LS lossless (no decoder in a default install) with encapsulated bytes that are not decoded."""
    import pydicom
    from pydicom.encaps import encapsulate
    from pydicom.uid import JPEGLSLossless

    write_dicom(path, pixels)
    ds = pydicom.dcmread(path)
    ds.PixelData = encapsulate([b"\xff\xd8not really JPEG-LS\xff\xd9"])
    ds["PixelData"].VR = "OB"
    ds.file_meta.TransferSyntaxUID = JPEGLSLossless
    ds.save_as(path, enforce_file_format=True)
    return path
