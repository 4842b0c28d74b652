"""The Python API: compress an array, a volume or a file to ``.sinco`` bytes, and decode them back.

Every function validates its arguments first and raises the errors the command line prints
(:class:`~sinco.errors.InputError` for a bad argument or input, :class:`~sinco.errors.BitstreamError` for an invalid
file), each naming the parameter and value. The files are exactly those ``sinco compress`` writes.

Example::

    import numpy as np
    import sinco

    image = np.load("slice.npy")                       # (H, W), any real intensities
    data = sinco.compress(image, bpp=1.2)              # the default family (grid), preset fast
    restored = sinco.decompress(data)                  # (H, W) float32, in the input's intensities
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sinco.codec.registry import DEFAULT_FAMILY
from sinco.errors import InputError


def _configs(*, arch: str, bpp: float, preset: str | None, seed: int, options: Mapping[str, Any] | None,
             fit_options: Mapping[str, Any] | None) -> tuple[Any, Any]:  # fmt: skip
    from sinco.codec.config import CodecConfig
    from sinco.codec.registry import fit_config

    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise InputError(f"seed {seed!r}: expected a non-negative integer")
    if not isinstance(bpp, (int, float)) or isinstance(bpp, bool):
        raise InputError(f"bpp {bpp!r}: expected a positive number")
    codec = CodecConfig(arch=arch, bpp=float(bpp), options=dict(options or {}))
    return codec, fit_config(arch, preset, {**dict(fit_options or {}), "seed": seed})


def _device(device: str) -> Any:
    from sinco.utils.device import resolve_device

    if not isinstance(device, str):
        raise InputError(f"device {device!r}: expected 'auto', 'cpu', 'cuda' or 'cuda:N'")
    return resolve_device(device)


def _as_array(values: Any, *, name: str, ndim: int) -> np.ndarray:
    array = np.asarray(values)
    if array.ndim != ndim or not np.issubdtype(array.dtype, np.number) or np.issubdtype(array.dtype, np.complexfloating):
        raise InputError(f"{name}: expected a real {ndim}-D array, got {array.dtype} of shape {array.shape}")
    if not np.all(np.isfinite(array)):
        raise InputError(f"{name}: contains NaN or Inf")
    return array


def compress(
    image: Any, *, bpp: float = 1.2, arch: str = DEFAULT_FAMILY, preset: str | None = None, seed: int = 0, device: str = "auto",
    options: Mapping[str, Any] | None = None, fit_options: Mapping[str, Any] | None = None, progress: bool = False,
) -> bytes:  # fmt: skip
    """Compress a 2-D image to the bytes of a ``.sinco`` file.

    The image is scaled to ``[0, 1]`` by its own minimum and maximum (stored in the header, so decoding restores its
    intensities), fitted by the codec family ``arch`` at ``bpp`` bits per pixel of the whole file, and encoded.

    Args:
        image: ``(H, W)`` real values, at least 11 x 11 (the SSIM window every result is measured with), not constant.
        bpp: target bits per pixel of the whole file, header included.
        arch: a codec family (:func:`sinco.codec.registry.all_families`): ``grid`` (default), ``siren`` or ``pe-mlp``.
        preset: the family's fitting preset (``None``: its default; ``grid``: ``fast``, ``quality``, ``long``).
        seed: seed of the fit: the same seed, input, device and thread count give the same bytes.
        device: ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (decoding always runs on the CPU).
        options: the family's codec options (e.g. ``{"upsampling": "bicubic"}``).
        fit_options: the family's fitting options (e.g. ``{"steps": 300}`` or ``{"lambda_rd": 1e-4}``).
        progress: show a progress bar on stderr.

    Returns:
        The file's bytes (``decompress`` reads them; ``sinco info`` describes them once written to disk).

    Raises:
        InputError: for a bad argument (naming it), an image that cannot be coded, or a rate the family cannot meet.

    Example::

        data = sinco.compress(image, bpp=0.6, preset="quality")
        len(data) * 8 / image.size  # <= 0.6
    """
    from sinco.compression.image import compress_images
    from sinco.data.intensity import normalize_minmax

    array = _as_array(image, name="image", ndim=2)
    codec, fit_config = _configs(arch=arch, bpp=bpp, preset=preset, seed=seed, options=options, fit_options=fit_options)
    scaled, vmin, vmax = normalize_minmax(array, name="image")
    result = compress_images([scaled], ranges=[(vmin, vmax)], codec=codec, fit_config=fit_config, device=_device(device), progress=progress)
    return result[0].data


def compress_volume(
    volume: Any, *, bpp: float = 1.2, arch: str = DEFAULT_FAMILY, preset: str | None = None, seed: int = 0, device: str = "auto",
    options: Mapping[str, Any] | None = None, fit_options: Mapping[str, Any] | None = None, affine: Any = None,
    axis: int = 2, first_index: int = 0, progress: bool = False,
) -> bytes:  # fmt: skip
    """Compress the slices of a volume to the bytes of a ``.sinco`` volume file (what ``compress --slices`` writes).

    Args:
        volume: ``(S, H, W)`` real values: the slices, stacked along the first axis.
        bpp: target bits per pixel of each slice's record.
        arch: a codec family (see :func:`compress`).
        preset: the family's fitting preset.
        seed: seed of every slice's fit.
        device: where to fit.
        options: the family's codec options.
        fit_options: the family's fitting options.
        affine: the source's voxel-to-world matrix ``(4, 4)`` (default: identity).
        axis: the slicing axis in the source (0, 1 or 2; decoding to NIfTI puts the slices back along it).
        first_index: the source index of ``volume[0]``.
        progress: progress bars on stderr.

    Returns:
        The volume file's bytes.

    Raises:
        InputError: for a bad argument, naming it.

    Example::

        data = sinco.compress_volume(np.stack(slices), bpp=1.0)
        sinco.decompress(data).shape  # (S, H, W)
    """
    from sinco.compression.volume import compress_volume as compress_slices

    array = _as_array(volume, name="volume", ndim=3).astype(np.float32)
    codec, fit_config = _configs(arch=arch, bpp=bpp, preset=preset, seed=seed, options=options, fit_options=fit_options)
    matrix = np.eye(4) if affine is None else np.asarray(affine, dtype=np.float64)
    if axis not in (0, 1, 2):
        raise InputError(f"axis {axis!r}: expected 0, 1 or 2")
    if not isinstance(first_index, int) or first_index < 0:
        raise InputError(f"first_index {first_index!r}: expected a non-negative integer")
    result = compress_slices(array, first_index=first_index, axis=axis, affine=matrix, codec=codec, fit_config=fit_config,
                             device=_device(device), progress=progress)  # fmt: skip
    return result.data


def decompress(data: bytes) -> np.ndarray:
    """Decode the bytes of a ``.sinco`` file (one image or a volume) to its intensities.

    Args:
        data: the whole file.

    Returns:
        float32 ``(H, W)`` for an image file, ``(S, H, W)`` for a volume file, in the original intensity units; a
        lossless or near-lossless file gives its exact values instead (int64 integers, or float64 on a float lattice).

    Raises:
        BitstreamError: if ``data`` is not a valid ``.sinco`` file (see SECURITY.md).
        InputError: if ``data`` is not bytes.

    Example::

        restored = sinco.decompress(open("slice.sinco", "rb").read())
    """
    from sinco.codec.files import decode_file
    from sinco.codec.grid.lossless import exact_values, exact_volume
    from sinco.codec.volume import decode_volume, is_volume_file
    from sinco.data.intensity import restore_intensity

    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise InputError(f"data: expected the bytes of a .sinco file, got {type(data).__name__}")
    data = bytes(data)
    if is_volume_file(data):
        exact = exact_volume(data)  # lossless and near-lossless volumes: their slices decode in order, as levels
        return decode_volume(data)[1] if exact is None else exact
    exact = exact_values(data)
    if exact is not None:
        return exact
    parsed, image = decode_file(data)
    return restore_intensity(image, vmin=parsed.vmin, vmax=parsed.vmax)


def compress_file(
    input: str | os.PathLike[str], output: str | os.PathLike[str], *, slice: int | None = None, slices: str | None = None,
    axis: int = 2, channel: int = 0, bpp: float = 1.2, arch: str = DEFAULT_FAMILY, preset: str | None = None, seed: int = 0,
    device: str = "auto", options: Mapping[str, Any] | None = None, fit_options: Mapping[str, Any] | None = None,
    force: bool = False, progress: bool = False,
) -> int:  # fmt: skip
    """Compress an image file (NIfTI, DICOM, NumPy, PNG, TIFF) or some of its slices to a ``.sinco`` file, atomically.

    Args:
        input: the image file (or a DICOM series folder).
        output: the ``.sinco`` file to write.
        slice: the slice of a 3-D/4-D input to code (``None``: a 2-D input).
        slices: ``"all"`` or ``"A:B"``: code those slices of a volume into a volume file instead.
        axis: the slicing axis.
        channel: the channel of a 4-D input.
        bpp: target bits per pixel.
        arch: a codec family (see :func:`compress`).
        preset: the family's fitting preset.
        seed: seed of the fit.
        device: where to fit.
        options: the family's codec options.
        fit_options: the family's fitting options.
        force: replace an existing ``output``.
        progress: progress bars on stderr.

    Returns:
        The size of the file written, in bytes.

    Raises:
        InputError: for a bad argument, an unreadable input, or an existing output without ``force``.

    Example::

        sinco.compress_file("flair.nii.gz", "s85.sinco", slice=85, bpp=1.2)
    """
    from sinco.data.io import load_affine, load_array, load_slice, select_slices
    from sinco.utils.atomic import atomic_write_bytes, check_output_path

    out = check_output_path(output, inputs=[input], force=force)
    if slice is not None and slices is not None:
        raise InputError("slice and slices: give one (slice=K for one slice, slices='all' or 'A:B' for a volume)")
    common = dict(bpp=bpp, arch=arch, preset=preset, seed=seed, device=device, options=options, fit_options=fit_options, progress=progress)
    if slices is not None:
        stack, indices = select_slices(load_array(input), slices=slices, axis=axis, channel=channel)
        data = compress_volume(stack, affine=load_affine(input), axis=axis, first_index=indices.start, **common)
    else:
        data = compress(load_slice(input, slice_index=slice, axis=axis, channel=channel), **common)
    atomic_write_bytes(out, data)
    return len(data)


def decompress_file(input: str | os.PathLike[str], output: str | os.PathLike[str], *, force: bool = False) -> Path:
    """Decode a ``.sinco`` file to an image file (``.npy``, ``.png``, ``.tif``, ``.nii.gz``; volumes to ``.npy`` or NIfTI).

    Args:
        input: the ``.sinco`` file.
        output: the image file to write (atomically).
        force: replace an existing ``output``.

    Returns:
        The path written.

    Raises:
        InputError: for an unsupported output format or an existing output without ``force``.
        BitstreamError: for an invalid ``.sinco`` file.

    Example::

        sinco.decompress_file("s85.sinco", "s85.nii.gz")
    """
    from sinco.codec.files import decode_file
    from sinco.codec.format import read_file
    from sinco.codec.volume import decode_volume, is_volume_file
    from sinco.data.io import OUTPUT_SUFFIXES, VOLUME_SUFFIXES, image_suffix, save_image, save_volume
    from sinco.utils.atomic import check_output_path

    if image_suffix(output) not in OUTPUT_SUFFIXES:
        raise InputError(f"output {str(output)!r}: unsupported format (expected one of {', '.join(OUTPUT_SUFFIXES)})")
    data = read_file(input, arg="input")
    out = check_output_path(output, inputs=[input], force=force)
    if is_volume_file(data):
        if image_suffix(output) not in VOLUME_SUFFIXES:
            raise InputError(f"output {str(output)!r}: {str(input)!r} is a volume; write it as {', '.join(VOLUME_SUFFIXES)}")
        header, volume, _ = decode_volume(data)
        save_volume(out, volume, axis=header.axis, affine=header.affine)
    else:
        parsed, image = decode_file(data)
        save_image(out, scaled=image, vmin=parsed.vmin, vmax=parsed.vmax)
    return out
