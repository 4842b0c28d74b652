"""The decoder treats every .sinco file as hostile: a property test over thousands of mutated files."""

import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.cli import main
from sinco.codec.files import decode_file, parse_file, write_file
from sinco.codec.format import HEADER_BYTES, MAX_FILE_BYTES, read_file
from sinco.codec.inr.spec import INRSpec
from sinco.errors import BitstreamError

rng = np.random.default_rng(0)
SPECS = [INRSpec(arch="siren", width=6, depth=3), INRSpec(arch="pe-mlp", width=5, depth=3, n_freqs=4, skips=(1,))]


def _file(spec: INRSpec, weights: np.ndarray, *, height: int = 20, width: int = 24, vmin: float = -1.5, vmax: float = 7.0) -> bytes:
    return write_file(family=spec.arch, spec=spec, payload=weights.astype("<f2").tobytes(), height=height, width=width, vmin=vmin, vmax=vmax)


# Version-2 files of both INR families, and the committed version-1 files (still read, so still fuzzed).
VALID = [_file(s, rng.normal(0, 0.3, s.n_params())) for s in SPECS] + [
    (Path(__file__).parent / "data" / f"v1-{arch}-16x16.sinco").read_bytes() for arch in ("siren", "pe-mlp")
]


def _with_crc(body: bytes) -> bytes:
    return body + struct.pack("<I", zlib.crc32(body))


@st.composite
def mutated(draw):
    data = bytearray(draw(st.sampled_from(VALID)))
    kind = draw(st.sampled_from(["truncate", "flip", "insert", "delete", "field", "field-crc", "noise"]))
    if kind == "truncate":
        return bytes(data[: draw(st.integers(0, len(data) - 1))])
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            data[draw(st.integers(0, len(data) - 1))] ^= draw(st.integers(1, 255))
        return bytes(data)
    if kind == "insert":
        pos = draw(st.integers(0, len(data)))
        return bytes(data[:pos] + draw(st.binary(min_size=1, max_size=16)) + data[pos:])
    if kind == "delete":
        pos = draw(st.integers(0, len(data) - 1))
        return bytes(data[:pos] + data[pos + draw(st.integers(1, 16)) :])
    if kind == "noise":
        return draw(st.binary(max_size=200))
    # Overwrite header, family-block or payload-length bytes with anything, optionally fixing the CRC
    # so the semantic checks (and the family's block parser) are reached.
    pos = draw(st.integers(4, HEADER_BYTES + 20))
    value = draw(st.binary(min_size=1, max_size=8))
    data[pos : pos + len(value)] = value
    body = bytes(data[: len(data) - 4])
    return _with_crc(body) if kind == "field-crc" else bytes(data)


@pytest.mark.slow
@settings(max_examples=4000, deadline=None, suppress_health_check=[HealthCheck.too_slow], derandomize=True)
@given(mutated())
def test_mutated_files_are_decoded_or_refused_with_a_bitstream_error(data):
    try:
        parsed = parse_file(data)
        if parsed.header.n_pixels <= 4096:
            _, image = decode_file(data)
            # What survives is a well-formed file: its decoded image is finite and in range.
            assert image.shape == (parsed.height, parsed.width) and np.all((image >= 0) & (image <= 1))
    except BitstreamError as exc:
        assert str(exc) and "\n" not in str(exc)
        return
    assert len(parsed.payload) == 2 * parsed.spec.n_params()


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(mutated())
def test_cli_reports_hostile_files_in_one_line(tmp_path, capsys, data):
    """Through ``sinco decompress`` (which decodes, unlike ``info``): one line and exit 2, or a checked image."""
    path, out_path = tmp_path / "f.sinco", tmp_path / "f.npy"
    path.write_bytes(data)
    out_path.unlink(missing_ok=True)
    code = main(["decompress", str(path), "-o", str(out_path)])
    out, err = capsys.readouterr()
    if code != 0:
        assert code == 2 and err.startswith("sinco: error: ") and err.count("\n") == 1 and not out
        assert not out_path.exists()  # nothing half-written
    else:
        image = np.load(out_path)
        parsed = parse_file(data)
        assert image.shape == (parsed.height, parsed.width) and np.isfinite(image).all()


def test_absurd_header_sizes_are_refused_before_allocating():
    body = bytearray(VALID[0][:-4])
    struct.pack_into("<II", body, 6, 30000, 30000)  # 900M pixels: over the absolute cap
    with pytest.raises(BitstreamError, match="outside the supported range"):
        decode_file(_with_crc(bytes(body)))
    struct.pack_into("<II", body, 6, 10000, 10000)  # 100M pixels from a few hundred bytes
    with pytest.raises(BitstreamError, match="implausible"):
        decode_file(_with_crc(bytes(body)))
    body = bytearray(VALID[0][:-4])
    struct.pack_into("<I", body, HEADER_BYTES + 11, 0xFFFFFFFF)  # a 4 GB payload announced, none present
    with pytest.raises(BitstreamError, match="truncated"):
        decode_file(_with_crc(bytes(body)))
    body = bytearray(VALID[0][:-4])
    struct.pack_into("<H", body, HEADER_BYTES + 1, 65535)  # a family block asking for a 65535-wide network
    with pytest.raises(BitstreamError, match="parameters stored"):
        decode_file(_with_crc(bytes(body)))


def test_oversized_files_are_not_read_whole(tmp_path):
    big = tmp_path / "big.sinco"
    with open(big, "wb") as handle:
        handle.seek(MAX_FILE_BYTES + 10)
        handle.write(b"\0")
    with pytest.raises(BitstreamError, match="larger than"):
        read_file(big)


def test_outputs_that_overflow_are_refused_not_returned_as_nan():
    # Found by the fuzz test: header values and weights each valid, the decoded image NaN.
    siren = INRSpec(arch="siren", width=6, depth=3)
    body = bytearray(_file(siren, np.zeros(siren.n_params()), vmin=0.0, vmax=1.0)[:-4])
    struct.pack_into("<f", body, HEADER_BYTES + 3, 3e38)  # w0 far beyond any real SIREN
    with pytest.raises(BitstreamError, match="invalid architecture.*w0"):
        decode_file(_with_crc(bytes(body)))
    deep = INRSpec(arch="pe-mlp", width=8, depth=12, n_freqs=2)
    huge = np.full(deep.n_params(), 60000.0)  # every layer multiplies by ~5e5: float32 overflows
    with pytest.raises(BitstreamError, match="output is not finite"):
        decode_file(_file(deep, huge, height=12, width=12, vmin=0.0, vmax=1.0))
