"""The classical lossless codecs (JPEG-LS, reversible JPEG 2000 and HTJ2K, lossless JPEG XL, FFV1) and
``sinco benchmark --lossless``: exact round trips, near-lossless bounds, refusals, and a resumable run."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import _bench_case

from sinco.classical.lossless import FFV1, depth_jpegls, image_levels
from sinco.classical.registry import LOSSLESS_CODECS
from sinco.errors import InputError


def _texture(shape: tuple[int, ...], *, bits: int, seed: int) -> np.ndarray:
    """Smooth structure plus noise on ``0..2**bits - 1``, both ends reached (a scan's background and its brightest)."""
    rng = np.random.default_rng(seed)
    grid = np.meshgrid(*(np.linspace(0, 1, n) for n in shape), indexing="ij")
    smooth = 0.5 + 0.35 * np.sin(5 * grid[-1]) * np.cos(3 * grid[-2])
    top = (1 << bits) - 1
    levels = np.clip(np.rint(smooth * top + rng.normal(0, top / 1000, shape)), 0, top).astype(np.int64)
    levels.flat[0], levels.flat[-1] = 0, top
    return levels


@pytest.mark.parametrize("name", list(LOSSLESS_CODECS))
@pytest.mark.parametrize("bits", [8, 12, 16])
def test_every_codec_round_trips_levels_exactly(name, bits):
    levels = _texture((64, 64), bits=bits, seed=bits)
    codec = LOSSLESS_CODECS[name]()
    data = codec.encode(levels, bits=bits)
    decoded = codec.decode(data)
    assert decoded.shape == levels.shape and decoded.dtype == np.int64
    np.testing.assert_array_equal(decoded, levels)
    assert 0 < len(data) < levels.size * bits / 8  # compressed (FFV1's NUT headers included), and more than nothing


def test_eight_bit_levels_go_in_eight_bit_samples_and_deeper_ones_declare_their_depth():
    eight, ten = _texture((32, 32), bits=8, seed=1), _texture((32, 32), bits=10, seed=2)
    jpegls = LOSSLESS_CODECS["jpegls"]()
    # CharLS codes 10-bit levels at 10 bits through pyjpegls, at the container's 16 through imagecodecs.
    assert jpegls.coded_bits(8) == 8 and jpegls.coded_bits(10) == (10 if depth_jpegls() is not None else 16)
    # The JPEG-LS frame header's precision byte (SOF55, marker FFF7) is what CharLS coded.
    for levels, bits in ((eight, 8), (ten, 10)):
        data = jpegls.encode(levels, bits=bits)
        assert data[data.index(b"\xff\xf7") + 4] == jpegls.coded_bits(bits)
    # JPEG 2000 declares the levels' depth (the SIZ marker's Ssiz + 1); HTJ2K the container's.
    for name, precision in (("jpeg2000", 10), ("htj2k", 16)):
        codec = LOSSLESS_CODECS[name]()
        data = codec.encode(ten, bits=10)
        siz = data.index(b"\xff\x51")
        assert data[siz + 2 + int.from_bytes(data[siz + 2 : siz + 4], "big") - 3] + 1 == precision == codec.coded_bits(10)
    # FFV1 codes 10-bit levels as gray10le: the same file as for those levels declared as 10 bits.
    assert FFV1.pixel_format(10) == "gray10le" and FFV1().coded_bits(11) == 12 and FFV1.pixel_format(8) == "gray"


@pytest.mark.skipif(depth_jpegls() is None, reason="pyjpegls (CharLS at the levels' depth) is not installed")
def test_jpegls_at_the_levels_depth_is_smaller_than_in_16_bit_samples_and_imagecodecs_decodes_it():
    import imagecodecs

    ten = _texture((48, 48), bits=10, seed=9)
    codec = LOSSLESS_CODECS["jpegls"]()
    for bound in (0, 2):
        data = codec.encode(ten, bits=10, max_error=bound)
        assert codec.library == "pyjpegls/CharLS" and np.abs(codec.decode(data) - ten).max() <= bound
        assert len(data) < len(imagecodecs.jpegls_encode(ten.astype(np.uint16), level=bound))


def test_ffv1_codes_a_tiny_volume_exactly_as_frames():
    volume = _texture((5, 20, 28), bits=12, seed=3)
    codec = FFV1()
    data = codec.encode(volume, bits=12)
    np.testing.assert_array_equal(codec.decode(data), volume)
    one = codec.encode(volume[2], bits=12)
    np.testing.assert_array_equal(codec.decode(one), volume[2])  # an image is a one-frame file and comes back (H, W)


@pytest.mark.parametrize("bits", [8, 16])
def test_jpegls_near_lossless_stays_within_k_and_shrinks_the_file(bits):
    levels = _texture((32, 32), bits=bits, seed=4)
    codec = LOSSLESS_CODECS["jpegls"]()
    sizes = []
    for bound in (0, 1, 3):
        data = codec.encode(levels, bits=bits, max_error=bound)
        error = int(np.abs(codec.decode(data) - levels).max())
        assert error <= bound
        sizes.append(len(data))
    assert sizes[0] > sizes[1] > sizes[2]


def test_lossless_only_codecs_refuse_a_bound_and_levels_out_of_range_are_refused():
    levels = _texture((16, 16), bits=8, seed=5)
    with pytest.raises(InputError, match="jpeg2000: max_error 2: this codec is lossless only"):
        LOSSLESS_CODECS["jpeg2000"]().encode(levels, bits=8, max_error=2)
    with pytest.raises(InputError, match=r"levels 0\.\.255 outside 0\.\.127 of 7 bits"):
        LOSSLESS_CODECS["jpegxl"]().encode(levels, bits=7)
    with pytest.raises(InputError, match="expected integer levels"):
        LOSSLESS_CODECS["htj2k"]().encode(levels.astype(np.float32), bits=8)


def test_image_levels_take_integers_and_float_lattices_and_refuse_other_floats_in_one_line():
    raw = _texture((16, 16), bits=8, seed=6) + 40
    levels, lattice, bits = image_levels(raw.astype(np.uint16))
    assert lattice.offset == 40 and bits == 8 and levels.min() == 0 and levels.max() == 255
    scores = ((raw - 100) / 7.5).astype(np.float32)  # z-scores of integers: a float lattice
    levels, lattice, bits = image_levels(scores)
    np.testing.assert_array_equal(levels, raw - raw.min())
    off = scores + np.random.default_rng(0).normal(0, 1e-2, scores.shape).astype(np.float32)
    with pytest.raises(InputError, match="not on an integer lattice") as refused:
        image_levels(off, name="slice")
    assert "\n" not in str(refused.value)


def _integer_dataset(root: Path) -> Path:
    """The benchmark fixture's three cases, on 12-bit integer grey levels (stored as int16)."""
    import nibabel as nib

    for i in range(3):
        case = root / f"case{i}"
        case.mkdir(parents=True)
        image, label = _bench_case(i)
        levels = np.rint((image - image.min()) / (image.max() - image.min()) * 4000).astype(np.int16)
        nib.save(nib.Nifti1Image(levels, np.eye(4)), str(case / "Flair.nii.gz"))
        nib.save(nib.Nifti1Image(label, np.eye(4)), str(case / "OTMultiClass.nii.gz"))
    return root


def test_cli_benchmark_lossless_table_results_and_resume(tmp_path, run):
    data = _integer_dataset(tmp_path / "ints")
    out = tmp_path / "out"
    args = ["benchmark", "--lossless", "--max-error", "2", "--data", data, "--image-glob", "Flair.nii.gz", "--images", "2",
            "--steps", "3", "--out", out, "--quiet"]  # fmt: skip
    code, stdout, stderr = run(args)
    assert code == 0, stderr
    saved = json.loads((out / "results.json").read_text())
    records = saved["records"]
    # Every method at K = 0 on both slices; sinco (grid) and JPEG-LS at K = 2 too.
    assert {(r["method"], r["max_error"]) for r in records} == {(m, 0) for m in ("grid", *LOSSLESS_CODECS)} | {
        ("grid", 2),
        ("jpegls", 2),
    }
    assert len(records) == 2 * (len(LOSSLESS_CODECS) + 1 + 2) and not any("error" in r for r in records)
    for r in records:
        assert r["measured_max_error"] <= r["max_error"]
        data_bytes = (out / r["file"]).read_bytes()
        assert r["bpp_file"] == pytest.approx(8 * len(data_bytes) / (48 * 48))  # the rate of the file kept
        assert r["stored_bits"] == 16 and r["ratio"] == pytest.approx(16 / r["bpp_file"])
        assert r["encode_seconds"] > 0 and r["decode_seconds"] > 0
    # sinco's lossless file kept is an ordinary .sinco file: it decompresses to the slice's own values.
    import nibabel as nib

    from sinco.api import decompress

    first = next(r for r in records if r["method"] == "grid" and r["max_error"] == 0)
    source = np.asarray(nib.load(str(data / first["case"] / "Flair.nii.gz")).dataobj)[:, :, first["slice"]]
    np.testing.assert_array_equal(decompress((out / first["file"]).read_bytes()), source)
    # Lossless records are exact; near-lossless ones are smaller than their exact counterparts.
    by = {(r["image_id"], r["method"], r["max_error"]): r for r in records}
    assert all(r["measured_max_error"] == 0 for r in records if r["max_error"] == 0)
    for image_id in {r["image_id"] for r in records}:
        assert by[image_id, "jpegls", 2]["bpp_file"] < by[image_id, "jpegls", 0]["bpp_file"]
    table = (out / "table.md").read_text()
    assert "| JPEG-LS | 2 | 2 |" in table and "| FFV1 | 0 | 2 |" in table and table.strip() in stdout
    assert "| 12 |" in table.split("| FFV1 | 0 | 2 |")[1].split("\n")[0]  # 4,001 levels: FFV1 codes gray12le
    assert saved["config"]["max_errors"] == [0, 2]

    # A rerun does no work: every record is kept as it was (and a removed file stays removed).
    stamp = (out / "results.json").stat().st_mtime_ns
    shutil.rmtree(out / "files")
    (out / "files").mkdir()
    code, _, stderr = run(args)
    assert code == 0, stderr
    assert json.loads((out / "results.json").read_text())["records"] == records
    assert not any((out / "files").iterdir()) and (out / "results.json").stat().st_mtime_ns >= stamp
    # `sinco report` draws lossy runs: a lossless one is refused in one line.
    code, _, stderr = run(["report", out, "--out", tmp_path / "report"])
    assert code != 0 and "a lossless benchmark's results" in stderr and stderr.count("\n") <= 2
    # Another configuration in the same folder is refused in one line.
    code, _, stderr = run([*args[:-3], "--images", "1", "--out", out, "--quiet"])
    assert code != 0 and "another configuration" in stderr and stderr.count("\n") == 1


def test_benchmark_lossless_records_off_lattice_slices_as_failed_and_retries_them(benchmark_dataset, tmp_path, run):
    root, _ = benchmark_dataset  # float images with noise: on no integer lattice
    out = tmp_path / "out"
    args = ["benchmark", "--lossless", "--methods", "jpegls,ffv1", "--data", root, "--image-glob", "Flair.nii.gz", "--images", "1",
            "--out", out, "--quiet"]  # fmt: skip
    code, stdout, stderr = run(args)
    assert code == 0
    records = json.loads((out / "results.json").read_text())["records"]
    assert [r["method"] for r in records] == ["jpegls", "ffv1"]
    assert all("not on an integer lattice" in r["error"] and "bpp_file" not in r for r in records)
    assert "| JPEG-LS | 0 | 0 |" in stdout and "Failed records:" in stdout
    assert stderr.count("recorded as failed") == 2
    _, _, again = run(args)
    assert again.count("recorded as failed") == 2  # failed records are tried again, not kept as done


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--max-error", "1"], "--max-error: needs --lossless"),
        (["--lossless", "--bpp", "1"], "--lossless: takes no --bpp"),
        (["--lossless", "--methods", "grid,jpeg"], "unknown with --lossless ['jpeg']"),
        (["--lossless", "--max-error", "-1"], "--max-error"),
        (["--lossless", "--max-error", "a"], "--max-error 'a': expected comma-separated integers"),
    ],
)
def test_cli_lossless_bad_flags_are_one_line_errors(tmp_path, run, extra, message):
    code, _, stderr = run(["benchmark", "--data", tmp_path, "--out", tmp_path / "out", *extra])
    assert code != 0 and message in stderr and stderr.count("\n") == 1


def test_codec_files_are_those_of_direct_imagecodecs_calls_at_the_documented_settings():
    import imagecodecs

    eight, ten = _texture((32, 48), bits=8, seed=7), _texture((32, 48), bits=10, seed=8)
    jpeg_ls = depth_jpegls()
    direct = (
        imagecodecs.jpegls_encode(ten.astype(np.uint16), level=2)
        if jpeg_ls is None
        else jpeg_ls.encode_buffer(ten.astype("<u2").tobytes(), 32, 48, 1, 10, lossy_error=2)
    )
    assert LOSSLESS_CODECS["jpegls"]().encode(ten, bits=10, max_error=2) == bytes(direct)
    assert LOSSLESS_CODECS["jpeg2000"]().encode(eight, bits=8) == bytes(
        imagecodecs.jpeg2k_encode(eight.astype(np.uint8), level=0, reversible=True, codecformat="J2K", bitspersample=8)
    )
    assert LOSSLESS_CODECS["jpegxl"]().encode(ten, bits=10) == bytes(
        imagecodecs.jpegxl_encode(ten.astype(np.uint16), lossless=True, effort=9, bitspersample=10)
    )
    assert LOSSLESS_CODECS["htj2k"]().encode(ten, bits=10) == bytes(
        imagecodecs.htj2k_encode(ten.astype(np.uint16), reversible=True)
    )


def test_a_decode_off_its_bound_is_a_failed_record_not_a_figure(tmp_path, monkeypatch, run):
    data = _integer_dataset(tmp_path / "ints")
    jpegls = LOSSLESS_CODECS["jpegls"]
    real = jpegls.decode

    def broken(self, payload):  # a decoder three levels off at one pixel (at least 2 beyond K = 1)
        decoded = real(self, payload).copy()
        decoded[3, 5] += 3 if decoded[3, 5] < 3 else -3
        return decoded

    monkeypatch.setattr(jpegls, "decode", broken)
    out = tmp_path / "out"
    code, stdout, stderr = run(["benchmark", "--lossless", "--max-error", "1", "--methods", "jpegls,jpegxl", "--data", data,
                                "--image-glob", "Flair.nii.gz", "--images", "1", "--out", out, "--quiet"])  # fmt: skip
    assert code == 0
    records = {(r["method"], r["max_error"]): r for r in json.loads((out / "results.json").read_text())["records"]}
    assert records["jpegls", 0]["error"] == "the decoded file is 3 levels off, above the bound 0: not counted"
    assert (
        records["jpegls", 1]["error"].endswith("levels off, above the bound 1: not counted")
        and "bpp_file" not in records["jpegls", 1]
    )
    assert records["jpegxl", 0]["measured_max_error"] == 0  # the other method goes on
    assert "| JPEG-LS | 0 | 0 |" in stdout and not list((out / "files").glob("*jpegls*"))


def test_cli_benchmark_lossless_volumes_codes_each_slab_whole_and_resumes(tmp_path, run):
    import nibabel as nib

    from sinco.codec.grid.lossless import exact_volume

    data = _integer_dataset(tmp_path / "ints")
    out = tmp_path / "out"
    args = ["benchmark", "--lossless", "--volumes", "--slices", "1:4", "--max-error", "2", "--cases", "case0,case1", "--data", data,
            "--image-glob", "Flair.nii.gz", "--steps", "3", "--out", out, "--quiet"]  # fmt: skip
    code, stdout, stderr = run(args)
    assert code == 0, stderr
    saved = json.loads((out / "results.json").read_text())
    records = saved["records"]
    assert [v["image_id"] for v in saved["volumes"]] == ["case0:1:4", "case1:1:4"] and saved["config"]["slices"] == "1:4"
    expected = {(m, 0) for m in ("grid", *LOSSLESS_CODECS)} | {("grid", 2), ("jpegls", 2)}
    assert {(r["method"], r["max_error"]) for r in records} == expected and len(records) == 2 * len(expected)
    assert not any("error" in r for r in records)
    for r in records:
        assert r["measured_max_error"] <= r["max_error"] and r["pixels"] == 3 * 48 * 48 and r["n_slices"] == 3
        paths = [r["file"]] if "file" in r else r["files"]
        # The rate is that of the bytes kept: one file (sinco's volume file, FFV1's), or one a slice summed (image codecs).
        assert len(paths) == (1 if r["method"] in ("grid", "ffv1") else 3)
        assert r["bpp_file"] == pytest.approx(8 * sum((out / p).stat().st_size for p in paths) / (3 * 48 * 48))
        assert r["stored_bits"] == 16 and r["ratio"] == pytest.approx(16 / r["bpp_file"])
    assert all(r["measured_max_error"] == 0 for r in records if r["max_error"] == 0)
    # sinco's record is one volume file of the slab (one context model), decoding to the slab's stored values.
    first = next(r for r in records if r["method"] == "grid" and r["max_error"] == 0)
    source = np.asarray(nib.load(str(data / first["case"] / "Flair.nii.gz")).dataobj)[:, :, 1:4]
    np.testing.assert_array_equal(exact_volume((out / first["file"]).read_bytes()), np.moveaxis(source, 2, 0))
    table = (out / "table.md").read_text()
    assert "| bits per voxel |" in table and "Bits per voxel of each volume" in table and table.strip() in stdout
    assert "| FFV1 | 0 | 2 |" in table and "| case0:1:4 (" in table

    # A rerun codes nothing again: the records stay as they were and no file is written.
    shutil.rmtree(out / "files")
    (out / "files").mkdir()
    code, _, stderr = run(args)
    assert code == 0, stderr
    assert json.loads((out / "results.json").read_text())["records"] == records
    assert not any((out / "files").iterdir())


def test_cli_benchmark_lossless_slices_without_volumes_is_a_one_line_error(tmp_path, run):
    code, _, stderr = run(["benchmark", "--lossless", "--slices", "1:4", "--data", tmp_path, "--out", tmp_path / "out"])
    assert code != 0 and stderr.count("\n") == 1
    assert "--slices '1:4': a slab of each volume is benchmarked with --volumes" in stderr
