"""Whole-volume compression: --slices, the volume file, its decoding, and its hostile-file handling."""

import json
import struct
import zlib

import numpy as np
import pytest
from conftest import make_phantom
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.files import write_file
from sinco.codec.inr.spec import INRSpec
from sinco.codec.volume import SliceRecord, VolumeHeader, decode_volume, decode_volume_file, encode_volume
from sinco.data.io import parse_slice_range
from sinco.errors import BitstreamError, InputError

AFFINE = np.array([[0.0, -1.2, 0, 30], [1.1, 0, 0, -20], [0, 0, 2.5, 7], [0, 0, 0, 1]])
STEPS = ["--steps", 25, "--bpp", 4, "--arch", "siren", "--depth", 3, "--compile", "off", "--quiet"]



@pytest.fixture
def volume_file(tmp_path):
    """A (28, 32, 12) NIfTI volume with an oblique affine; slice 0 is empty background (constant)."""
    import nibabel as nib

    vol = np.stack([np.zeros((28, 32))] + [make_phantom(28, 32) * (1 + 0.1 * k) + 3 * k for k in range(1, 12)], axis=-1)
    path = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol.astype(np.float32), AFFINE), str(path))
    return path, vol


@pytest.mark.slow
def test_compress_and_decompress_a_whole_volume(volume_file, tmp_path, capsys, run):
    path, vol = volume_file
    out = tmp_path / "v.sinco"
    code, stdout, err = run(["compress", path, "--slices", "all", "--batch-slices", 2, "-o", out, "--json", *STEPS])
    assert code == 0, err
    report = json.loads(stdout)
    assert (report["slices"], report["fitted_slices"], report["constant_slices"]) == (12, 11, 1)
    assert report["file_bytes"] == out.stat().st_size
    assert report["bpp_file"] == pytest.approx(8 * out.stat().st_size / vol.size)
    assert report["slices_per_minute"] > 0 and report["batch_slices"] == 2
    sidecar = json.loads(out.with_name("v.sinco.json").read_text())
    assert sidecar["result"] == report and len(sidecar["slices"]) == 12 and sidecar["fit"]["steps"] == 25
    assert sidecar["slices"][0] == {"index": 0, "kind": "constant", "value": 0.0, "bytes": 9}
    assert report["psnr_mean"] == pytest.approx(np.mean([s["psnr"] for s in sidecar["slices"][1:]]))

    code, stdout, err = run(["info", out, "--json"])
    info = json.loads(stdout)
    assert code == 0 and info["kind"] == "volume" and info["shape"] == [12, 28, 32] and info["constant_slices"] == 1

    import nibabel as nib

    decoded_path = tmp_path / "v.nii.gz"
    assert run(["decompress", out, "-o", decoded_path])[0] == 0
    decoded = nib.load(str(decoded_path))
    np.testing.assert_allclose(decoded.affine, AFFINE)  # back on the scanner grid of the source
    data = decoded.get_fdata()
    assert data.shape == vol.shape and np.all(data[..., 0] == 0)
    # Each slice's reported PSNR is that of what decompress writes.
    for k in range(1, 12):
        lo, hi = vol[..., k].min(), vol[..., k].max()
        mse = np.mean(((data[..., k] - lo) / (hi - lo) - (vol[..., k] - lo) / (hi - lo)) ** 2)
        assert -10 * np.log10(mse) == pytest.approx(sidecar["slices"][k]["psnr"], abs=1e-3)


def test_a_volume_record_is_the_single_slice_file(volume_file, tmp_path, capsys, run):
    path, _ = volume_file
    single = tmp_path / "s3.sinco"
    assert run(["compress", path, "--slice", 3, "-o", single, *STEPS])[0] == 0
    one_by_one, batched = tmp_path / "v1.sinco", tmp_path / "v4.sinco"
    assert run(["compress", path, "--slices", "2:5", "--batch-slices", 1, "-o", one_by_one, *STEPS])[0] == 0
    assert run(["compress", path, "--slices", "2:5", "--batch-slices", 3, "-o", batched, *STEPS])[0] == 0
    header, records = decode_volume_file(one_by_one.read_bytes())
    assert (header.first_index, header.n_slices, header.axis) == (2, 3, 2)
    assert records[1].data == single.read_bytes()  # same seed, same code path: the same bytes
    # Batched: the same fits up to floating-point order.
    _, a, _ = decode_volume(one_by_one.read_bytes())
    _, b, _ = decode_volume(batched.read_bytes())
    span = a.max() - a.min()
    assert np.max(np.abs(a - b)) < 2e-3 * span


@pytest.mark.slow
def test_volume_along_another_axis_round_trips_to_npy(volume_file, tmp_path, capsys, run):
    path, vol = volume_file
    out = tmp_path / "x.sinco"
    assert run(["compress", path, "--slices", "10:13", "--axis", 0, "-o", out, *STEPS, "--steps", 200, "--bpp", 16])[0] == 0
    assert run(["decompress", out, "-o", tmp_path / "x.npy"])[0] == 0
    decoded = np.load(tmp_path / "x.npy")
    assert decoded.shape == (3, 32, 12)
    assert np.corrcoef(decoded.ravel(), vol[10:13].ravel())[0, 1] > 0.98  # the slices are back along axis 0


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--slices", "5:3"], "--slices '5:3': must satisfy 0 <= A < B <= 12"),
        (["--slices", "1:99"], "--slices '1:99': must satisfy"),
        (["--slices", "a:b"], "--slices 'a:b': expected 'all' or a range"),
        (["--slices", "all", "--slice", "2"], "--slice and --slices"),
        (["--slice", "2", "--batch-slices", "2"], "--batch-slices: only with --slices"),
        (["--slices", "all", "--batch-slices", "0"], "--batch-slices 0: must be a positive integer"),
    ],
)
def test_bad_volume_arguments_exit_2_with_one_line(volume_file, tmp_path, capsys, extra, message, run):
    path, _ = volume_file
    code, _, err = run(["compress", path, "-o", tmp_path / "bad.sinco", *extra, *STEPS])
    assert code == 2 and message in err and err.count("\n") == 1
    assert not (tmp_path / "bad.sinco").exists()


def test_slices_need_a_volume_and_a_volume_needs_a_volume_format(image, tmp_path, capsys, volume_file, run):
    np.save(tmp_path / "flat.npy", image)
    code, _, err = run(["compress", tmp_path / "flat.npy", "--slices", "all", "-o", tmp_path / "f.sinco", *STEPS])
    assert code == 2 and "not a volume" in err
    path, _ = volume_file
    out = tmp_path / "v.sinco"
    assert run(["compress", path, "--slices", "4:6", "-o", out, *STEPS])[0] == 0
    code, _, err = run(["decompress", out, "-o", tmp_path / "v.png"])
    assert code == 2 and "is a volume" in err and not (tmp_path / "v.png").exists()


def test_slice_range_parsing():
    assert parse_slice_range("all", size=7) == range(7)
    assert parse_slice_range("2:5", size=7) == range(2, 5)
    assert parse_slice_range(":3", size=7) == range(3) and parse_slice_range("4:", size=7) == range(4, 7)
    for bad in ("3:3", "-1:2", "1:2:3", "x", ""):
        with pytest.raises(InputError):
            parse_slice_range(bad, size=7)


SPEC = INRSpec(arch="siren", width=4, depth=2)
_rng = np.random.default_rng(1)
_INNER = [write_file(family="siren", spec=SPEC, payload=_rng.normal(0, 0.3, SPEC.n_params()).astype("<f2").tobytes(), height=12, width=10,
                     vmin=0.0, vmax=float(k + 1)) for k in range(2)]  # fmt: skip
VALID = encode_volume(VolumeHeader(axis=1, height=12, width=10, n_slices=3, first_index=4, affine=np.eye(4)),
                      [SliceRecord(data=_INNER[0]), SliceRecord(constant=-2.5), SliceRecord(data=_INNER[1])])  # fmt: skip


def test_golden_volume_layout():
    assert VALID[:4] == b"SNCV" and len(VALID) == 152 + (5 + len(_INNER[0])) + 9 + (5 + len(_INNER[1])) + 4
    header, volume, headers = decode_volume(VALID)
    assert volume.shape == (3, 12, 10) and np.all(volume[1] == -2.5) and headers[1] is None
    assert (header.axis, header.first_index) == (1, 4)


@st.composite
def mutated_volume(draw):
    data = bytearray(VALID)
    kind = draw(st.sampled_from(["truncate", "flip", "flip-crc"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    for _ in range(draw(st.integers(1, 6))):
        data[draw(st.integers(0, len(data) - 5))] ^= draw(st.integers(1, 255))
    if kind == "flip-crc":  # a consistent CRC: only the structural checks stand between the bytes and the decoder
        body = bytes(data[:-4])
        return body + struct.pack("<I", zlib.crc32(body))
    return bytes(data)


@settings(max_examples=600, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated_volume())
def test_mutated_volume_files_fail_cleanly(data):
    try:
        header, volume, _ = decode_volume(data)
    except BitstreamError as exc:
        assert "\n" not in str(exc)
        return
    assert volume.shape == (header.n_slices, header.height, header.width) and np.all(np.isfinite(volume))


def test_broken_volume_files_exit_2_with_one_line(tmp_path, capsys, run):
    for name, data in {"cut": VALID[:-7], "flipped": VALID[:200] + bytes([VALID[200] ^ 1]) + VALID[201:]}.items():
        path = tmp_path / f"{name}.sinco"
        path.write_bytes(data)
        for args in (["info", path], ["decompress", path, "-o", tmp_path / f"{name}.nii.gz"]):
            code, _, err = run(args)
            assert code == 2 and err.count("\n") == 1 and "volume" in err, err
        assert not (tmp_path / f"{name}.nii.gz").exists()


def test_a_range_of_constant_slices_needs_no_fit(volume_file, tmp_path, capsys, run):
    path, _ = volume_file
    out = tmp_path / "empty.sinco"
    code, stdout, err = run(["compress", path, "--slices", "0:1", "-o", out, *STEPS])
    assert code == 0, err
    assert "(0 fitted, 1 constant) nothing to fit" in stdout and out.stat().st_size == 152 + 9 + 4
