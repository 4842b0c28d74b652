"""``sinco demo``: a short benchmark on the MNI152 template that nilearn ships (nothing downloaded).

The default demo codes one slice of the template's held-out slab with the default codec (``grid``, its one-minute
``fast`` preset) beside the classical codecs, at the rates of :data:`DEMO_RATES`, then a few slices of that slab as one
volume (:data:`DEMO_VOLUME_SLICES`): the volume family ``grid3d`` beside ``grid`` and JPEG 2000 slice by slice, each
file measured whole (bits per voxel from its bytes, volume PSNR); ``paper=True`` runs the SINCO paper's four INR
methods instead (SIREN and PE-MLP, plain and with the structural regularizer, 500 steps). The white matter is the
structure the regularizer preserves, segmented by the small U-Net the package ships (``sinco/assets/demo_seg.pt``,
made by ``scripts/make-demo-seg``).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from sinco.benchmark.config import BenchmarkConfig
from sinco.benchmark.methods import all_methods
from sinco.benchmark.volumes import VolumeBenchmarkConfig
from sinco.errors import InputError

#: The default demo's rate (bits per pixel of the whole file): one fit of the default codec, so the demo stays under
#: three minutes on two CPU cores.
DEMO_RATES = (0.6,)
#: The classical codecs of the default demo, where this installation has them.
DEMO_CLASSICAL = ("jpeg2000", "vvc", "hevc", "avif12", "jpegxl", "jpeg")
#: The paper's methods (``--paper``), at the paper's rate.
PAPER_METHODS = ("coin", "vanilla-inr", "sinco-siren", "sinco-inr", "jpeg2000", "jpeg")
#: The default demo's volume: the held-out slab (the demo network's validation case, 37 axial slices of 197 x 233) and
#: the four slices around its middle, where the slice section's test slice lies, coded as one volume.
DEMO_VOLUME_CASE = "mni152-slab2"
DEMO_VOLUME_SLICES = "16:20"
#: The volume family, the default codec slice by slice, and JPEG 2000 slice by slice.
DEMO_VOLUME_METHODS = ("grid3d", "grid", "jpeg2000")
#: ``grid``'s per-slice refinements that ``grid3d`` lacks, off in the volume section: the two families then differ only
#: in coding the slices as one 3-D fit or one 2-D fit each (and the context coder's fit would double the section's time).
DEMO_VOLUME_FIT_OPTIONS = {"residual": "off", "context": "off"}
#: Steps of both neural families in the volume section (their ``fast`` presets: 600 per slab, 900 per slice): what
#: keeps the section near 40 s on two CPU cores, so that the whole demo stays within its time.
DEMO_VOLUME_STEPS = 100


@dataclass(frozen=True)
class DemoPlan:
    """What a demo runs: its benchmark configuration and the sentence that says what it shows, and the volume section's
    (``None`` for the paper's demo)."""

    config: BenchmarkConfig
    caption: str
    volume: VolumeBenchmarkConfig | None = None
    volume_caption: str = ""


def check_demo_counts(*, images: int | None, steps: int | None) -> None:
    """Refuse a count of test slices or steps that is given and not a positive integer.

    Raises:
        InputError: naming ``--images`` or ``--steps`` and the value.
    """
    for flag, value in (("--images", images), ("--steps", steps)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
            raise InputError(f"{flag} {value}: must be a positive integer")


def plan_demo(data: str | os.PathLike[str], *, paper: bool, images: int | None = None, steps: int | None = None) -> DemoPlan:
    """The demo's benchmark on the dataset ``data`` (written by :func:`sinco.data.demo.write_demo_dataset`).

    Args:
        data: the demo dataset's folder.
        paper: the paper's INR methods at 1.2 bpp instead of the default codec against the classical ones.
        images: test slices (default: 1, or 2 with ``paper``).
        steps: the neural codecs' steps (default: the ``fast`` preset's for ``grid``, 500 for the paper's methods;
            :data:`DEMO_VOLUME_STEPS` in the volume section).

    Returns:
        The :class:`DemoPlan`.

    Raises:
        InputError: if ``images`` or ``steps`` is given and not a positive integer.
    """
    from sinco.data.demo import IMAGE_NAME, LABEL_NAME

    check_demo_counts(images=images, steps=steps)

    known = all_methods()
    common: dict[str, Any] = dict(data=str(data), seg_model=str(files("sinco") / "assets" / "demo_seg.pt"), layout="folders",
                                  image_glob=IMAGE_NAME, label_glob=LABEL_NAME, cases="val", min_tumour=0.01, reg_every=1)  # fmt: skip
    if paper:
        methods = tuple(m for m in PAPER_METHODS if m in known)
        config = BenchmarkConfig(**common, methods=methods, bpps=(1.2,), images=images or 2, steps=steps or 500)
        caption = ("The SINCO paper's four methods at 1.2 bpp, 500 steps each instead of the paper's 50,000: a check of the "
                   "machinery in a few minutes, not the paper's figures.")  # fmt: skip
        return DemoPlan(config=config, caption=caption)
    methods = ("grid", *(m for m in DEMO_CLASSICAL if m in known))
    anchor = "vvc" if "vvc" in methods else "jpeg2000"
    config = BenchmarkConfig(**common, methods=methods, bpps=DEMO_RATES, images=images or 1, preset="fast", steps=steps, anchor=anchor)
    caption = ("The default codec (grid) with its one-minute preset `fast`, beside the classical codecs, on one slice of the "
               "template's held-out slab. Longer presets code better: `--preset quality` (about ten minutes a slice on two "
               "CPU cores) and `--preset long` (meant for GPUs); docs/results.md has their figures.")  # fmt: skip
    volume_steps = steps or DEMO_VOLUME_STEPS
    volume = VolumeBenchmarkConfig(data=str(data), seg_model=None, layout="folders", image_glob=IMAGE_NAME, label_glob=None,
                                   cases=DEMO_VOLUME_CASE, slices=DEMO_VOLUME_SLICES, methods=DEMO_VOLUME_METHODS, bpps=DEMO_RATES,
                                   preset="fast", steps=volume_steps, anchor="jpeg2000", fit_options=DEMO_VOLUME_FIT_OPTIONS)  # fmt: skip
    volume_caption = (f"Slices {DEMO_VOLUME_SLICES} of the held-out slab as one volume: grid3d (one slab, one 3-D fit) beside grid "
                      "(without its residual layer and context coder, which grid3d lacks) and JPEG 2000 slice by slice, "
                      f"{volume_steps} steps for each neural fit where their `fast` presets run 600 (grid3d) and 900 (grid): "
                      "a check of the machinery in seconds, not their rate-distortion; docs/grid-codec.md has longer fits.")  # fmt: skip
    return DemoPlan(config=config, caption=caption, volume=volume, volume_caption=volume_caption)
