"""Write the golden lossless and near-lossless files (payload version 3) (only when that format changes on purpose).

Run: python tests/data/make_lossless_golden.py lossless_golden

The images come from :func:`golden_image` (fixed seeds); the test regenerates them and decodes the stored files.
"""

import json
import sys
from pathlib import Path

import numpy as np

from sinco.codec.grid.context_fit import ContextFitConfig
from sinco.codec.grid.lossless import encode_levels

#: name: (bits, max_error, seed)
CASES = {"lossless-12bit": (12, 0, 0), "near2-8bit": (8, 2, 1), "lossless-16bit-spikes": (16, 0, 2)}


def golden_image(bits: int, seed: int, *, size: int = 24) -> np.ndarray:
    """A smooth ramp, a disc and noise on ``bits``-bit levels (with two full-range spikes at 16 bits: escapes)."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    y, x = np.mgrid[:size, :size]
    image = top * (0.2 + 0.5 * x / size) * (1 + ((y - size / 2) ** 2 + (x - size / 2) ** 2 < (size / 3) ** 2))
    image = np.clip(image / 2 + rng.normal(0, top / 100, image.shape), 0, top)
    levels = np.rint(image).astype(np.int64)
    if bits == 16:
        levels[3, 5], levels[17, 11] = top, 0
    return levels


if __name__ == "__main__":
    out = Path(__file__).parent / sys.argv[1]
    out.mkdir(exist_ok=False)
    meta = {}
    for name, (bits, near, seed) in CASES.items():
        levels = golden_image(bits, seed)
        data = encode_levels(levels, top=(1 << bits) - 1, max_error=near, config=ContextFitConfig(hidden=6, steps=40, seed=seed))
        (out / f"{name}.sinco").write_bytes(data)
        meta[name] = {"bits": bits, "max_error": near, "seed": seed, "bytes": len(data)}
    (out / "meta.json").write_text(json.dumps(meta, indent=1) + "\n")
    print(meta)
