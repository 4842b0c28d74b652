"""Datasets of 2-D axial slices with binary whole-tumour masks.

Three layouts are understood:

- ``decathlon``: the Medical Segmentation Decathlon (``dataset.json`` listing ``imagesTr/*.nii.gz``
  4-D volumes ``H x W x D x 4`` and ``labelsTr/*.nii.gz``); the modality is chosen by ``channel``.
- ``folders``: one folder per case, holding one image and one label file matched by glob patterns
  (the layout of the shared BraTS 2013 cases: ``Flair*.nii.gz`` and ``OTMultiClass.nii.gz``). The
  image may be a DICOM series folder (see :mod:`sinco.data.dicom`).
- ``images``: 2-D images (PNG, TIFF, ``.npy``; 8 or 16 bit) matched by a glob under the root; the
  images of one folder, sorted by name, are the slices of one case (see :func:`discover_images`).

Labels are optional (``label_glob=None``); so is a region-of-interest mask per case (``roi_glob``,
e.g. BraTS ``brainmask.nii.gz``). Masks are ``label > 0`` (whole tumour). Each slice is scaled to ``[0, 1]`` exactly as the codec
scales it (:func:`sinco.data.intensity.normalize_minmax`); constant slices (no anatomy) are left out.
"""

from __future__ import annotations

import json
import os
import random
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_array, select_slice
from sinco.errors import InputError

LAYOUTS = ("auto", "decathlon", "folders", "images")
DEFAULT_IMAGE_GLOB = "Flair*.nii.gz"
DEFAULT_LABEL_GLOB = "OTMultiClass.nii.gz"


@dataclass(frozen=True)
class Case:
    """One patient: an image volume, and its label volume and region-of-interest mask when the data have them.

    Args:
        case_id: a name unique within the dataset.
        image: path of the image volume (``images`` layout: the folder of the slices).
        label: path of the label volume (same grid), or ``None``.
        channel: modality of a 4-D image volume.
        roi: path of a region-of-interest mask volume (a brain mask; same grid), or ``None``.
        image_files: ``images`` layout: the 2-D files that are the slices, in order.
        label_files: ``images`` layout: each slice's mask file (empty without labels).
        roi_files: ``images`` layout: each slice's region-of-interest file (empty without).
    """

    case_id: str
    image: Path
    label: Path | None = None
    channel: int = 0
    roi: Path | None = None
    image_files: tuple[Path, ...] = ()
    label_files: tuple[Path, ...] = ()
    roi_files: tuple[Path, ...] = ()

    @property
    def has_labels(self) -> bool:
        """Whether the case has tumour labels."""
        return self.label is not None or bool(self.label_files)

    def source(self, index: int) -> str:
        """The file slice ``index`` comes from (the volume's path, or the 2-D file of the ``images`` layout)."""
        return str(self.image_files[index]) if self.image_files else str(self.image)


@dataclass
class SliceSet:
    """Axial slices of some cases, in memory.

    Args:
        images: float32 ``(N, H, W)`` in ``[0, 1]``.
        masks: uint8 ``(N, H, W)``, 1 = tumour.
        ids: ``"case_id:slice"`` for each slice.
    """

    images: np.ndarray
    masks: np.ndarray
    ids: list[str]

    @property
    def has_tumour(self) -> np.ndarray:
        """bool ``(N,)``: whether each slice's mask is non-empty."""
        return self.masks.reshape(len(self.ids), -1).any(axis=1)


def detect_layout(root: Path) -> str:
    """``"decathlon"`` if ``root/dataset.json`` exists, else ``"folders"``."""
    return "decathlon" if (root / "dataset.json").is_file() else "folders"


def discover_cases(
    root: str | os.PathLike[str],
    *,
    layout: str = "auto",
    image_glob: str = DEFAULT_IMAGE_GLOB,
    label_glob: str | None = DEFAULT_LABEL_GLOB,
    channel: int = 0,
    roi_glob: str | None = None,
) -> list[Case]:
    """List the cases of a dataset folder.

    Args:
        root: the dataset folder (``--data``).
        layout: ``"auto"``, ``"decathlon"``, ``"folders"`` or ``"images"``.
        image_glob: ``folders`` layout: pattern of the image file in each case folder; ``images``
            layout: pattern of the 2-D images under ``root``.
        label_glob: pattern of the label file in each case folder (``images``: of the masks under
            ``root``), or ``None`` for a dataset without labels. Ignored by ``decathlon``.
        channel: modality of 4-D (Decathlon) volumes.
        roi_glob: pattern of a region-of-interest mask in each case folder (``images``: under
            ``root``, paired like the labels), or ``None``.

    Returns:
        The cases, sorted by id.

    Raises:
        InputError: if the folder is missing, the layout unknown, a case ambiguous, or no case found.
    """
    root = Path(root)
    if layout not in LAYOUTS:
        raise InputError(f"--layout {layout!r}: expected one of {', '.join(LAYOUTS)}")
    if not root.is_dir():
        raise InputError(f"--data {str(root)!r}: no such folder")
    if channel < 0:
        raise InputError(f"--channel {channel}: must be >= 0")
    layout = detect_layout(root) if layout == "auto" else layout
    if layout == "images":
        return discover_images(root, image_glob=image_glob, label_glob=label_glob, roi_glob=roi_glob)
    cases: list[Case] = []
    if layout == "decathlon":
        try:
            meta = json.loads((root / "dataset.json").read_text())
            entries = meta["training"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"--data {str(root)!r}: unreadable Decathlon dataset.json ({exc})") from None
        for entry in entries:
            image, label = root / entry["image"], root / entry["label"]
            case_id = Path(entry["image"]).name.removesuffix(".gz").removesuffix(".nii")
            if image.is_file() and label.is_file():
                cases.append(Case(case_id=case_id, image=image, label=label, channel=channel))
    else:
        for folder in sorted(p for p in root.iterdir() if p.is_dir()):
            images = sorted(folder.glob(image_glob))
            labels = sorted(folder.glob(label_glob)) if label_glob is not None else []
            if not images and not labels:
                continue
            if len(images) != 1 or (label_glob is not None and len(labels) != 1):
                wanted = f" and one matching --label-glob {label_glob!r}" if label_glob is not None else ""
                raise InputError(
                    f"case folder {str(folder)!r}: expected one file matching --image-glob {image_glob!r}{wanted}, "
                    f"found {len(images)}" + (f" and {len(labels)}" if label_glob is not None else "")
                )
            roi = None
            if roi_glob is not None:
                rois = sorted(folder.glob(roi_glob))
                if len(rois) != 1:
                    raise InputError(f"case folder {str(folder)!r}: expected one file matching --roi-glob {roi_glob!r}, found {len(rois)}")
                roi = rois[0]
            cases.append(Case(case_id=folder.name, image=images[0], label=labels[0] if labels else None, channel=channel, roi=roi))
    if not cases:
        hint = "dataset.json lists no existing files" if layout == "decathlon" else (
            f"no case folder holds files matching --image-glob {image_glob!r}"
            + (f" and --label-glob {label_glob!r}" if label_glob is not None else ""))
        raise InputError(f"--data {str(root)!r}: no cases found ({layout} layout: {hint})")
    return sorted(cases, key=lambda c: c.case_id)


def _glob_regex(pattern: str) -> re.Pattern[str]:
    """A regular expression matching what ``Path.glob(pattern)`` matches, one group per wildcard."""
    out, i = [], 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("((?:[^/]*/)*)")
            i += 3
        elif pattern[i] == "*":
            out.append("([^/]*)")
            i += 1
        elif pattern[i] == "?":
            out.append("([^/])")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def _wildcards(path: Path, *, root: Path, pattern: str) -> tuple[str, ...]:
    """What the wildcards of ``pattern`` matched in ``path``; its name without suffix when that cannot be told."""
    match = _glob_regex(pattern).fullmatch(path.relative_to(root).as_posix())
    return tuple(match.groups()) if match else (path.name.split(".")[0],)


def _pair(images: list[Path], *, root: Path, image_glob: str, pattern: str, option: str) -> list[Path]:
    """The file matching ``pattern`` that pairs with each image (see :func:`discover_images`)."""
    by_key: dict[tuple[str, ...], Path] = {}
    for path in sorted(p for p in root.glob(pattern) if p.is_file()):
        key = _wildcards(path, root=root, pattern=pattern)
        if key in by_key:
            raise InputError(f"{option} {pattern!r}: {str(by_key[key])!r} and {str(path)!r} pair with the same image")
        by_key[key] = path
    paired = []
    for image in images:
        partner = by_key.get(_wildcards(image, root=root, pattern=image_glob))
        if partner is None:
            raise InputError(f"{option} {pattern!r}: no file pairs with image {str(image)!r}")
        paired.append(partner)
    return paired


def discover_images(root: Path, *, image_glob: str, label_glob: str | None = None, roi_glob: str | None = None) -> list[Case]:
    """The cases of a folder of 2-D images (``--layout images``).

    Every file under ``root`` matching ``image_glob`` (``**`` reaches into subfolders) is a slice,
    except files that ``label_glob`` or ``roi_glob`` match. The images of one folder, sorted by
    name, are the slices of one case named after the folder (relative to ``root``). A mask pairs
    with an image when what the wildcards of the two globs match is equal: ``--image-glob
    'img/*.png' --label-glob 'mask/*.png'`` pairs ``img/007.png`` with ``mask/007.png``, and
    ``'*.png'`` with ``'*_mask.png'`` pairs ``007.png`` with ``007_mask.png``.

    Args:
        root: the dataset folder.
        image_glob: pattern of the images, relative to ``root``.
        label_glob: pattern of the tumour masks, or ``None``.
        roi_glob: pattern of the region-of-interest masks, or ``None``.

    Returns:
        The cases, sorted by id.

    Raises:
        InputError: if no image matches, or an image has no mask while a mask glob is given.
    """
    masks = {p for g in (label_glob, roi_glob) if g is not None for p in root.glob(g)}
    images = sorted(p for p in root.glob(image_glob) if p.is_file() and p not in masks)
    if not images:
        raise InputError(f"--data {str(root)!r}: no file matches --image-glob {image_glob!r} (images layout)")
    labels = _pair(images, root=root, image_glob=image_glob, pattern=label_glob, option="--label-glob") if label_glob else []
    rois = _pair(images, root=root, image_glob=image_glob, pattern=roi_glob, option="--roi-glob") if roi_glob else []
    groups: dict[Path, list[int]] = {}
    for k, image in enumerate(images):
        groups.setdefault(image.parent, []).append(k)
    cases = []
    for folder, members in groups.items():
        relative = folder.relative_to(root).as_posix()
        cases.append(Case(
            case_id=root.name if relative == "." else relative, image=folder, image_files=tuple(images[k] for k in members),
            label_files=tuple(labels[k] for k in members) if labels else (),
            roi_files=tuple(rois[k] for k in members) if rois else (),
        ))  # fmt: skip
    return sorted(cases, key=lambda c: c.case_id)


def _stack_files(files: tuple[Path, ...], *, what: str, case_id: str) -> np.ndarray:
    """2-D files stacked on the last axis ``(H, W, D)``; all must have one shape."""
    slices = []
    for path in files:
        array = load_array(path, arg=f"{what} of case {case_id}")
        if array.ndim == 3 and array.shape[2] == 1:
            array = array[:, :, 0]
        if array.ndim != 2:
            raise InputError(f"{what} {str(path)!r}: expected a 2-D image (images layout), got shape {array.shape}")
        if slices and array.shape != slices[0].shape:
            raise InputError(
                f"{what} {str(path)!r}: {array.shape} differs from {str(files[0])!r}'s {slices[0].shape}; "
                "the images of one folder are one case and need one size"
            )
        slices.append(array)
    return np.stack(slices, axis=-1)


def split_cases(
    cases: list[Case], *, val_cases: int, seed: int, val_ids: tuple[str, ...] = (), train_ids: tuple[str, ...] = ()
) -> tuple[list[Case], list[Case]]:
    """Split cases (never slices) into training and validation, reproducibly.

    Args:
        cases: all cases.
        val_cases: how many go to validation (>= 1, fewer than ``len(cases)``), drawn with ``seed``.
        seed: seeds the shuffle.
        val_ids: the validation cases by id instead (overrides ``val_cases``).
        train_ids: the training cases by id (default: every case not in validation). With it, the
            cases in neither list are left out, e.g. held-out test patients or another network's.

    Returns:
        ``(train, val)``, each sorted by id.

    Raises:
        InputError: if the split leaves no case for one side, an id is unknown, or a case is in both lists.
    """
    if train_ids:
        known = {c.case_id for c in cases}
        unknown = [t for t in train_ids if t not in known]
        if unknown:
            raise InputError(f"--train-ids: unknown case(s) {', '.join(unknown)} (cases: {', '.join(sorted(known))})")
        both = sorted(set(train_ids) & set(val_ids))
        if both:
            raise InputError(f"--train-ids: case(s) {', '.join(both)} also in --val-ids; training and validation must be disjoint")
        rest = [c for c in cases if c.case_id not in train_ids]
        if not rest:
            raise InputError(f"--train-ids: all {len(cases)} cases are for training; none is left for validation")
        train = sorted((c for c in cases if c.case_id in train_ids), key=lambda c: c.case_id)
        if val_ids:
            return train, _check_val_ids(rest, val_ids)
        if not 1 <= val_cases <= len(rest):
            raise InputError(f"--val-cases {val_cases}: must be in 1..{len(rest)} for the {len(rest)} cases outside --train-ids")
        order = sorted(rest, key=lambda c: c.case_id)
        random.Random(seed).shuffle(order)
        return train, sorted(order[:val_cases], key=lambda c: c.case_id)
    if val_ids:
        known = {c.case_id for c in cases}
        unknown = [v for v in val_ids if v not in known]
        if unknown:
            raise InputError(f"--val-ids: unknown case(s) {', '.join(unknown)} (cases: {', '.join(sorted(known))})")
        if len(set(val_ids)) >= len(cases):
            raise InputError(f"--val-ids: {len(set(val_ids))} validation cases leave none of the {len(cases)} for training")
        val = [c for c in cases if c.case_id in val_ids]
        return sorted((c for c in cases if c.case_id not in val_ids), key=lambda c: c.case_id), sorted(val, key=lambda c: c.case_id)
    if not 1 <= val_cases < len(cases):
        raise InputError(f"--val-cases {val_cases}: must be in 1..{len(cases) - 1} for {len(cases)} cases")
    order = sorted(cases, key=lambda c: c.case_id)
    random.Random(seed).shuffle(order)
    val, train = order[:val_cases], order[val_cases:]
    return sorted(train, key=lambda c: c.case_id), sorted(val, key=lambda c: c.case_id)


def _check_val_ids(cases: list[Case], val_ids: tuple[str, ...]) -> list[Case]:
    """The cases named by ``val_ids``, sorted; every id must be among ``cases``."""
    known = {c.case_id for c in cases}
    unknown = [v for v in val_ids if v not in known]
    if unknown:
        raise InputError(f"--val-ids: unknown case(s) {', '.join(unknown)} (cases: {', '.join(sorted(known))})")
    return sorted((c for c in cases if c.case_id in val_ids), key=lambda c: c.case_id)


def load_case_volumes(case: Case) -> tuple[np.ndarray, np.ndarray | None]:
    """The image volume (the case's channel of a 4-D volume) and the label volume of a case.

    Args:
        case: the case.

    Returns:
        ``(image, label)``, both ``(H, W, D)``; ``label`` is ``None`` for a case without labels.

    Raises:
        InputError: if a file cannot be read, the channel is out of range, or the grids differ.
    """
    if case.image_files:
        image = _stack_files(case.image_files, what="image", case_id=case.case_id)
        label = _stack_files(case.label_files, what="label", case_id=case.case_id) if case.label_files else None
        if label is not None and label.shape != image.shape:
            raise InputError(f"case {case.case_id}: image shape {image.shape[:2]} differs from label shape {label.shape[:2]}")
        return image, label
    image = load_array(case.image, arg=f"image of case {case.case_id}")
    label = None if case.label is None else load_array(case.label, arg=f"label of case {case.case_id}")
    if image.ndim == 4:
        if not 0 <= case.channel < image.shape[3]:
            raise InputError(f"--channel {case.channel}: out of range for case {case.case_id} with {image.shape[3]} channels")
        image = image[..., case.channel]
    if label is not None and image.shape != label.shape:
        raise InputError(f"case {case.case_id}: image shape {image.shape} differs from label shape {label.shape}")
    if image.ndim != 3:
        raise InputError(f"case {case.case_id}: expected 3-D volumes, got shape {image.shape}")
    return image, label


def load_case_roi(case: Case, *, shape: tuple[int, ...]) -> np.ndarray | None:
    """The case's region-of-interest mask volume (bool ``(H, W, D)``), or ``None`` when it has none.

    Raises:
        InputError: if the file cannot be read or its grid differs from ``shape``.
    """
    if case.roi_files:
        roi = _stack_files(case.roi_files, what="ROI mask", case_id=case.case_id)
    elif case.roi is not None:
        roi = load_array(case.roi, arg=f"ROI mask of case {case.case_id}")
    else:
        return None
    if roi.shape != tuple(shape):
        raise InputError(f"case {case.case_id}: ROI mask shape {roi.shape} differs from the image's {tuple(shape)}")
    return roi > 0


def load_case_slices(case: Case, *, axis: int = 2) -> SliceSet:
    """All non-constant slices of one case along ``axis``, scaled to ``[0, 1]``, with masks.

    Args:
        case: the case.
        axis: slicing axis (2 = axial).

    Returns:
        A :class:`SliceSet` of the case.

    Raises:
        InputError: if the image and label grids differ.
    """
    image, label = load_case_volumes(case)
    if label is None:
        raise InputError(f"case {case.case_id}: no labels; training a segmentation network needs --label-glob")
    images, masks, ids = [], [], []
    for k in range(image.shape[axis]):
        raw = select_slice(image, slice_index=k, axis=axis)
        if not np.all(np.isfinite(raw)) or raw.min() == raw.max():
            continue
        scaled, _, _ = normalize_minmax(raw)
        images.append(scaled)
        masks.append((np.take(label, k, axis=axis) > 0).astype(np.uint8))
        ids.append(f"{case.case_id}:{k}")
    height, width = np.take(image, 0, axis=axis).shape
    return SliceSet(
        images=np.stack(images) if images else np.zeros((0, height, width), np.float32),
        masks=np.stack(masks) if masks else np.zeros((0, height, width), np.uint8),
        ids=ids,
    )


def load_slices(cases: list[Case], *, axis: int = 2) -> SliceSet:
    """Concatenate :func:`load_case_slices` over several cases.

    Args:
        cases: the cases.
        axis: slicing axis.

    Returns:
        One :class:`SliceSet`.

    Raises:
        InputError: if the cases' slices differ in shape or none is usable.
    """
    parts = [load_case_slices(case, axis=axis) for case in cases]
    shapes = {p.images.shape[1:] for p in parts}
    if len(shapes) > 1:
        raise InputError(f"cases have different slice shapes {sorted(shapes)}; resample them to one grid first")
    merged = SliceSet(
        images=np.concatenate([p.images for p in parts]),
        masks=np.concatenate([p.masks for p in parts]),
        ids=[i for p in parts for i in p.ids],
    )
    if not merged.ids:
        raise InputError(f"cases {', '.join(c.case_id for c in cases)}: no usable (non-constant) slice")
    return merged
