"""The grid family's residual layer: coding, golden bytes, payload v2, the rate search's use of it, hostile sections."""

import hashlib
import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.grid import residual as R
from sinco.codec.grid.config import GridFitConfig
from sinco.codec.grid.payload import (
    HEAD_BYTES,
    PAYLOAD_VERSION,
    RESIDUAL_HEAD_BYTES,
    RESIDUAL_PAYLOAD_VERSION,
    decode_grid,
    with_residual,
)
from sinco.codec.grid.rate_search import fit_grid_at_bpp
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import fit_grid
from sinco.errors import BitstreamError, InputError


def _pair(height: int = 24, width: int = 20) -> tuple[np.ndarray, np.ndarray]:
    """A target with a dark band, and a prediction on the grid's 2^-16 lattice that misses it a little."""
    i, j = np.mgrid[0:height, 0:width]
    target = (0.5 + 0.4 * np.sin(i / 3.0) * np.cos(j / 4.0)).astype(np.float32)
    target[:, :4] = 0.0
    prediction = (np.rint(np.clip(target + 0.01 * np.cos(i * j / 7.0), 0, 1) * 65536) / 65536).astype(np.float32)
    prediction[:, :3] = 0.0
    return target, prediction


def _mse(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))


@pytest.mark.parametrize("step", [1, 2, 37, 655, 20000, R.MAX_STEP])
def test_residual_round_trip_and_error_bound(step):
    target, prediction = _pair()
    layer = R.encode(target, prediction, levels=R.ONE, step=step)
    decoded = R.decode(layer.section, prediction)
    assert (decoded.levels, decoded.step) == (R.ONE, step) and np.array_equal(decoded.symbols, layer.symbols)
    corrected = decoded.apply(prediction)
    assert corrected.dtype == np.float32 and corrected.min() >= 0 and corrected.max() <= 1
    # Uniform quantization: every pixel within half a step of the target (clipping only brings it closer).
    assert np.abs(corrected.astype(np.float64) - target).max() <= step / 2 / R.ONE + 1e-9


def _integer_image(levels: int) -> np.ndarray:
    """An image of ``levels + 1`` grey levels scaled to [0, 1], as integer scans are."""
    target, _ = _pair()
    return (np.rint(target * levels) / levels).astype(np.float32)


@pytest.mark.parametrize("levels", [1, 255, 656, 4095])
def test_an_image_on_its_own_lattice_codes_losslessly_with_step_one(levels):
    target = _integer_image(levels)
    _, prediction = _pair()
    assert R.image_levels(target) == levels
    layer = R.encode(target, prediction, levels=levels, step=1)
    decoded = R.decode(layer.section, prediction)
    assert decoded.levels == levels and np.array_equal(decoded.apply(prediction), target)
    # Step s: at most s // 2 levels off, on the lattice.
    coarse = R.decode(R.encode(target, prediction, levels=levels, step=min(3, levels)).section, prediction).apply(prediction)
    assert np.abs(coarse.astype(np.float64) - target).max() <= (min(3, levels) // 2) / levels + 1e-7
    assert np.allclose(coarse * levels, np.rint(coarse * levels), atol=1e-3)


def test_images_without_a_coarse_lattice_use_the_fine_one():
    target, _ = _pair()
    assert R.image_levels(target) == R.ONE
    assert R.image_levels(np.full((4, 4), 0.3, np.float32)) == R.ONE  # one value: no gap to measure
    assert R.image_levels(_integer_image(255) + np.float32(1e-4) * (np.arange(24 * 20).reshape(24, 20) % 2)) == R.ONE


def test_fit_to_budget_picks_lossless_where_it_fits_on_an_integer_image():
    target = _integer_image(255)
    _, prediction = _pair()
    lossless = R.encode(target, prediction, levels=255, step=1)
    layer = R.fit_to_budget(target, prediction, budget_bits=8 * len(lossless.section) + 8, levels=255)
    assert layer is not None and (layer.levels, layer.step) == (255, 1)
    assert np.array_equal(layer.apply(prediction), target)
    # Without the lattice the same budget buys a near-miss, not the image.
    fine = R.fit_to_budget(target, prediction, budget_bits=8 * len(lossless.section) + 8)
    assert fine is not None and fine.levels == R.ONE and not np.array_equal(fine.apply(prediction), target)


def test_residual_golden_bytes():
    """The section's bytes are part of the format: a change here breaks files already written."""
    target, prediction = _pair()
    expected = {
        1: (563, "7d573ca9c7b34bc8a402969190e288e6b2b99f40502eb55d7d191c9953f54105"),
        37: (295, "858c2f509ab6d549cef4f6c3ed1c5b6880d80e656c2027b8d8ae48214113bfb5"),
        655: (104, "547d182ebfaa82235fea0decbf45bbc054d9cf49e200f1cce9928bc4ce62591c"),
    }
    for step, (size, digest) in expected.items():
        section = R.encode(target, prediction, levels=R.ONE, step=step).section
        assert (len(section), hashlib.sha256(section).hexdigest()) == (size, digest)


def test_estimate_tracks_the_real_section_and_fit_to_budget_keeps_the_budget():
    target, prediction = _pair(64, 64)
    for step in (3, 300, 3000):
        layer = R.encode(target, prediction, levels=R.ONE, step=step)
        base = R.on_lattice(prediction, levels=R.ONE)
        estimate = R.estimate_bits(layer.symbols, R.buckets(base, levels=R.ONE, step=step))
        assert estimate == pytest.approx(8 * len(layer.section), rel=0.1, abs=96)
    previous = None
    for budget in (400.0, 2000.0, 8000.0, 30000.0):
        layer = R.fit_to_budget(target, prediction, budget_bits=budget)
        assert layer is not None and 8 * len(layer.section) <= budget
        if previous is not None:  # more bits, finer step, less error
            assert layer.step <= previous.step and _mse(layer.apply(prediction), target) <= _mse(previous.apply(prediction), target)
        previous = layer
    assert R.fit_to_budget(target, prediction, budget_bits=16) is None


SPEC = GridSpec(levels=3, synthesis_widths=(8, 4), residual_layers=1, arm_hidden=(8,), arm_context=6)


@pytest.fixture(scope="module")
def tiny_fit():
    """A 32 x 32 grid fit (no residual) and its target."""
    target = torch.from_numpy(_pair(32, 32)[0])
    fitted = fit_grid(target[None], spec=SPEC, config=GridFitConfig(steps=60, ste_steps=15, lambda_rd=1e-3, seed=0),
                      device=torch.device("cpu"))[0]  # fmt: skip
    return target, fitted


def test_payload_v2_decodes_to_the_corrected_image_and_v1_stays_without_residual(tiny_fit):
    spec = SPEC
    target, fitted = tiny_fit
    assert fitted.payload[0] == PAYLOAD_VERSION and fitted.residual_step is None
    layer = R.encode(target.numpy(), fitted.reconstruction, levels=R.ONE, step=50)
    payload = with_residual(fitted.payload, layer)
    assert payload[0] == RESIDUAL_PAYLOAD_VERSION
    decoded = decode_grid(payload, spec=spec, height=32, width=32)
    assert np.array_equal(decoded, layer.apply(fitted.reconstruction))
    assert _mse(decoded, target.numpy()) < fitted.mse
    # A residual symbol changed (stream bytes kept whole): the checksum or the range decoder refuses it.
    broken = bytearray(payload)
    broken[-5] ^= 0x40
    with pytest.raises(BitstreamError):
        decode_grid(bytes(broken), spec=spec, height=32, width=32)


def test_the_pivot_moves_a_flat_trial_to_a_larger_lambda_and_leaves_others(tiny_fit):
    from sinco.codec.grid.rate_search import _RateSearch, _residual_pivot

    target, fitted = tiny_fit
    image = target.numpy()
    roomy = _RateSearch(budget=fitted.payload_bits + 600, header_bytes=0, band=0.03)
    flat = replace(fitted, config=fitted.config.with_lambda(1e-9))  # a grid file far past the balance point
    pivot = _residual_pivot(image, flat, roomy)
    assert pivot is not None and pivot > 1e-9
    # Its value: 2 ln 2 MSE over the share of pixels a halving of the residual's step costs a bit.
    layer = R.fit_to_budget(image, flat.reconstruction, budget_bits=600 - 8 * RESIDUAL_HEAD_BYTES)
    share = R.halving_cost(image, flat.reconstruction, step=layer.step) / image.size
    assert pivot == pytest.approx(2 * np.log(2) * flat.mse / share)
    steep = replace(fitted, config=fitted.config.with_lambda(1.0))  # grids still worth their bits: no move
    assert _residual_pivot(image, steep, roomy) is None
    # A trial within the band has nothing left to fill.
    assert _residual_pivot(image, flat, _RateSearch(budget=1.01 * fitted.payload_bits, header_bytes=0, band=0.03)) is None


def test_rate_search_fills_the_target_with_a_residual_where_the_grids_stop():
    """A target above what these tiny grids spend: the residual layer fills it; without it the file stays far below."""
    spec = SPEC
    target = torch.from_numpy(_pair(32, 32)[0])[None]
    config = GridFitConfig(steps=80, ste_steps=20, seed=0, max_rate_trials=2, context=False)
    common = dict(spec=spec, target_bpp=12.0, header_bytes=40, device=torch.device("cpu"), start_lambda=1e-6)
    plain = fit_grid_at_bpp(target, config=replace(config, residual=False), **common)[0]
    layered = fit_grid_at_bpp(target, config=config, **common)[0]
    budget = 12.0 * 32 * 32
    assert plain.residual_step is None and plain.payload_bits + 8 * 40 < 0.97 * budget
    assert layered.residual_step is not None and layered.residual_bits > 0
    assert 0.97 * budget <= layered.payload_bits + 8 * 40 <= budget and layered.within_band
    assert layered.mse < plain.mse / 10 and layered.trials <= config.max_rate_trials
    assert np.array_equal(decode_grid(layered.payload, spec=spec, height=32, width=32), layered.reconstruction)


def test_the_search_refits_from_scratch_after_a_first_trial_past_the_pivot(monkeypatch):
    """After the first trial, the pivot trial is a fit from scratch at ``pivot_refit`` times the estimate (with
    ``pivot_refit`` 0, a branch at the estimate); after a later trial, a branch at the estimate. The search ends
    after it."""
    import sinco.codec.grid.rate_search as fitting

    calls, pivots = [], []
    real_fit, real_pivot = fitting.fit_grid, fitting._residual_pivot

    def fit_spy(*args, **kwargs):
        calls.append((kwargs["config"].lambda_rd, kwargs["branch_from"] is not None))
        return real_fit(*args, **kwargs)

    def pivot_spy(*args, **kwargs):
        pivots.append(real_pivot(*args, **kwargs))
        return pivots[-1]

    monkeypatch.setattr(fitting, "fit_grid", fit_spy)
    monkeypatch.setattr(fitting, "_residual_pivot", pivot_spy)
    target = torch.from_numpy(_pair(32, 32)[0])[None]
    config = GridFitConfig(steps=80, ste_steps=20, seed=0, max_rate_trials=3, pivot_refit=3.0)
    common = dict(spec=SPEC, target_bpp=12.0, header_bytes=40, device=torch.device("cpu"), start_lambda=1e-6)
    result = fit_grid_at_bpp(target, config=config, **common)[0]
    assert pivots[0] is not None and len(pivots) == 1  # the first trial is far past the balance; no second pivot
    assert calls == [(1e-6, False), (pytest.approx(3.0 * pivots[0]), False)] and result.trials == 2
    calls.clear()
    pivots.clear()
    fit_grid_at_bpp(target, config=replace(config, pivot_refit=0.0), **common)
    assert calls == [(1e-6, False), (pytest.approx(pivots[0]), True)]
    # A pivot after the second trial: a branch at the estimate.
    calls.clear()
    pivots.clear()
    skipped = []

    def late_pivot(*args, **kwargs):
        value = real_pivot(*args, **kwargs)
        if not skipped:
            skipped.append(value)
            return None
        pivots.append(value)
        return value

    monkeypatch.setattr(fitting, "_residual_pivot", late_pivot)
    fit_grid_at_bpp(target, config=config, **common)
    assert len(calls) == 3 and calls[1][1] and calls[2] == (pytest.approx(pivots[0]), True)
    for bad in (0.5, float("nan")):
        with pytest.raises(InputError, match="pivot_refit"):
            GridFitConfig(pivot_refit=bad)


@pytest.mark.parametrize(
    "section, message",
    [(b"", "truncated"), (b"\xff\xff\x00\x00", "step 0"), (b"\x04\x00\x06\x00", "step 6 outside 1..5"),
     (b"\xff\xff\x25\x00", "truncated"), (b"\xff\xff\x25\x00\xff\xff\x7f", "reach"),
     (b"\xff\xff\x25\x00\x05\xfe", "scale index"), (b"\xff\xff\x25\x00" + b"\x00" * 64 + b"\x01\x02\x03", "whole 32-bit words")],
)  # fmt: skip
def test_hostile_residual_sections_are_refused_in_one_line(section, message):
    _, prediction = _pair()
    with pytest.raises(BitstreamError, match=message) as caught:
        R.decode(section, prediction)
    assert "\n" not in str(caught.value)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(st.binary(max_size=300), st.integers(1, 2000))
def test_garbage_residual_sections_decode_or_fail_with_a_bitstream_error(noise, step):
    target, prediction = _pair()
    valid = R.encode(target, prediction, levels=R.ONE, step=step).section
    for candidate in (noise, valid[:3] + noise, valid[: len(valid) // 2] + noise):
        try:
            layer = R.decode(candidate, prediction)
        except BitstreamError as exc:
            assert str(exc) and "\n" not in str(exc)
        else:
            assert np.abs(layer.symbols).max(initial=0) <= R.max_reach(levels=layer.levels, step=layer.step)


# ---------------------------------------------------------------------------------------------------- CLI
@pytest.fixture(scope="module")
def phantom(tmp_path_factory):
    from conftest import make_phantom

    folder = tmp_path_factory.mktemp("residual")
    np.save(folder / "img.npy", make_phantom(48, 48))
    return folder


@pytest.mark.slow
def test_cli_residual_on_and_off(phantom, run):
    from sinco.codec.files import parse_file

    args = ["compress", phantom / "img.npy", "--arch", "grid", "--steps", 60, "--bpp", 10, "--json", "--quiet", "--context", "off"]
    code, stdout, err = run([*args, "-o", phantom / "on.sinco"])
    assert code == 0, err
    on = json.loads(stdout)
    assert on["residual_step"] is not None and on["bpp_file"] <= 10
    assert parse_file((phantom / "on.sinco").read_bytes()).payload[0] == RESIDUAL_PAYLOAD_VERSION
    code, stdout, _ = run(["info", phantom / "on.sinco", "--json"])
    layout = json.loads(stdout)
    assert code == 0 and layout["payload_version"] == 2 and layout["residual"]["step"] == on["residual_step"]
    assert layout["residual"]["levels"] == on["residual_levels"] and 8 * layout["residual"]["bytes"] < on["residual_bits"]
    code, stdout, _ = run(["info", phantom / "on.sinco"])
    assert code == 0 and "residual    " in stdout and "bytes of coded error" in stdout and "parts       payload v2:" in stdout
    payload = parse_file((phantom / "on.sinco").read_bytes()).payload
    assert layout["network_bytes"] + layout["latent_bytes"] + HEAD_BYTES + RESIDUAL_HEAD_BYTES + layout["residual"]["bytes"] == len(payload)
    code, stdout, err = run([*args, "-o", phantom / "off.sinco", "--residual", "off"])
    assert code == 0, err
    off = json.loads(stdout)
    assert off["residual_step"] is None and off["psnr"] < on["psnr"]
    assert parse_file((phantom / "off.sinco").read_bytes()).payload[0] == PAYLOAD_VERSION
    sidecar = json.loads((phantom / "off.sinco.json").read_text())
    assert sidecar["fit"]["residual"] is False
    code, _, err = run([*args, "-o", phantom / "x.sinco", "--residual", "maybe"])
    assert code == 2 and "--residual 'maybe': expected on or off" in err and err.count("\n") == 1
    assert not (phantom / "x.sinco").exists()


@pytest.mark.slow
def test_hostile_files_with_a_residual_fail_with_one_line(phantom, run):
    from test_grid_family import check_mutations_decode_or_fail_in_one_line

    from sinco.codec.files import parse_file

    out = phantom / "fuzz.sinco"
    code, _, err = run(["compress", phantom / "img.npy", "-o", out, "--arch", "grid", "--steps", 40, "--bpp", 8, "--quiet", "--context", "off"])
    assert code == 0, err
    data = out.read_bytes()
    assert parse_file(data).payload[0] == RESIDUAL_PAYLOAD_VERSION  # the fuzzed file does carry a residual layer
    check_mutations_decode_or_fail_in_one_line(data)


@pytest.mark.slow
def test_a_volume_with_residual_layers_decodes_to_what_was_measured(tmp_path, run):
    import nibabel as nib
    from conftest import make_phantom

    vol = np.stack([make_phantom(32, 32) + 5 * k for k in range(2)], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    out = tmp_path / "v.sinco"
    code, stdout, err = run(["compress", tmp_path / "v.nii.gz", "--slices", "all", "-o", out, "--arch", "grid", "--steps", 40,
                             "--bpp", 20, "--quiet"])  # fmt: skip
    assert code == 0 and "(2 fitted, 0 constant)" in stdout, err
    records = json.loads(out.with_name("v.sinco.json").read_text())["slices"]
    assert all(r["residual_step"] is not None and 8 * (r["bytes"] - 5) <= 20 * 32 * 32 for r in records)  # 5: the record's own head
    code, _, err = run(["decompress", out, "-o", tmp_path / "d.nii.gz"])
    assert code == 0, err
    decoded = nib.load(str(tmp_path / "d.nii.gz")).get_fdata()
    for k, record in enumerate(records):
        scaled = (vol[..., k] - vol[..., k].min()) / (vol[..., k].max() - vol[..., k].min())
        mine = (decoded[..., k] - vol[..., k].min()) / (vol[..., k].max() - vol[..., k].min())
        assert 10 * np.log10(1 / np.mean((mine - scaled) ** 2)) == pytest.approx(record["psnr"], abs=0.05)
