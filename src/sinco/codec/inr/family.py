"""The family adapters of the paper's two networks: SIREN (``--arch siren``) and PE-MLP (``--arch pe-mlp``).

Both store the network's fp16 weights as the payload (:mod:`sinco.codec.inr.payload`), size the network by
parameter count (:mod:`sinco.codec.inr.sizing`), fit with :func:`sinco.codec.inr.training.fit_inr_batch` and
decode in chunks. Their family blocks (little-endian):

- SIREN, version 2: ``depth uint8, width uint16, w0 float32, w0_first float32``. Version-1 files carry the same
  fields (depth and width in the v1 header, then w0 and w0_first).
- PE-MLP, version 2: ``depth uint8, width uint16, n_freqs uint8, skip mask uint16`` (bit i set = hidden layer i takes
  the encoding again). Version-1 files carry depth and width in the header, then n_freqs uint8, a zero byte, the
  skip mask uint16 and four zero bytes.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Mapping
from typing import Any, ClassVar

import numpy as np

from sinco.codec.family import COMMON_FIT_OPTIONS, BenchmarkMethod, CodecFamily, FamilyOption, FitOutcome, FitReport
from sinco.codec.inr.config import INR_PRESETS, INRFitConfig
from sinco.codec.inr.spec import INRSpec
from sinco.errors import BitstreamError, InputError

BITS_PER_PARAM = 16
# Activation values per decoding chunk (rows x widest layer): bounds decoding memory to ~16 MB
# whatever the image size or network width a file announces.
DECODE_CHUNK_VALUES = 1 << 22
# Fitting options of the INR loop beyond the common ones (INRFitConfig fields).
INR_FIT_OPTIONS = (
    FamilyOption("schedule", "--schedule", str, "learning-rate schedule: constant or cosine (default: the preset's)"),
    FamilyOption("warmup", "--warmup", int, "warm-up steps of the cosine schedule (default: the preset's)", "N"),
    FamilyOption("optimizer", "--optimizer", str, "adam or adam+lbfgs (default: the preset's)"),
    FamilyOption("lbfgs_after", "--lbfgs-after", int, "adam+lbfgs: Adam steps before L-BFGS (default: 1000)", "N"),
    FamilyOption("quantize_tail", "--quantize-tail", int,
                 "last N steps: Adam on the fp16-rounded weights, lr 3e-6 (default: the preset's; fast siren 200)", "N",
                 aliases=("--quantise-tail",)),
    FamilyOption("compile", "--compile", str, "torch.compile the fitting step: auto, on or off (default: auto = SIREN fits of 1000+ steps)"),
    FamilyOption("data_term", "--data-term", str,
                 "data term of the objective: mse (mean squared error), sse (sum of squared errors, the squared l2 norm) or "
                 "l2 (the l2 norm); it sets the data term's scale against --lam (default: sse with the regularizer, "
                 "i.e. --seg-model or a sinco-* method, else mse)", "mse|sse|l2"),
)  # fmt: skip
DEPTH_OPTION = FamilyOption("depth", "--depth", int, "hidden layers of the network (default: 8 for siren, 6 for pe-mlp)", "N")
_SIREN_BLOCK = struct.Struct("<BHff")
_PEMLP_BLOCK = struct.Struct("<BHBH")
_PEMLP_BLOCK_V1 = struct.Struct("<BHBBHI")


class INRFamily(CodecFamily):
    """An INR family: the network's fp16 weights, in ``model.parameters()`` order, are the payload.

    Subclasses give :attr:`default_depth`, :attr:`compile_when_auto`, :meth:`make_spec` and the family block.
    """

    fit_options = INR_FIT_OPTIONS
    common_fit_options = COMMON_FIT_OPTIONS
    presets = ("paper", "fast")
    default_preset = "paper"
    default_depth: ClassVar[int]
    # Whether INRFitConfig.compile == "auto" compiles this family's steps (long enough fits only).
    compile_when_auto: ClassVar[bool] = False

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        """The widest network of the chosen depth within the rate (see :func:`sinco.codec.inr.sizing.size_for_bpp`)."""
        raise NotImplementedError

    def check_rate(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> None:
        self.make_spec(bpp=bpp, height=height, width=width, options=options)

    def check_payload(self, spec: INRSpec, *, payload_bytes: int, height: int, width: int) -> None:
        if payload_bytes != 2 * spec.n_params():
            raise BitstreamError(f"corrupted .sinco file: {payload_bytes // 2} parameters stored, the architecture needs {spec.n_params()}")

    def fit_config(self, preset: str | None, overrides: Mapping[str, Any]) -> INRFitConfig:
        preset = self.default_preset if preset is None else preset
        if preset not in self.presets:
            raise InputError(f"--preset {preset!r}: --arch {self.name} has presets {', '.join(self.presets)}")
        return INRFitConfig(**{**INR_PRESETS[self.name][preset], **self.given_overrides(overrides)})

    def fit(self, targets: Any, *, bpp: float, options: Mapping[str, Any], config: INRFitConfig, device: Any, regularizer: Any = None,
            lam: Any = None, progress: bool = False, desc: str = "fit") -> list[FitOutcome]:  # fmt: skip
        import torch

        from sinco.codec.inr.networks import build_inr, flatten_parameters
        from sinco.codec.inr.payload import quantize_fp16
        from sinco.codec.inr.training import fit_inr_batch

        _, height, width = targets.shape
        spec = self.make_spec(bpp=bpp, height=height, width=width, options=options)
        models = []
        for _ in range(targets.shape[0]):
            torch.manual_seed(config.seed)
            models.append(build_inr(spec))
        runs = fit_inr_batch(models, targets=targets, config=config, device=device, regularizer=regularizer, lam=lam,
                             compile_when_auto=self.compile_when_auto, progress=progress, desc=desc)  # fmt: skip
        outcomes = []
        for model, target, run in zip(models, targets, runs, strict=True):
            model.to("cpu")
            payload = quantize_fp16(flatten_parameters(model)).tobytes()
            details = {**run.details(), "psnr_fp32": _fp32_psnr(model, target)}
            report = FitReport(steps=run.steps, evaluations=run.evaluations, seconds=run.seconds, lam=run.lam, details=details)
            outcomes.append(FitOutcome(spec=spec, payload=payload, report=report))
        return outcomes

    def decode(self, spec: INRSpec, payload: bytes, *, height: int, width: int) -> np.ndarray:
        import torch

        from sinco.codec.inr.encodings import make_coordinates
        from sinco.codec.inr.networks import build_inr, load_flat_parameters
        from sinco.codec.inr.payload import dequantize_fp16

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

    def describe_fit(self, config: INRFitConfig) -> str:
        if config.optimizer == "adam":
            return f"{config.steps} Adam steps (lr {config.lr:g}, {config.schedule} schedule)"
        return f"{config.adam_steps} Adam steps (lr {config.lr:g}, {config.schedule}) then L-BFGS, {config.steps} gradient evaluations in all"

    def describe(self, spec: INRSpec) -> dict[str, Any]:
        return spec.to_dict()

    def rate_fields(self, spec: INRSpec, *, n_pixels: int) -> dict[str, Any]:
        from sinco.codec.inr.sizing import param_bpp

        return {"bpp_params": param_bpp(spec.n_params(), bits_per_param=BITS_PER_PARAM, n_pixels=n_pixels), "n_params": spec.n_params()}

    def _spec_or_error(self, **fields: Any) -> INRSpec:
        try:
            return INRSpec(arch=self.name, **fields)
        except InputError as exc:
            raise BitstreamError(f"invalid architecture in .sinco header: {exc}") from None


def _option(options: Mapping[str, Any], key: str, *, default: Any) -> Any:
    value = options.get(key)
    return default if value is None else value


def _fp32_psnr(model: Any, image: Any) -> float:
    """PSNR of the fitted fp32 network (before rounding and clipping) against ``image`` ``(H, W)``."""
    import torch

    from sinco.codec.inr.encodings import make_coordinates

    height, width = image.shape
    with torch.no_grad():
        out = model(make_coordinates(height, width)).reshape(height, width).double().numpy()
    mse = float(np.mean((out - image.to("cpu").numpy()) ** 2))
    return math.inf if mse == 0 else -10.0 * math.log10(mse)


class SirenFamily(INRFamily):
    """SIREN (Sitzmann et al., 2020): ``depth`` sine layers of ``width`` units and a linear output."""

    name = "siren"
    family_id = 1
    summary = "SIREN (sine layers, w0 = 30), fp16 weights (COIN)"
    options = (DEPTH_OPTION, FamilyOption("w0", "--w0", float, "SIREN frequency w0 of every sine layer (default: 30)", "W0"))
    methods = {"coin": BenchmarkMethod("COIN (SIREN)", regularized=False), "sinco-siren": BenchmarkMethod("SINCO (SIREN)", regularized=True)}
    # Chosen on two BraTS FLAIR slices at 1.2 bpp and 1,500 steps: deeper, narrower SIRENs fitted
    # better (depth 3: 41.1 dB .. depth 8: 46.5 dB).
    default_depth = 8
    # Inductor fuses bias, w0 scaling and sine: compiling halves a CPU step (pays back from ~1,000 steps).
    compile_when_auto = True

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        from sinco.codec.inr.sizing import size_for_bpp

        w0 = _option(options, "w0", default=30.0)
        depth = _option(options, "depth", default=self.default_depth)
        return size_for_bpp(self.name, bpp=bpp, height=height, width=width, depth=depth, w0=w0, w0_first=w0)

    def encode_spec(self, spec: INRSpec) -> bytes:
        return _SIREN_BLOCK.pack(spec.depth, spec.width, spec.w0, spec.w0_first)

    def decode_spec(self, block: bytes, *, version: int) -> INRSpec:
        # Version 1's block (depth, width, then the 8-byte architecture block) has the same layout.
        if len(block) != _SIREN_BLOCK.size:
            raise BitstreamError(f"corrupted .sinco file: a siren block of {len(block)} bytes (expected {_SIREN_BLOCK.size})")
        depth, width, w0, w0_first = _SIREN_BLOCK.unpack(block)
        return self._spec_or_error(width=width, depth=depth, w0=w0, w0_first=w0_first)


def parse_skips(text: str) -> tuple[int, ...]:
    """``"3"``, ``"2,4"`` or ``"none"`` -> layer indices.

    Raises:
        InputError: naming ``--skips`` and the text.
    """
    if text.strip().lower() == "none":
        return ()
    try:
        return tuple(int(part) for part in text.split(","))
    except ValueError:
        raise InputError(f"--skips {text!r}: expected comma-separated layer indices or 'none'") from None


class PEMLPFamily(INRFamily):
    """ReLU MLP on a positional encoding with ``Lf`` frequencies, the encoding fed again into ``skips`` layers."""

    name = "pe-mlp"
    family_id = 2
    summary = "ReLU MLP on a NeRF positional encoding (Lf = 12, encoding fed again mid-network), fp16 weights"
    options = (
        DEPTH_OPTION,
        FamilyOption("n_freqs", "--n-freqs", int, "PE-MLP encoding frequencies Lf (default: 12)", "LF"),
        FamilyOption("skips", "--skips", parse_skips, "PE-MLP layers fed the encoding again, or 'none' (default: depth // 2)", "I,J"),
    )
    methods = {"vanilla-inr": BenchmarkMethod("Vanilla INR (PE-MLP)", regularized=False), "sinco-inr": BenchmarkMethod("SINCO (INR)", regularized=True)}
    # Depth 6 was the best on average in a sweep on two BraTS slices (results were noisy).
    default_depth = 6

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        from sinco.codec.inr.sizing import size_for_bpp

        depth = _option(options, "depth", default=self.default_depth)
        skips = options.get("skips")
        skips = ((depth // 2,) if depth >= 2 else ()) if skips is None else skips
        n_freqs = _option(options, "n_freqs", default=12)
        return size_for_bpp(self.name, bpp=bpp, height=height, width=width, depth=depth, skips=skips, n_freqs=n_freqs)

    def encode_spec(self, spec: INRSpec) -> bytes:
        return _PEMLP_BLOCK.pack(spec.depth, spec.width, spec.n_freqs, sum(1 << s for s in spec.skips))

    def decode_spec(self, block: bytes, *, version: int) -> INRSpec:
        layout = _PEMLP_BLOCK_V1 if version == 1 else _PEMLP_BLOCK
        if len(block) != layout.size:
            raise BitstreamError(f"corrupted .sinco file: a pe-mlp block of {len(block)} bytes (expected {layout.size})")
        if version == 1:
            depth, width, n_freqs, pad, mask, pad2 = layout.unpack(block)
            if pad or pad2:
                raise BitstreamError("corrupted .sinco file: reserved header bytes are not zero")
        else:
            depth, width, n_freqs, mask = layout.unpack(block)
        skips = tuple(i for i in range(16) if mask >> i & 1)
        return self._spec_or_error(width=width, depth=depth, n_freqs=n_freqs, skips=skips)

