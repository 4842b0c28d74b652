"""Regenerate tests/data/grid_golden/ (only when the grid payload format changes on purpose).

Run: python tests/data/make_grid_golden.py
"""

import json
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_grid_codec import SPEC, target_image  # noqa: E402

from sinco.codec.grid import GridFitConfig, decode_grid, fit_grid  # noqa: E402

out = Path(__file__).parent / "grid_golden"
out.mkdir(exist_ok=True)
size = 16
result = fit_grid(target_image(size)[None], spec=SPEC, config=GridFitConfig(steps=60, ste_steps=10, seed=0), device=torch.device("cpu"))[0]
(out / "payload.bin").write_bytes(result.payload)
(out / "meta.json").write_text(json.dumps({"spec": SPEC.to_bytes().hex(), "height": size, "width": size}) + "\n")
np.save(out / "expected.npy", decode_grid(result.payload, spec=SPEC, height=size, width=size))
print(len(result.payload), "bytes")
