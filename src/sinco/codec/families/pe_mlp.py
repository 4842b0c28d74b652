"""The PE-MLP family (the paper's "INR"): a ReLU MLP on a NeRF positional encoding, fp16 weights.

Family block (version 2), little-endian::

    depth uint8, width uint16, n_freqs uint8, skip mask uint16 (bit i set = hidden layer i takes
    the encoding again)

Version 1 files carry depth and width in the header, then n_freqs uint8, a zero byte, the skip
mask uint16 and four zero bytes.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping
from typing import Any

from sinco.codec.families import register
from sinco.codec.families.base import BenchmarkMethod, FamilyOption
from sinco.codec.families.inr import DEPTH_OPTION, INRFamily, option_value
from sinco.errors import BitstreamError, InputError
from sinco.fit.config import PAPER_PRESET
from sinco.inr.spec import INRSpec

_BLOCK = struct.Struct("<BHBH")
_BLOCK_V1 = struct.Struct("<BHBBHI")


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


@register
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
    methods = {"vanilla-inr": BenchmarkMethod("Vanilla INR (PE-MLP)", regularised=False), "sinco-inr": BenchmarkMethod("SINCO (INR)", regularised=True)}
    # Depth 6 was the best on average in a sweep on two BraTS slices (results were noisy).
    default_depth = 6
    presets = {
        "paper": PAPER_PRESET,
        # 4,000 gradient evaluations: Adam at 1e-3 for 1,000, then L-BFGS (reached 20,000 paper steps'
        # quality on a slice it was not tuned on: benchmarks/time_to_quality.py).
        "fast": {"steps": 4_000, "lr": 1e-3, "schedule": "constant", "warmup": 0, "optimizer": "adam+lbfgs", "lbfgs_after": 1_000},
    }

    def make_spec(self, *, bpp: float, height: int, width: int, options: Mapping[str, Any]) -> INRSpec:
        from sinco.inr.sizing import size_for_bpp

        depth = option_value(options, "depth", default=self.default_depth)
        skips = options.get("skips")
        skips = ((depth // 2,) if depth >= 2 else ()) if skips is None else skips
        n_freqs = option_value(options, "n_freqs", default=12)
        return size_for_bpp(self.name, bpp=bpp, height=height, width=width, depth=depth, skips=skips, n_freqs=n_freqs)

    def encode_spec(self, spec: INRSpec) -> bytes:
        return _BLOCK.pack(spec.depth, spec.width, spec.n_freqs, sum(1 << s for s in spec.skips))

    def decode_spec(self, block: bytes, *, version: int) -> INRSpec:
        layout = _BLOCK_V1 if version == 1 else _BLOCK
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
