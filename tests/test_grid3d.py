"""The volume latent-grid family (``--arch grid3d``): slabs coded as volumes, bit-exact, with slice random access.

Tiny synthetic volumes only: the whole file runs in well under a minute on one CPU thread.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.config import CodecConfig
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid3d.arm import context_index, decode_steps
from sinco.codec.grid3d.spec import Grid3dSpec, depth_stages_for
from sinco.codec.registry import fit_config, get_family
from sinco.codec.volume import decode_slab_volume, parse_slab_volume
from sinco.compression.volume import compress_volume_slabs, voxel_spacing
from sinco.errors import BitstreamError, InputError

GOLDEN = Path(__file__).parent / "data" / "grid3d_golden"
GOLDEN_FILES = sorted(GOLDEN.glob("*.sinco"))


def synthetic_volume(slices: int = 6, height: int = 24, width: int = 24) -> np.ndarray:
    """A smooth volume that changes slowly from slice to slice, ``(S, H, W)`` float32."""
    z, y, x = np.meshgrid(np.arange(slices), np.arange(height), np.arange(width), indexing="ij")
    return (100 + 80 * np.sin(x / 4 + z / 3) * np.cos(y / 5)).astype(np.float32)


def compress(volume: np.ndarray, *, bpp: float, slab: int, steps: int = 60, spacing: float = 1.0, warm_start: str = "on", seg_model=None,
             masks=None, **overrides):  # fmt: skip
    config = fit_config("grid3d", "fast", {"steps": steps, "seed": 0, **overrides})
    return compress_volume_slabs(volume, first_index=0, axis=2, affine=np.diag([1.0, 1.0, spacing, 1.0]),
                                 codec=CodecConfig(arch="grid3d", bpp=bpp, options={"slab": slab, "warm_start": warm_start}),
                                 fit_config=config, device=torch.device("cpu"), seg_model=seg_model, masks=masks)  # fmt: skip


@pytest.fixture(scope="module")
def searched():
    """A 6-slice volume in slabs of 4 at 6 bits per voxel (a rate search per slab; tiny slabs pay their networks)."""
    volume = synthetic_volume()
    return volume, compress(volume, bpp=6.0, slab=4)


# --------------------------------------------------------------------------------------------------- geometry
def test_the_spec_block_round_trips_and_refuses_a_hostile_one():
    spec = Grid3dSpec(plane=GridSpec(levels=5, upsampling="bicubic"), depth_stages=(False, True, True, False), arm_previous=5)
    assert Grid3dSpec.from_bytes(spec.to_bytes()) == spec
    bad_mask = bytearray(spec.to_bytes())
    bad_mask[1] = 0xFF  # names stages beyond the 5 levels
    for block in (spec.to_bytes()[:2], bytes([9]) + spec.to_bytes()[1:], bytes(bad_mask), spec.to_bytes()[:3] + bytes([0]) + spec.to_bytes()[4:]):
        with pytest.raises(BitstreamError):
            Grid3dSpec.from_bytes(block)


def test_the_warm_start_is_a_version_2_block_and_a_version_1_block_still_reads():
    warm = Grid3dSpec(warm_start=1)
    assert warm.to_bytes()[:1] == b"\x02" and Grid3dSpec.from_bytes(warm.to_bytes()) == warm
    assert Grid3dSpec().to_bytes()[:1] == b"\x01"  # no warm start: the layout of files written before warm starts
    assert parse_slab_volume((GOLDEN / "slabs-7x20x28-aniso.sinco").read_bytes()).spec.warm_start == 0
    assert parse_slab_volume((GOLDEN / "slabs-6x24x24-warm.sinco").read_bytes()).spec.warm_start == 1
    block = warm.to_bytes()
    for bad in (block[:3] + bytes([0]) + block[4:], block[:3] + bytes([7]) + block[4:]):  # version 2 without / unknown warm start
        with pytest.raises(BitstreamError):
            Grid3dSpec.from_bytes(bad)
    family = get_family("grid3d")
    assert family.make_spec({}).warm_start == 1
    assert family.make_spec({"warm_start": "off"}).warm_start == 0
    assert family.make_spec({"upsampling": "bicubic"}).warm_start == 0  # the warm start was fitted with learned kernels
    with pytest.raises(InputError, match="--warm-start 'maybe'"):
        family.make_spec({"warm_start": "maybe"})


def test_the_warm_start_is_where_the_fit_begins_and_what_the_weights_are_coded_against():
    from sinco.codec.grid3d.networks import tensor_shapes
    from sinco.codec.grid3d.warm_start import load_warm_start

    spec = get_family("grid3d").make_spec({})
    lifted = load_warm_start(spec)
    assert [t.shape for t in lifted.tensors] == [tuple(s) for s in tensor_shapes(spec)]
    assert not lifted.tensors[0][:, -spec.arm_previous :].any()  # the previous-slice inputs start unused
    assert load_warm_start(dataclasses.replace(spec, warm_start=0)) is None
    volume = synthetic_volume()
    bits = {arm: compress(volume, bpp=8.0, slab=6, steps=20, warm_start=arm, lambda_rd=1e-3).metrics["slab_fits"][0]["network_bits"]
            for arm in ("on", "off")}  # fmt: skip
    # 20 steps leave the weights near where they began: near the warm start they cost about a bit each.
    assert bits["on"] < bits["off"] / 2


def test_anisotropic_spacing_changes_the_pyramid():
    iso = depth_stages_for(spacing=(1.0, 1.0, 1.0), levels=7)
    thick = depth_stages_for(spacing=(5.0, 1.0, 1.0), levels=7)  # few thick slices: halved late
    assert iso == (True,) * 6
    assert thick == (False, False, True, True, True, True)
    family = get_family("grid3d")
    shapes_iso = family.make_spec({}, spacing=voxel_spacing(np.diag([1.0, 1.0, 1.0, 1.0]), axis=2)).grid_shapes(16, 64, 64)
    shapes_thick = family.make_spec({}, spacing=voxel_spacing(np.diag([1.0, 1.0, 5.0, 1.0]), axis=2)).grid_shapes(16, 64, 64)
    assert [s[0] for s in shapes_iso] == [16, 8, 4, 2, 1, 1, 1]
    assert [s[0] for s in shapes_thick] == [16, 16, 16, 8, 4, 2, 1]
    assert [s[1:] for s in shapes_iso] == [s[1:] for s in shapes_thick]
    # Slices along axis 0 of an affine whose axis 0 is thick: the same rule, from the affine's column lengths.
    assert voxel_spacing(np.diag([3.0, 0.5, 0.5, 1.0]), axis=0) == (3.0, 0.5, 0.5)
    with pytest.raises(InputError, match="spacing"):
        depth_stages_for(spacing=(0.0, 1.0, 1.0), levels=7)


@pytest.mark.parametrize("stages", [(True, True, True), (False, True, False)])
def test_every_context_is_decoded_before_its_latent(stages):
    spec = Grid3dSpec(plane=GridSpec(levels=4), depth_stages=stages)
    shapes = spec.grid_shapes(5, 11, 9)
    index = context_index(shapes, spec)
    order, bounds = decode_steps(shapes)
    step = np.empty(index.shape[1], np.int64)
    for s, (a, b) in enumerate(zip(bounds[:-1], bounds[1:], strict=True)):
        step[order[a:b]] = s
    real = index < index.shape[1]  # the zero cell is outside every grid
    contexts_step = np.where(real, step[np.minimum(index, index.shape[1] - 1)], -1)
    assert (contexts_step < step[None, :]).all()
    assert real[-spec.arm_previous :].any()  # the previous slice is really read
    assert sorted(order.tolist()) == list(range(index.shape[1]))


# ------------------------------------------------------------------------------------------- end to end
def test_the_rate_is_never_exceeded_and_the_file_decodes_to_what_was_measured(searched):
    volume, result = searched
    assert result.metrics["bpp_file"] <= 6.0
    assert 8 * len(result.data) / volume.size == result.metrics["bpp_file"]
    _, decoded = decode_slab_volume(result.data)
    assert decoded.shape == volume.shape
    assert result.metrics["psnr_mean"] > 25  # a real fit, not noise
    parsed = parse_slab_volume(result.data)
    assert [s.slices for s in parsed.slabs] == [4, 2]


def test_a_tighter_rate_gives_a_smaller_file_within_it():
    # From random weights, as this test was sized: with the warm start the three trials on this tiny slab stop near
    # 3 bits per voxel, below both targets.
    volume = synthetic_volume()
    loose = compress(volume, bpp=6.0, slab=4, warm_start="off")
    tight = compress(volume, bpp=4.8, slab=4, warm_start="off")
    assert 8 * len(tight.data) / volume.size <= 4.8 < loose.metrics["bpp_file"] <= 6.0


def test_an_unreachable_rate_is_refused_in_one_line():
    with pytest.raises(InputError, match="--bpp") as caught:
        compress(synthetic_volume(2, 16, 16), bpp=0.5, slab=2, steps=20)
    assert "\n" not in str(caught.value)


@pytest.mark.parametrize("wanted", [range(0, 1), range(3, 5), range(2, 6), range(5, 6)])
def test_slices_decode_exactly_as_those_slices_of_the_whole_decode(searched, wanted):
    _, result = searched
    _, whole = decode_slab_volume(result.data)
    _, part = decode_slab_volume(result.data, slices=wanted)
    assert np.array_equal(part, whole[wanted.start : wanted.stop])


def test_slices_outside_the_file_are_refused(searched):
    _, result = searched
    with pytest.raises(InputError, match="--slices"):
        decode_slab_volume(result.data, slices=range(4, 9))


_DECODE = """
import hashlib, sys, torch
torch.set_num_threads(int(sys.argv[2]))
from sinco.codec.volume import decode_slab_volume
print(hashlib.sha256(decode_slab_volume(open(sys.argv[1], 'rb').read())[1].tobytes()).hexdigest())
"""


def test_decoding_is_bit_exact_across_thread_counts_and_processes(searched, tmp_path):
    _, result = searched
    path = tmp_path / "v.sinco"
    path.write_bytes(result.data)
    here = hashlib.sha256(decode_slab_volume(result.data)[1].tobytes()).hexdigest()
    digests = {threads: subprocess.run([sys.executable, "-c", _DECODE, str(path), str(threads)], capture_output=True, text=True,
                                       check=True).stdout.strip() for threads in (1, 2)}  # fmt: skip
    assert digests == {1: here, 2: here}


@pytest.mark.parametrize("path", GOLDEN_FILES, ids=lambda p: p.stem)
def test_golden_volume_files_decode_to_the_same_bits(path):
    header, decoded = decode_slab_volume(path.read_bytes())
    assert np.array_equal(decoded, np.load(path.with_suffix(".npy")))
    assert header.n_slices == decoded.shape[0]


def test_the_golden_anisotropic_file_has_a_constant_slab_and_a_thick_pyramid():
    parsed = parse_slab_volume((GOLDEN / "slabs-7x20x28-aniso.sinco").read_bytes())
    assert [len(s.payload) > 0 for s in parsed.slabs] == [True, True, False]
    assert parsed.spec.depth_stages[:2] == (False, True)


# ------------------------------------------------------------------------------------------ hostile files
def _golden() -> bytes:
    return (GOLDEN / "slabs-7x20x28-aniso.sinco").read_bytes()


def _table_crc_fixed(data: bytearray) -> bytes:
    """``data`` with the header-and-table CRC recomputed: the mutation reaches what the table says."""
    parsed_len = _crc_position(bytes(data))
    struct.pack_into("<I", data, parsed_len, zlib.crc32(bytes(data[:parsed_len])))
    return bytes(data)


def _crc_position(data: bytes) -> int:
    block = struct.unpack_from("<H", data, 152)[0]
    n_slabs = struct.unpack_from("<I", data, 154 + block)[0]
    return 154 + block + 4 + 28 * n_slabs


def test_hostile_volume_files_are_refused_in_one_line():
    data = _golden()
    crc_at = _crc_position(data)
    count_at = 154 + struct.unpack_from("<H", data, 152)[0]
    cases = {"truncated slab": (data[:-7], "truncated .* payloads"), "trailing bytes": (data + b"\0", "payloads")}
    wrong_count = bytearray(data)
    struct.pack_into("<I", wrong_count, count_at, 2)
    cases["wrong slab count"] = (bytes(wrong_count), "CRC-32 mismatch of its header")
    # A consistent table of two slabs (the last entry dropped, the CRC recomputed): its slices do not add up.
    fewer = bytearray(data[: crc_at - 28] + data[crc_at:])
    struct.pack_into("<I", fewer, count_at, 2)
    cases["wrong slab count, CRC fixed"] = (_table_crc_fixed(fewer), "hold 6 slices, the header says 7")
    slices = bytearray(data)
    struct.pack_into("<I", slices, crc_at - 28, 5)  # the last slab claims 5 slices
    cases["slab slices off the header"] = (_table_crc_fixed(slices), "the header says 7")
    flipped = bytearray(data)
    flipped[crc_at + 30] ^= 0x10  # a byte of the first payload
    cases["bad slab checksum"] = (bytes(flipped), "slab 0 fails its CRC-32")
    for name, (hostile, reason) in cases.items():
        with pytest.raises(BitstreamError, match=reason) as caught:
            decode_slab_volume(hostile)
        assert "\n" not in str(caught.value), name
    # Random access checks the slabs it decodes: the last slab's slice still decodes beside a corrupted first slab.
    _, last = decode_slab_volume(bytes(flipped), slices=range(6, 7))
    assert np.array_equal(last, np.load(GOLDEN / "slabs-7x20x28-aniso.npy")[6:7])


def test_corrupted_latents_behind_a_valid_crc_fail_the_payload_checksum():
    data = bytearray(_golden())
    crc_at = _crc_position(bytes(data))
    first = parse_slab_volume(bytes(data)).slabs[0].payload
    data[crc_at + 4 + len(first) - 3] ^= 0x41  # a late word of the first slab's latent stream
    struct.pack_into("<I", data, crc_at - 3 * 28 + 24, zlib.crc32(bytes(data[crc_at + 4 : crc_at + 4 + len(first)])))
    with pytest.raises(BitstreamError, match="grid3d payload"):
        decode_slab_volume(_table_crc_fixed(data))


@settings(max_examples=40, derandomize=True, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(position=st.integers(min_value=0, max_value=10**6), value=st.integers(min_value=0, max_value=255))
def test_byte_mutations_with_every_crc_fixed_are_refused_in_one_line_or_decode(position, value):
    """Every CRC recomputed, so a mutation reaches the table, the block, the networks or the latents: the decoder
    refuses in one line or gives finite voxels of the announced shape (of the 40 examples, 12 decode, 28 are refused)."""
    data = bytearray(_golden())
    data[position % len(data)] = value
    crc_at = _crc_position(bytes(data)) if len(data) > 160 else 0
    try:
        if 0 < crc_at + 4 <= len(data):
            offset = crc_at + 4
            n_slabs = (crc_at - 154 - struct.unpack_from("<H", data, 152)[0] - 4) // 28
            for k in range(n_slabs):
                entry = crc_at - (n_slabs - k) * 28
                length = struct.unpack_from("<I", data, entry + 20)[0]
                struct.pack_into("<I", data, entry + 24, zlib.crc32(bytes(data[offset : offset + length])))
                offset += length
            struct.pack_into("<I", data, crc_at, zlib.crc32(bytes(data[:crc_at])))
        header, decoded = decode_slab_volume(bytes(data))
    except (BitstreamError, InputError, struct.error) as exc:
        assert "\n" not in str(exc)
        return
    assert decoded.shape == (header.n_slices, header.height, header.width)
    assert np.isfinite(decoded).all()


# --------------------------------------------------------------------------------------------------- the CLI
def _sinco(*args: str) -> subprocess.CompletedProcess:
    """The CLI in-process (``sinco.cli.main``), its status and what it printed."""
    import contextlib
    import io

    from sinco.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(list(args))
    return subprocess.CompletedProcess(args, code, out.getvalue(), err.getvalue())


def test_cli_compress_info_and_decompress_slices(tmp_path):
    nib = pytest.importorskip("nibabel")
    volume = synthetic_volume(5, 24, 24)
    source = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, 2), np.diag([1.0, 1.0, 1.0, 1.0])), str(source))
    out = tmp_path / "v.sinco"
    run = _sinco("compress", str(source), "-o", str(out), "--slices", "all", "--arch", "grid3d", "--bpp", "7", "--slab", "3",
                 "--steps", "40", "--quiet", "--json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    assert summary["bpp_file"] <= 7 and summary["slabs"] == 2 and out.stat().st_size == summary["file_bytes"]
    info = _sinco("info", str(out), "--json")
    slabs = json.loads(info.stdout)["slabs"]
    assert [s["slices"] for s in slabs] == [[0, 3], [3, 5]]
    assert _sinco("info", str(out)).stdout.count("slab ") >= 2
    assert _sinco("decompress", str(out), "-o", str(tmp_path / "all.npy")).returncode == 0
    part = _sinco("decompress", str(out), "-o", str(tmp_path / "part.npy"), "--slices", "2:4")
    assert part.returncode == 0, part.stderr
    whole, some = np.load(tmp_path / "all.npy"), np.load(tmp_path / "part.npy")
    assert np.array_equal(np.moveaxis(whole, 2, 0)[2:4], np.moveaxis(some, 2, 0))
    outside = _sinco("decompress", str(out), "-o", str(tmp_path / "x.npy"), "--slices", "3:9")
    assert outside.returncode == 2 and outside.stderr.count("\n") == 1 and "--slices" in outside.stderr


def test_cli_refuses_a_2d_input_and_hostile_files_in_one_line(tmp_path):
    """A 2-D image is refused (``grid`` codes it better than a one-slice slab, which pays the volume header and has no
    previous slice to read)."""
    image = tmp_path / "slice.npy"
    np.save(image, synthetic_volume(1, 24, 24)[0])
    run = _sinco("compress", str(image), "-o", str(tmp_path / "x.sinco"), "--arch", "grid3d", "--bpp", "2")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--slices" in run.stderr
    hostile = tmp_path / "h.sinco"
    hostile.write_bytes(_golden()[:-5])
    for command in (("decompress", str(hostile), "-o", str(tmp_path / "h.npy")), ("info", str(hostile))):
        refused = _sinco(*command)
        assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "Traceback" not in refused.stderr
    assert not (tmp_path / "h.npy").exists()


# ---------------------------------------------------------------------------------------------- benchmark
def test_the_volume_benchmark_codes_a_slab_with_grid3d_within_its_budget(benchmark_dataset):
    from sinco.benchmark.config import BenchmarkConfig
    from sinco.benchmark.methods import all_methods, volume_methods
    from sinco.benchmark.runner import resolve_cases
    from sinco.benchmark.volumes import VolumeBenchmarkConfig, code_slab, load_slab, method_kind

    assert "grid3d" in volume_methods() and "grid3d" not in all_methods() and method_kind("grid3d") == "volume-family"
    root, _ = benchmark_dataset
    common = dict(data=str(root), seg_model=None, image_glob="Flair.nii.gz", cases="case0", bpps=(4.0,), methods=("grid3d",), steps=30)
    with pytest.raises(InputError, match="--volumes"):
        BenchmarkConfig(**common)
    config = VolumeBenchmarkConfig(**common, slices="1:4", codec_options={"grid3d": {"slab": 3}})
    slab = load_slab(resolve_cases(config, {})[0], slices=config.slices)
    record, coded = code_slab(slab, "grid3d", 4.0, config=config, device=torch.device("cpu"))
    assert record["kind"] == "volume-family" and record["within_budget"] and record["bpp_file"] == 8 * len(coded.data) / slab.voxels.size
    assert record["psnr"] > 20 and record["details"]["slabs"] == 1 and record["details"]["depth_stages"] == [1] * 6


def test_the_api_decompresses_a_volume_of_slabs():
    import sinco

    path = GOLDEN_FILES[0]
    assert np.array_equal(sinco.decompress(path.read_bytes()), np.load(path.with_suffix(".npy")))


def test_decompress_slices_of_a_volume_of_slice_records_too(tmp_path):
    from sinco.codec.volume import SliceRecord, VolumeHeader, encode_volume

    header = VolumeHeader(axis=2, height=8, width=8, n_slices=4, first_index=10, affine=np.eye(4))
    path = tmp_path / "records.sinco"
    path.write_bytes(encode_volume(header, [SliceRecord(constant=float(v)) for v in (1, 2, 3, 4)]))
    run = _sinco("decompress", str(path), "-o", str(tmp_path / "part.npy"), "--slices", "1:3")
    assert run.returncode == 0, run.stderr
    assert np.moveaxis(np.load(tmp_path / "part.npy"), 2, 0)[:, 0, 0].tolist() == [2.0, 3.0]
    single = Path(__file__).parent / "data" / "v1-siren-16x16.sinco"
    refused = _sinco("decompress", str(single), "-o", str(tmp_path / "x.npy"), "--slices", "0:1")
    assert refused.returncode == 2 and refused.stderr.count("\n") == 1 and "single image" in refused.stderr


# --------------------------------------------------------------------------------------------------- the regularizer
def _tiny_seg_model():
    """A frozen, untrained 2-level U-Net (the project's constructor), seeded."""
    from sinco.seg.network import SegModel, UNetConfig, build_unet, freeze

    torch.manual_seed(0)
    config = UNetConfig(channels=(4, 8), strides=(2,))
    return SegModel(net=freeze(build_unet(config)), config=config)


def _box_masks(shape: tuple[int, int, int]) -> np.ndarray:
    """A box on every slice but the last (fitted without the regularizer, as grid fits a slice with an empty mask)."""
    masks = np.zeros(shape, bool)
    masks[:-1, 6:16, 8:18] = True
    return masks


def test_the_regularizer_changes_the_fit_towards_the_mask_and_nothing_else():
    """With --lam 0 (or no network) the file is the plain fit's, byte for byte; with lam > 0 the network's Dice of the
    decoded slices rises (the mse data term at lam 5 lets the Dice term dominate) and the network is never trained."""
    volume, seg = synthetic_volume(4, 24, 24), _tiny_seg_model()
    masks = _box_masks(volume.shape)
    before = {k: v.clone() for k, v in seg.net.state_dict().items()}
    common = dict(bpp=8.0, slab=4, steps=40, lambda_rd=1e-3, data_term="mse")
    plain = compress(synthetic_volume(4, 24, 24), **common)
    zero = compress(volume, **common, lam=0.0, seg_model=seg, masks=masks)
    regularized = compress(volume, **common, lam=5.0, seg_model=seg, masks=masks)
    assert zero.data == plain.data and zero.metrics["regularized_slices"] == 0
    assert regularized.data != plain.data
    m = regularized.metrics
    assert m["lam"] == 5.0 and m["data_term"] == "mse" and m["regularized_slices"] == 3 and m["slab_fits"][0]["lam"] == 5.0
    assert m["dice_mean"] > zero.metrics["dice_mean"] and m["dice_reference_mean"] == zero.metrics["dice_reference_mean"]
    assert all("dice" in row and "dice_reference" in row for row in regularized.slices)
    assert all(torch.equal(before[k], v) for k, v in seg.net.state_dict().items())


def test_masks_that_do_not_match_the_slab_are_refused_in_one_line(tmp_path):
    volume, seg = synthetic_volume(4, 24, 24), _tiny_seg_model()
    with pytest.raises(InputError, match=r"^--mask: shape \(4, 24, 20\) differs from the slices' \(4, 24, 24\)$"):
        compress(volume, bpp=8.0, slab=4, seg_model=seg, masks=np.ones((4, 24, 20), bool))
    with pytest.raises(InputError, match="--mask and --seg-model go together"):
        compress(volume, bpp=8.0, slab=4, seg_model=seg)
    nib = pytest.importorskip("nibabel")
    from sinco.seg.network import save_checkpoint

    source, labels, checkpoint = tmp_path / "vol.nii.gz", tmp_path / "labels.nii.gz", tmp_path / "seg.pt"
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, 2), np.eye(4)), str(source))
    nib.save(nib.Nifti1Image(np.ones((20, 24, 4), np.uint8), np.eye(4)), str(labels))
    save_checkpoint(checkpoint, net=seg.net, config=seg.config, threshold=0.5, training={})
    base = ("compress", str(source), "-o", str(tmp_path / "v.sinco"), "--slices", "all", "--arch", "grid3d", "--bpp", "8")
    run = _sinco(*base, "--quiet", "--seg-model", str(checkpoint), "--mask", str(labels))
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--mask: slices of shape (20, 24) differ" in run.stderr
    run = _sinco(*base, "--seg-model", str(checkpoint))
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "--seg-model needs --mask" in run.stderr
    run = _sinco(*base, "--seg-model", str(checkpoint), "--mask", str(labels), "--seg-target", "self")
    assert run.returncode == 2 and run.stderr.count("\n") == 1 and "single slices only" in run.stderr
    assert not (tmp_path / "v.sinco").exists()


def test_cli_regularized_volume_records_the_regularizer(tmp_path):
    nib = pytest.importorskip("nibabel")
    from sinco.seg.network import save_checkpoint

    volume, seg = synthetic_volume(4, 24, 24), _tiny_seg_model()
    source, labels, checkpoint = tmp_path / "vol.nii.gz", tmp_path / "labels.nii.gz", tmp_path / "seg.pt"
    nib.save(nib.Nifti1Image(np.moveaxis(volume, 0, 2), np.eye(4)), str(source))
    nib.save(nib.Nifti1Image(np.moveaxis(_box_masks(volume.shape), 0, 2).astype(np.uint8), np.eye(4)), str(labels))
    save_checkpoint(checkpoint, net=seg.net, config=seg.config, threshold=0.5, training={"summary": {"note": "untrained"}})
    out = tmp_path / "v.sinco"
    run = _sinco("compress", str(source), "-o", str(out), "--slices", "1:4", "--arch", "grid3d", "--bpp", "8", "--steps", "30",
                 "--lambda-rd", "1e-3", "--seg-model", str(checkpoint), "--mask", str(labels), "--lam", "2", "--quiet")  # fmt: skip
    assert run.returncode == 0, run.stderr
    assert " dice=" in run.stdout and "lam=2" in run.stdout
    record = json.loads((tmp_path / "v.sinco.json").read_text())
    assert record["regularizer"]["seg_model"] == str(checkpoint) and record["regularizer"]["mask"] == str(labels)
    assert record["regularizer"]["lam"] == 2.0 and record["regularizer"]["data_term"] == "sse"
    assert record["regularizer"]["regularized_slices"] == 2  # slices 1 and 2 of the range 1:4; slice 3's mask is empty
    assert record["fit"]["lam"] == 2.0 and record["fit"]["data_term"] == "sse"
    assert record["result"]["dice_mean"] is not None and all("dice" in row for row in record["slices"])
