"""INR decoding (siren, pe-mlp): what it repeats bit for bit, measured and tested, and an independent reference.

Measured on the 2-core test machine (x86-64, torch 2.13 CPU), a 256 x 256 decode of a 4 x 64 network, 1 thread
against 2 (``torch.set_num_threads``), each in a fresh process, and two processes at the same count: bit-exact for
both families (max difference 0.0). So the tests below ask for bit-exact decoding across thread counts and processes
on one machine. Across machines the MLP families agree to within float32 rounding only (docs/format.md,
"Determinism"): the reference here is float64 numpy, and the decoder is held to it within a stated bound.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch

from sinco.codec.inr.networks import build_inr, flatten_parameters
from sinco.codec.inr.spec import INRSpec
from sinco.codec.registry import get_family

SPECS = {
    "siren": INRSpec(arch="siren", width=64, depth=4),
    "pe-mlp": INRSpec(arch="pe-mlp", width=64, depth=4, n_freqs=8, skips=(2,)),
}
SIZE = 256
#: Largest difference allowed between the float32 decoder and the float64 reference: float32 rounding through four
#: 64-wide layers (measured 5.2e-7 for siren, 2.4e-6 for pe-mlp on this case).
REFERENCE_BOUND = 1e-5


def case_payload(arch: str) -> bytes:
    """A network with seed 5 whose output covers a range inside [0, 1] (head bias 0.5, head weights x4), as fp16."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(5)
        model = build_inr(SPECS[arch])
    with torch.no_grad():
        model.head.bias.fill_(0.5)
        model.head.weight.mul_(4.0)
    return flatten_parameters(model).half().numpy().tobytes()


def decode_in_process(arch: str, threads: int) -> bytes:
    """Decode :func:`case_payload` in a fresh interpreter with ``threads`` torch threads; the float32 image's bytes."""
    code = (
        "import sys, torch; sys.path.insert(0, sys.argv[3]); torch.set_num_threads(int(sys.argv[1]));"
        "from test_inr_determinism import SIZE, SPECS, case_payload; from sinco.codec.registry import get_family;"
        "arch = sys.argv[2]; image = get_family(arch).decode(SPECS[arch], case_payload(arch), height=SIZE, width=SIZE);"
        "sys.stdout.buffer.write(image.tobytes())"
    )
    from pathlib import Path

    done = subprocess.run([sys.executable, "-c", code, str(threads), arch, str(Path(__file__).parent)], capture_output=True,
                          check=True, timeout=300)  # fmt: skip
    return done.stdout


def reference_decode(spec: INRSpec, payload: bytes, height: int, width: int) -> np.ndarray:
    """The network the format describes, in float64 numpy from the fp16 weights (docs/format.md, docs/inr-codec.md):
    coordinates ``(row, column)`` at ``-1 + 2 i / (n - 1)``; siren ``sin(w0 (W x + b))`` layers (``w0_first`` for the
    first) and a linear head; pe-mlp the encoding ``[sin 2^k pi r, sin 2^k pi c, cos 2^k pi r, cos 2^k pi c]`` per
    ``k``, ReLU layers (the ``skips`` layers take ``[x, encoding]``) and a linear head; the output clipped to [0, 1]."""
    weights = np.frombuffer(payload, "<f2").astype(np.float64)
    pos = 0

    def take(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
        nonlocal pos
        w = weights[pos : pos + rows * cols].reshape(rows, cols)
        b = weights[pos + rows * cols : pos + rows * cols + rows]
        pos += rows * cols + rows
        return w, b

    def axis(n: int) -> np.ndarray:
        return np.zeros(1) if n == 1 else -1 + 2 * np.arange(n) / (n - 1)

    r, c = np.meshgrid(axis(height), axis(width), indexing="ij")
    coords = np.stack([r.ravel(), c.ravel()], axis=1)
    if spec.arch == "siren":
        x = coords
        for layer in range(spec.depth):
            w, b = take(spec.width, x.shape[1])
            x = np.sin((spec.w0_first if layer == 0 else spec.w0) * (x @ w.T + b))
    else:
        phase = coords[:, None, :] * (2.0 ** np.arange(spec.n_freqs) * np.pi)[None, :, None]
        encoding = np.concatenate([np.sin(phase), np.cos(phase)], axis=-1).reshape(len(coords), -1)
        x = encoding
        for layer in range(spec.depth):
            x = np.concatenate([x, encoding], axis=1) if layer in spec.skips and layer > 0 else x
            w, b = take(spec.width, x.shape[1])
            x = np.maximum(x @ w.T + b, 0)
    w, b = take(1, spec.width)
    assert pos == len(weights)  # every weight read: the parameter order is the format's
    return np.clip((x @ w.T + b)[:, 0], 0, 1).reshape(height, width)


@pytest.mark.parametrize("arch", list(SPECS))
def test_inr_decoding_is_bit_exact_across_thread_counts_and_processes(arch):
    one, two = decode_in_process(arch, 1), decode_in_process(arch, 2)
    assert one == two
    image = np.frombuffer(one, np.float32).reshape(SIZE, SIZE)
    assert image.std() > 0.02 and np.mean((image == 0) | (image == 1)) < 0.01  # an image, not a clipped flat field
    # And a third process, this one (whatever its thread count), gives the same bytes.
    assert get_family(arch).decode(SPECS[arch], case_payload(arch), height=SIZE, width=SIZE).tobytes() == one


@pytest.mark.parametrize("arch", list(SPECS))
def test_inr_decoding_matches_an_independent_float64_reference(arch):
    payload = case_payload(arch)
    decoded = get_family(arch).decode(SPECS[arch], payload, height=SIZE, width=SIZE)
    reference = reference_decode(SPECS[arch], payload, SIZE, SIZE)
    assert np.abs(decoded.astype(np.float64) - reference).max() <= REFERENCE_BOUND
