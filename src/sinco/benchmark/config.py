"""What decides a benchmark's records: :class:`BenchmarkConfig` (saved in ``results.json``)."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from sinco.benchmark.methods import (
    DEFAULT_ANCHOR,
    DEFAULT_METHODS,
    SECOND_ANCHOR,
    all_methods,
    codec_methods,
    is_regularized,
    volume_methods,
)
from sinco.errors import InputError


@dataclass(frozen=True)
class BenchmarkConfig:
    """Everything that decides a benchmark's records (saved in ``results.json``).

    Args:
        data: dataset folder.
        seg_model: segmentation checkpoint (its path), or ``None``: records then carry rate, PSNR,
            SSIM, MS-SSIM and the ROI figures, but no Dice and no regularized method.
        layout: dataset layout (``auto``, ``decathlon``, ``folders``, ``images``).
        image_glob: ``folders``/``images`` layout image pattern.
        label_glob: ``folders``/``images`` layout label pattern (``None``: no labels).
        channel: modality of 4-D volumes.
        cases: ``"val"`` (the segmentation model's validation cases), ``"all"``, or comma-separated ids.
        methods: method names, see :func:`all_methods`.
        bpps: target rates.
        images: number of test slices.
        min_tumour: minimum tumour fraction of a test slice.
        preset: fitting preset of the codec families (``None``, or a preset a family lacks: that family's default,
            ``paper`` for the INR families and ``fast`` for ``grid``).
        steps: gradient evaluations (``None``: the preset's).
        lr: (peak) learning rate (``None``: the preset's).
        lam: SINCO regularizer weight of the regularized methods.
        reg_every: apply the regularizer every K-th step.
        seed: initialization seed.
        fit_options: family fitting options (e.g. ``optimizer``); each family takes those it declares.
        codec_options: family name -> codec options (e.g. ``{"siren": {"depth": 3}}``).
        batch_slices: test slices of one codec method fitted together as one batch.
        roi_glob: pattern of each case's region-of-interest mask (``brainmask.nii.gz``); ``None``:
            the head found by :func:`sinco.metrics.roi.head_mask`.
        anchor: the method every other is compared with by Bjontegaard deltas when there are several rates (it must
            then be among ``methods``, except the default ``vvc``, which falls back to ``jpeg2000``); the tables also
            give the deltas against ``jpeg2000`` (see :meth:`bd_references`). It does not change the records.
        lams: several regularizer weights (``--lam 0,0.1,1``): the regularized methods run once per
            value, one record each (``None``: ``lam`` alone).
        eval_seg_model: the independent judge's checkpoint (``None``: no judge; tables say so).
        ensemble: further loss networks (the regularizer is averaged over ``seg_model`` and these).
        seg_target: the regularizer's target, ``mask`` or ``self``.
        seg_perturb: perturbations of the loss network's input per step (0 = off).

    Raises:
        InputError: if a value is out of range.
    """

    data: str
    seg_model: str | None
    layout: str = "auto"
    image_glob: str = "Flair*.nii.gz"
    label_glob: str | None = "OTMultiClass.nii.gz"
    channel: int = 0
    cases: str = "val"
    methods: tuple[str, ...] = DEFAULT_METHODS
    bpps: tuple[float, ...] = (1.2,)
    images: int = 10
    min_tumour: float = 0.01
    preset: str | None = None
    steps: int | None = None
    lr: float | None = None
    lam: float = 1.0
    reg_every: int = 1
    seed: int = 0
    fit_options: Mapping[str, Any] = field(default_factory=dict)
    codec_options: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    batch_slices: int = 1
    roi_glob: str | None = None
    anchor: str = DEFAULT_ANCHOR
    lams: tuple[float, ...] | None = None
    eval_seg_model: str | None = None
    ensemble: tuple[str, ...] = ()
    seg_target: str = "mask"
    seg_perturb: int = 0

    @property
    def lam_values(self) -> tuple[float, ...]:
        """The regularizer weights the regularized methods run with."""
        return (self.lam,) if self.lams is None else tuple(self.lams)

    def lams_of(self, method: str) -> tuple[float, ...]:
        """The weights a method runs with: :attr:`lam_values` for the regularized methods, ``(0.0,)`` for the others."""
        return self.lam_values if is_regularized(method) else (0.0,)

    def bd_references(self) -> tuple[str, ...]:
        """The methods Bjontegaard deltas are taken against: :attr:`anchor`, then
        :data:`~sinco.benchmark.methods.SECOND_ANCHOR` (``jpeg2000``), those of them among :attr:`methods` (the first is
        the tables' anchor). Empty where neither runs."""
        return tuple(m for m in dict.fromkeys((self.anchor, SECOND_ANCHOR)) if m in self.methods)

    def regularizer_options(self) -> Any:
        """The :class:`~sinco.regularizer.loss.RegularizerOptions` of the regularized methods."""
        from sinco.regularizer.loss import RegularizerOptions

        return RegularizerOptions(target=self.seg_target, perturb=self.seg_perturb, seed=self.seed)

    def known_methods(self) -> tuple[str, ...]:
        """The methods this kind of benchmark runs (the slice benchmark: :func:`all_methods`)."""
        return all_methods()

    def __post_init__(self) -> None:
        known = self.known_methods()
        unknown = [m for m in self.methods if m not in known]
        volume_codecs = [m for m in unknown if m in volume_methods()]
        if volume_codecs:
            raise InputError(f"--methods {','.join(volume_codecs)}: volume codecs code whole slabs; run them with --volumes")
        if unknown or not self.methods:
            raise InputError(f"--methods {','.join(self.methods)!r}: unknown {unknown}; expected names from {', '.join(known)}")
        if len(set(self.methods)) != len(self.methods):
            raise InputError(f"--methods {','.join(self.methods)!r}: a method is listed twice")
        falls_back = self.anchor == DEFAULT_ANCHOR and SECOND_ANCHOR in self.methods
        if self.anchor not in known or (len(self.bpps) > 1 and self.anchor not in self.methods and not falls_back):
            raise InputError(f"--anchor {self.anchor!r}: the Bjontegaard anchor must be one of --methods {','.join(self.methods)!r}")
        if not self.bpps or any(not (math.isfinite(b) and b > 0) for b in self.bpps):
            raise InputError(f"--bpp {self.bpps}: need positive rates")
        if self.images < 1:
            raise InputError(f"--images {self.images}: must be at least 1")
        if self.steps is not None and self.steps < 1:
            raise InputError(f"--steps {self.steps}: must be at least 1")
        if self.batch_slices < 1:
            raise InputError(f"--batch-slices {self.batch_slices}: must be a positive integer")
        families = [codec_methods()[m][0] for m in self.methods if m in codec_methods()]
        if self.preset is not None and families and not any(self.preset in f.presets for f in families):
            raise InputError(f"--preset {self.preset!r}: expected one of {', '.join(sorted({p for f in families for p in f.presets}))}")
        for method in self.methods:
            if method in codec_methods():
                for lam in self.lams_of(method):
                    self.fit_config(method, lam=lam)  # validates the preset and the overrides
                self.codec_config(method, bpp=self.bpps[0])
        self.regularizer_options()
        self._check_labels_and_model()

    def _check_labels_and_model(self) -> None:
        """Refuse what needs a segmentation model, or labels, when they are not given."""
        if self.seg_model is None:
            needs = [m for m in self.methods if is_regularized(m)]
            if needs:
                raise InputError(f"--methods {','.join(needs)}: the SINCO regularizer needs --seg-model (or drop these methods)")
            if self.cases == "val":
                raise InputError("--cases val: the validation cases come from --seg-model; without one use --cases all or ID,...")
        elif self.label_glob is None:
            raise InputError("--seg-model: Dice needs tumour labels; give --label-glob")

    def fit_config(self, method: str, *, lam: float | None = None) -> Any:
        """The fitting configuration of a codec method (its family's preset, the overrides it reads, ``lam`` (default:
        :attr:`lam`) for a regularized method, 0 for the others; a regularized method's data term defaults to
        :data:`~sinco.regularizer.terms.REGULARIZED_DATA_TERM`)."""
        from sinco.codec.registry import fit_config
        from sinco.regularizer.terms import with_resolved_data_term

        family, info = codec_methods()[method]
        preset = self.preset if self.preset in family.presets else family.default_preset
        accepted = {o.dest for o in family.fit_options}
        overrides = {k: v for k, v in self.fit_options.items() if k in accepted}
        weight = (self.lam if lam is None else lam) if info.regularized else 0.0
        common = {"steps": self.steps, "lr": self.lr, "seed": self.seed, "lam": weight, "reg_every": self.reg_every}
        overrides.update({k: v for k, v in common.items() if family.reads_option(k)})
        overrides = with_resolved_data_term(overrides, regularized=info.regularized, accepted=accepted)
        return fit_config(family.name, preset, overrides)

    def codec_config(self, method: str, *, bpp: float) -> Any:
        """The codec configuration of a codec method at one rate."""
        from sinco.codec.config import CodecConfig

        family = codec_methods()[method][0]
        return CodecConfig(arch=family.name, bpp=bpp, options=dict(self.codec_options.get(family.name, {})))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (tuples as lists), with the resolved fitting configuration of each codec method."""
        data = json.loads(json.dumps(asdict(self), default=list))
        data["fit"] = {m: self.fit_config(m).to_dict() for m in self.methods if m in codec_methods()}
        return data
