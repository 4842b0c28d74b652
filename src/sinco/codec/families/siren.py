"""The SIREN family (COIN's network): sine layers, w0 = 30, fp16 weights.

Family block (version 2), little-endian::

    depth uint8, width uint16, w0 float32, w0_first float32

Version 1 files carry the same fields (depth and width in the v1 header, then w0 and w0_first).
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from sinco.codec.families import register
from sinco.codec.families.base import BenchmarkMethod, FamilyOption
from sinco.codec.families.inr import DEPTH_OPTION, INRFamily, option_value
from sinco.errors import BitstreamError
from sinco.fit.config import PAPER_PRESET
from sinco.inr.spec import INRSpec

_BLOCK = struct.Struct("<BHff")


@register
class SirenFamily(INRFamily):
    """SIREN (Sitzmann et al., 2020): ``depth`` sine layers of ``width`` units and a linear output."""

    name = "siren"
    family_id = 1
    summary = "SIREN (sine layers, w0 = 30), fp16 weights (COIN)"
    options = (DEPTH_OPTION, FamilyOption("w0", "--w0", float, "SIREN frequency w0 of every sine layer (default: 30)", "W0"))
    methods = {"coin": BenchmarkMethod("COIN (SIREN)", regularised=False), "sinco-siren": BenchmarkMethod("SINCO (SIREN)", regularised=True)}
    # Chosen on two BraTS FLAIR slices at 1.2 bpp and 1,500 steps: deeper, narrower SIRENs fitted
    # better (depth 3: 41.1 dB .. depth 8: 46.5 dB).
    default_depth = 8
    # Inductor fuses bias, w0 scaling and sine: compiling halves a CPU step (pays back from ~1,000 steps).
    compile_when_auto = True
    presets = {
        "paper": PAPER_PRESET,
        # 4,000 gradient evaluations: Adam at 1e-3 for 2,000, then L-BFGS; the last 200 tune the
        # weights to their fp16 rounding, which L-BFGS solutions lost 0.3-0.75 dB to. Chosen on
        # pat0003 slice 96, checked on pat0006 slice 99 (benchmarks/time_to_quality.py).
        "fast": {"steps": 4_000, "lr": 1e-3, "schedule": "constant", "warmup": 0, "optimizer": "adam+lbfgs", "lbfgs_after": 2_000,
                 "quantise_tail": 200, "quantise_lr": 3e-6},
    }  # fmt: skip

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        from sinco.inr.sizing import size_for_bpp

        w0 = option_value(options, "w0", default=30.0)
        depth = option_value(options, "depth", default=self.default_depth)
        return size_for_bpp(self.name, bpp=bpp, height=height, width=width, depth=depth, w0=w0, w0_first=w0)

    def encode_spec(self, spec: INRSpec) -> bytes:
        return _BLOCK.pack(spec.depth, spec.width, spec.w0, spec.w0_first)

    def decode_spec(self, block: bytes, *, version: int) -> INRSpec:
        # Version 1's block (depth, width, then the 8-byte architecture block) has the same layout.
        if len(block) != _BLOCK.size:
            raise BitstreamError(f"corrupted .sinco file: a siren block of {len(block)} bytes (expected {_BLOCK.size})")
        depth, width, w0, w0_first = _BLOCK.unpack(block)
        return self._spec_or_error(width=width, depth=depth, w0=w0, w0_first=w0_first)
