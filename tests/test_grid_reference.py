"""The grid decoder against an independent int64 reference (tests/reference_grid.py, written from docs/format.md).

Bit for bit on the golden files of every payload version (1, 2; version 3 in test_lossless.py), on networks and
latents at the format's extremes, and across thread counts on an image large enough for torch to split its work.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import reference_grid as ref
import torch

from sinco.codec.files import decode_file, parse_file
from sinco.codec.format import unpack
from sinco.codec.grid.arm import fixed_arm_layers, fixed_arm_params, grid_contexts
from sinco.codec.grid.networks import QuantizedDecoder, tensor_shapes
from sinco.codec.grid.numerics import MAX_EXPONENT, WEIGHT_LIMIT
from sinco.codec.grid.payload import build_payload, decode_grid, synthesize
from sinco.codec.grid.spec import GridSpec

DATA = Path(__file__).parent / "data"
#: The version-1 payloads of spec versions 1 and 2 (make_grid_golden.py), 16 x 16.
OLD_GOLDEN = [DATA / name for name in ("grid_golden", "grid_golden_v2", "grid_golden_learned")]
#: Payload versions 1 and 2 of the default spec with its warm start and of a spec without (make_grid_payload_golden.py).
NEW_GOLDEN = sorted((DATA / "grid_payload_golden").glob("*.sinco"))


@pytest.mark.parametrize("golden", OLD_GOLDEN, ids=lambda p: p.name)
def test_the_reference_decodes_the_version_1_golden_payloads_to_their_images(golden):
    meta = json.loads((golden / "meta.json").read_text())
    payload, block = (golden / "payload.bin").read_bytes(), bytes.fromhex(meta["spec"])
    expected = np.load(golden / "expected.npy")
    decoded = ref.decode(payload, block, meta["height"], meta["width"])
    assert decoded.image.tobytes() == expected.tobytes()
    spec = GridSpec.from_bytes(block)
    assert decode_grid(payload, spec=spec, height=meta["height"], width=meta["width"]).tobytes() == expected.tobytes()


def test_every_grid_payload_kind_has_a_golden_file():
    kinds = set()
    for path in NEW_GOLDEN:
        container = unpack(path.read_bytes())
        kinds.add((container.payload[0], container.block[0]))
    assert {(1, 3), (2, 3), (2, 2)} <= kinds  # (payload version, spec version): spec 3 names a warm start, 2 does not
    meta = json.loads((DATA / "grid_payload_golden" / "meta.json").read_text())
    assert sorted(meta) == sorted(p.stem for p in NEW_GOLDEN)


@pytest.mark.parametrize("golden", NEW_GOLDEN, ids=lambda p: p.stem)
def test_the_reference_and_the_decoder_agree_bit_for_bit_on_the_golden_files(golden):
    data = golden.read_bytes()
    expected = np.load(golden.with_suffix(".npy"))
    parsed, image = decode_file(data)
    assert image.tobytes() == expected.tobytes()
    container = unpack(data)
    decoded = ref.decode(container.payload, container.block, parsed.height, parsed.width)
    assert decoded.image.tobytes() == expected.tobytes()
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1 and image.std() > 0.05  # not a flat image


# ------------------------------------------------------------------------------------------ extreme cases
def random_decoder(spec: GridSpec, rng: np.random.Generator, *, extreme: bool) -> QuantizedDecoder:
    """Integer tensors of the spec's shapes: at +-WEIGHT_LIMIT and exponents 0 or 12 (``extreme``), else moderate."""
    tensors, exps = [], []
    for shape in tensor_shapes(spec):
        if extreme:
            values = rng.choice([-WEIGHT_LIMIT, WEIGHT_LIMIT, 0, 1, -1], size=shape)
            exps.append(int(rng.choice([0, MAX_EXPONENT])))
        else:
            values = rng.integers(-300, 301, size=shape)
            exps.append(int(rng.integers(8, 11)))
        tensors.append(values.astype(np.int64))
    return QuantizedDecoder(tuple(tensors), tuple(exps))


def random_latents(spec: GridSpec, height: int, width: int, rng: np.random.Generator, *, extreme: bool) -> list[np.ndarray]:
    bound = spec.latent_bound
    low = min(3, bound)
    return [
        rng.choice([-bound, bound, 0], size=s) if extreme else rng.integers(-low, low + 1, size=s)
        for s in spec.grid_shapes(height, width)
    ]


EXTREME_SPECS = {
    "widest": GridSpec(levels=3, synthesis_widths=(32, 32, 32, 32), residual_layers=4, kernel=5, arm_hidden=(32, 32, 32),
                       latent_bound=63, input_shift=0),
    "default": GridSpec(),
    "bicubic-no-skip": GridSpec(levels=4, upsampling="bicubic", synthesis_widths=(4,), residual_layers=0, kernel=1,
                                arm_context=1, arm_hidden=(1,), latent_bound=1, input_shift=8, linear_skip=False),
}  # fmt: skip


@pytest.mark.parametrize("name", list(EXTREME_SPECS))
@pytest.mark.parametrize("extreme", [True, False], ids=["extreme", "moderate"])
def test_synthesis_upsampling_and_entropy_model_match_the_reference_at_the_extremes(name, extreme):
    spec = EXTREME_SPECS[name]
    rng = np.random.default_rng(len(name) + extreme)
    height, width = 19, 13
    decoder = random_decoder(spec, rng, extreme=extreme)
    latents = random_latents(spec, height, width, rng, extreme=extreme)
    image = synthesize(latents, decoder, spec, height, width)
    rspec = ref.parse_spec(spec.to_bytes())
    tensors, exps = list(decoder.tensors), list(decoder.exponents)
    out = ref.synthesis(ref.planes(latents, rspec, tensors, exps, height, width), rspec, tensors, exps)
    assert image.tobytes() == ref.to_image(out).tobytes()
    if extreme:  # the clamps are reached: the extremes are what they test
        assert np.abs(out).max() >= 1 << 24 or np.abs(ref.planes(latents, rspec, tensors, exps, height, width)).max() >= 1 << 24
    contexts = grid_contexts([torch.from_numpy(g.astype(np.float64)) for g in latents], spec).T.numpy()
    library = fixed_arm_params(contexts, fixed_arm_layers(decoder, spec), spec)
    mine = ref.arm(ref.contexts(latents, rspec), rspec, tensors, exps)
    for a, b in zip(library, mine, strict=True):
        np.testing.assert_array_equal(np.asarray(a, np.int64), b)


@pytest.mark.parametrize("name", ["default", "bicubic-no-skip"])
def test_a_payload_of_a_random_decoder_decodes_the_same_in_both(name):
    spec = EXTREME_SPECS[name]
    rng = np.random.default_rng(7)
    height, width = 17, 22
    decoder = random_decoder(spec, rng, extreme=False)
    latents = random_latents(spec, height, width, rng, extreme=False)
    payload = build_payload(latents, decoder, spec)
    image = decode_grid(payload, spec=spec, height=height, width=width)
    assert image.tobytes() == ref.decode(payload, spec.to_bytes(), height, width).image.tobytes()


def test_the_reference_refuses_what_the_decoder_refuses():
    spec = EXTREME_SPECS["bicubic-no-skip"]
    rng = np.random.default_rng(3)
    payload = bytearray(
        build_payload(random_latents(spec, 9, 9, rng, extreme=False), random_decoder(spec, rng, extreme=False), spec)
    )
    payload[1] ^= 0xFF  # the checksum
    with pytest.raises(ref.ReferenceError, match="checksum"):
        ref.decode(bytes(payload), spec.to_bytes(), 9, 9)


# ---------------------------------------------------------------------------------------------- threads
THREAD_SCRIPT = """
import sys, numpy as np, torch
sys.path.insert(0, {tests!r})
from test_grid_reference import thread_case
torch.set_num_threads(int(sys.argv[1]))
image = thread_case()
sys.stdout.buffer.write(image.tobytes())
"""


def thread_case() -> np.ndarray:
    """The 256 x 256 synthesis of the default spec with a random moderate decoder and random latents (seed 11)."""
    spec = replace(GridSpec(), warm_start=0)
    rng = np.random.default_rng(11)
    decoder = random_decoder(spec, rng, extreme=False)
    latents = random_latents(spec, 256, 256, rng, extreme=False)
    return synthesize(latents, decoder, spec, 256, 256)


@pytest.mark.slow
def test_grid_synthesis_is_bit_exact_with_1_and_2_threads_and_equals_the_reference():
    """256 x 256, default spec, 1 thread against 2, each in its own process (torch's thread pool is set once per process).

    torch does split this work: its element-wise kernels divide tensors above 32,768 elements between threads and the
    float64 convolutions run as BLAS products over 65,536 columns. Measured on the 2-core test machine under load
    (``torch.set_num_threads(n)``, 20 decodes of this case): 1.3 s of wall time with 1 thread, 13 s with 2, the
    threads waiting for each other, which a computation left on one thread would not do. A sum whose order changed
    with the split would show here, against the other process and against the int64 reference."""
    tests = str(Path(__file__).parent)
    images = []
    for threads in (1, 2):
        done = subprocess.run([sys.executable, "-c", THREAD_SCRIPT.format(tests=tests), str(threads)], capture_output=True,
                              check=True, timeout=300)  # fmt: skip
        images.append(np.frombuffer(done.stdout, np.float32).reshape(256, 256))
    assert images[0].tobytes() == images[1].tobytes()
    spec = replace(GridSpec(), warm_start=0)
    rng = np.random.default_rng(11)
    decoder = random_decoder(spec, rng, extreme=False)
    latents = random_latents(spec, 256, 256, rng, extreme=False)
    rspec = ref.parse_spec(spec.to_bytes())
    tensors, exps = list(decoder.tensors), list(decoder.exponents)
    out = ref.synthesis(ref.planes(latents, rspec, tensors, exps, 256, 256), rspec, tensors, exps)
    assert images[0].tobytes() == ref.to_image(out).tobytes()
    assert images[0].std() > 0.01  # a real image, not one clipped flat


def test_a_golden_file_decodes_the_same_in_a_fresh_process():
    """The decoder is not compared with itself: a fresh interpreter decodes the file, the reference decodes it here."""
    golden = next(p for p in NEW_GOLDEN if p.stem.startswith("v2-residual-fine"))
    code = "import sys; from sinco.codec.files import decode_file; sys.stdout.buffer.write(decode_file(open(sys.argv[1], 'rb').read())[1].tobytes())"
    done = subprocess.run([sys.executable, "-c", code, str(golden)], capture_output=True, check=True, timeout=120)
    parsed = parse_file(golden.read_bytes())
    container = unpack(golden.read_bytes())
    reference = ref.decode(container.payload, container.block, parsed.height, parsed.width).image
    assert done.stdout == reference.tobytes()
