"""Lossless and near-lossless files: the context coder's exactness and bound, hostile files, golden files, the CLI."""

import json
import sys
import zlib
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.format import HEADER_BYTES
from sinco.codec.grid import context as C
from sinco.codec.grid.context_fit import ContextFitConfig, fit_context
from sinco.codec.grid.lossless import compress_exact, decode_levels, encode_levels, exact_values, find_lattice
from sinco.errors import BitstreamError, InputError

sys.path.insert(0, str(Path(__file__).parent / "data"))
from make_lossless_golden import CASES, golden_image  # noqa: E402

GOLDEN = Path(__file__).parent / "data" / "lossless_golden"
#: A few steps: exactness and the bound hold whatever the networks learned.
QUICK = ContextFitConfig(hidden=4, steps=3)


def _image(bits: int, seed: int, height: int, width: int) -> np.ndarray:
    """Real-like levels: a ramp with an edge and noise, on ``bits`` bits."""
    rng = np.random.default_rng(seed)
    top = (1 << bits) - 1
    y, x = np.mgrid[:height, :width]
    base = top * (0.1 + 0.4 * (x + y) / (height + width)) * (1 + (x > width // 2))
    return np.clip(np.rint(base + rng.normal(0, top * rng.uniform(0.001, 0.05), base.shape)), 0, top).astype(np.int64)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.sampled_from([8, 12, 16]), seed=st.integers(0, 2**16), height=st.integers(2, 20), width=st.integers(2, 20),
       noise=st.booleans())  # fmt: skip
def test_lossless_is_exact_at_8_12_16_bits(bits, seed, height, width, noise):
    top = (1 << bits) - 1
    levels = np.random.default_rng(seed).integers(0, top + 1, (height, width)) if noise else _image(bits, seed, height, width)
    model = fit_context(levels, top=top, config=QUICK)
    section, decoded = C.encode(levels, model)
    assert np.array_equal(decoded, levels)
    assert np.array_equal(C.decode(section, height=height, width=width)[0], levels)


@settings(max_examples=12, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(bits=st.sampled_from([8, 12, 16]), near=st.sampled_from([1, 2, 4, 7]), seed=st.integers(0, 2**16), noise=st.booleans())
def test_near_lossless_never_exceeds_the_bound(bits, near, seed, noise):
    top = (1 << bits) - 1
    levels = np.random.default_rng(seed).integers(0, top + 1, (12, 17)) if noise else _image(bits, seed, 12, 17)
    model = fit_context(levels, top=top, near=near, config=QUICK)
    section, decoded = C.encode(levels, model)
    assert np.abs(decoded - levels).max() <= near
    assert np.array_equal(C.decode(section, height=12, width=17)[0], decoded)


def test_near_lossless_on_levels_at_both_ends_stays_in_range():
    levels = np.zeros((9, 9), np.int64)
    levels[::2] = 255
    section, decoded = C.encode(levels, fit_context(levels, top=255, near=4, config=QUICK))
    assert decoded.min() >= 0 and decoded.max() <= 255 and np.abs(decoded - levels).max() <= 4


def test_wide_residuals_split_and_escape():
    """A 16-bit image of noise and spikes: high parts beyond the table's reach escape, low bits go uniform."""
    levels = golden_image(16, 5)
    levels[::5, ::3] = 65535
    model = fit_context(levels, top=65535, config=ContextFitConfig(hidden=4, steps=0))
    layers = model.layers()
    buffers = C._Buffers.empty(*levels.shape, [])
    C._store(buffers, *np.indices(levels.shape).reshape(2, -1), levels.reshape(-1), np.zeros(levels.size, np.int64), model.shift)
    p = C._predict(buffers, *np.indices(levels.shape).reshape(2, -1), model=model, layers=layers)
    high, _ = C._split_symbols(levels.reshape(-1) - p.mean, p.split)
    assert p.split.max() > 0 and np.abs(high).max() >= C.REACH
    section, decoded = C.encode(levels, model)
    assert np.array_equal(C.decode(section, height=24, width=24)[0], levels)


def test_a_side_plane_is_read_and_must_match():
    levels = _image(8, 3, 16, 16)
    plane = np.clip(levels + 3, 0, 255)
    model = fit_context(levels, top=255, planes=[plane], config=QUICK)
    section, _ = C.encode(levels, model, planes=[plane])
    assert np.array_equal(C.decode(section, height=16, width=16, planes=[plane])[0], levels)
    with pytest.raises(BitstreamError, match="side plane"):
        C.decode(section, height=16, width=16)
    with pytest.raises(BitstreamError, match="side planes"):
        C.decode(section, height=16, width=16, planes=[plane, plane])
    try:  # another plane: refused by the checksum, or (if the networks ignore it) the same levels
        assert np.array_equal(C.decode(section, height=16, width=16, planes=[plane // 2])[0], levels)
    except BitstreamError:
        pass


# --------------------------------------------------------------------------------------------- lattices
def test_float_lattice_levels_are_exact_and_values_within_float_rounding():
    """Floats on an integer lattice (z-scores of a scan): exact means the levels; values come back within float32's rounding."""
    rng = np.random.default_rng(0)
    raw = rng.integers(0, 700, (20, 24))
    z = ((raw - 311.3) / 82.17).astype(np.float32)
    lattice = find_lattice(z)
    assert not lattice.integer and lattice.top == raw.max() - raw.min()
    result = compress_exact(z, config=QUICK)
    assert result.measured_error == 0
    assert np.array_equal(decode_levels(result.data), raw - raw.min())
    values = exact_values(result.data)
    assert np.abs(values - z).max() <= 1e-3 * lattice.step


def test_integer_images_come_back_as_the_same_integers():
    for dtype, bits in ((np.uint8, 8), (np.uint16, 12), (np.uint16, 16), (np.int16, 12)):
        image = (_image(bits, 1, 14, 15) - (2048 if dtype == np.int16 else 0)).astype(dtype)
        values = exact_values(compress_exact(image, config=QUICK).data)
        assert values.dtype == np.int64 and np.array_equal(values, image)


@pytest.mark.parametrize(("values", "message"), [
    (np.random.default_rng(0).random((8, 8)), "not on an integer lattice"),
    (np.full((8, 8), 3, np.uint8), "constant image"),
    (np.array([[0, 70000], [1, 2]], np.int32), "span 70001 levels"),
    (np.array([[0.0, np.nan], [1.0, 2.0]]), "NaN or Inf"),
])  # fmt: skip
def test_inputs_off_a_lattice_are_refused_in_one_line(values, message):
    with pytest.raises(InputError, match=message) as info:
        compress_exact(values, config=QUICK)
    assert "\n" not in str(info.value)


def test_max_error_out_of_range_is_refused():
    with pytest.raises(InputError, match=r"--max-error 200: must be an integer in 0\.\.126 \(half the image's 253 levels\)"):
        compress_exact(np.arange(64).reshape(8, 8) * 4, max_error=200, config=QUICK)
    with pytest.raises(InputError, match="--max-error -1"):
        compress_exact(_image(8, 0, 8, 8), max_error=-1, config=QUICK)


# --------------------------------------------------------------------------------------------- hostile files
def _refresh_crc(data: bytearray) -> bytes:
    data[-4:] = zlib.crc32(bytes(data[:-4])).to_bytes(4, "little")
    return bytes(data)


def test_a_corrupted_file_never_decodes_to_a_wrong_image():
    """Every byte of the payload flipped in turn (the container's CRC recomputed so that the payload is read): the
    file is refused or decodes to the same levels."""
    levels = _image(12, 4, 10, 12)
    data = encode_levels(levels, top=4095, config=QUICK)
    refused = 0
    for index in range(HEADER_BYTES, len(data) - 4):
        for flip in (0x01, 0x80):
            hostile = bytearray(data)
            hostile[index] ^= flip
            try:
                decoded = decode_levels(_refresh_crc(hostile))
            except BitstreamError:
                refused += 1
                continue
            assert np.array_equal(decoded, levels)
    assert refused > 0


def test_truncated_and_hostile_sections_are_refused():
    levels = _image(8, 2, 8, 8)
    section, _ = C.encode(levels, fit_context(levels, top=255, config=QUICK))
    for cut in (0, 5, C._HEAD.size, len(section) - 3):
        with pytest.raises(BitstreamError):
            C.decode(section[:cut], height=8, width=8)
    head = bytearray(section)
    head[0] = 9
    with pytest.raises(BitstreamError, match="coder version 9"):
        C.decode(bytes(head), height=8, width=8)
    head = bytearray(section)
    head[3:5] = (300).to_bytes(2, "little")  # near above top // 2
    with pytest.raises(BitstreamError, match="head out of range"):
        C.decode(bytes(head), height=8, width=8)


# --------------------------------------------------------------------------------------------- golden files
@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_files_decode(name):
    """Payload version 3's bytes are part of the format: files written by tests/data/make_lossless_golden.py decode."""
    bits, near, seed = CASES[name]
    meta = json.loads((GOLDEN / "meta.json").read_text())[name]
    data = (GOLDEN / f"{name}.sinco").read_bytes()
    assert len(data) == meta["bytes"]
    levels = golden_image(bits, seed)
    decoded = decode_levels(data)
    assert (np.array_equal(decoded, levels) if near == 0 else np.abs(decoded - levels).max() <= near)


# --------------------------------------------------------------------------------------------- CLI
@pytest.fixture
def png8(tmp_path):
    from PIL import Image

    path = tmp_path / "slice.png"
    Image.fromarray(_image(8, 7, 20, 22).astype(np.uint8)).save(path)
    return path


def test_cli_lossless_round_trip_info_and_max_error(png8, tmp_path, run):
    out = tmp_path / "l.sinco"
    code, stdout, err = run(["compress", png8, "-o", out, "--lossless", "--steps", 5, "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["mode"] == "lossless" and report["measured_max_error"] == 0 and report["bpp_file"] == 8 * out.stat().st_size / 440
    assert run(["decompress", out, "-o", tmp_path / "d.png"])[0] == 0
    from PIL import Image

    original = np.array(Image.open(png8))
    with Image.open(tmp_path / "d.png") as decoded:
        assert decoded.mode == "L" and np.array_equal(np.array(decoded), original)
    near = tmp_path / "n.sinco"
    code, stdout, err = run(["compress", png8, "-o", near, "--max-error", 3, "--steps", 5, "--json"])
    assert code == 0, err
    assert json.loads(stdout)["measured_max_error"] <= 3 and near.stat().st_size < out.stat().st_size
    code, stdout, _ = run(["info", near])
    assert "near-lossless, every pixel within 3 levels" in stdout
    info = json.loads(run(["info", near, "--json"])[1])
    assert info["payload_version"] == 3 and info["context"]["max_error"] == 3
    assert run(["decompress", near, "-o", tmp_path / "n.npy"])[0] == 0
    assert np.abs(np.load(tmp_path / "n.npy").astype(int) - original).max() <= 3


def test_cli_lossless_volume(tmp_path, run):
    volume = np.stack([_image(12, k, 16, 18) for k in range(3)] + [np.full((16, 18), 40)], axis=2).astype(np.uint16)
    np.save(tmp_path / "v.npy", volume)
    out = tmp_path / "v.sinco"
    code, _, err = run(["compress", tmp_path / "v.npy", "-o", out, "--lossless", "--slices", "all", "--steps", 3])
    assert code == 0, err
    assert run(["decompress", out, "-o", tmp_path / "d.npy"])[0] == 0
    decoded = np.load(tmp_path / "d.npy")
    assert decoded.dtype == np.uint16 and np.array_equal(decoded, volume)


@pytest.mark.parametrize(("flags", "message"), [
    (["--lossless", "--bpp", "2"], "--lossless and --bpp"),
    (["--max-error", "2", "--bpp", "2"], "--max-error and --bpp"),
    (["--max-error", "-1"], "--max-error -1: must be a non-negative integer"),
    (["--max-error", "500"], "--max-error 500: must be an integer in 0.."),
    (["--lossless", "--max-error", "2"], "--lossless and --max-error 2"),
    (["--lossless", "--arch", "siren"], "--arch grid only"),
    (["--lossless", "--preset", "quality"], "--lossless and --preset"),
])  # fmt: skip
def test_cli_refusals_are_one_line(png8, tmp_path, run, flags, message):
    code, stdout, err = run(["compress", png8, "-o", tmp_path / "x.sinco", *flags])
    assert code == 2 and message in err and err.count("\n") == 1 and not (tmp_path / "x.sinco").exists()


def test_cli_refuses_float_data_off_a_lattice(tmp_path, run):
    np.save(tmp_path / "f.npy", np.random.default_rng(0).random((16, 16)).astype(np.float32))
    code, _, err = run(["compress", tmp_path / "f.npy", "-o", tmp_path / "f.sinco", "--lossless"])
    assert code == 2 and "not on an integer lattice" in err and err.count("\n") == 1


def test_each_option_changes_what_it_claims():
    """--max-error coarsens the file within its bound; the fit's steps and hidden width change the networks."""
    levels = _image(8, 9, 24, 24)
    lossless = encode_levels(levels, top=255, config=ContextFitConfig(hidden=6, steps=30))
    near = encode_levels(levels, top=255, max_error=2, config=ContextFitConfig(hidden=6, steps=30))
    assert len(near) < len(lossless) and 0 < np.abs(decode_levels(near) - levels).max() <= 2
    longer = encode_levels(levels, top=255, config=ContextFitConfig(hidden=6, steps=60))
    wider = encode_levels(levels, top=255, config=ContextFitConfig(hidden=8, steps=30))
    assert len({lossless, longer, wider}) == 3


def test_a_rate_target_above_the_lossless_rate_gives_an_exact_file_and_context_off_does_not():
    """The lossy rate search offers the context-coded file: at a generous target the file is exact (payload v3)."""
    import torch

    from sinco.codec.grid.config import GridFitConfig
    from sinco.codec.grid.payload import decode_grid
    from sinco.codec.grid.rate_search import fit_grid_at_bpp
    from sinco.codec.grid.spec import GridSpec

    image = _image(8, 11, 24, 24)
    target = torch.from_numpy(((image - image.min()) / (image.max() - image.min())).astype(np.float32))[None]
    spec = GridSpec(levels=3, synthesis_widths=(8, 4), residual_layers=1, arm_hidden=(8,), arm_context=6)
    config = GridFitConfig(steps=30, ste_steps=10, seed=0, max_rate_trials=1, residual=False)
    common = dict(spec=spec, target_bpp=16.0, header_bytes=40, device=torch.device("cpu"), start_lambda=1e-4)
    coded = fit_grid_at_bpp(target, config=config, **common)[0]
    assert coded.payload[0] == 3 and coded.mse == 0 and coded.payload_bits + 8 * 40 <= 16 * 24 * 24
    assert np.array_equal(decode_grid(coded.payload, spec=spec, height=24, width=24), target[0].numpy())
    plain = fit_grid_at_bpp(target, config=replace(config, context=False), **common)[0]
    assert plain.payload[0] != 3 and plain.mse > 0


def test_a_volume_shares_one_model_and_reads_the_previous_slice():
    """One model for the volume (networks in the first fitted record only), each slice reading the one before: the
    volume decodes exactly (near-lossless: within the bound); a record alone refuses to decode in one line."""
    from sinco.api import decompress
    from sinco.codec.grid.lossless import compress_exact_volume, exact_levels_of_volume
    from sinco.codec.volume import decode_volume_file

    slices = [_image(12, 20, 14, 16) + 30 * k for k in range(3)]
    volume = np.stack([np.full((14, 16), 7), *slices]).astype(np.uint16)
    result = compress_exact_volume(volume, config=QUICK, previous_slice=True)
    assert result.measured_error == 0 and result.fitted_slices == 3
    assert np.array_equal(decompress(result.data), volume) and decompress(result.data).dtype == np.int64
    _, records = decode_volume_file(result.data)
    sizes = [C.section_summary(r.data[r.data.index(b"\x03\x00\x00\x00\x00") + 5 :])["network_bytes"] for r in records[1:]]
    assert sizes[0] > 0 and sizes[1:] == [0, 0]
    for record in records[1:]:
        with pytest.raises(BitstreamError, match="decode the volume file"):
            decode_levels(record.data)
    near = compress_exact_volume(volume, max_error=2, config=QUICK, previous_slice=True)
    assert 0 < near.measured_error <= 2 and np.abs(exact_levels_of_volume(near.data) - (volume - 7)).max() <= 2
    alone = compress_exact_volume(volume, config=QUICK, previous_slice=False)
    assert alone.data != result.data and np.array_equal(decompress(alone.data), volume)


def test_the_previous_slice_is_read_where_slices_are_alike():
    from sinco.codec.grid.lossless import slices_alike

    base = _image(8, 3, 20, 20)
    assert slices_alike(np.stack([base, base + 1, base]))
    noise = np.random.default_rng(0).integers(0, 256, (3, 20, 20))
    assert not slices_alike(np.stack([base, noise[0], base])) and not slices_alike(base[None])


def test_the_rate_search_gate_takes_16_bit_images_with_coarse_bounds():
    """A 16-bit image whose best lossy error is large asks the JPEG-LS proxy for a bound above CharLS's NEAR limit
    of 255: the proxy takes 255 for it, and the gate answers instead of raising."""
    from sinco.codec.grid.lossless import fit_to_budget

    rng = np.random.default_rng(0)
    image = rng.integers(0, 65536, size=(24, 24)).astype(np.float64) / 65535
    assert fit_to_budget(image, budget_bits=64, error_to_beat=0.01) is None


@pytest.mark.slow
def test_a_near_lossless_volume_beats_jpegls_at_k4_on_a_real_slab(brats_case):
    """The shared volume model's near-lossless fit reads decoded contexts in its second half: fitted on true levels
    alone, this 1 mm BraTS slab (pat0005 slices 87:95, 150 steps) took 1.44 bits per voxel at K = 4, above JPEG-LS
    NEAR = 4 (0.81) and above its own K = 2 file; it must stay below JPEG-LS."""
    import nibabel as nib

    from sinco.classical.lossless import JPEGLS
    from sinco.codec.grid.lossless import compress_exact_volume, to_levels

    path = brats_case.parent / "brats_2013_pat0005_1" / "Flair_subtrMeanDivStd.nii.gz"
    if not path.is_file():
        pytest.skip(f"shared BraTS case pat0005 not found at {path}")
    volume = np.moveaxis(np.asarray(nib.load(str(path)).dataobj)[:, :, 87:95], 2, 0)
    lattice = find_lattice(volume)
    coded = compress_exact_volume(volume, max_error=4, config=ContextFitConfig(steps=150))
    jpegls_bits = 8 * sum(len(JPEGLS().encode(plane, bits=10, max_error=4)) for plane in to_levels(volume, lattice))
    assert coded.measured_error <= 4
    assert 8 * len(coded.data) < jpegls_bits, (8 * len(coded.data) / volume.size, jpegls_bits / volume.size)


def test_the_rate_search_gate_measures_the_error_of_a_bound():
    """Flat background stays exact under a near-lossless bound, so a bound's error is below the uniform K (K + 1) / 3:
    the gate measures it (JPEG-LS at that bound) and keeps bounds that the uniform figure would rule out."""
    from sinco.codec.grid.lossless import _bound_to_beat, _jpegls_decoded

    image = np.zeros((40, 40), np.int64)
    image[10:30, 10:30] = 100 + np.random.default_rng(0).integers(-20, 21, (20, 20))
    mse_levels = 0.6  # below the uniform error of K = 1 (2/3): that figure allows lossless only
    bound = _bound_to_beat(image, mse_levels=mse_levels)
    assert bound >= 1
    assert np.mean((_jpegls_decoded(image, near=bound) - image) ** 2) < mse_levels
    assert np.mean((_jpegls_decoded(image, near=bound + 1) - image) ** 2) >= mse_levels
    assert _bound_to_beat(image, mse_levels=0.0) == -1
