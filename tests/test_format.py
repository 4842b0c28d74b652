"""The .sinco container (format v2), its golden bytes, and the v1 files that still decode."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest

from sinco.codec.files import decode_file, parse_file, write_file
from sinco.codec.format import HEADER_BYTES, MAGIC, OVERHEAD_BYTES
from sinco.codec.inr.spec import INRSpec
from sinco.errors import BitstreamError, InputError

DATA = Path(__file__).parent / "data"
TINY = INRSpec(arch="siren", width=1, depth=1, w0=30.0, w0_first=30.0)  # 5 parameters


def tiny_file(weights=(0.0625, 0.0, 0.0, 0.5, 0.25), height=3, width=2, vmin=-1.0, vmax=3.0, spec=TINY) -> bytes:
    payload = np.array(weights, dtype="<f2").tobytes()
    return write_file(family=spec.arch, spec=spec, payload=payload, height=height, width=width, vmin=vmin, vmax=vmax)


GOLDEN_HEX = (
    "534e434f02010300000002000000000000000000f0bf00000000000008400b000101000000f0410000f0410a000000002c0000000000380034b5633cbc"
)


def test_golden_bytes_of_a_tiny_file():
    data = tiny_file()
    assert len(data) == OVERHEAD_BYTES + 11 + 2 * 5
    assert data.hex() == GOLDEN_HEX
    # Independent check of the documented layout.
    assert data[:4] == MAGIC and data[4] == 2 and data[5] == 1
    assert struct.unpack_from("<IIddH", data, 6) == (3, 2, -1.0, 3.0, 11)
    assert struct.unpack_from("<BHff", data, HEADER_BYTES) == (1, 1, 30.0, 30.0)
    assert struct.unpack_from("<I", data, HEADER_BYTES + 11) == (10,)
    assert np.frombuffer(data, "<f2", 5, HEADER_BYTES + 15).tolist() == [0.0625, 0.0, 0.0, 0.5, 0.25]
    assert struct.unpack_from("<I", data, len(data) - 4)[0] == zlib.crc32(data[:-4])


def test_golden_decoded_values_of_a_tiny_network():
    # out(row, col) = 0.5 * sin(30 * 0.0625 * row) + 0.25, clipped to [0, 1]
    parsed, image = decode_file(tiny_file())
    rows = np.array([-1.0, 0.0, 1.0])[:, None].repeat(2, axis=1)
    expected = np.clip(0.5 * np.sin(30 * 0.0625 * rows) + 0.25, 0, 1)
    assert image.shape == (3, 2) and image.dtype == np.float32
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert (parsed.vmin, parsed.vmax, parsed.version, parsed.family) == (-1.0, 3.0, 2, "siren")


@pytest.mark.parametrize("arch", ["siren", "pe-mlp"])
def test_v1_golden_files_decode_as_before(arch):
    # Written by sinco 0.1 (format v1) with the image it decoded to; both committed before format v2. The MLP families
    # decode with torch's float32 kernels, whose last bits depend on the CPU's instruction set (an AVX-512 machine gave
    # up to 3.1e-7 from the committed images, 58% of the pixels; identical on the machines before it), so the check is
    # to within float32 rounding: a format or network change moves pixels by orders of magnitude more.
    data = (DATA / f"v1-{arch}-16x16.sinco").read_bytes()
    parsed, image = decode_file(data)
    assert parsed.version == 1 and parsed.family == arch and (parsed.height, parsed.width) == (16, 16)
    np.testing.assert_allclose(image, np.load(DATA / f"v1-{arch}-16x16.npy"), rtol=0, atol=2e-6)


@pytest.mark.parametrize("arch", ["siren", "pe-mlp"])
def test_same_seed_gives_the_v1_payload_bytes(arch, phantom):
    # The fit and the weights are the same as before format v2: only the header around them changed.
    import torch

    from sinco.codec.config import CodecConfig
    from sinco.codec.inr.config import INRFitConfig
    from sinco.compression.image import compress_image
    from sinco.data.intensity import normalize_minmax

    img, vmin, vmax = normalize_minmax(phantom(16, 16))
    codec = CodecConfig(arch=arch, bpp=8.0, options={"depth": 2, "n_freqs": 4} if arch == "pe-mlp" else {"depth": 2})
    result = compress_image(img, vmin=vmin, vmax=vmax, codec=codec, fit_config=INRFitConfig(steps=30, compile="off"), device=torch.device("cpu"))
    v1 = parse_file((DATA / f"v1-{arch}-16x16.sinco").read_bytes())
    assert result.file.payload == v1.payload and result.file.spec == v1.spec


@pytest.mark.parametrize(
    "spec",
    [TINY, INRSpec(arch="siren", width=4, depth=3, w0=20.0, w0_first=40.0), INRSpec(arch="pe-mlp", width=3, depth=4, n_freqs=5, skips=(1, 3))],
    ids=str,
)
def test_round_trip_preserves_header_spec_and_payload(spec):
    rng = np.random.default_rng(0)
    payload = rng.normal(size=spec.n_params()).astype("<f2").tobytes()
    data = write_file(family=spec.arch, spec=spec, payload=payload, height=17, width=9, vmin=-3.25, vmax=1e4)
    parsed = parse_file(data)
    assert (parsed.spec, parsed.payload, parsed.height, parsed.width, parsed.vmin, parsed.vmax) == (spec, payload, 17, 9, -3.25, 1e4)


def test_writer_refuses_bad_values():
    with pytest.raises(InputError, match="intensity range"):
        tiny_file(vmin=1, vmax=1)
    with pytest.raises(InputError, match="outside the supported range"):
        tiny_file(height=0)


def test_every_truncation_is_rejected():
    data = tiny_file()
    for cut in range(len(data)):
        with pytest.raises(BitstreamError):
            decode_file(data[:cut])


def test_every_flipped_byte_is_rejected():
    data = tiny_file()
    for pos in range(len(data)):
        corrupted = bytearray(data)
        corrupted[pos] ^= 0x5A
        with pytest.raises(BitstreamError):
            decode_file(bytes(corrupted))


def test_specific_messages():
    data = tiny_file()
    with pytest.raises(BitstreamError, match="magic"):
        parse_file(b"PNG" + data[3:])
    with pytest.raises(BitstreamError, match="version 9"):
        parse_file(data[:4] + bytes([9]) + data[5:])
    with pytest.raises(BitstreamError, match="truncated"):
        parse_file(data[:-1])
    with pytest.raises(BitstreamError, match="announces"):
        parse_file(data + b"\0")
    with pytest.raises(BitstreamError, match="CRC"):
        parse_file(data[:-1] + bytes([data[-1] ^ 1]))


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_semantic_checks_after_a_valid_crc():
    body = bytearray(tiny_file()[:-4])
    unknown = bytearray(body)
    unknown[5] = 77
    with pytest.raises(BitstreamError, match="unknown codec family id 77"):
        parse_file(_recrc(bytes(unknown)))
    huge = bytearray(body)
    struct.pack_into("<II", huge, 6, 1 << 30, 1 << 30)
    with pytest.raises(BitstreamError, match="outside the supported range"):
        parse_file(_recrc(bytes(huge)))
    wrong_count = bytearray(body)
    struct.pack_into("<H", wrong_count, HEADER_BYTES + 1, 2)  # width 2 needs 3*2 + 2 + 1 = 9 parameters, 5 are stored
    with pytest.raises(BitstreamError, match="5 parameters stored"):
        parse_file(_recrc(bytes(wrong_count)))
    short_block = bytearray(body)
    struct.pack_into("<H", short_block, HEADER_BYTES - 2, 10)
    with pytest.raises(BitstreamError):
        parse_file(_recrc(bytes(short_block)))
    big_block = bytearray(body)
    struct.pack_into("<H", big_block, HEADER_BYTES - 2, 60000)
    with pytest.raises(BitstreamError, match="family block of 60000 bytes"):
        parse_file(_recrc(bytes(big_block)))
    nan_weights = bytearray(body)
    nan_weights[HEADER_BYTES + 15 : HEADER_BYTES + 17] = np.array([np.nan], "<f2").tobytes()
    with pytest.raises(BitstreamError, match="NaN"):
        decode_file(_recrc(bytes(nan_weights)))
