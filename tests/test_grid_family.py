"""The latent-grid family through the codec-family interface: CLI, container v2, volumes, hostile files."""

import json
import re
import struct
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.files import decode_file, parse_file
from sinco.codec.grid.payload import HEAD_BYTES
from sinco.errors import BitstreamError

GRID = ["--arch", "grid", "--steps", 40, "--quiet"]


@pytest.fixture(scope="module")
def grid_file(tmp_path_factory):
    """A 48 x 48 phantom compressed by the grid family at a fixed lambda_rd, with its JSON report."""
    from conftest import make_phantom

    from sinco.cli import main

    folder = tmp_path_factory.mktemp("grid")
    np.save(folder / "img.npy", make_phantom(48, 48))
    out = folder / "g.sinco"
    assert main([str(a) for a in ["compress", folder / "img.npy", "-o", out, *GRID, "--lambda-rd", "1e-3", "--json"]]) == 0
    return folder, out


def test_compress_info_decompress(grid_file, run):
    folder, out = grid_file
    sidecar = json.loads(out.with_name("g.sinco.json").read_text())
    assert sidecar["codec"]["arch"] == "grid" and sidecar["fit"]["fixed_lambda"] is True and sidecar["fit"]["lambda_rd"] == 1e-3
    report = sidecar["result"]
    assert report["bpp_file"] == pytest.approx(8 * out.stat().st_size / 48**2)
    # The rate estimate the fit optimized is within 5% of the real payload (networks and coder overhead included).
    parsed = parse_file(out.read_bytes())
    assert report["estimated_bits"] == pytest.approx(8 * len(parsed.payload), rel=0.05)
    code, stdout, _ = run(["info", out])
    assert code == 0 and "format      .sinco v2" in stdout and "family      grid" in stdout
    # The parts' sizes come from the payload's own head and add up to it with that head (version 1).
    network, latents = (int(n) for n in re.search(r"networks (\d+) bytes, latents (\d+) bytes", stdout).groups())
    assert "parts       payload v1:" in stdout and network + latents + HEAD_BYTES == len(parsed.payload)
    code, _, _ = run(["decompress", out, "-o", folder / "d.npy"])
    assert code == 0
    _, image = decode_file(out.read_bytes())
    from sinco.data.intensity import normalize_minmax, restore_intensity
    from sinco.metrics import psnr

    scaled, _, _ = normalize_minmax(np.load(folder / "img.npy"))
    assert psnr(pred=image, target=scaled) == report["psnr"]
    np.testing.assert_array_equal(np.load(folder / "d.npy"), restore_intensity(image, vmin=parsed.vmin, vmax=parsed.vmax))


def test_upsampling_is_the_users_choice_and_recorded(grid_file, run):
    folder, learned = grid_file
    out = folder / "bicubic.sinco"
    code, _, err = run(["compress", folder / "img.npy", "-o", out, *GRID, "--lambda-rd", "1e-3", "--upsampling", "bicubic"])
    assert code == 0, err
    assert parse_file(learned.read_bytes()).spec.upsampling == "learned"  # the default
    assert parse_file(out.read_bytes()).spec.upsampling == "bicubic"
    assert json.loads(out.with_name("bicubic.sinco.json").read_text())["codec"]["options"]["upsampling"] == "bicubic"
    code, stdout, _ = run(["info", out])
    assert code == 0 and "upsampling=bicubic" in stdout


def test_candidates_are_the_users_choice_and_recorded(grid_file, run):
    folder, _ = grid_file
    out = folder / "cand.sinco"
    code, stdout, err = run(["compress", folder / "img.npy", "-o", out, "--arch", "grid", "--steps", 60, "--quiet", "--warm-start", "off",
                             "--lambda-rd", "1e-3", "--candidates", 3, "--seed", 5, "--json"])  # fmt: skip
    assert code == 0, err
    sidecar = json.loads(out.with_name("cand.sinco.json").read_text())
    fit = sidecar["fit"]
    assert (fit["candidates"], fit["candidate_steps"], fit["seed"]) == (3, 4, 5)  # 1/15 of the 60 steps
    assert sidecar["result"]["candidate_seed"] in (5, 6, 7)
    assert json.loads(stdout)["candidate_seed"] == sidecar["result"]["candidate_seed"]


def test_a_warm_started_fit_has_no_candidates_and_a_random_start_costs_more_network_bits(grid_file, run):
    folder, _ = grid_file
    results = {}
    for name, extra in (("warm", []), ("random", ["--warm-start", "off"])):
        out = folder / f"{name}.sinco"
        code, stdout, err = run(["compress", folder / "img.npy", "-o", out, "--arch", "grid", "--steps", 60, "--quiet", *extra,
                                 "--lambda-rd", "1e-3", "--candidates", 3, "--json"])  # fmt: skip
        assert code == 0, err
        results[name] = (json.loads(stdout), parse_file(out.read_bytes()).spec)
    assert results["warm"][0]["candidate_seed"] is None and results["warm"][1].warm_start == 1
    assert results["random"][0]["candidate_seed"] is not None and results["random"][1].warm_start == 0
    # The decoder's weights coded as differences from where they started: fewer bits than coded as they are.
    assert results["warm"][0]["network_bits"] < results["random"][0]["network_bits"]


def test_the_long_preset_is_a_choice_of_compress(grid_file, run):
    from sinco.codec.grid.config import GRID_PRESETS

    folder, _ = grid_file
    out = folder / "long.sinco"
    code, _, err = run(["compress", folder / "img.npy", "-o", out, "--arch", "grid", "--preset", "long", "--steps", 60, "--quiet",
                        "--lambda-rd", "1e-3"])  # fmt: skip
    assert code == 0, err
    fit = json.loads(out.with_name("long.sinco.json").read_text())["fit"]
    keys = ("steps", "ste_steps", "candidates", "candidate_steps")
    expected = GRID_PRESETS["long"].with_steps(60).to_dict()
    assert [fit[k] for k in keys] == [expected[k] for k in keys] == [60, 8, 4, 4]  # the schedule scaled, shares kept


def test_grid_is_the_default_arch_of_compress(grid_file, run):
    folder, explicit = grid_file
    out = folder / "default.sinco"
    code, _, err = run(["compress", folder / "img.npy", "-o", out, "--steps", 40, "--quiet", "--lambda-rd", "1e-3"])
    assert code == 0, err
    assert out.read_bytes() == explicit.read_bytes()  # the file --arch grid writes
    sidecar = json.loads(out.with_name("default.sinco.json").read_text())
    assert sidecar["codec"]["arch"] == "grid" and (sidecar["fit"]["ste_steps"], sidecar["fit"]["candidates"]) == (7, 1)  # fast at 40 steps (quality: 5, 4)
    # An option of the paper's networks, given without --arch, names the families that read it.
    code, _, err = run(["compress", folder / "img.npy", "-o", folder / "x.sinco", "--lr", "1e-3", "--quiet"])
    assert code == 2 and err == "sinco: error: --lr: does not apply to --arch grid (an option of --arch siren, pe-mlp)\n"
    assert not (folder / "x.sinco").exists()


@pytest.mark.slow
def test_bpp_search_never_exceeds_the_target(grid_file, run):
    folder, _ = grid_file
    out = folder / "b.sinco"
    code, stdout, err = run(["compress", folder / "img.npy", "-o", out, *GRID, "--bpp", 6, "--json"])
    assert code == 0, err
    report = json.loads(stdout)
    assert report["bpp_file"] <= 6 and report["rate_trials"] >= 1 and 8 * out.stat().st_size / 48**2 == report["bpp_file"]


@pytest.mark.parametrize(
    "extra, message",
    [(["--lambda-rd", "-1"], "--lambda-rd -1.0"), (["--depth", "3"], "--depth: does not apply to --arch grid"),
     (["--bpp", "0.01"], "unreachable"), (["--preset", "paper"], "--preset 'paper'"),
     (["--lambda-rd", "1e-3", "--upsampling", "nearest"], "--upsampling 'nearest': expected one of bicubic, learned"),
     (["--lambda-rd", "1e-3", "--candidates", "0"], "--candidates 0: expected an integer 1..16"),
     (["--lambda-rd", "1e-3", "--candidates", "2", "--steps", "1"], "--candidates 2: --steps 1 leaves no room for candidates")],
)  # fmt: skip
def test_bad_grid_arguments_one_line_exit_2(grid_file, run, extra, message):
    folder, _ = grid_file
    code, _, err = run(["compress", folder / "img.npy", "-o", folder / "x.sinco", *GRID, *extra])
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (folder / "x.sinco").exists()


@pytest.mark.slow
def test_a_volume_of_grid_slices(tmp_path, run):
    import nibabel as nib
    from conftest import make_phantom

    vol = np.stack([make_phantom(40, 40) + 5 * k for k in range(2)], axis=-1).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "v.nii.gz"))
    code, stdout, err = run(["compress", tmp_path / "v.nii.gz", "--slices", "all", "-o", tmp_path / "v.sinco", *GRID, "--lambda-rd", "1e-3"])
    assert code == 0 and "(2 fitted, 0 constant)" in stdout, err
    code, stdout, _ = run(["info", tmp_path / "v.sinco"])
    assert "family      grid" in stdout
    # Decoded, not only written: through the library and through `sinco decompress`, each slice close to its own.
    from sinco.codec.volume import decode_volume
    from sinco.metrics import psnr

    _, slices, _ = decode_volume((tmp_path / "v.sinco").read_bytes())  # (S, H, W), restored intensities
    decoded = np.moveaxis(slices, 0, -1)  # slices along the volume's axis 2, as compressed
    assert decoded.shape == vol.shape and np.isfinite(decoded).all()
    code, _, err = run(["decompress", tmp_path / "v.sinco", "-o", tmp_path / "d.nii.gz"])
    assert code == 0, err
    restored = np.asarray(nib.load(str(tmp_path / "d.nii.gz")).dataobj)
    assert restored.shape == vol.shape and np.array_equal(restored, decoded.astype(restored.dtype))
    for k in range(2):
        scale = vol[..., k].max() - vol[..., k].min()
        flat = psnr(pred=np.full_like(vol[..., k], vol[..., k].mean()) / scale, target=vol[..., k] / scale)
        assert psnr(pred=decoded[..., k] / scale, target=vol[..., k] / scale) > flat + 10  # the slice, not a grey field


@st.composite
def mutated(draw, data: bytes):
    body = bytearray(data)
    for _ in range(draw(st.integers(1, 4))):
        body[draw(st.integers(4, len(body) - 5))] ^= draw(st.integers(1, 255))
    if draw(st.booleans()):  # a consistent CRC: only the family's own checks stand between the bytes and the decoder
        return bytes(body[:-4]) + struct.pack("<I", zlib.crc32(bytes(body[:-4])))
    return bytes(body)


def check_mutations_decode_or_fail_in_one_line(data: bytes) -> None:
    """150 mutations of a file's bytes: each decodes or raises a one-line BitstreamError (nothing else)."""

    @settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
    @given(mutated(data))
    def check(candidate):
        try:
            decode_file(candidate)
        except BitstreamError as exc:
            assert str(exc) and "\n" not in str(exc)

    check()


@pytest.mark.slow
def test_hostile_grid_files_fail_with_one_line(grid_file):
    check_mutations_decode_or_fail_in_one_line(grid_file[1].read_bytes())
