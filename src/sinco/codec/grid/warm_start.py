"""Warm starts: packaged decoder weights a grid fit starts from, and the reference the payload codes them against.

A fit from random weights spends its first few hundred steps learning what every brain slice's decoder has in
common, and its file pays for every weight in full. A warm start is the decoder's tensors (entropy model, synthesis,
upsampling) of one :class:`~sinco.codec.grid.spec.GridSpec`, fitted beforehand to public images (the MNI152 template
that nilearn ships) by :func:`sinco.codec.grid.training.train_warm_start` and stored in the package as integers
(``scripts/make-grid-warm-start`` remakes them). A file whose spec names a warm start was fitted from those weights, and
its payload codes each tensor's integers as differences from the warm start's integers at the same step, so a weight
that stays where it started costs about one bit.

The stored integers are the warm start: a decoder rebuilds each reference from them with integer arithmetic only
(:meth:`WarmStart.reference`), and the package checks their SHA-256 before use, so every machine decodes a file the
same way whatever float library trained the weights.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import json
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import numpy as np
import torch

from sinco.codec.grid.networks import tensor_shapes
from sinco.codec.grid.numerics import MAX_EXPONENT, WEIGHT_LIMIT
from sinco.codec.grid.spec import GridSpec
from sinco.errors import BitstreamError

#: id -> (asset file in ``sinco/assets``, SHA-256 of its canonical content). An id is never reused for other weights.
WARM_STARTS: dict[int, tuple[str, str]] = {
    # Nine axial slices of the MNI152 template (T1, grey and white matter), none of the demo's test slab, 1,500 `fast`
    # steps each at lambda_rd 1e-3, 3e-4, 1e-4 (scripts/make-grid-warm-start; provenance in the file).
    1: ("grid_warm_start_1.json", "bb1255d68b89a3152fa1cfff844fd4904ce6d0bc4ee1405ad0bc532592b4e72c"),
}
#: The step at which warm starts are stored (integers times ``2^-STORED_EXPONENT``).
STORED_EXPONENT = MAX_EXPONENT


@dataclass(frozen=True)
class WarmStart:
    """A warm start's integer tensors, in :func:`~sinco.codec.grid.networks.tensor_shapes` order, at step
    ``2^-STORED_EXPONENT``.

    Args:
        tensors: int64 arrays of the spec's tensor shapes, each within ``+-WEIGHT_LIMIT``.
        spec: the decoder spec it was fitted for (``warm_start`` 0).
    """

    tensors: tuple[np.ndarray, ...]
    spec: GridSpec

    def reference(self, index: int, exponent: int) -> np.ndarray:
        """Tensor ``index`` at step ``2^-exponent``: the integers a payload codes that tensor's weights against.

        Integer arithmetic only (a right shift rounds half up), so every decoder computes the same references.
        """
        stored = self.tensors[index]
        shift = STORED_EXPONENT - exponent
        if shift > 0:
            stored = (stored + (1 << (shift - 1))) >> shift
        elif shift < 0:
            stored = stored << -shift
        return np.clip(stored, -WEIGHT_LIMIT, WEIGHT_LIMIT)

    def floats(self) -> list[torch.Tensor]:
        """The weights as float32 tensors: where a fit from this warm start begins."""
        return [torch.from_numpy(t.astype(np.float64) * 2.0**-STORED_EXPONENT).float() for t in self.tensors]

    def content(self) -> dict[str, Any]:
        """The canonical content (spec and integers) its SHA-256 is taken over."""
        spec = {k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self.spec).items()}
        return {"spec": spec, "stored_exponent": STORED_EXPONENT, "tensors": [t.reshape(-1).tolist() for t in self.tensors]}

    def sha256(self) -> str:
        """SHA-256 of :meth:`content` as compact, key-sorted JSON."""
        return hashlib.sha256(json.dumps(self.content(), sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def quantize_warm_start(tensors: list[torch.Tensor], spec: GridSpec) -> WarmStart:
    """Float decoder tensors (a fit's) as a :class:`WarmStart` of ``spec``.

    Raises:
        ValueError: if the tensors do not have the spec's shapes.
    """
    shapes = tensor_shapes(dataclasses.replace(spec, warm_start=0))
    if [tuple(t.shape) for t in tensors] != [tuple(s) for s in shapes]:
        raise ValueError(f"warm start: tensors of shapes {[tuple(t.shape) for t in tensors]}, the spec has {shapes}")
    ints = tuple(np.clip(np.rint(t.detach().double().cpu().numpy() * 2.0**STORED_EXPONENT), -WEIGHT_LIMIT, WEIGHT_LIMIT).astype(np.int64)
                 for t in tensors)  # fmt: skip
    return WarmStart(tensors=ints, spec=dataclasses.replace(spec, warm_start=0))


def warm_start_json(warm: WarmStart, *, provenance: dict[str, Any]) -> str:
    """The asset file's text: the canonical content, its SHA-256 and how it was made, one line per key and per tensor."""
    content = {**warm.content(), "sha256": warm.sha256(), "provenance": provenance}
    head = [f" {json.dumps(key)}: {json.dumps(value)}" for key, value in content.items() if key != "tensors"]
    tensors = ",\n".join(f"  {json.dumps(t)}" for t in content["tensors"])
    return "{\n" + ",\n".join(head) + ',\n "tensors": [\n' + tensors + "\n ]\n}\n"


@functools.lru_cache(maxsize=4)
def _load(warm_id: int) -> WarmStart:
    name, sha = WARM_STARTS[warm_id]
    data = json.loads((files("sinco") / "assets" / name).read_text())
    spec = GridSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in data["spec"].items()})
    if data["stored_exponent"] != STORED_EXPONENT:
        raise RuntimeError(f"warm start {warm_id}: stored at exponent {data['stored_exponent']}, not {STORED_EXPONENT}")
    shapes = tensor_shapes(spec)
    tensors = tuple(np.asarray(t, dtype=np.int64).reshape(s) for t, s in zip(data["tensors"], shapes, strict=True))
    warm = WarmStart(tensors=tensors, spec=spec)
    if warm.sha256() != sha:
        raise RuntimeError(f"warm start {warm_id}: {name} does not hold the weights this sinco decodes with (SHA-256 differs)")
    return warm


def load_warm_start(spec: GridSpec) -> WarmStart | None:
    """The warm start ``spec`` names (``None`` for ``warm_start`` 0).

    Raises:
        BitstreamError: if this sinco has no warm start of that id, or it was made for another decoder spec.
    """
    if spec.warm_start == 0:
        return None
    if spec.warm_start not in WARM_STARTS:
        raise BitstreamError(f"grid spec: warm start {spec.warm_start} is unknown to this sinco")
    warm = _load(spec.warm_start)
    if warm.spec != dataclasses.replace(spec, warm_start=0):
        raise BitstreamError(f"grid spec: warm start {spec.warm_start} was made for another decoder spec")
    return warm
