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
                          axis: int = 2, affine: np.ndarray | None = None) -> ExactVolume:  # fmt: skip
    """Compress the slices ``(S, H, W)`` of a volume, each on the volume's lattice, into a ``.sinco`` volume file.

    The lattice is the whole volume's (a float volume's step is found once); each slice is its own file (levels
    relative to the slice's minimum), a constant slice a 9-byte record.

    Raises:
        InputError: as :func:`compress_exact`.
    """
    from sinco.codec.volume import SliceRecord, VolumeHeader, encode_volume

    array = np.asarray(volume)
    if array.ndim != 3:
        raise InputError(f"volume: expected slices (S, H, W), got shape {array.shape}")
    lattice = find_lattice(array, name="volume")
    check_max_error(max_error, top=lattice.top)
    records, error, fitted, encode_s, decode_s = [], 0, 0, 0.0, 0.0
    for plane in array:
        levels = to_levels(plane, lattice)
        low, high = int(levels.min()), int(levels.max())
        if low == high:
            records.append(SliceRecord(constant=float(lattice.offset + low * lattice.step)))
            continue
        started = time.perf_counter()
        bound = min(max_error, (high - low) // 2)
        data = encode_levels(levels - low, top=high - low, max_error=bound, offset=lattice.offset + low * lattice.step,
                             step=lattice.step, config=config)  # fmt: skip
        encoded = time.perf_counter()
        error = max(error, int(np.abs(decode_levels(data) + low - levels).max()))
        decode_s += time.perf_counter() - encoded
        encode_s += encoded - started
        fitted += 1
        records.append(SliceRecord(data=data))
    height, width = array.shape[1:]
    header = VolumeHeader(axis=axis, height=height, width=width, n_slices=array.shape[0], first_index=first_index,
                          affine=np.eye(4) if affine is None else np.asarray(affine, np.float64))  # fmt: skip
    return ExactVolume(data=encode_volume(header, records), max_error=max_error, measured_error=error, fitted_slices=fitted,
                       encode_seconds=encode_s, decode_seconds=decode_s)  # fmt: skip


def exact_volume(data: bytes) -> np.ndarray | None:
    """The restored values ``(S, H, W)`` of a volume whose fitted slices are all lossless or near-lossless files (int64
    when every slice is integral, else float64), or None for another volume.

    Raises:
        BitstreamError: if the file is invalid or corrupted.
    """
    from sinco.codec.volume import decode_volume_file

    header, records = decode_volume_file(data)
    slices = []
    for record in records:
        if record.data is None:
            slices.append(np.full((header.height, header.width), record.constant))
            continue
        values = exact_values(record.data)
        if values is None:
            return None
        slices.append(values)
    volume = np.stack(slices)
    # Constant slices are float records: integral volumes are those whose every slice holds integers.
    integral = all(s.dtype.kind == "i" or np.array_equal(s, np.rint(s)) for s in slices) and any(s.dtype.kind == "i" for s in slices)
    return volume.astype(np.int64) if integral else volume.astype(np.float64)


#: Fitting steps of the context model inside a lossy rate search (a share of the search's time; the bound is then
#: chosen by coding only).
SEARCH_STEPS = 200


@dataclass(frozen=True)
class BudgetFile:
    """A context-coded payload that fits a bit budget: the payload, the decoded levels, the lattice and the bound."""

    payload: bytes
    levels: np.ndarray
    top: int
    max_error: int


def fit_to_budget(image: np.ndarray, *, budget_bits: float, seed: int = 0, steps: int = SEARCH_STEPS) -> BudgetFile | None:
    """The context-coded payload of least error bound within ``budget_bits`` (payload bits) for an image in ``[0, 1]``.

    The image is taken on its own lattice (:func:`~sinco.codec.grid.residual.image_levels`), or on ``0..65535`` when it
    has none. The networks are fitted once, lossless; the bound is then the smallest whose coding fits (bisection:
    the file shrinks as the bound grows).

    Args:
        image: ``(H, W)`` in ``[0, 1]``.
        budget_bits: bits the payload may take.
        seed: the fit's seed.
        steps: the fit's steps.

    Returns:
        The :class:`BudgetFile`, or None when even the coarsest bound does not fit.
    """
    from sinco.codec.grid.payload import context_payload
    from sinco.codec.grid.residual import ONE, image_levels

    lattice = image_levels(image)
    top = MAX_TOP if lattice >= ONE else lattice
    levels = np.clip(np.rint(image.astype(np.float64) * top), 0, top).astype(np.int64)
    if levels.min() == levels.max():
        return None
    model = fit_context(levels, top=top, config=ContextFitConfig(steps=steps, seed=seed))

    def coded(near: int) -> BudgetFile:
        section, decoded = encode(levels, replace(model, near=near))
        return BudgetFile(payload=context_payload(section), levels=decoded, top=top, max_error=near)

    best = coded(0)
    if 8 * len(best.payload) <= budget_bits:
        return best
    low, high = 0, top // 2  # low: too big; high: fits, if anything does
    found = coded(high)
    if 8 * len(found.payload) > budget_bits:
        return None
    while high - low > 1:
        middle = (low + high) // 2
        candidate = coded(middle)
        low, high, found = (low, middle, candidate) if 8 * len(candidate.payload) <= budget_bits else (middle, high, found)
    return found
