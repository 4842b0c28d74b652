"""Reading DICOM: a single-frame file, a multi-frame file, or a folder holding one series.

The reader is pydicom (the maintained pure-Python DICOM library): it reads every transfer syntax's
header, decodes uncompressed pixel data with NumPy, and compressed pixel data through whichever
handlers are installed (Pillow for JPEG baseline and JPEG 2000 in a default sinco install; pylibjpeg
or GDCM add the rest). nibabel's DICOM support is limited to Siemens mosaics and is deprecated;
SimpleITK would add a large binary dependency for the same result.

Layout: the volume is ``(rows, columns, slices)`` — each slice as a viewer shows it, slices stacked
on the last axis, which is sinco's default slicing axis. Slices are sorted by their position
along the slice normal (``ImagePositionPatient`` projected on the cross product of the two
``ImageOrientationPatient`` directions), or by ``InstanceNumber`` when the geometry is missing.
Stored values are mapped to real units with the modality LUT (``RescaleSlope`` /
``RescaleIntercept``, or a Modality LUT Sequence) by :func:`pydicom.pixels.apply_modality_lut`.

The affine maps a voxel index ``(row, column, slice)`` to NIfTI world coordinates (RAS+, mm): DICOM
patient coordinates are LPS+, so the first two world axes are negated.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sinco.errors import InputError

DICOM_SUFFIXES = (".dcm", ".dicom")
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
# Relative tolerance of "uniformly spaced" and "parallel" checks on geometry stored as decimal strings.
_GEOMETRY_TOLERANCE = 1e-3


@dataclass(frozen=True)
class DicomVolume:
    """Pixels and geometry read from DICOM.

    Args:
        array: ``(H, W)`` for one single-frame file, else ``(H, W, D)``; float64 when a rescale applies.
        affine: voxel-to-world matrix ``(4, 4)``, RAS+ mm (see the module docstring).
        files: the files read, in slice order.
    """

    array: np.ndarray
    affine: np.ndarray
    files: tuple[Path, ...]


def is_dicom_path(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is read as DICOM: a folder, a ``.dcm``/``.dicom`` file, or a file with the ``DICM`` preamble."""
    path = Path(path)
    if path.is_dir():
        return True
    if path.name.lower().endswith(DICOM_SUFFIXES):
        return True
    return path.is_file() and _has_preamble(path)


def _has_preamble(path: Path) -> bool:
    try:
        with open(path, "rb") as handle:
            handle.seek(128)
            return handle.read(4) == b"DICM"
    except OSError:
        return False


def _read(path: Path, *, arg: str, stop_before_pixels: bool = False):  # noqa: ANN202 - pydicom.Dataset, imported lazily
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        return pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        raise InputError(f"{arg} {str(path)!r}: not a DICOM file (no DICM preamble)") from None
    except Exception as exc:  # noqa: BLE001 - any parse failure means the file is unusable
        raise InputError(f"{arg} {str(path)!r}: cannot read as DICOM ({_reason(exc)})") from None


def _reason(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def _pixels(ds, path: Path, *, arg: str) -> np.ndarray:  # noqa: ANN001 - pydicom.Dataset
    """Decoded, rescaled pixels ``(H, W)`` or ``(F, H, W)`` of one dataset."""
    from pydicom.pixels import apply_modality_lut, get_decoder

    if not any(k in ds for k in _PIXEL_KEYWORDS):
        raise InputError(f"{arg} {str(path)!r}: DICOM file without pixel data")
    if int(ds.get("SamplesPerPixel", 1)) != 1:
        raise InputError(f"{arg} {str(path)!r}: colour DICOM ({ds.get('PhotometricInterpretation')}); sinco compresses greyscale")
    meta = getattr(ds, "file_meta", None)
    syntax = None if meta is None else meta.get("TransferSyntaxUID")
    if syntax is not None and syntax.is_compressed:
        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise InputError(f"{arg} {str(path)!r}: transfer syntax {syntax.name} ({syntax}) has no pixel decoder in pydicom") from None
        if not decoder.is_available:
            missing = "; ".join(decoder.missing_dependencies) or "no plugin"
            raise InputError(
                f"{arg} {str(path)!r}: compressed transfer syntax {syntax.name} cannot be decoded by the installed handlers ({missing})"
            )
    try:
        array = np.asarray(ds.pixel_array)
        array = np.asarray(apply_modality_lut(array, ds))
    except Exception as exc:  # noqa: BLE001 - a decoder failure means the pixel data are unusable
        coding = f"{syntax.name}: " if syntax is not None and syntax.is_compressed else ""
        raise InputError(f"{arg} {str(path)!r}: cannot decode the DICOM pixel data ({coding}{_reason(exc)})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{arg} {str(path)!r}: unsupported DICOM pixel type {array.dtype}")
    return array


def _floats(value, count: int) -> np.ndarray | None:  # noqa: ANN001 - a pydicom multi-value
    try:
        out = np.asarray([float(v) for v in value], dtype=np.float64)
    except (TypeError, ValueError):
        return None
    return out if out.shape == (count,) and np.all(np.isfinite(out)) else None


@dataclass(frozen=True)
class _Plane:
    """Geometry of one 2-D plane: row and column directions (LPS unit vectors), spacing ``(row, column)``, position."""

    row_dir: np.ndarray | None
    col_dir: np.ndarray | None
    spacing: np.ndarray | None
    position: np.ndarray | None

    @property
    def normal(self) -> np.ndarray | None:
        return None if self.row_dir is None else np.cross(self.row_dir, self.col_dir)


def _plane(ds, frame: int | None = None) -> _Plane:  # noqa: ANN001 - pydicom.Dataset
    """The plane geometry of a dataset, or of one frame of an enhanced multi-frame dataset."""
    orientation, spacing, position = ds.get("ImageOrientationPatient"), ds.get("PixelSpacing"), ds.get("ImagePositionPatient")
    groups = []
    if frame is not None and "PerFrameFunctionalGroupsSequence" in ds and frame < len(ds.PerFrameFunctionalGroupsSequence):
        groups.append(ds.PerFrameFunctionalGroupsSequence[frame])
    if "SharedFunctionalGroupsSequence" in ds and len(ds.SharedFunctionalGroupsSequence):
        groups.append(ds.SharedFunctionalGroupsSequence[0])
    for group in groups:  # per-frame values take precedence over shared ones
        if orientation is None and group.get("PlaneOrientationSequence"):
            orientation = group.PlaneOrientationSequence[0].get("ImageOrientationPatient")
        if spacing is None and group.get("PixelMeasuresSequence"):
            spacing = group.PixelMeasuresSequence[0].get("PixelSpacing")
        if position is None and group.get("PlanePositionSequence"):
            position = group.PlanePositionSequence[0].get("ImagePositionPatient")
    iop = None if orientation is None else _floats(orientation, 6)
    row_dir = col_dir = None
    if iop is not None and np.linalg.norm(iop[:3]) > 0 and np.linalg.norm(iop[3:]) > 0:
        row_dir, col_dir = iop[:3] / np.linalg.norm(iop[:3]), iop[3:] / np.linalg.norm(iop[3:])
    return _Plane(row_dir=row_dir, col_dir=col_dir, spacing=None if spacing is None else _floats(spacing, 2),
                  position=None if position is None else _floats(position, 3))  # fmt: skip


def _slice_thickness(ds) -> float:  # noqa: ANN001 - pydicom.Dataset
    for keyword in ("SpacingBetweenSlices", "SliceThickness"):
        try:
            value = float(ds.get(keyword))
        except (TypeError, ValueError):
            continue
        if np.isfinite(value) and value > 0:
            return value
    return 1.0


def _affine(planes: list[_Plane], *, thickness: float) -> np.ndarray:
    """RAS+ affine of slices in order (``planes[k]`` is slice ``k``); identity parts where geometry is missing."""
    first, last = planes[0], planes[-1]
    spacing = first.spacing if first.spacing is not None else np.ones(2)
    lps = np.eye(4)
    if first.row_dir is not None:
        # Voxel (r, c, k): moving down a row follows the column direction, by the row spacing; and vice versa.
        lps[:3, 0] = first.col_dir * spacing[0]
        lps[:3, 1] = first.row_dir * spacing[1]
        if len(planes) > 1 and first.position is not None and last.position is not None:
            lps[:3, 2] = (last.position - first.position) / (len(planes) - 1)
        else:
            lps[:3, 2] = first.normal * thickness
    else:
        lps[:3, :3] = np.diag([spacing[0], spacing[1], thickness])
    if first.position is not None:
        lps[:3, 3] = first.position
    return np.diag([-1.0, -1.0, 1.0, 1.0]) @ lps


def _order(planes: list[_Plane], instance_numbers: list[int | None], names: list[str], *, arg: str) -> list[int]:
    """Slice order: by position along the normal when every slice has it, else by InstanceNumber, else as given."""
    normal = planes[0].normal
    if normal is not None and all(p.position is not None and p.row_dir is not None for p in planes):
        if any(abs(float(np.dot(p.normal, normal))) < 1 - _GEOMETRY_TOLERANCE for p in planes):
            raise InputError(f"{arg}: the slices are not parallel (ImageOrientationPatient differs); not one volume")
        depth = np.array([float(np.dot(p.position, normal)) for p in planes])
        order = [int(i) for i in np.argsort(depth, kind="stable")]
        steps = np.diff(depth[order])
        if len(steps) and np.min(steps) <= _GEOMETRY_TOLERANCE * max(float(np.max(steps)), 1.0):
            k = int(np.argmin(steps))
            raise InputError(f"{arg}: {names[order[k]]!r} and {names[order[k + 1]]!r} lie at the same position; not one volume")
        return order
    if all(n is not None for n in instance_numbers):
        return sorted(range(len(planes)), key=lambda i: (instance_numbers[i], i))
    return list(range(len(planes)))


def _instance_number(ds) -> int | None:  # noqa: ANN001 - pydicom.Dataset
    try:
        return int(ds.get("InstanceNumber"))
    except (TypeError, ValueError):
        return None


def read_dicom_file(path: str | os.PathLike[str], *, arg: str = "INPUT") -> DicomVolume:
    """Read a single-frame or multi-frame DICOM file.

    Args:
        path: the file.
        arg: the command-line argument the path came from, for error messages.

    Returns:
        A :class:`DicomVolume`: ``(H, W)`` for a single frame, ``(H, W, F)`` for several frames
        (sorted by position along the normal when every frame has one).

    Raises:
        InputError: if the file is not DICOM, has no pixel data, is in colour, or uses a compressed
            transfer syntax the installed handlers cannot decode.
    """
    path = Path(path)
    ds = _read(path, arg=arg)
    pixels = _pixels(ds, path, arg=arg)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames <= 1 and pixels.ndim == 2:
        return DicomVolume(array=pixels, affine=_affine([_plane(ds, 0)], thickness=_slice_thickness(ds)), files=(path,))
    if pixels.ndim != 3:
        raise InputError(f"{arg} {str(path)!r}: unexpected DICOM pixel array of shape {pixels.shape}")
    order, planes = _frame_geometry(ds, pixels.shape[0], where=f"{arg} {str(path)!r}")
    volume = np.ascontiguousarray(np.moveaxis(pixels[order], 0, -1))
    return DicomVolume(array=volume, affine=_affine(planes, thickness=_slice_thickness(ds)), files=(path,))


def _frame_geometry(ds, n_frames: int, *, where: str) -> tuple[list[int], list[_Plane]]:  # noqa: ANN001 - pydicom.Dataset
    """Frame order and the planes of the ordered frames of a multi-frame dataset."""
    per_frame = ds.get("PerFrameFunctionalGroupsSequence") or []
    if len(per_frame) == n_frames and all(g.get("PlanePositionSequence") for g in per_frame):
        planes = [_plane(ds, k) for k in range(n_frames)]
        order = _order(planes, [None] * n_frames, [f"frame {k}" for k in range(n_frames)], arg=where)
        return order, [planes[k] for k in order]
    # A classic multi-frame file: one position for the first frame, frames stacked along the normal.
    return list(range(n_frames)), [_plane(ds, 0)]


def read_dicom_series(folder: str | os.PathLike[str], *, arg: str = "INPUT") -> DicomVolume:
    """Read a folder holding one DICOM series as a volume.

    Every regular file in the folder (not its subfolders) that is DICOM is read; other files (a
    ``DICOMDIR``, notes) are skipped. A folder holding a single file reads like that file.

    Args:
        folder: the series folder.
        arg: the command-line argument the path came from, for error messages.

    Returns:
        A :class:`DicomVolume` ``(H, W, D)``, slices sorted along the normal (see the module docstring).

    Raises:
        InputError: if the folder holds no DICOM image, several series, slices of different sizes
            or orientations, or a file :func:`read_dicom_file` refuses.
    """
    folder = Path(folder)
    headers = _series_headers(folder, arg=arg)
    if len(headers) == 1:
        return read_dicom_file(headers[0][0], arg=arg)
    slices, planes, numbers = [], [], []
    for path, _ in headers:
        ds = _read(path, arg=arg)
        pixels = _pixels(ds, path, arg=arg)
        if pixels.ndim != 2:
            raise InputError(f"{arg} {str(path)!r}: a multi-frame file inside a series folder; read it on its own")
        if slices and pixels.shape != slices[0].shape:
            raise InputError(f"{arg} {str(path)!r}: slice of {pixels.shape} differs from {headers[0][0].name!r}'s {slices[0].shape}")
        slices.append(pixels)
        planes.append(_plane(ds))
        numbers.append(_instance_number(ds))
    names = [p.name for p, _ in headers]
    order = _order(planes, numbers, names, arg=f"{arg} {str(folder)!r}")
    dtype = np.result_type(*[s.dtype for s in slices])
    volume = np.stack([slices[k].astype(dtype, copy=False) for k in order], axis=-1)
    return DicomVolume(array=volume, affine=_affine([planes[k] for k in order], thickness=_slice_thickness(headers[0][1])),
                       files=tuple(headers[k][0] for k in order))  # fmt: skip


def _series_headers(folder: Path, *, arg: str) -> list:
    """``(path, header without pixels)`` of the DICOM files of a folder holding one series.

    Raises:
        InputError: if the folder holds no DICOM file, a damaged one, or several series.
    """
    import pydicom
    from pydicom.errors import InvalidDicomError

    headers = []
    for path in sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith(".") and p.name.upper() != "DICOMDIR"):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True)
        except InvalidDicomError:
            continue
        except Exception as exc:  # noqa: BLE001 - a damaged file in the series is an error, not a skip
            raise InputError(f"{arg} {str(path)!r}: cannot read as DICOM ({_reason(exc)})") from None
        headers.append((path, ds))
    if not headers:
        raise InputError(f"{arg} {str(folder)!r}: no DICOM file in the folder")
    series: dict[str, list[Path]] = {}
    for path, ds in headers:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    if len(series) > 1:
        listing = "; ".join(f"{uid or '(no SeriesInstanceUID)'}: {len(files)} file(s) e.g. {files[0].name!r}" for uid, files in series.items())
        raise InputError(f"{arg} {str(folder)!r}: holds {len(series)} DICOM series ({listing}); point INPUT at one series")
    return headers


def read_dicom_affine(path: str | os.PathLike[str], *, arg: str = "INPUT") -> np.ndarray:
    """The affine :func:`read_dicom` would give, from the headers alone (no pixel data is decoded).

    Returns:
        Voxel-to-world matrix ``(4, 4)``, RAS+ mm.

    Raises:
        InputError: if the path is missing, not DICOM, or a folder of several series.
    """
    path = Path(path)
    if path.is_dir():
        headers = _series_headers(path, arg=arg)
        if len(headers) > 1:
            planes = [_plane(ds) for _, ds in headers]
            numbers = [_instance_number(ds) for _, ds in headers]
            order = _order(planes, numbers, [p.name for p, _ in headers], arg=f"{arg} {str(path)!r}")
            return _affine([planes[k] for k in order], thickness=_slice_thickness(headers[0][1]))
        path = headers[0][0]
    elif not path.is_file():
        raise InputError(f"{arg} {str(path)!r}: no such file or folder")
    ds = _read(path, arg=arg, stop_before_pixels=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    planes = [_plane(ds, 0)] if frames <= 1 else _frame_geometry(ds, frames, where=f"{arg} {str(path)!r}")[1]
    return _affine(planes, thickness=_slice_thickness(ds))


def read_dicom(path: str | os.PathLike[str], *, arg: str = "INPUT") -> DicomVolume:
    """Read a DICOM file or a series folder (see :func:`read_dicom_file` and :func:`read_dicom_series`).

    Raises:
        InputError: if the path is missing or unusable.
    """
    path = Path(path)
    if path.is_dir():
        return read_dicom_series(path, arg=arg)
    if not path.is_file():
        raise InputError(f"{arg} {str(path)!r}: no such file or folder")
    return read_dicom_file(path, arg=arg)
