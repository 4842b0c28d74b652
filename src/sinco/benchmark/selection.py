"""Deterministic choice of test slices: enough tumour (when there are labels), spread evenly over cases and depth."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from sinco.data.datasets import Case, load_case_volumes
from sinco.data.io import select_slice
from sinco.errors import InputError


@dataclass(frozen=True)
class SliceRef:
    """One test slice.

    Args:
        case: its case.
        index: slice index along the axial axis (2).
        tumour_fraction: fraction of the slice's pixels inside the mask (``None`` without labels).
    """

    case: Case
    index: int
    tumour_fraction: float | None

    @property
    def image_id(self) -> str:
        """``"case_id:index"``."""
        return f"{self.case.case_id}:{self.index}"


def candidate_slices(case: Case, *, min_tumour: float, axis: int = 2) -> list[SliceRef]:
    """Slices of a case whose mask covers at least ``min_tumour`` of the slice and whose image is not constant.

    A case without labels has no tumour to count: every non-constant slice qualifies.

    Args:
        case: the case.
        min_tumour: minimum tumour fraction (0..1).
        axis: slicing axis.

    Returns:
        The qualifying slices in depth order.
    """
    image, label = load_case_volumes(case)
    if label is None:
        fractions, indices = None, np.arange(image.shape[axis])
    else:
        fractions = (label > 0).mean(axis=tuple(a for a in range(3) if a != axis))
        indices = np.flatnonzero(fractions >= min_tumour)
    refs = []
    for k in indices:
        raw = select_slice(image, slice_index=int(k), axis=axis)
        if np.all(np.isfinite(raw)) and raw.max() > raw.min():
            refs.append(SliceRef(case=case, index=int(k), tumour_fraction=None if fractions is None else float(fractions[k])))
    return refs


def select_test_slices(cases: list[Case], *, n_images: int, min_tumour: float = 0.01) -> list[SliceRef]:
    """Pick ``n_images`` slices spread evenly over cases (round robin) and, within a case, over depth.

    Args:
        cases: the cases to draw from (sorted by id for determinism).
        n_images: how many slices (fewer if fewer qualify).
        min_tumour: minimum tumour fraction of a slice (cases with labels only).

    Returns:
        The chosen slices, ordered by case then depth.

    Raises:
        InputError: if ``n_images < 1`` or no slice qualifies.
    """
    if n_images < 1:
        raise InputError(f"--images {n_images}: must be at least 1")
    if not 0 <= min_tumour < 1:
        raise InputError(f"--min-tumour {min_tumour}: must be in [0, 1)")
    per_case = {c.case_id: candidate_slices(c, min_tumour=min_tumour) for c in sorted(cases, key=lambda c: c.case_id)}
    available = {k: v for k, v in per_case.items() if v}
    if not available:
        labelled = any(c.has_labels for c in cases)
        raise InputError(f"no slice of cases {', '.join(per_case)} " + (f"has at least {min_tumour:.0%} tumour" if labelled else "is non-constant"))
    counts = dict.fromkeys(available, 0)
    remaining = n_images
    while remaining > 0 and any(counts[k] < len(v) for k, v in available.items()):
        for key, refs in available.items():
            if remaining > 0 and counts[key] < len(refs):
                counts[key] += 1
                remaining -= 1
    chosen = []
    for key, refs in available.items():
        if counts[key]:
            # Evenly spaced over the qualifying depth range, ends excluded when there is room.
            positions = np.linspace(0, len(refs) - 1, counts[key] + 2)[1:-1] if len(refs) > counts[key] + 1 else np.arange(counts[key])
            picked = sorted({int(round(p)) for p in positions})
            extra = [i for i in range(len(refs)) if i not in picked]
            picked = sorted(picked + extra[: counts[key] - len(picked)])
            chosen += [refs[i] for i in picked]
    return chosen
