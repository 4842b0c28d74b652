"""Write a golden grid payload for the tests' spec (only when the grid payload format changes on purpose).

Run: python tests/data/make_grid_golden.py grid_golden_v2
     python tests/data/make_grid_golden.py grid_golden_learned   (the tests' spec: learned upsampling)
     python tests/data/make_grid_golden.py NEW_FOLDER --bicubic   (the spec of grid_golden_v2: bicubic upsampling)

``grid_golden/`` holds the version-1 spec (no linear skip), written before the skip existed: keep it, it checks
that those files still decode. New spec versions get a new folder, added to the golden test.
"""

import json
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from test_grid_codec import SPEC, target_image  # noqa: E402

from sinco.codec.grid.config import GridFitConfig  # noqa: E402
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.training import fit_grid

out = Path(__file__).parent / sys.argv[1]
spec = replace(SPEC, upsampling="bicubic") if sys.argv[2:] == ["--bicubic"] else SPEC
out.mkdir(exist_ok=False)
size = 16
result = fit_grid(target_image(size)[None], spec=spec, config=GridFitConfig(steps=60, ste_steps=10, seed=0), device=torch.device("cpu"))[0]
(out / "payload.bin").write_bytes(result.payload)
(out / "meta.json").write_text(json.dumps({"spec": spec.to_bytes().hex(), "height": size, "width": size}) + "\n")
np.save(out / "expected.npy", decode_grid(result.payload, spec=spec, height=size, width=size))
print(len(result.payload), "bytes")
