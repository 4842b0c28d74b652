"""Reading 2-D slices from image files and writing decoded images.

Supported inputs: NIfTI (``.nii``, ``.nii.gz``; 2-D, 3-D, or 4-D with the modality on the last
axis as in the Medical Segmentation Decathlon), NumPy ``.npy``, 8/16-bit greyscale PNG and TIFF, and
DICOM (a file, or a folder holding one series; see :mod:`sinco.data.dicom`).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from sinco.errors import InputError
from sinco.utils.atomic import atomic_path

INPUT_SUFFIXES = (".nii.gz", ".nii", ".npy", ".png", ".tif", ".tiff", ".dcm", ".dicom")
OUTPUT_SUFFIXES = (".npy", ".png", ".nii.gz", ".nii", ".tif", ".tiff")
MASK_SUFFIXES = (".npy", ".png", ".nii.gz", ".nii")
VOLUME_SUFFIXES = (".nii.gz", ".nii", ".npy")


def image_suffix(path: str | os.PathLike[str]) -> str:
    """The lower-case format suffix of a path (``".nii.gz"`` counts as one)."""
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def load_array(path: str | os.PathLike[str], *, arg: str = "INPUT") -> np.ndarray:
    """Read a whole image file into an array, without selecting a slice.

    Args:
        path: a NIfTI, ``.npy``, PNG or TIFF file; or DICOM: a file, or a folder holding one series.
        arg: the command-line argument the path came from, for error messages.

    Returns:
        The array as stored: ``(H, W)``, ``(H, W, D)`` or ``(H, W, D, C)``; DICOM as
        :func:`sinco.data.dicom.read_dicom` lays it out (rescaled, slices on the last axis).

    Raises:
        InputError: if the file is missing, has an unsupported suffix, or cannot be read as an image.
    """
    from sinco.data.dicom import is_dicom_path, read_dicom

    if is_dicom_path(path):
        return read_dicom(path, arg=arg).array
    path = Path(path)
    suffix = image_suffix(path)
    if not path.is_file():
        raise InputError(f"{arg} {str(path)!r}: no such file")
    if suffix not in INPUT_SUFFIXES:
        raise InputError(f"{arg} {str(path)!r}: unsupported format {suffix!r} (expected one of {', '.join(INPUT_SUFFIXES)})")
    try:
        if suffix in (".nii", ".nii.gz"):
            # MONAI's reader, without reorientation: sinco stores the slice as the file lays it out.
            array = np.asarray(_nifti_loader()(str(path)))
        elif suffix == ".npy":
            array = np.load(path, allow_pickle=False)
        elif suffix == ".png":
            from PIL import Image

            with Image.open(path) as img:
                if img.mode not in ("1", "L", "I", "I;16", "I;16B", "I;16L", "F"):
                    raise InputError(f"{arg} {str(path)!r}: {img.mode} image; sinco compresses single-channel greyscale")
                array = np.array(img)
        else:
            import tifffile

            array = tifffile.imread(path)
    except InputError:
        raise
    except Exception as exc:  # noqa: BLE001 - any reader failure means the file is not a usable image
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise InputError(f"{arg} {str(path)!r}: cannot read as {suffix} image ({reason})") from None
    if array.dtype.kind not in "biuf":
        raise InputError(f"{arg} {str(path)!r}: unsupported pixel type {array.dtype}")
    return array


def _nifti_loader():  # noqa: ANN202 - monai.transforms.LoadImage, imported lazily
    """MONAI's ``LoadImage`` with the nibabel reader, built without the noise of MONAI's GPU DICOM plugin.

    ``LoadImage`` builds every reader MONAI knows; with pydicom installed, its nvImageCodec DICOM
    plugin warns (a warning and a log record) that it is unavailable, which says nothing about NIfTI.
    """
    import logging
    import warnings

    from monai.transforms import LoadImage

    plugin_log = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
    level = plugin_log.level
    plugin_log.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="NvImgCodecPydicomReader")
            return LoadImage(image_only=True, reader="NibabelReader")
    finally:
        plugin_log.setLevel(level)


def _select_channel(array: np.ndarray, *, channel: int, arg: str) -> np.ndarray:
    """Channel ``channel`` of a 4-D (channel-last) array; other arrays pass through (``channel`` must be 0)."""
    if array.ndim == 4:
        if not 0 <= channel < array.shape[3]:
            raise InputError(f"--channel {channel}: out of range for {arg} with {array.shape[3]} channels (0..{array.shape[3] - 1})")
        return array[..., channel]
    if channel != 0:
        raise InputError(f"--channel {channel}: {arg} has no channel axis (shape {array.shape})")
    return array


def select_slice(
    array: np.ndarray, *, slice_index: int | None, axis: int = 2, channel: int = 0, arg: str = "INPUT"
) -> np.ndarray:
    """Pick one 2-D slice from a 2-D, 3-D or 4-D array.

    Args:
        array: ``(H, W)``, ``(H, W, D)`` or ``(H, W, D, C)`` (channel last, as Decathlon volumes).
            A trailing axis of size 1 on a 3-D array is dropped (``(H, W, 1)``).
        slice_index: index along ``axis`` for 3-D/4-D arrays; must be ``None`` for 2-D arrays.
        axis: the slicing axis of the spatial volume (0, 1 or 2; 2 = axial for RAS volumes).
        channel: the channel of a 4-D array.
        arg: the input's name for error messages.

    Returns:
        float64 array of shape ``(H', W')``.

    Raises:
        InputError: if a slice is needed but not given, or an index is out of range.
    """
    if array.ndim == 3 and array.shape[2] == 1 and slice_index is None:
        array = array[:, :, 0]
    array = _select_channel(array, channel=channel, arg=arg)
    if array.ndim == 2:
        if slice_index is not None:
            raise InputError(f"--slice {slice_index}: {arg} is already 2-D (shape {array.shape})")
        return array.astype(np.float64)
    if array.ndim != 3:
        raise InputError(f"{arg}: expected a 2-D, 3-D or 4-D image, got shape {array.shape}")
    if axis not in (0, 1, 2):
        raise InputError(f"--axis {axis}: must be 0, 1 or 2")
    if slice_index is None:
        raise InputError(f"{arg}: 3-D volume of shape {array.shape}; choose a 2-D slice with --slice K (along --axis {axis})")
    if not 0 <= slice_index < array.shape[axis]:
        raise InputError(f"--slice {slice_index}: out of range for axis {axis} of size {array.shape[axis]} (0..{array.shape[axis] - 1})")
    return np.take(array, slice_index, axis=axis).astype(np.float64)


def load_slice(
    path: str | os.PathLike[str], *, slice_index: int | None = None, axis: int = 2, channel: int = 0, arg: str = "INPUT"
) -> np.ndarray:
    """Read one 2-D slice from an image file.

    Args:
        path: NIfTI, ``.npy``, PNG or TIFF file.
        slice_index: slice along ``axis`` (needed for volumes).
        axis: slicing axis (default 2, axial).
        channel: modality of a 4-D volume (default 0, FLAIR in Decathlon Task01).
        arg: the command-line argument the path came from.

    Returns:
        float64 array of shape ``(H, W)``.

    Raises:
        InputError: see :func:`load_array` and :func:`select_slice`.
    """
    return select_slice(load_array(path, arg=arg), slice_index=slice_index, axis=axis, channel=channel, arg=arg)


def parse_slice_range(text: str, *, size: int, arg: str = "--slices") -> range:
    """Parse ``all``, ``A:B`` (half-open, like Python), ``A:`` or ``:B`` into slice indices.

    Args:
        text: the range as typed.
        size: number of slices along the axis.
        arg: the option name, for error messages.

    Returns:
        A non-empty ``range`` within ``0..size-1``.

    Raises:
        InputError: if the text is malformed, or the range is empty or out of bounds.
    """
    if text.strip().lower() == "all":
        return range(size)
    parts = text.split(":")
    try:
        if len(parts) != 2:
            raise ValueError
        start = int(parts[0]) if parts[0].strip() else 0
        stop = int(parts[1]) if parts[1].strip() else size
    except ValueError:
        raise InputError(f"{arg} {text!r}: expected 'all' or a range A:B (half-open, e.g. 40:120)") from None
    if not 0 <= start < stop <= size:
        raise InputError(f"{arg} {text!r}: must satisfy 0 <= A < B <= {size} (the axis has {size} slices)")
    return range(start, stop)


def select_slices(
    array: np.ndarray, *, slices: str, axis: int = 2, channel: int = 0, arg: str = "INPUT"
) -> tuple[np.ndarray, range]:
    """Take consecutive slices of a 3-D (or 4-D) volume, stacked along the first axis.

    Args:
        array: ``(H, W, D)`` or ``(H, W, D, C)``.
        slices: ``all`` or ``A:B`` (see :func:`parse_slice_range`).
        axis: slicing axis (0, 1 or 2).
        channel: the channel of a 4-D array.
        arg: the input's name for error messages.

    Returns:
        ``(stack, indices)``: float64 ``(S, H', W')`` and the source indices of its slices.

    Raises:
        InputError: if the array is not a volume, or the range or channel is out of bounds.
    """
    array = _select_channel(array, channel=channel, arg=arg)
    if array.ndim != 3:
        raise InputError(f"--slices: {arg} is not a volume (shape {array.shape}); --slices needs a 3-D or 4-D image")
    if axis not in (0, 1, 2):
        raise InputError(f"--axis {axis}: must be 0, 1 or 2")
    indices = parse_slice_range(slices, size=array.shape[axis])
    stack = np.moveaxis(array, axis, 0)[indices.start : indices.stop]
    return np.ascontiguousarray(stack, dtype=np.float64), indices


def load_affine(path: str | os.PathLike[str], *, arg: str = "INPUT") -> np.ndarray:
    """The voxel-to-world matrix ``(4, 4)`` of a NIfTI file or DICOM input, or the identity for other formats."""
    from sinco.data.dicom import is_dicom_path, read_dicom_affine

    if is_dicom_path(path):
        return read_dicom_affine(path, arg=arg)
    if image_suffix(path) in (".nii", ".nii.gz"):
        import nibabel as nib

        return np.asarray(nib.load(str(path)).affine, dtype=np.float64)
    return np.eye(4)


def save_volume(path: str | os.PathLike[str], volume: np.ndarray, *, axis: int, affine: np.ndarray) -> str:
    """Write decoded slices atomically as a volume in the source's layout: NIfTI or ``.npy``.

    Args:
        path: output file (``.nii.gz``, ``.nii`` or ``.npy``).
        volume: slices ``(S, H, W)`` stacked first, restored intensities.
        axis: the source's slicing axis; the slices are put back along it.
        affine: voxel-to-world matrix ``(4, 4)`` for NIfTI output.

    Returns:
        A short description of what was written.

    Raises:
        InputError: if the suffix is not a volume format or the folder does not exist.
    """
    suffix = image_suffix(path)
    if suffix not in VOLUME_SUFFIXES:
        raise InputError(f"-o {str(path)!r}: a volume is written as {', '.join(VOLUME_SUFFIXES)}, not {suffix!r}")
    array = np.ascontiguousarray(np.moveaxis(volume.astype(np.float32), 0, axis))
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        else:
            import nibabel as nib

            nib.save(nib.Nifti1Image(array, affine=affine), str(tmp))
    return f"restored intensities, float32, shape {array.shape}"


def save_image(path: str | os.PathLike[str], *, scaled: np.ndarray, vmin: float, vmax: float) -> str:
    """Write a decoded image atomically, in the format the suffix names.

    ``.npy``, ``.nii``/``.nii.gz`` and ``.tif``/``.tiff`` hold the restored intensities as float32.
    ``.png`` is 16-bit: the restored intensities rounded when the original range is integer and
    within 0..65535 (an 8/16-bit source), otherwise the ``[0, 1]`` image scaled to 0..65535.

    Args:
        path: output file.
        scaled: decoded image ``(H, W)`` in ``[0, 1]``.
        vmin: original minimum intensity.
        vmax: original maximum intensity.

    Returns:
        A short description of what was written (for the CLI to print).

    Raises:
        InputError: if the suffix is not supported or the folder does not exist.
    """
    from sinco.data.intensity import restore_intensity

    suffix = image_suffix(path)
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {str(path)!r}: unsupported output format {suffix!r} (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    restored = restore_intensity(scaled, vmin=vmin, vmax=vmax)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, restored)
            what = "restored intensities, float32"
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            nib.save(nib.Nifti1Image(restored, affine=np.eye(4)), str(tmp))
            what = "restored intensities, float32, identity affine"
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, restored)
            what = "restored intensities, float32"
        else:
            from PIL import Image

            if float(vmin).is_integer() and float(vmax).is_integer() and 0 <= vmin and vmax <= 65535:
                pixels = np.clip(np.rint(restored.astype(np.float64)), 0, 65535).astype(np.uint16)
                what = "restored intensities, 16-bit"
            else:
                pixels = np.rint(scaled.astype(np.float64) * 65535).astype(np.uint16)
                what = f"16-bit, 0..65535 = intensities {vmin:.6g}..{vmax:.6g}"
            Image.fromarray(pixels).save(tmp, format="PNG")
    return what


def save_mask(path: str | os.PathLike[str], mask: np.ndarray) -> None:
    """Write a binary mask atomically: uint8 0/1 (``.npy``, NIfTI), or 0/255 greyscale (``.png``).

    Args:
        path: output file with a suffix from :data:`MASK_SUFFIXES`.
        mask: ``(H, W)``, nonzero = foreground.

    Raises:
        InputError: if the suffix is not supported or the folder does not exist.
    """
    suffix = image_suffix(path)
    if suffix not in MASK_SUFFIXES:
        raise InputError(f"-o {str(path)!r}: unsupported mask format (expected one of {', '.join(MASK_SUFFIXES)})")
    binary = (np.asarray(mask) != 0).astype(np.uint8)
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, binary)
        elif suffix == ".png":
            from PIL import Image

            Image.fromarray(binary * 255).save(tmp, format="PNG")
        else:
            import nibabel as nib

            nib.save(nib.Nifti1Image(binary, affine=np.eye(4)), str(tmp))


def exact_dtype(values: np.ndarray) -> np.dtype:
    """The smallest of uint8, uint16, int16, int32 holding integer ``values`` (float64 for non-integers)."""
    if values.dtype.kind == "f":
        return np.dtype(np.float64)
    low, high = int(values.min()), int(values.max())
    for dtype in (np.uint8, np.uint16, np.int16, np.int32):
        info = np.iinfo(dtype)
        if info.min <= low and high <= info.max:
            return np.dtype(dtype)
    return np.dtype(np.int64)


def save_exact(path: str | os.PathLike[str], values: np.ndarray, *, affine: np.ndarray | None = None) -> str:
    """Write the values of a lossless or near-lossless file atomically: integers in the smallest integer type that
    holds them (PNG: 8 or 16 bits), float lattices as float32 (``.png`` refuses them).

    Args:
        path: output file (``.npy``, ``.png``, ``.tif``/``.tiff``, ``.nii``/``.nii.gz``).
        values: ``(H, W)`` or a volume ``(S, H, W)`` already in the source's layout.
        affine: voxel-to-world matrix of NIfTI output (identity if None).

    Returns:
        A short description of what was written.

    Raises:
        InputError: for an unsupported suffix, or float values to PNG.
    """
    suffix = image_suffix(path)
    if suffix not in OUTPUT_SUFFIXES:
        raise InputError(f"-o {str(path)!r}: unsupported output format {suffix!r} (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    dtype = exact_dtype(values)
    array = values.astype(np.float32 if dtype.kind == "f" else dtype)
    if suffix == ".png" and (array.ndim != 2 or dtype.kind == "f" or dtype not in (np.uint8, np.uint16)):
        raise InputError(f"-o {str(path)!r}: PNG holds 8/16-bit unsigned images; these levels are {array.dtype}: write .npy, .tif or NIfTI")
    with atomic_path(path) as tmp:
        if suffix == ".npy":
            with open(tmp, "wb") as handle:
                np.save(handle, array)
        elif suffix in (".nii", ".nii.gz"):
            import nibabel as nib

            nib.save(nib.Nifti1Image(array, affine=np.eye(4) if affine is None else affine), str(tmp))
        elif suffix in (".tif", ".tiff"):
            import tifffile

            tifffile.imwrite(tmp, array)
        else:
            from PIL import Image

            Image.fromarray(array).save(tmp, format="PNG")
    return f"exact levels, {array.dtype}"
