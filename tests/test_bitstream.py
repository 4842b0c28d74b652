import struct
import zlib

import numpy as np
import pytest

from sinco.codec.bitstream import HEADER_BYTES, MAGIC, SincoHeader, decode_file, decode_header, encode_file, file_size
from sinco.codec.inr_codec import decode
from sinco.errors import BitstreamError, InputError
from sinco.inr.models import INRSpec

TINY = INRSpec(arch="siren", width=1, depth=1, w0=30.0, w0_first=30.0)  # 5 parameters


def tiny_file(weights=(0.0625, 0.0, 0.0, 0.5, 0.25), height=3, width=2, vmin=-1.0, vmax=3.0) -> bytes:
    header = SincoHeader(spec=TINY, height=height, width=width, vmin=vmin, vmax=vmax)
    return encode_file(header, np.array(weights, dtype=np.float16))


def test_golden_bytes_of_a_tiny_file():
    data = tiny_file()
    assert len(data) == file_size(TINY) == 46 + 2 * 5 + 4
    assert data.hex() == GOLDEN_HEX
    # Independent check of the documented layout.
    assert data[:4] == MAGIC and data[4] == 1 and data[5] == 1 and data[6] == 1 and data[7] == 0
    assert struct.unpack_from("<HIIddI", data, 8) == (1, 3, 2, -1.0, 3.0, 5)
    assert struct.unpack_from("<ff", data, 38) == (30.0, 30.0)
    assert np.frombuffer(data, "<f2", 5, 46).tolist() == [0.0625, 0.0, 0.0, 0.5, 0.25]
    assert struct.unpack_from("<I", data, 56)[0] == zlib.crc32(data[:56])


GOLDEN_HEX = (
    "534e434f0101010001000300000002000000000000000000f0bf0000000000000840050000"
    "000000f0410000f041002c0000000000380034cdc4a7b2"
)


def test_golden_decoded_values_of_a_tiny_network():
    # out(row, col) = 0.5 * sin(30 * 0.0625 * row) + 0.25, clipped to [0, 1]
    header, image = decode(tiny_file())
    rows = np.array([-1.0, 0.0, 1.0])[:, None].repeat(2, axis=1)
    expected = np.clip(0.5 * np.sin(30 * 0.0625 * rows) + 0.25, 0, 1)
    assert image.shape == (3, 2) and image.dtype == np.float32
    np.testing.assert_allclose(image, expected, atol=1e-6)
    assert (header.vmin, header.vmax) == (-1.0, 3.0)


@pytest.mark.parametrize(
    "spec",
    [TINY, INRSpec(arch="siren", width=4, depth=3, w0=20.0, w0_first=40.0), INRSpec(arch="pe-mlp", width=3, depth=4, n_freqs=5, skips=(1, 3))],
    ids=str,
)
def test_round_trip_preserves_header_and_weights(spec):
    rng = np.random.default_rng(0)
    weights = rng.normal(size=spec.n_params()).astype(np.float16)
    header = SincoHeader(spec=spec, height=17, width=9, vmin=-3.25, vmax=1e4)
    parsed, back = decode_file(encode_file(header, weights))
    assert parsed == header
    assert back.tobytes() == weights.tobytes()


def test_encoder_refuses_bad_weights():
    with pytest.raises(InputError, match="needs 5"):
        encode_file(SincoHeader(spec=TINY, height=2, width=2, vmin=0, vmax=1), np.zeros(4, np.float16))
    with pytest.raises(InputError, match="NaN"):
        encode_file(SincoHeader(spec=TINY, height=2, width=2, vmin=0, vmax=1), np.array([np.nan] * 5, np.float16))
    with pytest.raises(InputError, match="intensity range"):
        encode_file(SincoHeader(spec=TINY, height=2, width=2, vmin=1, vmax=1), np.zeros(5, np.float16))


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
        decode_header(b"PNG" + data[3:])
    with pytest.raises(BitstreamError, match="version 9"):
        decode_header(data[:4] + bytes([9]) + data[5:])
    with pytest.raises(BitstreamError, match="truncated"):
        decode_header(data[:-1])
    with pytest.raises(BitstreamError, match="announces"):
        decode_header(data + b"\0")
    with pytest.raises(BitstreamError, match="CRC"):
        decode_header(data[:-1] + bytes([data[-1] ^ 1]))


def _recrc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


def test_semantic_checks_after_a_valid_crc():
    body = bytearray(tiny_file()[:-4])
    unknown_arch = bytearray(body)
    unknown_arch[5] = 7
    with pytest.raises(BitstreamError, match="unknown architecture id 7"):
        decode_header(_recrc(bytes(unknown_arch)))
    huge = bytearray(body)
    struct.pack_into("<II", huge, 10, 1 << 30, 1 << 30)
    with pytest.raises(BitstreamError, match="outside the supported range"):
        decode_header(_recrc(bytes(huge)))
    wrong_count = bytearray(body)
    wrong_count[8] = 2  # width 2 needs 3*2 + 2 + 1 = 9 parameters, 5 are stored
    with pytest.raises(BitstreamError, match="5 parameters stored"):
        decode_header(_recrc(bytes(wrong_count)))
    nan_weights = bytearray(body)
    nan_weights[HEADER_BYTES : HEADER_BYTES + 2] = np.array([np.nan], "<f2").tobytes()
    with pytest.raises(BitstreamError, match="NaN"):
        decode_file(_recrc(bytes(nan_weights)))
