"""The video codecs through ffmpeg (hevc, vvc, avif10, avif12, hevc-ra, vvc-ra): round trips, rates within the budget,
the same bits and PSNR as ffmpeg run by hand, one-line errors when ffmpeg or an encoder is missing, a benchmark that
goes on without a failing method."""

import json
import math
import subprocess

import numpy as np
import pytest
import torch
from conftest import make_phantom

from sinco.classical import video
from sinco.classical.base import encode_at_bpp, psnr_ceiling
from sinco.classical.registry import CLASSICAL_CODECS, VOLUME_CODECS
from sinco.errors import EncoderError, InputError

IMAGE_CODECS = ("hevc", "vvc", "avif10", "avif12")


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return 10 * math.log10(1 / float(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


def _image(levels: int | None, size: int = 64, seed: int = 0) -> np.ndarray:
    """A 64 x 64 phantom in [0, 1] with some noise: on 256 grey levels (8-bit data), or continuous (``None``)."""
    phantom = make_phantom(size, size)
    noisy = phantom + 2.0 * np.random.default_rng(seed).standard_normal(phantom.shape)
    image = (noisy - noisy.min()) / (noisy.max() - noisy.min())
    return image if levels is None else np.rint(image * (levels - 1)) / (levels - 1)


def _ffmpeg(args: list[str]) -> None:
    subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-nostdin", "-loglevel", "error", "-y", *args], check=True, capture_output=True)


# The settings the documentation states, written out again here (not taken from the codecs).
def _direct_encode(name: str, image: np.ndarray, quality: int, tmp_path) -> tuple[bytes, np.ndarray]:
    """Encode and decode with ffmpeg by hand; returns the bitstream and the decoded image in [0, 1]."""
    height, width = image.shape
    raw, out, dec = tmp_path / f"{name}.raw", tmp_path / f"{name}.bin", tmp_path / f"{name}.dec"
    if name == "hevc":
        np.rint(image * 4095).astype("<u2").tofile(raw)
        fmt, peak, qp = "gray12le", 4095, 51 - quality
        codec = ["-c:v", "libx265", "-preset", "slow", "-x265-params", f"qp={qp}:keyint=1:tune=psnr:info=0:log-level=error", "-f", "hevc"]
    elif name == "vvc":
        luma = np.rint(image * 1023).astype("<u2")
        np.concatenate([luma.ravel(), np.full(luma.size // 2, 512, "<u2")]).tofile(raw)
        fmt, peak, qp = "yuv420p10le", 1023, 63 - quality
        codec = ["-c:v", "libvvenc", "-preset", "medium", "-qp", str(qp), "-vvenc-params", "IntraPeriod=1", "-f", "vvc"]
    else:
        bits = int(name[-2:])
        peak = (1 << bits) - 1
        np.rint(image * peak).astype("<u2").tofile(raw)
        fmt, crf = f"gray{bits}le", 63 - quality
        codec = ["-threads", "1", "-c:v", "libaom-av1", "-cpu-used", "4", "-crf", str(crf), "-still-picture", "1", "-f", "obu"]
    _ffmpeg(["-f", "rawvideo", "-pix_fmt", fmt, "-s", f"{width}x{height}", "-r", "25", "-i", str(raw), *codec, str(out)])
    _ffmpeg(["-i", str(out), "-f", "rawvideo", "-pix_fmt", fmt, str(dec)])
    decoded = np.fromfile(dec, dtype="<u2")[: height * width].reshape(height, width) / peak
    return out.read_bytes(), decoded


def test_registered_in_table_order_with_labels_that_state_the_bit_depth():
    assert list(CLASSICAL_CODECS)[-5:] == ["avif10", "avif12", "webp", "hevc", "vvc"]
    assert CLASSICAL_CODECS["avif"].label == "AVIF (8-bit)" and CLASSICAL_CODECS["vvc"].label == "VVC intra (VVenC, 10-bit)"
    assert "12-bit" in CLASSICAL_CODECS["hevc"].label and "10-bit" in CLASSICAL_CODECS["avif10"].label
    assert {n: c.ndim for n, c in VOLUME_CODECS.items()} == {"hevc-ra": 3, "vvc-ra": 3}
    assert all(VOLUME_CODECS[n]().details["intra_period"] == 32 for n in VOLUME_CODECS)


def test_psnr_ceiling_of_a_bit_depth():
    # MSE of uniform rounding to b bits: step^2 / 12, step = 1 / (2^b - 1).
    assert psnr_ceiling(8) == pytest.approx(10 * math.log10(12 * 255**2))
    assert [round(psnr_ceiling(b), 1) for b in (8, 10, 12, 16)] == [58.9, 71.0, 83.0, 107.1]
    rounded = np.rint(_image(None, 256) * 1023) / 1023  # and what rounding a continuous image really costs
    assert _psnr(rounded, _image(None, 256)) == pytest.approx(psnr_ceiling(10), abs=0.3)
    with pytest.raises(InputError, match="bit_depth 0"):
        psnr_ceiling(0)


@pytest.mark.parametrize("name", IMAGE_CODECS)
@pytest.mark.parametrize("levels", [256, None], ids=["8-bit", "continuous"])
def test_round_trip_within_the_rate(name, levels):
    image = _image(levels)
    codec = CLASSICAL_CODECS[name]()
    for target in (0.5, 2.0):
        match = encode_at_bpp(codec, image, target_bpp=target)
        assert match.within_budget and match.bpp <= target and match.bpp == 8 * len(match.data) / image.size
        decoded = codec.decode(match.data)
        assert decoded.shape == image.shape and decoded.dtype == np.float32 and 0 <= decoded.min() <= decoded.max() <= 1
        assert 20 < _psnr(decoded, image) <= codec.psnr_ceiling + 3  # rounding to the codec's depth bounds it
        if match.quality < codec.quality_range[1]:  # the highest quality within the rate: one more breaks it
            assert 8 * len(codec.encode(image, quality=match.quality + 1)) / image.size > target
    assert codec.decode(codec.encode(image, quality=codec.quality_range[1] - 5)).shape == image.shape


@pytest.mark.parametrize("name", IMAGE_CODECS)
def test_bits_and_psnr_equal_a_direct_ffmpeg_run(name, tmp_path):
    image = _image(None)
    codec = CLASSICAL_CODECS[name]()
    match = encode_at_bpp(codec, image, target_bpp=1.0)
    data, decoded = _direct_encode(name, image, int(match.quality), tmp_path)
    assert match.data == data  # the same bitstream, byte for byte
    assert np.array_equal(codec.decode(match.data), decoded.astype(np.float32))  # the same picture (float32 [0, 1])
    assert _psnr(codec.decode(match.data), image) == pytest.approx(_psnr(decoded, image), abs=1e-6)


def test_sizes_the_encoders_cannot_take():
    odd = _image(None)[:, :37]
    vvc = CLASSICAL_CODECS["vvc"]()
    # An odd width is padded by one edge column, dropped again by the decoder: the file is the padded image's
    # bitstream after the byte that says so, and decodes to the padded image's decode without that column.
    data, even = vvc.encode(odd, quality=30), vvc.encode(np.pad(odd, ((0, 0), (0, 1)), mode="edge"), quality=30)
    assert data == bytes([2]) + even and np.array_equal(vvc.decode(data), vvc.decode(even)[:, :37])
    odd_both = _image(None, size=65)[:, :37]
    assert vvc.decode(vvc.encode(odd_both, quality=30)).shape == (65, 37)
    with pytest.raises(EncoderError, match="not a VVC bitstream"):
        vvc.decode(b"\x07" + even)
    small = _image(None)[:30, :34]  # below VVenC's 32 x 32: padded, and the padding cropped by the bitstream's window
    assert vvc.decode(vvc.encode(small, quality=40)).shape == (30, 34)
    with pytest.raises(InputError, match=r"^hevc: pictures of at least 16 x 16 pixels, got 8 x 64$"):
        CLASSICAL_CODECS["hevc"]().encode(_image(None)[:8], quality=30)
    assert CLASSICAL_CODECS["avif12"]().decode(CLASSICAL_CODECS["avif12"]().encode(odd, quality=40)).shape == (64, 37)
    with pytest.raises(InputError, match="hevc codes 2-D arrays"):
        encode_at_bpp(CLASSICAL_CODECS["hevc"](), np.zeros((2, 32, 32)), target_bpp=1.0)


def test_missing_encoder_ffmpeg_or_failing_ffmpeg_is_one_line_naming_the_method(monkeypatch, tmp_path):
    image = _image(None)
    monkeypatch.setattr(video, "ffmpeg_encoders", lambda exe: frozenset({"libx265"}))
    with pytest.raises(EncoderError, match=r"^vvc: this ffmpeg \(.*\) has no libvvenc encoder$"):
        CLASSICAL_CODECS["vvc"]().encode(image, quality=30)
    monkeypatch.undo()

    def no_ffmpeg() -> str:
        raise EncoderError("ffmpeg (from imageio-ffmpeg) is not available: not installed")

    monkeypatch.setattr(video, "ffmpeg_exe", no_ffmpeg)
    with pytest.raises(EncoderError, match="^avif10: ffmpeg .* not available"):
        CLASSICAL_CODECS["avif10"]().encode(image, quality=30)
    monkeypatch.undo()

    failing = tmp_path / "ffmpeg"
    failing.write_text("#!/bin/sh\nif [ \"$2\" = -encoders ]; then echo ' V....D libx265  x265'; exit 0; fi\necho 'broken pipe' >&2\nexit 3\n")
    failing.chmod(0o755)
    monkeypatch.setattr(video, "ffmpeg_exe", lambda: str(failing))
    with pytest.raises(EncoderError) as caught:
        CLASSICAL_CODECS["hevc"]().encode(image, quality=30)
    assert str(caught.value) == "hevc: ffmpeg failed to encode (exit 3): broken pipe"
    with pytest.raises(EncoderError, match="^hevc: ffmpeg failed to decode"):
        CLASSICAL_CODECS["hevc"]().decode(b"\x00\x00\x01")


def _intra_frames(data: bytes, name: str) -> tuple[list[int], set[int]]:
    """The frames (display order) ffmpeg's decoder reports as key frames, and the NAL unit types of the stream's intra
    random-access pictures (Annex B; HEVC: bits 1..6 of the header's first byte, IDR 19/20, CRA 21; VVC: bits 3..7 of
    its second, IDR 7/8, CRA 9)."""
    import re
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        path = f"{tmp}/stream"
        with open(path, "wb") as f:
            f.write(data)
        log = subprocess.run([video.ffmpeg_exe(), "-hide_banner", "-f", name[:-3], "-i", path, "-vf", "showinfo", "-f", "null", "-"],
                             capture_output=True, text=True, check=True).stderr  # fmt: skip
    keys = [int(m.group(1)) for m in re.finditer(r" n:\s*(\d+) .*?iskey:1", log)]
    units = [u for u in data.split(b"\x00\x00\x01")[1:] if len(u) > 1]
    if name == "hevc-ra":
        types = {(u[0] >> 1) & 0x3F for u in units} & {16, 17, 18, 19, 20, 21}
    else:
        types = {(u[1] >> 3) & 0x1F for u in units} & {7, 8, 9}
    return keys, types


@pytest.mark.parametrize("name", sorted(VOLUME_CODECS))
def test_volume_round_trip_and_intra_period(name):
    volume = np.stack([_image(None, seed=k) * (0.9 + 0.01 * k) for k in range(8)])
    codec = VOLUME_CODECS[name]()
    match = encode_at_bpp(codec, volume, target_bpp=0.5)
    assert match.within_budget and match.bpp <= 0.5 and match.bpp == 8 * len(match.data) / volume.size  # bits per voxel
    decoded = codec.decode(match.data)
    assert decoded.shape == volume.shape and decoded.dtype == np.float32 and _psnr(decoded, volume) > 25
    with pytest.raises(InputError, match=f"{name} codes 3-D arrays"):
        encode_at_bpp(codec, volume[0], target_bpp=0.5)
    # 70 slices: every slice within 32 of an intra picture, and every intra picture an IDR (closed groups: a slice needs
    # no picture before its group's intra picture). x265 starts each group with it, VVenC ends its first group with it.
    slab = np.repeat(volume[:, :32, :32], 9, axis=0)[:70]
    keys, types = _intra_frames(codec.encode(slab, quality=30), name)
    assert keys and keys[0] < 32 and all(b - a <= 32 for a, b in zip(keys, keys[1:], strict=False)) and 69 - keys[-1] < 32
    assert len(keys) == 3 if name == "hevc-ra" else len(keys) == 2  # x265: 0, 32, 64; VVenC: 31, 63
    assert types <= ({19, 20} if name == "hevc-ra" else {7, 8}) and types


def test_the_benchmark_goes_on_when_a_method_fails(benchmark_dataset, monkeypatch, capsys, tmp_path):
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.runner import run_benchmark

    real = video.ffmpeg_encoders
    monkeypatch.setattr(video, "ffmpeg_encoders", lambda exe: real(exe) - {"libvvenc"})
    config = BenchmarkConfig(data=str(benchmark_dataset[0]), seg_model=None, label_glob=None, image_glob="Flair.nii.gz", cases="all",
                             images=1, methods=("hevc", "vvc", "jpeg2000"), bpps=(3.0, 6.0))  # fmt: skip
    result = run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    assert sorted({r["method"] for r in result["records"]}) == ["hevc", "jpeg2000"]
    err = capsys.readouterr().err
    assert err.count("sinco: warning: vvc on ") == 2 and "has no libvvenc encoder; not recorded" in err
    hevc = next(r for r in result["records"] if r["method"] == "hevc")
    assert hevc["bit_depth"] == 12 and hevc["psnr_ceiling"] == pytest.approx(83.0, abs=0.05)
    assert hevc["codec_details"]["settings"].startswith("x265 -preset slow") and hevc["bpp_file"] <= hevc["target_bpp"]
    # VVC, the default anchor, did not run: the deltas fall back to JPEG 2000, and the table says why.
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved["bjontegaard"]["anchor"] == "jpeg2000" and saved["bjontegaard"]["missing"] == ["vvc"]
    assert "VVC intra (VVenC, 10-bit) ran no record here" in result["table"]
    assert "## Bjontegaard deltas against JPEG 2000" in result["table"]
    assert "ceiling" not in result["table"]  # no row near what its bit depth allows


def test_the_table_marks_rows_at_their_bit_depth_ceiling(tmp_path):
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.tables import make_table

    config = BenchmarkConfig(data=str(tmp_path), seg_model=None, label_glob=None, cases="all", methods=("vvc", "hevc"), bpps=(2.0,))
    ceiling10, ceiling12 = psnr_ceiling(10), psnr_ceiling(12)
    common = {"image_id": "a:1", "target_bpp": 2.0, "lam_setting": 0.0, "bpp_file": 1.9, "bpp_params": None, "ssim": 1.0}
    records = [{**common, "method": "vvc", "psnr": ceiling10 - 1.0, "bit_depth": 10, "psnr_ceiling": round(ceiling10, 2)},
               {**common, "method": "hevc", "psnr": ceiling10 - 1.0, "bit_depth": 12, "psnr_ceiling": round(ceiling12, 2)}]  # fmt: skip
    table = make_table(records, config, bjontegaard=None)
    assert "| VVC intra (VVenC, 10-bit) (at the 10-bit ceiling) |" in table and "| HEVC intra (x265, 12-bit) |" in table
    assert "10-bit 71.0 dB" in table and "12-bit 83.0 dB" not in table


def test_tables_give_bd_rate_against_vvc_and_jpeg2000(benchmark_dataset, tmp_path):
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.runner import run_benchmark

    config = BenchmarkConfig(data=str(benchmark_dataset[0]), seg_model=None, label_glob=None, image_glob="Flair.nii.gz", cases="all",
                             images=1, methods=("hevc", "vvc", "jpeg2000"), bpps=(0.5, 1.0, 2.0))  # fmt: skip
    result = run_benchmark(config, outdir=tmp_path / "out", device=torch.device("cpu"), progress=False)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())["bjontegaard"]
    assert saved["anchor"] == "vvc" and list(saved["also"]) == ["jpeg2000"] and saved["missing"] == []
    image = next(iter(saved["methods"]["hevc"]["per_image"]))
    against_j2k = saved["also"]["jpeg2000"]["methods"]["hevc"]["per_image"][image]["bd_rate"]["value"]
    against_vvc = saved["methods"]["hevc"]["per_image"][image]["bd_rate"]["value"]
    assert against_j2k is not None and against_vvc is not None and against_j2k != against_vvc
    table = result["table"]
    assert "## Bjontegaard deltas against VVC intra (VVenC, 10-bit)" in table and "BD-rate vs JPEG 2000 per image (%)" in table


class _Counted(video.Codec):
    """A codec whose file of quality q has a given length: the rate search's logic without an encoder."""

    name, label, extension, bit_depth, quality_range, library = "counted", "counted", ".bin", 8, (0, 63), "test"

    def __init__(self, lengths, rate_model):
        self.lengths, self.rate_model = lengths, rate_model

    def encode(self, image, *, quality):
        return bytes(self.lengths[int(quality)])

    def decode(self, data):
        return np.zeros((8, 8), np.float32)


@pytest.mark.parametrize("model", [(40, 0.5, 11), (5, 8.0, 3), (60, 0.01, 30)], ids=["good", "too-high", "too-low"])
def test_the_guided_rate_search_finds_what_bisection_finds(model):
    # Rates growing with quality (with plateaus): the guided search must end at the same boundary as bisection.
    lengths = [int(2 + 3 * 1.08**q) for q in range(64)]
    image = np.zeros((8, 8))
    for target in [8 * n / 64 for n in (1, 2, 3, 5, 8, 13, 21, 34, 55, 89, 144, 500)]:
        guided = encode_at_bpp(_Counted(lengths, model), image, target_bpp=target)
        plain = encode_at_bpp(_Counted(lengths, None), image, target_bpp=target)
        assert (guided.quality, guided.within_budget, guided.data) == (plain.quality, plain.within_budget, plain.data), target
        assert guided.trials <= 12
