"""The grid family's warm start: packaged decoder weights a fit starts from and the payload codes differences from."""

from __future__ import annotations

import dataclasses
import subprocess
import sys

import numpy as np
import pytest
import torch

from sinco.codec.grid import warm_start as W
from sinco.codec.grid.config import GRID_PRESETS
from sinco.codec.grid.networks import QuantizedDecoder, tensor_shapes
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.quantizer import network_bits, pack_network, unpack_network
from sinco.codec.grid.spec import DEFAULT_WARM_START, GridSpec
from sinco.codec.grid.training import fit_grid, train_warm_start
from sinco.errors import BitstreamError

SPEC = GridSpec(levels=3)
WARM_SPEC = dataclasses.replace(SPEC, warm_start=1)


def _warm(seed: int = 0) -> W.WarmStart:
    rng = np.random.default_rng(seed)
    return W.WarmStart(tensors=tuple(rng.integers(-9000, 9000, size=s) for s in tensor_shapes(SPEC)), spec=SPEC)


@pytest.fixture
def packaged(monkeypatch):
    """A warm start of id 1 for the 3-level spec, as if it were packaged."""
    warm = _warm()
    monkeypatch.setattr(W, "WARM_STARTS", {1: ("test.json", warm.sha256())})
    monkeypatch.setattr(W, "_load", lambda warm_id: warm)
    return warm


def test_the_spec_names_its_warm_start_in_a_version_3_block_and_other_specs_keep_their_version():
    assert GridSpec().to_bytes()[0] == 2 and dataclasses.replace(GridSpec(), linear_skip=False).to_bytes()[0] == 1
    block = WARM_SPEC.to_bytes()
    assert block[0] == 3 and GridSpec.from_bytes(block) == WARM_SPEC
    assert GridSpec.from_bytes(dataclasses.replace(WARM_SPEC, linear_skip=False).to_bytes()).linear_skip is False
    with pytest.raises(BitstreamError, match="version-3 block without a warm start"):
        GridSpec.from_bytes(block[:-1] + b"\x00")


def test_references_are_integer_shifts_of_the_stored_weights():
    warm = _warm()
    stored = warm.tensors[0]
    assert np.array_equal(warm.reference(0, W.STORED_EXPONENT), stored)
    assert np.array_equal(warm.reference(0, W.STORED_EXPONENT - 2), np.floor(stored / 4 + 0.5).astype(np.int64))  # half up
    assert np.array_equal(warm.reference(0, 0), np.floor(stored / 2**W.STORED_EXPONENT + 0.5).astype(np.int64))


def test_the_network_block_codes_differences_and_decodes_back(packaged):
    rng = np.random.default_rng(1)
    exps = tuple(int(e) for e in rng.integers(4, 12, size=len(packaged.tensors)))
    near = QuantizedDecoder(tuple(packaged.reference(i, e) + rng.integers(-2, 3, size=t.shape) for i, (t, e) in
                                  enumerate(zip(packaged.tensors, exps, strict=True))), exps)  # fmt: skip
    block = pack_network(near, warm=packaged)
    back = unpack_network(block, WARM_SPEC, warm=packaged)
    assert all(np.array_equal(a, b) for a, b in zip(back.tensors, near.tensors, strict=True)) and back.exponents == exps
    # Weights near the warm start cost far fewer bits as differences than as they are.
    assert network_bits(near, warm=packaged) < 0.5 * network_bits(near)


def test_a_fit_starts_from_the_warm_start_and_its_file_decodes_bit_exactly(packaged, phantom):
    target = torch.from_numpy(np.clip(phantom(24, 24) / 210, 0, 1).astype(np.float32))[None]
    config = dataclasses.replace(GRID_PRESETS["fast"].with_steps(30), lambda_rd=1e-4)
    result = fit_grid(target, spec=WARM_SPEC, config=config, device=torch.device("cpu"))[0]
    assert np.array_equal(decode_grid(result.payload, spec=WARM_SPEC, height=24, width=24), result.reconstruction)
    # Starting there: after a short fit the weights are still close to the warm start.
    start = packaged.floats()
    assert all(torch.allclose(a, b, atol=0.2) for a, b in zip(result.state.tensors, start, strict=True))
    plain = fit_grid(target, spec=SPEC, config=config, device=torch.device("cpu"))[0]
    assert result.payload != plain.payload


def test_a_warm_start_of_another_spec_or_an_unknown_id_is_refused(packaged, monkeypatch):
    with pytest.raises(BitstreamError, match="made for another decoder spec"):
        W.load_warm_start(dataclasses.replace(GridSpec(levels=4), warm_start=1))
    monkeypatch.setattr(W, "WARM_STARTS", {})
    with pytest.raises(BitstreamError, match="warm start 1 is unknown"):
        W.load_warm_start(WARM_SPEC)


def test_training_a_warm_start_moves_the_weights_and_keeps_the_shapes(phantom):
    images = [np.clip(phantom(16, 16) / 210, 0, 1), np.clip(phantom(20, 16).T / 210, 0, 1)]
    config = dataclasses.replace(GRID_PRESETS["fast"].with_steps(20), seed=3)
    tensors = train_warm_start(images, spec=SPEC, config=config, lambdas=[1e-3], device=torch.device("cpu"))
    warm = W.quantize_warm_start(tensors, SPEC)
    assert [t.shape for t in warm.tensors] == [tuple(s) for s in tensor_shapes(SPEC)]
    again = W.quantize_warm_start(train_warm_start(images, spec=SPEC, config=config, lambdas=[1e-3], device=torch.device("cpu")), SPEC)
    assert again.sha256() == warm.sha256()  # seeded: the same weights


def test_the_packaged_warm_start_matches_its_recorded_digest_and_the_default_spec():
    warm = W.load_warm_start(dataclasses.replace(GridSpec(), warm_start=DEFAULT_WARM_START))
    assert warm is not None and warm.spec == GridSpec()


def test_the_packaged_warm_start_loads_in_a_fresh_process_without_the_package_source_tree():
    code = "from sinco.codec.grid.warm_start import load_warm_start; from sinco.codec.grid.spec import GridSpec; " \
           "import dataclasses; print(load_warm_start(dataclasses.replace(GridSpec(), warm_start=1)).sha256())"  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd="/")
    assert out.stdout.strip() == W.WARM_STARTS[1][1]
