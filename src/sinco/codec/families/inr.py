"""What the two INR families (SIREN, PE-MLP) share: fp16 weights as the payload, sizing by
parameter count, fitting with :func:`sinco.fit.loop.fit_inr_batch`, chunked decoding."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sinco.codec.families.base import CodecFamily, FamilyOption, FitOutcome
from sinco.errors import BitstreamError, InputError
from sinco.fit.config import COMMON_FIT_OPTIONS
from sinco.inr.spec import INRSpec

BITS_PER_PARAM = 16
# Activation values per decoding chunk (rows x widest layer): bounds decoding memory to ~16 MB
# whatever the image size or network width a file announces.
DECODE_CHUNK_VALUES = 1 << 22
# Fitting options of the INR loop beyond the common ones (FitConfig fields).
INR_FIT_OPTIONS = (
    FamilyOption("schedule", "--schedule", str, "learning-rate schedule: constant or cosine (default: the preset's)"),
    FamilyOption("warmup", "--warmup", int, "warm-up steps of the cosine schedule (default: the preset's)", "N"),
    FamilyOption("optimizer", "--optimizer", str, "adam or adam+lbfgs (default: the preset's)"),
    FamilyOption("lbfgs_after", "--lbfgs-after", int, "adam+lbfgs: Adam steps before L-BFGS (default: 1000)", "N"),
    FamilyOption("quantise_tail", "--quantise-tail", int,
                 "last N steps: Adam on the fp16-rounded weights, lr 3e-6 (default: the preset's; fast siren 200)", "N"),
    FamilyOption("compile", "--compile", str, "torch.compile the fitting step: auto, on or off (default: auto = SIREN fits of 1000+ steps)"),
    FamilyOption("data_term", "--data-term", str,
                 "data term of the objective: mse (mean squared error), sse (sum of squared errors, the squared l2 norm) or "
                 "l2 (the l2 norm); it sets the data term's scale against --lam (default: sse with the regulariser, "
                 "i.e. --seg-model or a sinco-* method, else mse)", "mse|sse|l2"),
)
DEPTH_OPTION = FamilyOption("depth", "--depth", int, "hidden layers of the network (default: 8 for siren, 6 for pe-mlp)", "N")


class INRFamily(CodecFamily):
    """An INR family: the network's fp16 weights, in ``model.parameters()`` order, are the payload.

    Subclasses give :attr:`default_depth`, :attr:`compile_when_auto`, the presets and the spec block.
    """

    fit_options = INR_FIT_OPTIONS
    common_fit_options = COMMON_FIT_OPTIONS
    default_preset = "paper"
    default_depth: ClassVar[int]
    # Whether FitConfig.compile == "auto" compiles this family's steps (long enough fits only).
    compile_when_auto: ClassVar[bool] = False

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        """The widest network of the chosen depth within the rate (see :func:`sinco.inr.sizing.size_for_bpp`)."""
        raise NotImplementedError

    def check_rate(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> None:
        self.make_spec(bpp=bpp, height=height, width=width, options=options)

    def check_payload(self, spec: INRSpec, *, payload_bytes: int, height: int, width: int) -> None:
        if payload_bytes != 2 * spec.n_params():
            raise BitstreamError(
                f"corrupted .sinco file: {payload_bytes // 2} parameters stored, the architecture needs {spec.n_params()}"
            )

    def fit_config(self, preset: str | None, overrides: Mapping[str, Any]) -> Any:
        from sinco.fit.config import FitConfig

        preset = self.default_preset if preset is None else preset
        if preset not in self.presets:
            raise InputError(f"--preset {preset!r}: --arch {self.name} has presets {', '.join(self.presets)}")
        given = {k: v for k, v in overrides.items() if v is not None}
        for key in given:
            if not self.reads_option(key):
                raise self.refuse_option(key)
        return FitConfig(**{**self.presets[preset], **given})

    def fit(self, targets: Any, *, bpp: float, options: Mapping[str, Any], config: Any, device: Any, regularizer: Any = None,
            lam: Any = None, progress: bool = False, desc: str = "fit") -> list[FitOutcome]:  # fmt: skip
        import torch

        from sinco.codec.quantize import quantize_fp16
        from sinco.fit.loop import fit_inr_batch
        from sinco.inr.models import build_inr
        from sinco.inr.params import flatten_parameters

        self.check_options(options)
        _, height, width = targets.shape
        spec = self.make_spec(bpp=bpp, height=height, width=width, options=options)
        models = []
        for _ in range(targets.shape[0]):
            torch.manual_seed(config.seed)
            models.append(build_inr(spec))
        reports = fit_inr_batch(models, targets=targets, config=config, device=device, regularizer=regularizer, lam=lam,
                                compile_when_auto=self.compile_when_auto, progress=progress, desc=desc)  # fmt: skip
        outcomes = []
        for model, target, report in zip(models, targets, reports, strict=True):
            model.to("cpu")
            payload = quantize_fp16(flatten_parameters(model)).tobytes()
            outcomes.append(FitOutcome(spec=spec, payload=payload, report=report, extras={"psnr_fp32": _fp32_psnr(model, target)}))
        return outcomes

    def decode(self, spec: INRSpec, payload: bytes, *, height: int, width: int) -> np.ndarray:
        import torch

        from sinco.codec.quantize import dequantize_fp16
        from sinco.inr.encodings import make_coordinates
        from sinco.inr.models import build_inr
        from sinco.inr.params import load_flat_parameters

        weights = dequantize_fp16(payload, count=spec.n_params())
        # Building the network draws initial weights; keep the caller's RNG stream untouched.
        with torch.random.fork_rng(devices=[]):
            model = build_inr(spec)
        load_flat_parameters(model, weights)
        model.eval()
        n_pixels = height * width
        chunk = max(1, DECODE_CHUNK_VALUES // max(spec.widest_input, 1))
        out = torch.empty(n_pixels, dtype=torch.float32)
        with torch.inference_mode():
            for start in range(0, n_pixels, chunk):
                stop = min(start + chunk, n_pixels)
                out[start:stop] = model(make_coordinates(height, width, start=start, stop=stop))[:, 0]
        if not torch.isfinite(out).all():
            # Valid-looking weights can still overflow float32 in a deep network: a hostile file.
            raise BitstreamError("corrupted .sinco file: the network's output is not finite")
        return out.clamp_(0.0, 1.0).reshape(height, width).numpy()

    def describe_fit(self, config: Any) -> str:
        if config.optimizer == "adam":
            return f"{config.steps} Adam steps (lr {config.lr:g}, {config.schedule} schedule)"
        return f"{config.adam_steps} Adam steps (lr {config.lr:g}, {config.schedule}) then L-BFGS, {config.steps} gradient evaluations in all"

    def describe(self, spec: INRSpec) -> dict[str, Any]:
        return spec.to_dict()

    def rate_fields(self, spec: INRSpec, *, n_pixels: int) -> dict[str, Any]:
        from sinco.inr.sizing import param_bpp

        return {"bpp_params": param_bpp(spec.n_params(), bits_per_param=BITS_PER_PARAM, n_pixels=n_pixels), "n_params": spec.n_params()}

    def _spec_or_error(self, **fields: Any) -> INRSpec:
        try:
            return INRSpec(arch=self.name, **fields)
        except InputError as exc:
            raise BitstreamError(f"invalid architecture in .sinco header: {exc}") from None


def option_value(options: Mapping[str, Any], key: str, *, default: Any) -> Any:
    value = options.get(key)
    return default if value is None else value


def _fp32_psnr(model: Any, image: Any) -> float:
    """PSNR of the fitted fp32 network (before rounding and clipping) against ``image`` ``(H, W)``."""
    import torch

    from sinco.inr.encodings import make_coordinates

    height, width = image.shape
    with torch.no_grad():
        out = model(make_coordinates(height, width)).reshape(height, width).double().numpy()
    mse = float(np.mean((out - image.to("cpu").numpy()) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)
