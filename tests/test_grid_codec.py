"""The latent-grid family: spec bytes, payload round trip, bit-exact decode, rate estimate and search, hostile input."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import make_phantom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.grid.config import GRID_PRESETS, GridFitConfig
from sinco.codec.grid.forward import latent_bits as latent_bits
from sinco.codec.grid.forward import reconstruct as reconstruct
from sinco.codec.grid.payload import decode_grid
from sinco.codec.grid.rate_search import fit_grid_at_bpp
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.training import _init_state, fit_grid
from sinco.errors import BitstreamError, InputError

SIZE = 32
SPEC = GridSpec(levels=3, synthesis_widths=(8, 4), residual_layers=1, arm_hidden=(8,), arm_context=6)  # learned upsampling
BICUBIC = replace(SPEC, upsampling="bicubic")
CONFIG = GridFitConfig(steps=120, ste_steps=30, lambda_rd=1e-3, seed=0, max_rate_trials=5)
# spec v1 (no skip), v2, v2 with learned upsampling
GOLDEN = [Path(__file__).parent / "data" / name for name in ("grid_golden", "grid_golden_v2", "grid_golden_learned")]


def target_image(size: int = SIZE) -> torch.Tensor:
    image = make_phantom(size, size)
    return torch.from_numpy(((image - image.min()) / (image.max() - image.min())).astype(np.float32))


@pytest.fixture(scope="module")
def fitted():
    return fit_grid(target_image()[None], spec=SPEC, config=CONFIG, device=torch.device("cpu"))[0]


# ---------------------------------------------------------------------------------------------- spec
def test_spec_bytes_round_trip_and_size():
    version_1 = bytes([1, 7, 0, 1, 8, 1, 3, 9, 1, 8, 31, 3])  # written before the linear skip: still parses, without it
    old = GridSpec(upsampling="bicubic", synthesis_widths=(8,), residual_layers=1, arm_hidden=(8,), linear_skip=False)
    assert GridSpec.from_bytes(version_1) == old
    assert GridSpec.from_bytes(bytes([2]) + version_1[1:] + bytes([1])).linear_skip
    assert GridSpec(linear_skip=False).to_bytes()[0] == 1 and GridSpec().to_bytes()[0] == 2
    for spec in (GridSpec(), SPEC, BICUBIC, GridSpec(levels=1, synthesis_widths=(32,), residual_layers=0, kernel=1, arm_hidden=(1, 2, 3)),
                 GridSpec(linear_skip=False)):  # fmt: skip
        assert GridSpec.from_bytes(spec.to_bytes()) == spec
    assert 300 <= GridSpec().macs_per_pixel() <= 2000
    assert GridSpec().grid_shapes(240, 230)[-1] == (4, 4)


@pytest.mark.parametrize(
    "block",
    [b"", b"\x01", b"\x03" + GridSpec().to_bytes()[1:], GridSpec().to_bytes() + b"\x00", GridSpec().to_bytes()[:-1],
     GridSpec().to_bytes()[:-1] + b"\x00", GridSpec().to_bytes()[:-1] + b"\x02",
     bytes([1, 0, 0, 1, 8, 1, 3, 9, 1, 8, 31, 3]), bytes([1, 7, 0, 1, 200, 1, 3, 9, 1, 8, 31, 3]),
     bytes([1, 7, 0, 1, 8, 1, 3, 9, 1, 8, 200, 3]), bytes([1, 7, 5, 1, 8, 1, 3, 9, 1, 8, 31, 3]),
     bytes([1, 7, 0, 1, 8, 1, 3, 9, 1, 8, 31, 200]), bytes([1, 7, 0, 1, 8, 1, 3, 9, 1, 8, 31])],
)  # fmt: skip
def test_hostile_spec_blocks_are_one_line_errors(block):
    with pytest.raises(BitstreamError) as info:
        GridSpec.from_bytes(block)
    assert "\n" not in str(info.value) and "grid spec block" in str(info.value)


@settings(max_examples=200, deadline=None, derandomize=True)
@given(st.binary(max_size=20))
def test_random_spec_blocks_parse_or_fail_cleanly(block):
    try:
        spec = GridSpec.from_bytes(block)
    except BitstreamError:
        return
    assert spec.to_bytes() == block


def test_bad_settings_are_input_errors():
    with pytest.raises(InputError, match=r"--lambda-rd -0.5"):
        GridFitConfig(lambda_rd=-0.5)
    with pytest.raises(InputError, match="levels 0"):
        GridSpec(levels=0)
    from sinco.codec.grid.family import GridFamily

    # The family lists its presets without importing torch; the benchmark resolves --preset against that list.
    assert set(GRID_PRESETS) == set(GridFamily.presets) == {"fast", "quality", "long"}
    with pytest.raises(InputError, match="targets"):
        fit_grid(torch.full((1, 8, 8), 2.0), spec=SPEC, config=CONFIG, device=torch.device("cpu"))
    with pytest.raises(InputError, match="targets"):
        fit_grid(torch.zeros(8, 8), spec=SPEC, config=CONFIG, device=torch.device("cpu"))
    with pytest.raises(InputError, match="image size"):
        SPEC.validate_for(0, 8)


# ------------------------------------------------------------------------------------------- payload
def test_payload_decodes_to_the_fitted_reconstruction(fitted):
    decoded = decode_grid(fitted.payload, spec=SPEC, height=SIZE, width=SIZE)
    assert decoded.dtype == np.float32 and decoded.shape == (SIZE, SIZE)
    assert np.array_equal(decoded, fitted.reconstruction)
    assert fitted.payload_bits == 8 * len(fitted.payload)
    mse = float(np.mean((decoded.astype(np.float64) - target_image().double().numpy()) ** 2))
    assert mse == pytest.approx(fitted.mse)
    assert 10 * np.log10(1 / mse) > 20  # it learned the image, not a constant


def test_linear_skip_is_coded_and_used_and_specs_without_it_still_fit(fitted):
    from sinco.codec.grid.payload import HEAD_BYTES, synthesize
    from sinco.codec.grid.quantizer import round_latents as round_latents
    from sinco.codec.grid.quantizer import unpack_network

    n_network = int.from_bytes(fitted.payload[5:HEAD_BYTES], "little")  # the head: u8 version, u32 CRC, u32 length
    decoder = unpack_network(fitted.payload[HEAD_BYTES : HEAD_BYTES + n_network], SPEC)
    skip = len(decoder.tensors) - (SPEC.levels - 1) - 1  # the skip, then the upsampling stages
    assert decoder.tensors[skip].shape == (1, SPEC.levels, 1, 1) and np.abs(decoder.tensors[skip]).max() > 0
    latents = [g.numpy().astype(np.int64) for g in round_latents(fitted.state.latents, SPEC.latent_bound)]
    tensors = list(decoder.tensors)
    tensors[skip] = np.zeros_like(tensors[skip])
    without = replace(decoder, tensors=tuple(tensors))
    assert not np.array_equal(synthesize(latents, without, SPEC, SIZE, SIZE), fitted.reconstruction)  # the skip shapes the image
    plain_spec = replace(SPEC, linear_skip=False)
    plain = fit_grid(target_image()[None], spec=plain_spec, config=CONFIG, device=torch.device("cpu"))[0]
    assert np.array_equal(decode_grid(plain.payload, spec=plain_spec, height=SIZE, width=SIZE), plain.reconstruction)


def test_estimated_rate_within_5_percent_of_the_payload(fitted):
    assert abs(fitted.estimated_bits - fitted.payload_bits) <= 0.05 * fitted.payload_bits


def test_decode_is_bit_exact_across_threads_and_processes(fitted, tmp_path):
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        one = decode_grid(fitted.payload, spec=SPEC, height=SIZE, width=SIZE)
        torch.set_num_threads(2)
        two = decode_grid(fitted.payload, spec=SPEC, height=SIZE, width=SIZE)
    finally:
        torch.set_num_threads(threads)
    assert one.tobytes() == two.tobytes()
    (tmp_path / "payload.bin").write_bytes(fitted.payload)
    (tmp_path / "spec.bin").write_bytes(SPEC.to_bytes())
    script = (
        "import sys, torch, numpy as np; from pathlib import Path; from sinco.codec.grid.spec import GridSpec; from sinco.codec.grid.payload import decode_grid;"
        "torch.set_num_threads(2); d = Path(sys.argv[1]);"
        f"img = decode_grid((d / 'payload.bin').read_bytes(), spec=GridSpec.from_bytes((d / 'spec.bin').read_bytes()), height={SIZE}, width={SIZE});"
        "(d / 'out.bin').write_bytes(img.tobytes())"
    )  # fmt: skip
    subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True, timeout=120)
    assert (tmp_path / "out.bin").read_bytes() == one.tobytes()


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_hostile_payloads_raise_bitstream_errors_only(fitted, data):
    payload = bytearray(fitted.payload)
    kind = data.draw(st.sampled_from(["random", "truncate", "flip", "insert"]))
    if kind == "random":
        hostile = data.draw(st.binary(max_size=400))
    elif kind == "truncate":
        hostile = bytes(payload[: data.draw(st.integers(0, len(payload) - 1))])
    elif kind == "flip":
        at = data.draw(st.integers(0, len(payload) - 1))
        payload[at] ^= data.draw(st.integers(1, 255))
        hostile = bytes(payload)
    else:
        at = data.draw(st.integers(0, len(payload)))
        hostile = bytes(payload[:at] + data.draw(st.binary(min_size=1, max_size=8)) + payload[at:])
    try:
        image = decode_grid(hostile, spec=SPEC, height=SIZE, width=SIZE)
    except BitstreamError as exc:
        assert "\n" not in str(exc)
        return
    # Only a change the decoder never reads (the range coder's padding) may decode, and then to the same image.
    assert np.array_equal(image, fitted.reconstruction)


@pytest.mark.parametrize("golden", GOLDEN, ids=lambda p: p.name)
def test_golden_payload_decodes_to_the_committed_image(golden):
    meta = json.loads((golden / "meta.json").read_text())
    spec = GridSpec.from_bytes(bytes.fromhex(meta["spec"]))
    assert spec.linear_skip == (golden.name != "grid_golden")
    assert spec.upsampling == ("learned" if golden.name.endswith("learned") else "bicubic")
    image = decode_grid((golden / "payload.bin").read_bytes(), spec=spec, height=meta["height"], width=meta["width"])
    assert image.tobytes() == np.load(golden / "expected.npy").tobytes()


# ------------------------------------------------------------------------------------- learned upsampling
def test_learned_upsampling_starts_as_bicubic_in_both_arithmetics():
    from sinco.codec.grid.numerics import FRAC_BITS
    from sinco.codec.grid.upsampling import upsample_grids

    shapes = [(9, 7), (5, 4), (3, 2)]
    generator = torch.Generator().manual_seed(0)
    grids = [torch.randint(-31, 32, (1, 1, *shape), generator=generator).double() for shape in shapes]
    zeros = [torch.zeros(4, dtype=torch.float64) for _ in shapes[1:]]
    fixed = [g * 2.0 ** (FRAC_BITS - 3) for g in grids]
    assert torch.equal(upsample_grids(fixed, shapes, exact=True), upsample_grids(fixed, shapes, exact=True, deltas=zeros,
                                                                                  delta_exponents=[0, 9]))  # fmt: skip
    assert torch.allclose(upsample_grids(grids, shapes, exact=False), upsample_grids(grids, shapes, exact=False, deltas=zeros))
    nudged = [torch.tensor([0.0, 0.0, 0.0, 1.0], dtype=torch.float64), zeros[1]]  # u3 one step of 2^-4 up, in the finest stage
    moved = upsample_grids(fixed, shapes, exact=True, deltas=nudged, delta_exponents=[4, 0])
    assert torch.equal(moved[:, 0], fixed[0][:, 0]) and not torch.equal(moved[:, 1:], upsample_grids(fixed, shapes, exact=True)[:, 1:])


def test_learned_upsampling_is_fitted_coded_and_decoded_bit_exactly(fitted):
    from sinco.codec.grid.payload import HEAD_BYTES, synthesize
    from sinco.codec.grid.quantizer import round_latents as round_latents
    from sinco.codec.grid.quantizer import unpack_network

    assert SPEC.upsampling == GridSpec().upsampling == "learned" and GridSpec.from_bytes(SPEC.to_bytes()) == SPEC
    decoded = decode_grid(fitted.payload, spec=SPEC, height=SIZE, width=SIZE)
    assert np.array_equal(decoded, fitted.reconstruction)
    with pytest.raises(BitstreamError):  # the stages' tensors are part of the payload: the other spec cannot read it
        decode_grid(fitted.payload, spec=BICUBIC, height=SIZE, width=SIZE)
    n_network = int.from_bytes(fitted.payload[5:HEAD_BYTES], "little")
    decoder = unpack_network(fitted.payload[HEAD_BYTES : HEAD_BYTES + n_network], SPEC)
    stages = decoder.tensors[-(SPEC.levels - 1) :]
    assert [t.shape for t in stages] == [(4,)] * (SPEC.levels - 1) and any(np.abs(t).max() > 0 for t in stages)
    latents = [g.numpy().astype(np.int64) for g in round_latents(fitted.state.latents, SPEC.latent_bound)]
    bicubic = replace(decoder, tensors=(*decoder.tensors[: -len(stages)], *(np.zeros_like(t) for t in stages)))
    assert not np.array_equal(synthesize(latents, bicubic, SPEC, SIZE, SIZE), decoded)  # the fitted taps shape the image
    assert abs(fitted.estimated_bits - fitted.payload_bits) <= 0.05 * fitted.payload_bits


def test_hostile_learned_taps_decode_to_a_bounded_image_on_any_thread_count(fitted):
    from sinco.codec.grid.networks import QuantizedDecoder
    from sinco.codec.grid.numerics import ACT_LIMIT, FRAC_BITS, WEIGHT_LIMIT
    from sinco.codec.grid.payload import synthesize
    from sinco.codec.grid.quantizer import round_latents as round_latents
    from sinco.codec.grid.upsampling import upsample_grids

    latents = [g.numpy().astype(np.int64) for g in round_latents(fitted.state.latents, SPEC.latent_bound)]
    n_stages = SPEC.levels - 1
    # Every weight 1 at step 1, every tap delta at the largest value a payload can hold: a gain of about 2^17 a stage.
    ones = [np.ones(t.shape, np.int64) for t in fitted.state.tensors[:-n_stages]]
    extreme = [np.full(4, WEIGHT_LIMIT, np.int64) for _ in range(n_stages)]
    hostile = QuantizedDecoder(tuple(ones + extreme), (0,) * (len(ones) + n_stages))
    threads = torch.get_num_threads()
    try:
        images = []
        for count in (1, 2):
            torch.set_num_threads(count)
            images.append(synthesize(latents, hostile, SPEC, SIZE, SIZE))
    finally:
        torch.set_num_threads(threads)
    assert images[0].tobytes() == images[1].tobytes()
    assert np.isfinite(images[0]).all() and images[0].min() >= 0 and images[0].max() <= 1
    # The planes stay integers within the activation limit, so every later sum is exact (below 2^53).
    grids = [torch.from_numpy(g.astype(np.float64) * 2.0 ** (FRAC_BITS - SPEC.input_shift))[None, None] for g in latents]
    planes = upsample_grids(grids, SPEC.grid_shapes(SIZE, SIZE), exact=True,
                            deltas=[torch.from_numpy(t.astype(np.float64)) for t in extreme], delta_exponents=[0] * n_stages)  # fmt: skip
    assert planes.abs().max() <= ACT_LIMIT and torch.equal(planes, planes.floor())
    assert planes.abs().max() == ACT_LIMIT  # these taps do reach the limit: the clamp is what holds them


# ------------------------------------------------------------------------------------------- rate search
def test_rate_search_starts_from_the_measured_prior():
    from sinco.codec.grid.config import FAST_RATE_PRIOR as PRIOR
    from sinco.codec.grid.rate_search import initial_lambda

    guesses = [initial_lambda(bpp) for bpp in (0.1, 0.3, 0.6, 1.2, 2.0)]
    assert all(a > b for a, b in zip(guesses[:-2], guesses[1:-1], strict=True))  # more rate, smaller lambda
    assert guesses[0] == pytest.approx(PRIOR[0][1]) and guesses[-1] == pytest.approx(PRIOR[-1][1])  # clamped
    assert initial_lambda(PRIOR[2][0]) == pytest.approx(PRIOR[2][1])
    assert initial_lambda(0.637, GRID_PRESETS["quality"].rate_prior) == pytest.approx(1e-4)  # each preset its own
    for bad in (((0.3, 1e-3),), ((0.3, 1e-3), (0.2, 1e-4)), ((0.3, 1e-3), (0.6, 1e-2)), ((0.3, -1.0), (0.6, 1e-4)), "x"):
        with pytest.raises(InputError, match="rate_prior"):
            GridFitConfig(rate_prior=bad)
    with pytest.raises(InputError, match="start_lambda 0"):
        fit_grid_at_bpp(target_image()[None], spec=SPEC, config=CONFIG, target_bpp=1.0, header_bytes=0,
                        device=torch.device("cpu"), start_lambda=0.0)  # fmt: skip


def test_the_first_lambda_is_the_images_own_jpeg2000_slope_times_the_presets_factor():
    from sinco.codec.grid.prior import classical_slope
    from sinco.codec.grid.rate_search import first_lambda, initial_lambda

    image = target_image(64)
    slopes = [classical_slope(image.numpy(), target_bpp=bpp) for bpp in (0.5, 1.0, 2.0)]
    assert all(s is not None and s > 0 for s in slopes)
    assert slopes[0] > slopes[1] > slopes[2]  # distortion falls ever more slowly with rate
    config = replace(CONFIG, prior_slope_factor=3.0)
    assert first_lambda(image, target_bpp=1.0, config=config) == pytest.approx(3.0 * slopes[1])
    # A busier image has a steeper curve, so it starts at a larger lambda than the same rate prior would give.
    noisy = (image + 0.2 * torch.rand(image.shape, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    assert first_lambda(noisy, target_bpp=1.0, config=config) > first_lambda(image, target_bpp=1.0, config=config)
    # No two JPEG 2000 points within the rates (headers alone exceed them on a tiny image): the rate prior.
    tiny = target_image(8)
    assert classical_slope(tiny.numpy(), target_bpp=0.05) is None
    assert first_lambda(tiny, target_bpp=0.05, config=config) == pytest.approx(initial_lambda(0.05, config.rate_prior))
    assert first_lambda(image, target_bpp=1.0, config=CONFIG) == pytest.approx(initial_lambda(1.0, CONFIG.rate_prior))
    with pytest.raises(InputError, match="prior_slope_factor -1"):
        GridFitConfig(prior_slope_factor=-1.0)
    assert GRID_PRESETS["fast"].prior_slope_factor > 0 and GRID_PRESETS["quality"].prior_slope_factor > 0


def test_rate_search_jumps_along_the_measured_slope():
    from sinco.codec.grid.rate_search import _next_lambda

    # Before two trials: size taken as lambda^-1/5, so 10% too small -> lambda times 0.9^5.
    assert _next_lambda(1e-4, 900.0, None, None, aim=1000.0) == pytest.approx(1e-4 * 0.9**5)
    # A measured slope of -0.1 (rate barely moves with lambda): the same shortfall needs a much larger jump.
    flat = _next_lambda(1e-4, 900.0, None, None, aim=1000.0, previous=(1e-3, 900.0 * 10**-0.1))
    assert flat == pytest.approx(1e-4 * (1000 / 900) ** -10)
    # Rate that did not move: the slope is capped at -0.05, and a jump at 64x.
    assert _next_lambda(1e-4, 900.0, None, None, aim=1000.0, previous=(1e-3, 900.0)) == pytest.approx(1e-4 * (1000 / 900) ** -20)
    assert _next_lambda(1e-4, 500.0, None, None, aim=1000.0, previous=(1e-3, 500.0)) == pytest.approx(1e-4 / 64)
    # Inside a bracket the secant stays within it.
    assert 1e-5 < _next_lambda(1e-4, 900.0, (1e-4, 900.0), (1e-5, 1200.0), aim=1000.0, previous=(1e-5, 1200.0)) < 1e-4


def test_rate_search_halves_the_bracket_when_the_secant_keeps_one_end():
    from sinco.codec.grid.rate_search import _RateSearch

    # The trials of an LGG slice at 2 bpp (bits per pixel here): 0.99 fits, then 2.36 and 2.24 both too big. The
    # secant from (2.24, 0.99) would move only 16% of the bracket's log width; the search bisects it instead.
    search = _RateSearch(budget=2.0, header_bytes=0, band=0.03)
    result = SimpleNamespace(payload_bits=0, mse=1.0)
    for lam, bpp in ((9.15e-5, 0.99), (2.96e-6, 2.36)):
        search.add(lam, replace_bits(result, bpp))
    secant = search.next_lambda(2.96e-6)
    assert 2.96e-6 < secant < 9.15e-5 and secant != pytest.approx(math.sqrt(2.96e-6 * 9.15e-5))  # sides differ: secant
    search.add(6.06e-6, replace_bits(result, 2.24))
    assert search.next_lambda(6.06e-6) == pytest.approx(math.sqrt(6.06e-6 * 9.15e-5))  # two too big in a row: bisect


def replace_bits(result: SimpleNamespace, bits: float) -> SimpleNamespace:
    return SimpleNamespace(**{**vars(result), "payload_bits": bits})


def test_a_branch_at_the_same_lambda_reproduces_the_fit_and_costs_only_the_rest_of_the_schedule():
    """Rate-search trials resume the first fit's checkpoint: parameters, Adam moments, noise and schedule."""
    config = replace(CONFIG, branch_at=0.5)
    first = fit_grid(target_image()[None], spec=SPEC, config=config, device=torch.device("cpu"), keep_checkpoint=True)[0]
    assert first.checkpoint is not None and first.checkpoint.step == 45  # half of the 90 soft steps
    again = fit_grid(target_image()[None], spec=SPEC, config=config, device=torch.device("cpu"), branch_from=[first.checkpoint])[0]
    assert again.payload == first.payload and again.steps == config.steps - 45
    other = fit_grid(target_image()[None], spec=SPEC, config=config.with_lambda(0.1), device=torch.device("cpu"),
                     branch_from=[first.checkpoint])[0]  # fmt: skip
    assert other.payload != first.payload


def test_candidates_go_on_with_the_seed_of_least_early_loss_exactly_as_a_fit_from_that_seed():
    """config.candidates: each seed trains candidate_steps steps; the one of least recent loss finishes the schedule."""
    from sinco.codec.grid.training import _init_state, _train

    target = target_image()
    config = replace(CONFIG, candidates=3, candidate_steps=40, branch_at=0.5)
    early = []
    for seed in range(3):
        state = _init_state(SPEC, (SIZE, SIZE), seed, torch.device("cpu"))
        outcome = _train(target, state, spec=SPEC, config=replace(config, seed=seed), regularizer=None, lam=0.0,
                         progress=False, stop_at=40)  # fmt: skip
        assert outcome.kept is not None and outcome.kept.step == 40 and math.isfinite(outcome.recent_loss)
        early.append(outcome.recent_loss)
    assert len(set(early)) == 3  # the seeds do differ
    chosen = fit_grid(target[None], spec=SPEC, config=config, device=torch.device("cpu"), keep_checkpoint=True)[0]
    assert chosen.candidate_seed == int(np.argmin(early))
    assert chosen.steps == 3 * 40 + CONFIG.steps - 40
    plain = fit_grid(target[None], spec=SPEC, config=replace(CONFIG, seed=chosen.candidate_seed, branch_at=0.5),
                     device=torch.device("cpu"), keep_checkpoint=True)[0]  # fmt: skip
    assert plain.payload == chosen.payload and plain.candidate_seed is None
    # the rate search's branch point is the winner's: a branch there reproduces the file
    assert chosen.checkpoint is not None and chosen.checkpoint.step == 45
    again = fit_grid(target[None], spec=SPEC, config=config, device=torch.device("cpu"), branch_from=[chosen.checkpoint])[0]
    assert again.payload == chosen.payload and again.candidate_seed == chosen.candidate_seed  # branches report the seed too
    assert decode_grid(chosen.payload, spec=SPEC, height=SIZE, width=SIZE).tobytes() == chosen.reconstruction.tobytes()
    # a rate search's file, a branch or a trimmed or layered copy, reports the seed its fit went on with
    found = fit_grid_at_bpp(target[None], spec=SPEC, config=replace(config, max_rate_trials=2), target_bpp=5.0, header_bytes=40,
                            device=torch.device("cpu"))[0]  # fmt: skip
    assert found.candidate_seed in (0, 1, 2) and found.payload_bits + 8 * 40 <= 5.0 * SIZE * SIZE


def test_candidate_settings_are_checked_and_follow_the_step_count():
    with pytest.raises(InputError, match="candidate_steps 45"):
        replace(CONFIG, candidates=2, candidate_steps=45, branch_at=0.5)  # at the branch point
    with pytest.raises(InputError, match="candidates 0"):
        replace(CONFIG, candidates=0)
    quality = GRID_PRESETS["quality"]
    assert quality.candidates > 1
    half = quality.with_steps(quality.steps // 2)
    assert (half.candidates, half.candidate_steps) == (quality.candidates, quality.candidate_steps // 2)
    assert quality.with_steps(2).candidates == 1  # no room for candidates in the schedule: one fit
    long = GRID_PRESETS["long"]  # twice the quality schedule: what the docs' 12,000-step benchmarks ran
    assert (long.steps, long.ste_steps, long.candidates, long.candidate_steps) == (12000, 1600, 4, 800)
    assert long == quality.with_steps(12000)


def test_a_file_slightly_above_its_target_fits_once_its_networks_are_coarser(fitted):
    from sinco.codec.grid.rate_search import _trim_to_budget

    budget = fitted.payload_bits - 48  # six bytes too many
    trimmed = _trim_to_budget(target_image(), fitted, budget_bits=budget, header_bytes=0)
    assert trimmed is not None and trimmed.payload_bits <= budget and trimmed.network_rate_weight > 1
    assert trimmed.network_bits < fitted.network_bits and trimmed.mse >= fitted.mse
    assert np.array_equal(decode_grid(trimmed.payload, spec=SPEC, height=SIZE, width=SIZE), trimmed.reconstruction)
    # Too far above (more than 10%): not tried.
    assert _trim_to_budget(target_image(), fitted, budget_bits=0.85 * fitted.payload_bits, header_bytes=0) is None


def test_when_every_trial_is_too_big_a_rescue_trial_further_out_comes_before_trimming(fitted, monkeypatch):
    import sinco.codec.grid.rate_search as grid_fit

    budget = 6.0 * SIZE * SIZE
    sizes = iter([1.30, 1.28, 1.25, 0.90])  # three trials over the target (beyond trimming's 10%), then the rescue
    lambdas = []

    def fake_fit(*args, config, **kwargs):
        lambdas.append(config.lambda_rd)
        return [replace(fitted, payload_bits=int(next(sizes) * budget), config=config)]

    monkeypatch.setattr(grid_fit, "fit_grid", fake_fit)
    config = replace(CONFIG, max_rate_trials=3, residual=False, context=False)  # fake trial files: no residual, no context coder
    result = fit_grid_at_bpp(target_image()[None], spec=SPEC, config=config, target_bpp=6.0, header_bytes=0, device=torch.device("cpu"))[0]
    assert result.trials == 4 and result.payload_bits == int(0.90 * budget) and result.config.lambda_rd == lambdas[-1]
    assert lambdas[-1] > 4 * lambdas[-2]  # further out than the next step of the search


def test_rate_search_keeps_the_least_distorted_file_within_the_target(fitted, monkeypatch):
    """A later trial with more bits but more error does not replace a better file."""
    import sinco.codec.grid.rate_search as grid_fit

    budget = 6.0 * SIZE * SIZE
    trials = iter([replace(fitted, payload_bits=int(0.80 * budget), mse=1e-4),  # fits, 20% below: search goes on
                   replace(fitted, payload_bits=int(0.90 * budget), mse=4e-4),  # more bits, worse image
                   replace(fitted, payload_bits=int(1.50 * budget), mse=1e-5)])  # over the target  # fmt: skip
    monkeypatch.setattr(grid_fit, "fit_grid", lambda *args, **kwargs: [next(trials)])
    config = replace(CONFIG, max_rate_trials=3, residual=False, context=False)  # fake trial files: no residual, no context coder
    result = fit_grid_at_bpp(target_image()[None], spec=SPEC, config=config, target_bpp=6.0, header_bytes=0, device=torch.device("cpu"))[0]
    assert result.mse == 1e-4 and result.trials == 3 and result.within_band is False


def test_rate_search_never_exceeds_the_target_and_reports_trials():
    target = target_image()[None]
    header = 40
    # The rate prior is measured on 240 x 240 slices; a 32 x 32 image, whose network bits weigh more, starts at its own lambda.
    result = fit_grid_at_bpp(target, spec=SPEC, config=CONFIG, target_bpp=6.0, header_bytes=header, device=torch.device("cpu"),
                             start_lambda=CONFIG.lambda_rd)[0]  # fmt: skip
    assert (result.payload_bits + 8 * header) <= 6.0 * SIZE * SIZE
    assert 1 <= result.trials <= CONFIG.max_rate_trials and result.target_bpp == 6.0
    assert result.within_band == ((result.payload_bits + 8 * header) >= 0.97 * 6.0 * SIZE * SIZE)
    assert np.array_equal(decode_grid(result.payload, spec=SPEC, height=SIZE, width=SIZE), result.reconstruction)
    with pytest.raises(InputError, match=r"--bpp 0.05: unreachable .* in 3 trials") as caught:  # 2, and a rescue trial
        fit_grid_at_bpp(target, spec=SPEC, config=GridFitConfig(steps=20, ste_steps=5, max_rate_trials=2, seed=0),
                        target_bpp=0.05, header_bytes=header, device=torch.device("cpu"))  # fmt: skip
    # The message splits the smallest file's rate into its fixed part, the decoder networks, which no lambda removes.
    found = re.search(r"is ([\d.]+) bpp, its decoder networks alone ([\d.]+) \(a fixed cost", str(caught.value))
    assert found and 0.05 < float(found.group(2)) < float(found.group(1))
    with pytest.raises(InputError, match=r"--bpp -1"):
        fit_grid_at_bpp(target, spec=SPEC, config=CONFIG, target_bpp=-1, header_bytes=header, device=torch.device("cpu"))


# -------------------------------------------------------------------------------------------- regularizer
def _tiny_regularizer():
    """A frozen, untrained 2-level U-Net and the structural regularizer towards a box mask: ``(seg, reg)``."""
    from sinco.regularizer.loss import StructuralRegularizer
    from sinco.seg.network import SegModel, UNetConfig, build_unet, freeze

    torch.manual_seed(0)
    unet_config = UNetConfig(channels=(4, 8), strides=(2,), num_res_units=0)
    seg = SegModel(net=freeze(build_unet(unet_config)), config=unet_config)
    mask = np.zeros((SIZE, SIZE), np.uint8)
    mask[10:20, 12:22] = 1
    return seg, StructuralRegularizer(seg, mask=mask, device=torch.device("cpu"))


@pytest.mark.slow
def test_regularizer_gradient_reaches_latents_and_decoder_never_the_unet():
    seg, reg = _tiny_regularizer()
    state = _init_state(SPEC, (SIZE, SIZE), 0, torch.device("cpu"))
    latents = [(g + torch.randn(g.shape)).requires_grad_(True) for g in state.latents]
    tensors = [t.requires_grad_(True) for t in state.tensors]
    value = reg(reconstruct(latents, tensors, SPEC, (SIZE, SIZE)))
    assert value.shape == (1,) and 0 < value.item() < 1
    value.backward()
    n_arm = 4  # the entropy model does not shape the image: only the synthesis tensors get a gradient
    assert all(g.grad is not None and g.grad.abs().sum() > 0 for g in latents)
    assert any(t.grad is not None and t.grad.abs().sum() > 0 for t in tensors[n_arm:])
    assert all(p.grad is None for p in seg.net.parameters())

    before = {k: v.clone() for k, v in seg.net.state_dict().items()}
    config = GridFitConfig(steps=10, ste_steps=3, seed=0)
    plain = fit_grid(target_image()[None], spec=SPEC, config=config, device=torch.device("cpu"))[0]
    regularized = fit_grid(
        target_image()[None], spec=SPEC, config=config, device=torch.device("cpu"), regularizer=reg, lam=torch.tensor([5.0])
    )[0]
    assert not np.array_equal(plain.reconstruction, regularized.reconstruction)  # direction: test_regularizer_direction.py
    assert all(torch.equal(before[k], v) for k, v in seg.net.state_dict().items())
    with pytest.raises(InputError, match="--lam"):
        fit_grid(target_image()[None], spec=SPEC, config=config, device=torch.device("cpu"), regularizer=reg)


def test_rate_estimate_is_differentiable_and_counts_bits():
    state = _init_state(SPEC, (SIZE, SIZE), 0, torch.device("cpu"))
    shapes = [tuple(g.shape) for g in state.latents]
    values = torch.full((sum(h * w for h, w in shapes),), 0.3, requires_grad=True)
    bits = latent_bits(values, shapes, state.tensors, SPEC)
    bits.backward()
    assert bits.item() > 0 and values.grad is not None and values.grad.abs().sum() > 0


@pytest.mark.parametrize("height,width", [(9, 7), (4, 13)])
def test_contexts_are_each_latents_causal_neighbours_and_its_parent(height, width):
    from sinco.codec.grid.arm import grid_contexts
    from sinco.codec.grid.spec import CONTEXT_OFFSETS

    shapes = SPEC.grid_shapes(height, width)
    grids = [torch.arange(h * w, dtype=torch.float64).reshape(h, w) + 1000 * (level + 1) for level, (h, w) in enumerate(shapes)]
    contexts = grid_contexts(grids, SPEC)
    column = 0
    for level, (h, w) in enumerate(shapes):
        for i in range(h):
            for j in range(w):
                expected = [
                    float(grids[level][i + dy, j + dx]) if 0 <= i + dy < h and 0 <= j + dx < w else 0.0
                    for dy, dx in CONTEXT_OFFSETS[: SPEC.arm_context]
                ]
                expected.append(float(grids[level + 1][i // 2, j // 2]) if level + 1 < len(shapes) else 0.0)
                assert contexts[:, column].tolist() == expected
                column += 1
    assert column == contexts.shape[1]


def test_entropy_model_numpy_path_equals_the_torch_fixed_point_network():
    from sinco.codec.grid.arm import fixed_arm_params as fixed_arm_params
    from sinco.codec.grid.arm import run_arm
    from sinco.codec.grid.entropy import snap
    from sinco.codec.grid.networks import QuantizedDecoder, arm_tensor_count, init_tensors, quantize_tensor
    from sinco.codec.grid.numerics import FRAC_BITS

    spec = GridSpec()
    tensors = [t + 0.3 * torch.randn(t.shape, generator=torch.Generator().manual_seed(2)) for t in init_tensors(spec, torch.Generator().manual_seed(1))]
    exps = ([7, 9] * len(tensors))[: len(tensors)]
    decoder = QuantizedDecoder(tuple(quantize_tensor(t, e) for t, e in zip(tensors, exps, strict=True)), tuple(exps))
    contexts = np.random.default_rng(0).integers(-31, 32, (3000, 10))
    n_arm = arm_tensor_count(spec)
    fixed = run_arm(decoder.as_torch()[:n_arm], torch.from_numpy(contexts.T * 2.0**FRAC_BITS), exact=True, exps=exps[:n_arm]).numpy().T
    from sinco.codec.grid.arm import fixed_arm_layers

    expected = snap(fixed[:, 0], fixed[:, 1], frac_bits=FRAC_BITS, bound=spec.latent_bound)
    got = fixed_arm_params(contexts, fixed_arm_layers(decoder, spec), spec)
    assert all(np.array_equal(a, b) for a, b in zip(expected, got, strict=True))
    assert len(np.unique(got[2])) > 5  # the scales actually vary: the check is not vacuous


def test_sse_data_term_divides_the_regularizer_weight_by_the_pixel_count():
    """--data-term sse on the grid family: lam (1 - Dice) over H W beside MSE + rate, the same fit as mse at lam / (H W)."""
    from sinco.codec.grid.family import GridFamily, GridFamilyFit

    _, reg = _tiny_regularizer()
    grid = GridFitConfig(steps=8, ste_steps=3, lambda_rd=1e-3, seed=0)
    targets = target_image()[None]

    def payload(data_term: str, lam: float) -> bytes:
        config = GridFamilyFit(grid=grid, fixed_lambda=True, lam=lam, data_term=data_term)
        return GridFamily().fit(targets, bpp=2.0, options={}, config=config, device=torch.device("cpu"), regularizer=reg,
                                lam=torch.tensor([lam]))[0].payload  # fmt: skip

    pixels = SIZE * SIZE
    assert payload("sse", 3.0 * pixels) == payload("mse", 3.0) != payload("mse", 3.0 * pixels)
    assert payload("auto", 3.0 * pixels) == payload("sse", 3.0 * pixels)
    with pytest.raises(InputError, match="--data-term 'l2': --arch grid"):
        GridFamily().fit_config("fast", {"data_term": "l2"})


def test_decoder_multiply_adds_per_pixel_by_component():
    """Counted by hand on a small spec at 4 x 4: synthesis 2*4 + the 1x1 output conv 4 = 12; the entropy model
    (2 -> 3 -> 2: 12 per latent) over 16 + 4 latents = 15 a pixel; one upsampling stage of one grid, 4 taps times
    (4 x 2 + 4 x 4) samples = 96, 6 a pixel."""
    from sinco.codec.grid.spec import GridSpec

    spec = GridSpec(levels=2, synthesis_widths=(4,), residual_layers=0, kernel=1, arm_context=1, arm_hidden=(3,), linear_skip=False)
    assert spec.decoder_macs_per_pixel(4, 4) == {"synthesis": 12.0, "entropy_model": 15.0, "upsampling": 6.0, "total": 33.0}
