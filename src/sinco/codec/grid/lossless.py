"""Lossless and near-lossless files: integer grey levels coded by the context coder (:mod:`sinco.codec.grid.context`).

An image is taken on its lattice: integer pixels as they are (level = value - minimum), float pixels whose values
are ``offset + k step`` for integers ``k`` (the BraTS z-scores: a scan's integers, shifted and scaled) as ``k``.
*Exact* means: the decoded levels equal the input's levels; integer images come back as the same integers, float
lattices as ``offset + k step`` (float64, then the input's float type), which equal the input's values up to their
own floating-point rounding (at most :data:`LATTICE_TOLERANCE` of a step; the encoder measures it). With
``max_error = N`` every decoded level is within ``N`` of the input's.

The file is an ordinary ``.sinco`` file of the grid family whose payload is of version 3
(:mod:`sinco.codec.grid.payload`): its header's intensity range is ``offset .. offset + top step``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, replace

import numpy as np

from sinco.codec.grid.context import MAX_TOP, decode, encode
from sinco.codec.grid.context_fit import ContextFitConfig, fit_context
from sinco.errors import InputError

#: How far (in steps) a float pixel may lie from its lattice point and still count as on it (float32 rounding of the
#: BraTS z-scores is below 1e-4 of a step).
LATTICE_TOLERANCE = 1e-3


@dataclass(frozen=True)
class Lattice:
    """The grey-level lattice of an image: value ``offset + k step`` for level ``k`` in ``0..top``.

    Args:
        offset: the value of level 0 (the image's minimum).
        step: the value between neighbouring levels (1 for integer images).
        top: the largest level.
        integer: whether the source holds integers (restored as integers).
    """

    offset: float
    step: float
    top: int
    integer: bool

    @property
    def vmax(self) -> float:
        """The value of the largest level."""
        return self.offset + self.top * self.step


def find_lattice(values: np.ndarray, *, name: str = "image") -> Lattice:
    """The lattice of an image (or volume), or a one-line refusal.

    Args:
        values: pixels of any real type.
        name: how errors refer to the input.

    Returns:
        The :class:`Lattice`.

    Raises:
        InputError: for non-finite values, a constant image, float values that lie on no lattice, or more than
            ``MAX_TOP + 1`` levels.
    """
    array = np.asarray(values)
    if array.dtype.kind not in "biuf" or array.size == 0:
        raise InputError(f"{name}: expected real-valued pixels, got {array.dtype} of shape {array.shape}")
    if array.dtype.kind == "f" and not np.all(np.isfinite(array)):
        raise InputError(f"{name}: contains NaN or Inf; --lossless codes finite grey levels only")
    low, high = array.min(), array.max()
    if low == high:
        raise InputError(f"{name}: constant image (every pixel is {low}); nothing to compress")
    if array.dtype.kind in "biu" or np.array_equal(array, np.rint(array)):
        top = int(high) - int(low)
        if top > MAX_TOP:
            raise InputError(f"{name}: integer values span {top + 1} levels ({low}..{high}); --lossless codes at most {MAX_TOP + 1}")
        return Lattice(offset=float(low), step=1.0, top=top, integer=True)
    return _float_lattice(array.astype(np.float64), name=name)


def _float_lattice(array: np.ndarray, *, name: str) -> Lattice:
    values = np.unique(array)
    if values.size > MAX_TOP + 1:
        raise InputError(f"{name}: float values on no lattice of at most {MAX_TOP + 1} levels ({values.size} distinct values); "
                         "--lossless takes integer images or floats on an integer lattice")  # fmt: skip
    gap = float(np.diff(values).min())
    offset = float(values[0])
    levels = np.rint((values - offset) / gap)
    # Least squares over every distinct value: the smallest gap alone carries the rounding of two values.
    step = float(np.dot(levels, values - offset) / np.dot(levels, levels))
    levels = np.rint((values - offset) / step)
    deviation = float(np.abs(values - offset - levels * step).max()) / step
    top = int(levels[-1])
    if deviation > LATTICE_TOLERANCE or top > MAX_TOP:
        raise InputError(f"{name}: float values are not on an integer lattice (off by {deviation:.3g} of the smallest step "
                         f"{gap:.6g}); --lossless takes integer images or floats on an integer lattice")  # fmt: skip
    return Lattice(offset=offset, step=step, top=top, integer=False)


def to_levels(values: np.ndarray, lattice: Lattice) -> np.ndarray:
    """The levels ``round((value - offset) / step)``, int64, of values on ``lattice``."""
    return np.rint((np.asarray(values, np.float64) - lattice.offset) / lattice.step).astype(np.int64)


def restore_levels(levels: np.ndarray, *, vmin: float, vmax: float, top: int) -> np.ndarray:
    """The values of levels ``0..top`` for a file whose intensity range is ``vmin .. vmax``: integers (int64) when the
    range is integral with one level per unit, else ``vmin + k (vmax - vmin) / top`` float64."""
    if float(vmin).is_integer() and vmax - vmin == top:
        return levels.astype(np.int64) + int(vmin)
    return vmin + levels.astype(np.float64) * ((vmax - vmin) / top)


@dataclass(frozen=True)
class ExactResult:
    """A lossless or near-lossless ``.sinco`` file and what the encoder measured on its decoding.

    Args:
        data: the file's bytes.
        lattice: the input's lattice.
        max_error: the bound ``N`` the file records.
        measured_error: the largest ``|decoded - input|`` in levels (never above ``max_error``).
        encode_seconds: fitting and coding.
        decode_seconds: decoding the file back (the check).
    """

    data: bytes
    lattice: Lattice
    max_error: int
    measured_error: int
    encode_seconds: float
    decode_seconds: float

    @property
    def bits_per_pixel(self) -> float:
        """The whole file's bits per pixel."""
        from sinco.codec.files import parse_file

        header = parse_file(self.data).header
        return 8 * len(self.data) / header.n_pixels


def encode_levels(levels: np.ndarray, *, top: int, max_error: int = 0, offset: float = 0.0, step: float = 1.0,
                  config: ContextFitConfig | None = None) -> bytes:  # fmt: skip
    """A ``.sinco`` file of integer levels, exact (``max_error`` 0) or within ``max_error`` levels.

    This is the coder's entry point for benchmarks: it takes levels as they are.

    Args:
        levels: ``(H, W)`` integers in ``0..top``.
        top: the largest level (``1..65535``).
        max_error: the largest error allowed, ``0..top // 2`` (JPEG-LS's NEAR).
        offset: the value of level 0 (the header's minimum).
        step: the value between levels (the header's maximum is ``offset + top step``).
        config: the context model's fitting settings (default :class:`ContextFitConfig`).

    Returns:
        The file's bytes; :func:`decode_levels` reads them back.

    Raises:
        InputError: on levels outside ``0..top``, a ``top`` or ``max_error`` out of range.

    Example::

        data = encode_levels(image.astype(np.int64), top=255, max_error=2)
        assert np.abs(decode_levels(data) - image).max() <= 2
    """
    from sinco.codec.files import write_file
    from sinco.codec.grid.payload import context_payload
    from sinco.codec.grid.spec import GridSpec

    levels = np.asarray(levels)
    try:
        model = fit_context(levels, top=top, near=max_error, config=config or ContextFitConfig())
        section, decoded = encode(levels, model)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    if np.abs(decoded - levels).max() > max_error:
        raise RuntimeError(f"internal error: the context coder broke its bound of {max_error} levels")
    height, width = levels.shape
    return write_file(family="grid", spec=GridSpec(), payload=context_payload(section), height=height, width=width,
                      vmin=offset, vmax=offset + top * step)  # fmt: skip


def decode_levels(data: bytes) -> np.ndarray:
    """The levels ``(H, W)`` int64 of a lossless or near-lossless ``.sinco`` file.

    Raises:
        BitstreamError: if the file is invalid, corrupted, or not a lossless or near-lossless file.
    """
    from sinco.codec.files import parse_file
    from sinco.codec.grid.payload import context_section
    from sinco.errors import BitstreamError

    parsed = parse_file(data)
    section = context_section(parsed.payload) if parsed.family == "grid" else None
    if section is None:
        raise BitstreamError("not a lossless or near-lossless .sinco file (no context-coded levels)")
    levels, _ = decode(section, height=parsed.height, width=parsed.width)
    return levels


def exact_values(data: bytes) -> np.ndarray | None:
    """The restored values of a lossless or near-lossless ``.sinco`` file (:func:`restore_levels`), or None for
    another file.

    Raises:
        BitstreamError: if the file is invalid or corrupted.
    """
    from sinco.codec.files import parse_file
    from sinco.codec.grid.context import section_summary
    from sinco.codec.grid.payload import context_section

    parsed = parse_file(data)
    section = context_section(parsed.payload) if parsed.family == "grid" else None
    if section is None:
        return None
    levels, _ = decode(section, height=parsed.height, width=parsed.width)
    return restore_levels(levels, vmin=parsed.vmin, vmax=parsed.vmax, top=section_summary(section)["top"])


def compress_exact(values: np.ndarray, *, max_error: int = 0, config: ContextFitConfig | None = None,
                   name: str = "image") -> ExactResult:  # fmt: skip
    """Compress an image on its lattice, exactly or within ``max_error`` levels, and check the file by decoding it.

    Args:
        values: ``(H, W)`` pixels: integers, or floats on an integer lattice (:func:`find_lattice`).
        max_error: the largest error allowed in levels (``0``: lossless).
        config: the context model's fitting settings.
        name: how errors refer to the input.

    Returns:
        The :class:`ExactResult`.

    Raises:
        InputError: for an image off a lattice (one line naming why), or ``max_error`` outside ``0..top // 2``.

    Example::

        result = compress_exact(np.load("slice.npy"), max_error=0)
        open("slice.sinco", "wb").write(result.data)
    """
    array = np.asarray(values)
    if array.ndim != 2:
        raise InputError(f"{name}: expected a 2-D image, got shape {array.shape}")
    lattice = find_lattice(array, name=name)
    check_max_error(max_error, top=lattice.top)
    levels = to_levels(array, lattice)
    started = time.perf_counter()
    data = encode_levels(levels, top=lattice.top, max_error=max_error, offset=lattice.offset, step=lattice.step, config=config)
    encoded = time.perf_counter()
    decoded = decode_levels(data)
    seconds = time.perf_counter() - encoded
    error = int(np.abs(decoded - levels).max())
    if error > max_error:
        raise RuntimeError(f"internal error: the decoded file is {error} levels off, above --max-error {max_error}")
    return ExactResult(data=data, lattice=lattice, max_error=max_error, measured_error=error,
                       encode_seconds=encoded - started, decode_seconds=seconds)  # fmt: skip


def check_max_error(max_error: int, *, top: int) -> None:
    """Refuse a bound outside ``0..top // 2`` (beyond it every pixel could be coded as one level).

    Raises:
        InputError: naming ``--max-error`` and the range.
    """
    if not isinstance(max_error, (int, np.integer)) or isinstance(max_error, bool) or not 0 <= max_error <= top // 2:
        raise InputError(f"--max-error {max_error}: must be an integer in 0..{top // 2} (half the image's {top + 1} levels)")


@dataclass(frozen=True)
class ExactVolume:
    """A lossless or near-lossless ``.sinco`` volume file and its figures.

    Args:
        data: the volume file's bytes.
        max_error: the bound every fitted slice records.
        measured_error: the largest ``|decoded - input|`` in levels over the volume.
        fitted_slices: slices coded by the context coder (the others are constant).
        encode_seconds: fitting and coding, all slices.
        decode_seconds: decoding every slice back (the check).
    """

    data: bytes
    max_error: int
    measured_error: int
    fitted_slices: int
    encode_seconds: float
    decode_seconds: float


def compress_exact_volume(volume: np.ndarray, *, max_error: int = 0, config: ContextFitConfig | None = None, first_index: int = 0,
                          axis: int = 2, affine: np.ndarray | None = None, previous_slice: bool | None = None) -> ExactVolume:  # fmt: skip
    """Compress the slices ``(S, H, W)`` of a volume on the volume's lattice into a ``.sinco`` volume file.

    One context model serves every slice (:func:`~sinco.codec.grid.context_fit.fit_shared`): its networks are sent
    once, with the first fitted slice; with ``previous_slice`` each slice also reads the decoded slice before it.
    Such records decode only inside their volume (:func:`exact_volume`). A constant slice is a 9-byte record.

    Args:
        volume: ``(S, H, W)`` integers or floats on an integer lattice.
        max_error: the largest error allowed in levels.
        config: the fitting settings (its steps per four slices).
        first_index: the source index of ``volume[0]``.
        axis: the source's slicing axis.
        affine: the source's voxel-to-world matrix (identity if None).
        previous_slice: whether each slice reads the previous one (None: when :func:`slices_alike`).

    Returns:
        The :class:`ExactVolume`.

    Raises:
        InputError: as :func:`compress_exact`.
    """
    from sinco.codec.files import write_file
    from sinco.codec.grid.context_fit import fit_shared
    from sinco.codec.grid.payload import context_payload
    from sinco.codec.grid.spec import GridSpec
    from sinco.codec.volume import SliceRecord, VolumeHeader, encode_volume

    array = np.asarray(volume)
    if array.ndim != 3:
        raise InputError(f"volume: expected slices (S, H, W), got shape {array.shape}")
    lattice = find_lattice(array, name="volume")
    check_max_error(max_error, top=lattice.top)
    levels = to_levels(array, lattice)
    fitted = [k for k in range(len(levels)) if levels[k].min() != levels[k].max()]
    started = time.perf_counter()
    if not fitted:
        raise InputError("volume: every slice is constant; nothing to fit (the volume is one value per slice)")
    if previous_slice is None:
        previous_slice = slices_alike(levels)
    model = fit_shared([levels[k] for k in fitted], top=lattice.top, near=max_error, previous=previous_slice, config=config or ContextFitConfig())
    records, decoded_previous = [], np.zeros_like(levels[0])
    for k, plane in enumerate(levels):
        if k not in fitted:
            records.append(SliceRecord(constant=float(lattice.offset + int(plane.flat[0]) * lattice.step)))
            decoded_previous = plane
            continue
        section, decoded_previous = encode(plane, model, planes=[decoded_previous] if previous_slice else [], with_networks=k == fitted[0])
        data = write_file(family="grid", spec=GridSpec(), payload=context_payload(section), height=plane.shape[0], width=plane.shape[1],
                          vmin=lattice.offset, vmax=lattice.vmax)  # fmt: skip
        records.append(SliceRecord(data=data))
    encoded = time.perf_counter()
    header = VolumeHeader(axis=axis, height=array.shape[1], width=array.shape[2], n_slices=array.shape[0], first_index=first_index,
                          affine=np.eye(4) if affine is None else np.asarray(affine, np.float64))  # fmt: skip
    data = encode_volume(header, records)
    decoded = exact_levels_of_volume(data)
    error = int(np.abs(decoded - levels).max())
    if error > max_error:
        raise RuntimeError(f"internal error: the decoded volume is {error} levels off, above --max-error {max_error}")
    return ExactVolume(data=data, max_error=max_error, measured_error=error, fitted_slices=len(fitted),
                       encode_seconds=encoded - started, decode_seconds=time.perf_counter() - encoded)  # fmt: skip


#: Consecutive slices that differ by more than this times the in-slice median predictor's error are too far apart
#: for the previous slice to pay (an LGG slab: 3.5, 1.9% more bits with it; a 1 mm BraTS slab: 1.8, 3.1% fewer).
SLICE_LIKENESS = 2.5


def slices_alike(levels: np.ndarray) -> bool:
    """Whether the slices ``(S, H, W)`` are close enough for each to read the previous one: the mean absolute
    difference of consecutive slices within :data:`SLICE_LIKENESS` times that of LOCO-I's median predictor in-slice."""
    from sinco.codec.grid.context import median_predictor

    if len(levels) < 2:
        return False
    values = levels.astype(np.int64)
    padded = np.pad(values, ((0, 0), (1, 0), (1, 0)))
    intra = np.abs(values - median_predictor(padded[:, 1:, :-1], padded[:, :-1, 1:], padded[:, :-1, :-1])).mean()
    inter = np.abs(np.diff(values, axis=0)).mean()
    return bool(inter <= SLICE_LIKENESS * max(intra, 1e-9))


def exact_levels_of_volume(data: bytes) -> np.ndarray | None:
    """The levels ``(S, H, W)`` int64 of a volume whose fitted slices are all context-coded (slice by slice in order:
    a slice may read the networks of the volume's first one and the slice before it), or None for another volume.

    Raises:
        BitstreamError: if the file is invalid or corrupted.
    """
    decoded = _decode_volume_levels(data)
    return None if decoded is None else decoded[0]


def _decode_volume_levels(data: bytes) -> tuple[np.ndarray, float, float, int] | None:
    from sinco.codec.files import parse_file
    from sinco.codec.grid.context import section_summary
    from sinco.codec.grid.payload import context_section
    from sinco.codec.volume import decode_volume_file, is_slab_volume
    from sinco.errors import BitstreamError

    if is_slab_volume(data):
        return None  # slabs of a volume family: no slice records
    header, records = decode_volume_file(data)
    parsed = [None if r.data is None else parse_file(r.data) for r in records]
    sections = [None if f is None else (context_section(f.payload) if f.family == "grid" else None) for f in parsed]
    if any(f is not None and s is None for f, s in zip(parsed, sections, strict=True)) or all(f is None for f in parsed):
        return None
    first = next(f for f in parsed if f is not None)
    vmin, vmax, top = first.vmin, first.vmax, section_summary(next(s for s in sections if s is not None))["top"]
    if any(f is not None and (f.vmin, f.vmax) != (vmin, vmax) for f in parsed):
        return None  # slices on their own lattices: not one volume's levels
    step = (vmax - vmin) / top
    volume = np.empty((header.n_slices, header.height, header.width), np.int64)
    previous, shared = np.zeros((header.height, header.width), np.int64), None
    for k, (record, section) in enumerate(zip(records, sections, strict=True)):
        if section is None:
            level = round((record.constant - vmin) / step)
            if not 0 <= level <= top:
                raise BitstreamError(f"corrupted .sinco volume file: constant slice {k} off its volume's levels")
            volume[k] = level
        else:
            planes = [previous] if section_summary(section)["planes"] else []
            volume[k], model = decode(section, height=header.height, width=header.width, planes=planes, shared=shared)
            shared = model.networks if shared is None else shared
        previous = volume[k]
    return volume, vmin, vmax, top


def exact_volume(data: bytes) -> np.ndarray | None:
    """The restored values ``(S, H, W)`` of a volume whose fitted slices are all context-coded (int64 when the levels
    are integers, else float64), or None for another volume.

    Raises:
        BitstreamError: if the file is invalid or corrupted.
    """
    decoded = _decode_volume_levels(data)
    if decoded is None:
        return None
    levels, vmin, vmax, top = decoded
    return restore_levels(levels, vmin=vmin, vmax=vmax, top=top)


#: Fitting steps of the context model inside a lossy rate search (a share of the search's time; the bound is then
#: chosen by coding only).
SEARCH_STEPS = 200
#: How far above the budget JPEG-LS's file may be for the context coder to be worth fitting (it codes 15-23% smaller).
PROXY_MARGIN = 1.3


def _bound_to_beat(levels: np.ndarray, *, mse_levels: float) -> int:
    """The coarsest bound ``K`` whose near-lossless error on ``levels`` is below ``mse_levels`` (squared levels); -1
    when even lossless (0) is not.

    The error at ``K`` is JPEG-LS's at ``NEAR = K`` (CharLS, milliseconds), measured: on a brain slice most pixels
    lie in flat background that near-lossless coding keeps exact, so the error is far below the ``K (K + 1) / 3``
    of an error uniform in ``[-K, K]`` (BraTS pat0003 slice 96, 643 levels: 0.67 squared levels at ``K = 1`` by
    that formula, which ruled out the file of 63.2 dB at 1.06 bpp that the context coder makes there). Beyond
    CharLS's largest NEAR the uniform figure stands in. The error grows with ``K``: bisection.
    """
    if mse_levels <= 0:
        return -1

    def error(near: int) -> float:
        if near > JPEGLS_MAX_NEAR:
            return near * (near + 1) / 3
        return float(np.mean((_jpegls_decoded(levels, near=near) - levels) ** 2))

    low, high = 0, int(levels.max() - levels.min()) // 2 + 1  # low: below mse_levels (lossless is exact); high: not, or past the end
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (middle, high) if error(middle) < mse_levels else (low, middle)
    return low


#: The largest NEAR CharLS accepts.
JPEGLS_MAX_NEAR = 255


def _jpegls_decoded(levels: np.ndarray, *, near: int) -> np.ndarray:
    """The levels JPEG-LS (CharLS) at ``NEAR = near`` decodes to, int64."""
    import imagecodecs

    dtype = np.uint8 if levels.max() < 256 else np.uint16
    return imagecodecs.jpegls_decode(imagecodecs.jpegls_encode(levels.astype(dtype), level=near)).astype(np.int64)


def _jpegls_bytes(levels: np.ndarray, *, near: int) -> int:
    """Bytes of JPEG-LS (CharLS) at ``NEAR = near`` on the levels: the context coder's cheap proxy."""
    import imagecodecs

    dtype = np.uint8 if levels.max() < 256 else np.uint16
    # CharLS takes NEAR up to 255; coarser bounds only shrink the file further, so 255's size stands for them.
    return len(imagecodecs.jpegls_encode(levels.astype(dtype), level=min(near, JPEGLS_MAX_NEAR)))


@dataclass(frozen=True)
class BudgetFile:
    """A context-coded payload that fits a bit budget: the payload, the decoded levels, the lattice and the bound."""

    payload: bytes
    levels: np.ndarray
    top: int
    max_error: int


def fit_to_budget(
    image: np.ndarray, *, budget_bits: float, seed: int = 0, steps: int = SEARCH_STEPS, error_to_beat: float | None = None,
    grid_payload: bytes = b"", prediction: np.ndarray | None = None,
) -> BudgetFile | None:  # fmt: skip
    """The context-coded payload of least error bound within ``budget_bits`` (payload bits) for an image in ``[0, 1]``.

    The image is taken on its own lattice (:func:`~sinco.codec.grid.residual.image_levels`), or on ``0..65535`` when it
    has none. The networks are fitted lossless, the bound is the smallest whose coding fits (bisection: the file
    shrinks as the bound grows), then networks fitted for that bound try it and the one below.

    With ``grid_payload`` the file is a hybrid (:func:`~sinco.codec.grid.payload.context_payload`): the context coder
    reads ``prediction``, the grid payload's decoded image, as a side plane, and the grid payload counts in the budget.

    Args:
        image: ``(H, W)`` in ``[0, 1]``.
        budget_bits: bits the payload may take.
        seed: the fit's seed.
        steps: the fit's steps.
        error_to_beat: the mean squared error (on ``[0, 1]``) of the best file found otherwise, or None. Bounds whose
            error would not beat it (JPEG-LS's at that bound, :func:`_bound_to_beat`) are not tried, and when JPEG-LS, which the context coder codes in 15-23%
            fewer bits, needs more than :data:`PROXY_MARGIN` times the budget at the coarsest bound worth trying, no
            network is fitted (a fit costs seconds; JPEG-LS milliseconds). For a hybrid the proxy is the lesser of
            JPEG-LS and the zero-order entropy of the quantized error of the prediction, plus the grid payload.
        grid_payload: a version-1 grid payload (:func:`~sinco.codec.grid.payload.build_payload`), or empty.
        prediction: its decoded image ``(H, W)`` (``GridFitResult.reconstruction``), with ``grid_payload`` only.

    Returns:
        The :class:`BudgetFile`, or None when even the coarsest bound does not fit (or cannot beat ``error_to_beat``).

    Raises:
        ValueError: if only one of ``grid_payload`` and ``prediction`` is given, or they do not match the image.
    """
    from sinco.codec.grid.payload import CONTEXT_HEAD_BYTES, context_payload, grid_plane
    from sinco.codec.grid.residual import ONE, image_levels

    if bool(grid_payload) != (prediction is not None):
        raise ValueError("fit_to_budget: grid_payload and prediction go together (a hybrid) or not at all")
    if prediction is not None and np.shape(prediction) != np.shape(image):
        raise ValueError(f"prediction: shape {np.shape(prediction)}, expected the image's {np.shape(image)}")
    lattice = image_levels(image)
    top = MAX_TOP if lattice >= ONE else lattice
    levels = np.clip(np.rint(image.astype(np.float64) * top), 0, top).astype(np.int64)
    if levels.min() == levels.max():
        return None
    planes = [] if prediction is None else [grid_plane(prediction, top=top)]
    if 8 * (len(grid_payload) + CONTEXT_HEAD_BYTES) >= budget_bits:
        return None
    coarsest = top // 2 if error_to_beat is None else min(top // 2, _bound_to_beat(levels, mse_levels=error_to_beat * top**2))
    if coarsest < 0 or _proxy_bits(levels, planes, near=coarsest) + 8 * len(grid_payload) > PROXY_MARGIN * budget_bits:
        return None
    # A prediction plane: the first networks are fitted at the bound the proxy expects (fitted lossless, they trust the
    # neighbours, which a coarse bound makes noisy, and overstate every coarser bound's size).
    first = 0 if not planes else _proxy_bound(levels, planes[0], budget_bits=budget_bits - 8 * (len(grid_payload) + CONTEXT_HEAD_BYTES),
                                              coarsest=coarsest)  # fmt: skip
    model = fit_context(levels, top=top, near=first, planes=planes, config=ContextFitConfig(steps=steps, seed=seed))

    def coded(near: int) -> BudgetFile:
        section, decoded = encode(levels, replace(model, near=near), planes=planes)
        return BudgetFile(payload=context_payload(section, grid_payload=grid_payload), levels=decoded, top=top, max_error=near)

    best = coded(0)
    if 8 * len(best.payload) <= budget_bits:
        return best
    low, high = 0, coarsest  # low: too big; high: fits, if anything does
    found = coded(high)
    if 8 * len(found.payload) > budget_bits:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        candidate = coded(middle)
        low, high, found = (low, middle, candidate) if 8 * len(candidate.payload) <= budget_bits else (middle, high, found)
    # Networks fitted for that bound (on the contexts its decoder sees) code it in fewer bits: then perhaps a finer one.
    model = fit_context(levels, top=top, near=found.max_error, planes=planes, config=ContextFitConfig(steps=steps, seed=seed))
    for near in (found.max_error - 1, found.max_error):
        if near >= 0:
            candidate = coded(near)
            if 8 * len(candidate.payload) <= budget_bits:
                return candidate
    return found


def _proxy_bound(levels: np.ndarray, plane: np.ndarray, *, budget_bits: float, coarsest: int) -> int:
    """The smallest bound whose zero-order entropy of the prediction's quantized error (:func:`_proxy_bits`' second
    figure, above what the context coder spends) fits ``budget_bits``; ``coarsest`` if none does."""
    low, high = -1, coarsest  # low: too big (or none), high: fits or the coarsest
    while high - low > 1:
        middle = (low + high) // 2
        low, high = (low, middle) if _entropy_bits(levels - plane, near=middle) <= budget_bits else (middle, high)
    return high


def _proxy_bits(levels: np.ndarray, planes: list[np.ndarray], *, near: int) -> float:
    """A cheap size of the levels within ``near``: JPEG-LS's, or with a prediction plane the lesser of that and the
    zero-order entropy of the prediction's error quantized as the context coder does (JPEG-LS's NEAR)."""
    bits = 8.0 * _jpegls_bytes(levels, near=near)
    for plane in planes:
        bits = min(bits, _entropy_bits(levels - plane, near=near))
    return bits


def _entropy_bits(error: np.ndarray, *, near: int) -> float:
    """Zero-order entropy (bits, all pixels) of ``error`` quantized with JPEG-LS's NEAR."""
    from sinco.codec.grid.context import quantize_residual

    _, counts = np.unique(quantize_residual(error, near=near), return_counts=True)
    return float(-(counts * np.log2(counts / counts.sum())).sum())
