"""Datasets of 2-D axial slices with binary whole-tumour masks.

Two layouts are understood:

- ``decathlon``: the Medical Segmentation Decathlon (``dataset.json`` listing ``imagesTr/*.nii.gz``
  4-D volumes ``H x W x D x 4`` and ``labelsTr/*.nii.gz``); the modality is chosen by ``channel``.
- ``folders``: one folder per case, holding one image and one label file matched by glob patterns
  (the layout of the shared BraTS 2013 cases: ``Flair*.nii.gz`` and ``OTMultiClass.nii.gz``).

Masks are ``label > 0`` (whole tumour). Each slice is scaled to ``[0, 1]`` exactly as the codec
scales it (:func:`sinco.data.intensity.normalize_minmax`); constant slices (no anatomy) are left out.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from sinco.data.intensity import normalize_minmax
from sinco.data.io import load_array, select_slice
from sinco.errors import InputError

LAYOUTS = ("auto", "decathlon", "folders")
DEFAULT_IMAGE_GLOB = "Flair*.nii.gz"
DEFAULT_LABEL_GLOB = "OTMultiClass.nii.gz"


@dataclass(frozen=True)
class Case:
    """One patient: an image volume and its label volume.

    Args:
        case_id: a name unique within the dataset.
        image: path of the image volume.
        label: path of the label volume (same grid).
        channel: modality of a 4-D image volume.
    """

    case_id: str
    image: Path
    label: Path
    channel: int = 0


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
    label_glob: str = DEFAULT_LABEL_GLOB,
    channel: int = 0,
) -> list[Case]:
    """List the cases of a dataset folder.

    Args:
        root: the dataset folder (``--data``).
        layout: ``"auto"``, ``"decathlon"`` or ``"folders"``.
        image_glob: ``folders`` layout: pattern of the image file in each case folder.
        label_glob: ``folders`` layout: pattern of the label file in each case folder.
        channel: modality of 4-D (Decathlon) volumes.

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
            images, labels = sorted(folder.glob(image_glob)), sorted(folder.glob(label_glob))
            if not images and not labels:
                continue
            if len(images) != 1 or len(labels) != 1:
                raise InputError(
                    f"case folder {str(folder)!r}: expected one file matching --image-glob {image_glob!r} and one "
                    f"matching --label-glob {label_glob!r}, found {len(images)} and {len(labels)}"
                )
            cases.append(Case(case_id=folder.name, image=images[0], label=labels[0], channel=channel))
    if not cases:
        hint = "dataset.json lists no existing files" if layout == "decathlon" else (
            f"no case folder holds files matching --image-glob {image_glob!r} and --label-glob {label_glob!r}")
        raise InputError(f"--data {str(root)!r}: no cases found ({layout} layout: {hint})")
    return sorted(cases, key=lambda c: c.case_id)


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


def load_case_volumes(case: Case) -> tuple[np.ndarray, np.ndarray]:
    """The image volume (the case's channel of a 4-D volume) and the label volume of a case.

    Args:
        case: the case.

    Returns:
        ``(image, label)``, both ``(H, W, D)``.

    Raises:
        InputError: if a file cannot be read, the channel is out of range, or the grids differ.
    """
    image = load_array(case.image, arg=f"image of case {case.case_id}")
    label = load_array(case.label, arg=f"label of case {case.case_id}")
    if image.ndim == 4:
        if not 0 <= case.channel < image.shape[3]:
            raise InputError(f"--channel {case.channel}: out of range for case {case.case_id} with {image.shape[3]} channels")
        image = image[..., case.channel]
    if image.shape != label.shape:
        raise InputError(f"case {case.case_id}: image shape {image.shape} differs from label shape {label.shape}")
    if image.ndim != 3:
        raise InputError(f"case {case.case_id}: expected 3-D volumes, got shape {image.shape}")
    return image, label


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
