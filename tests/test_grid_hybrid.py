"""The hybrid payload (version 3 with a grid prediction): a grid file's image as the context coder's side plane."""

import json
import struct
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import make_phantom

from sinco.codec.files import decode_file, write_file
from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.context import section_summary
from sinco.codec.grid.lossless import fit_to_budget
from sinco.codec.grid.payload import (
    CONTEXT_PAYLOAD_VERSION,
    context_parts,
    context_payload,
    context_section,
    decode_grid,
    payload_layout,
)
from sinco.codec.grid.rate_search import _hybrid_coded, fit_grid_at_bpp
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.errors import BitstreamError

SPEC = GridSpec(warm_start=1)
LEVELS = 200
GOLDEN = Path(__file__).parent / "data" / "grid_hybrid_golden"


@pytest.fixture(scope="module")
def grid_fit():
    """A noisy phantom on 201 grey levels and a short grid fit of it (its file well below the image's entropy)."""
    image = make_phantom(24, 28) + np.random.default_rng(0).normal(0, 3, (24, 28))
    image = (np.rint((image - image.min()) / (image.max() - image.min()) * LEVELS) / LEVELS).astype(np.float32)
    config = GridFitConfig(steps=40, ste_steps=10, seed=0, lambda_rd=1e-2)
    return image, fit_grid(torch.from_numpy(image)[None], spec=SPEC, config=config, device=torch.device("cpu"))[0]


def _hybrid(grid_fit, *, extra_bits: int):
    image, result = grid_fit
    coded = fit_to_budget(image, budget_bits=result.payload_bits + extra_bits, steps=30, grid_payload=result.payload,
                          prediction=result.reconstruction)  # fmt: skip
    assert coded is not None
    return image, result, coded


@pytest.mark.parametrize("extra_bits", [4500, 7000])
def test_hybrid_round_trip_is_bit_exact_and_within_its_bound(grid_fit, extra_bits):
    image, result, coded = _hybrid(grid_fit, extra_bits=extra_bits)
    assert 8 * len(coded.payload) <= result.payload_bits + extra_bits
    grid, section = context_parts(coded.payload)
    assert grid == result.payload and context_section(coded.payload) is None
    data = write_file(family="grid", spec=SPEC, payload=coded.payload, height=24, width=28, vmin=0.0, vmax=1.0)
    decoded = decode_file(data)[1]
    assert np.array_equal(decoded, (coded.levels / LEVELS).astype(np.float32))
    error = np.abs(np.rint(decoded.astype(np.float64) * LEVELS) - np.rint(image.astype(np.float64) * LEVELS)).max()
    assert error <= coded.max_error
    layout = payload_layout(coded.payload)
    assert layout["grid_prediction"]["bytes"] == len(result.payload)
    assert layout["context"] == {**layout["context"], "planes": 1, "top": LEVELS, "max_error": coded.max_error}


def test_tight_budget_takes_a_coarser_bound_and_the_levels_read_the_prediction(grid_fit):
    image, result, coarse = _hybrid(grid_fit, extra_bits=4500)
    _, _, fine = _hybrid(grid_fit, extra_bits=7000)
    assert coarse.max_error > fine.max_error
    # The section decodes to its levels with its own grid's image only: another grid file's image is another plane.
    _, section = context_parts(coarse.payload)
    config = GridFitConfig(steps=40, ste_steps=10, seed=1, lambda_rd=1e-2)
    other = fit_grid(torch.from_numpy(image)[None], spec=SPEC, config=config, device=torch.device("cpu"))[0]
    assert not np.array_equal(other.reconstruction, result.reconstruction)
    with pytest.raises(BitstreamError, match="checksum|decoded"):
        decode_grid(context_payload(section, grid_payload=other.payload), spec=SPEC, height=24, width=28)


def _hostile(payload: bytes) -> list[bytes]:
    grid, section = context_parts(payload)
    n = len(grid)
    flipped_grid = bytearray(payload)
    flipped_grid[5 + n // 2] ^= 0x40
    flipped_section = bytearray(payload)
    stream_start = 5 + n + 16 + section_summary(section)["network_bytes"]
    flipped_section[(stream_start + len(payload)) // 2] ^= 0x11
    no_plane = bytearray(section)
    no_plane[7] = 0  # the section's plane count
    return [
        payload[:3],  # shorter than its head
        struct.pack("<BI", CONTEXT_PAYLOAD_VERSION, n + len(section) + 1) + payload[5:],  # prediction past the end
        struct.pack("<BI", CONTEXT_PAYLOAD_VERSION, n) + b"\x03" + grid[1:] + section,  # a prediction of version 3
        struct.pack("<BI", CONTEXT_PAYLOAD_VERSION, n) + grid + bytes(no_plane),  # a hybrid section without its plane
        payload[: 5 + n + 10],  # truncated section
        payload[:-4],  # truncated stream
        bytes(flipped_grid),
        bytes(flipped_section),
    ]


def test_hostile_hybrid_payloads_are_refused_in_one_line(grid_fit):
    _, _, coded = _hybrid(grid_fit, extra_bits=4500)
    for bad in _hostile(coded.payload):
        with pytest.raises(BitstreamError) as caught:
            decode_grid(bad, spec=SPEC, height=24, width=28)
        assert "\n" not in str(caught.value)


def test_a_grid_payload_of_another_version_is_no_prediction(grid_fit):
    _, result = grid_fit
    with pytest.raises(ValueError, match="version-1"):
        context_payload(b"", grid_payload=b"\x02" + result.payload[1:])
    with pytest.raises(ValueError, match="together"):
        fit_to_budget(grid_fit[0], budget_bits=1e5, grid_payload=result.payload)


def test_the_rate_search_offers_the_hybrid_within_the_target(grid_fit):
    image, result = grid_fit
    budget = result.payload_bits + 6000
    coded = _hybrid_coded(image, result, budget_bits=budget, seed=0, error_to_beat=None)
    assert coded is not None and coded.payload_bits <= budget and coded.residual_step == 2 * ((coded.residual_step - 1) // 2) + 1
    assert coded.mse == pytest.approx(float(np.mean((coded.reconstruction.astype(np.float64) - image) ** 2)))
    # A bound that cannot beat a better file already found is not tried.
    assert _hybrid_coded(image, result, budget_bits=budget, seed=0, error_to_beat=1e-9) is None
    # The search with the hybrid as the only layer (a tiny image: the context networks are most of its file, and a
    # residual layer or the levels alone would win): within the target, and the hybrid at the higher rate.
    header = 40
    config = replace(GridFitConfig(steps=40, ste_steps=10, seed=0, max_rate_trials=2), hybrid=True, context=False, residual=False)
    for bpp in (6.0, 12.0):
        found = fit_grid_at_bpp(torch.from_numpy(image)[None], spec=SPEC, config=config, target_bpp=bpp, header_bytes=header,
                                device=torch.device("cpu"), start_lambda=1e-2)[0]  # fmt: skip
        assert found.payload_bits + 8 * header <= bpp * image.size
        decoded = decode_grid(found.payload, spec=SPEC, height=24, width=28)
        assert np.array_equal(decoded, found.reconstruction)
    assert context_parts(found.payload)[0] and found.residual_levels == LEVELS
    error = np.abs(np.rint(decoded.astype(np.float64) * LEVELS) - np.rint(image.astype(np.float64) * LEVELS)).max()
    assert error <= (found.residual_step - 1) // 2


@pytest.mark.skipif(not GOLDEN.exists(), reason="no hybrid golden files (tests/data/make_grid_hybrid_golden.py)")
def test_hybrid_golden_files_still_decode():
    meta = json.loads((GOLDEN / "meta.json").read_text())
    assert meta
    for name in meta:
        data = (GOLDEN / f"{name}.sinco").read_bytes()
        assert np.array_equal(decode_file(data)[1], np.load(GOLDEN / f"{name}.npy"))


@pytest.mark.skipif(not GOLDEN.exists(), reason="no hybrid golden files (tests/data/make_grid_hybrid_golden.py)")
def test_info_shows_the_hybrid_layout_and_truncations_are_refused(run, tmp_path):
    source = GOLDEN / "v3-hybrid-near-24x28.sinco"
    code, stdout, _ = run(["info", source])
    assert code == 0 and "prediction  grid payload v1" in stdout and "side plane" in stdout
    info = json.loads(run(["info", source, "--json"])[1])
    assert info["grid_prediction"]["bytes"] > 0 and info["context"]["planes"] == 1 and info["context"]["max_error"] > 0
    data = source.read_bytes()
    for cut in range(60, len(data), 97):
        truncated = tmp_path / "t.sinco"
        truncated.write_bytes(data[:cut])
        code, _, err = run(["decompress", truncated, "-o", tmp_path / "t.npy"])
        assert code != 0 and len(err.strip().splitlines()) == 1 and not (tmp_path / "t.npy").exists()


def test_hybrid_is_an_option_of_the_grid_family_and_off_by_default():
    from sinco.codec.grid.family import GridFamily
    from sinco.errors import InputError

    family = GridFamily()
    assert family.fit_config("fast", {}).grid.hybrid is False
    assert family.fit_config("fast", {"hybrid": "on"}).grid.hybrid is True
    assert "on a grid prediction" in family.describe_fit(family.fit_config("fast", {"hybrid": "on"}))
    with pytest.raises(InputError, match="--hybrid 'maybe': expected on or off"):
        family.fit_config("fast", {"hybrid": "maybe"})
    with pytest.raises(InputError, match="hybrid_grids 0"):
        GridFitConfig(hybrid_grids=0)
