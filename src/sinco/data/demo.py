"""The embedded demo dataset: the MNI152 2009 template that nilearn ships, with its white-matter map.

It needs nothing downloaded: nilearn installs the files with the package. The template is one
(average) brain, 197 x 233 x 189 at 1 mm; the demo treats its white matter (probability > 0.5) as
the structure to preserve, and cuts the brain's axial extent into contiguous slabs that play the
role of cases, so training and test slices come from different parts of the brain.
"""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

import numpy as np

from sinco.errors import InputError

T1_FILE = "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz"
WM_FILE = "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz"
IMAGE_NAME, LABEL_NAME = "t1.nii.gz", "wm.nii.gz"
# Axial range of the template that holds brain (z = 20 .. 169 of 189), cut into slabs.
Z_RANGE = (20, 170)


def template_dir() -> Path:
    """Folder of nilearn's packaged template files, found without importing nilearn (slow).

    Raises:
        InputError: if nilearn is not installed or lacks the files.
    """
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        raise InputError("the demo needs the 'nilearn' package, which ships the MNI152 template (pip install nilearn)")
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    for name in (T1_FILE, WM_FILE):
        if not (folder / name).is_file():
            raise InputError(f"nilearn at {folder} lacks {name}; reinstall nilearn")
    return folder


def write_demo_dataset(root: str | os.PathLike[str], *, slabs: int = 4) -> Path:
    """Write the demo dataset in the ``folders`` layout: ``root/mni152-slab<k>/{t1,wm}.nii.gz``.

    Args:
        root: output folder (created).
        slabs: number of contiguous axial slabs (cases).

    Returns:
        ``root``.
    """
    import nibabel as nib

    folder = template_dir()
    t1 = nib.load(str(folder / T1_FILE))
    wm = np.asarray(nib.load(str(folder / WM_FILE)).dataobj)
    image = np.asarray(t1.dataobj).astype(np.float32)
    labels = (wm > 127).astype(np.uint8)
    root = Path(root)
    edges = np.linspace(*Z_RANGE, slabs + 1).round().astype(int)
    for k in range(slabs):
        case = root / f"mni152-slab{k}"
        case.mkdir(parents=True, exist_ok=True)
        z = slice(edges[k], edges[k + 1])
        nib.save(nib.Nifti1Image(image[:, :, z], t1.affine), str(case / IMAGE_NAME))
        nib.save(nib.Nifti1Image(labels[:, :, z], t1.affine), str(case / LABEL_NAME))
    return root
