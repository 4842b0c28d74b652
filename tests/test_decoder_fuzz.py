"""Fuzzing that reaches the decoders: hostile grid weights and latents behind valid checksums, and INR files that
announce large images.

The payload checksum of a grid file covers the network block and the *decoded* latents (and residual symbols), and is
checked before the image is trusted, so plain byte mutations are mostly refused by it. Here every mutated file gets
both checksums recomputed (the payload's, from what the library parses, and the container's CRC-32), so the mutated
networks and latents reach synthesis: decoding must either refuse in one line (``BitstreamError``) or give an image of
the announced shape, finite, in [0, 1], and, for a file whose networks parse, the same bits as the independent
reference (tests/reference_grid.py). Hypothesis runs derandomized: the same examples in every run. Of the 120 byte
mutations, 14 decode to an image (checked against the reference) and 106 are refused; every one of the 60 value
mutations decodes.
"""

from __future__ import annotations

import struct
import subprocess
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest
import reference_grid as ref
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sinco.codec.files import decode_file, parse_file, write_file
from sinco.codec.format import FileHeader, pack, unpack
from sinco.codec.grid.networks import QuantizedDecoder
from sinco.codec.grid.numerics import MAX_EXPONENT, WEIGHT_LIMIT
from sinco.codec.grid.payload import build_payload, decode_latents, payload_checksum
from sinco.codec.grid.quantizer import unpack_network
from sinco.codec.grid.spec import GridSpec
from sinco.codec.grid.warm_start import load_warm_start
from sinco.codec.inr.spec import INRSpec
from sinco.errors import BitstreamError, InputError

GOLDEN = sorted((Path(__file__).parent / "data" / "grid_payload_golden").glob("*.sinco"))
BASES = [p.read_bytes() for p in GOLDEN]


def _parts(data: bytes) -> tuple[FileHeader, GridSpec, bytes]:
    container = unpack(data)
    return container.header, GridSpec.from_bytes(container.block), container.payload


def _repack(header: FileHeader, spec: GridSpec, payload: bytes) -> bytes:
    return pack(header, block=spec.to_bytes(), payload=payload)


def with_checksums(data: bytes) -> bytes:
    """``data`` with the grid payload's checksum recomputed from what the library parses (when it parses), then the
    container's CRC-32: the checks the decoder runs first no longer stop a mutation."""
    header, spec, payload = _parts(data)
    version = payload[0]
    if version in (1, 2):
        head = struct.Struct("<BII" if version == 1 else "<BIII")
        if len(payload) >= head.size:
            _, _, n_net, *rest = head.unpack_from(payload)
            n_lat = rest[0] if rest else len(payload) - head.size - n_net
            network = payload[head.size : head.size + n_net]
            try:
                decoder = unpack_network(network, spec, warm=load_warm_start(spec))
                stream = payload[head.size + n_net : head.size + n_net + n_lat]
                latents = decode_latents(stream, decoder, spec, spec.grid_shapes(header.height, header.width))
                checksum = payload_checksum(network, latents)
                if version == 2:
                    from sinco.codec.grid.payload import synthesize
                    from sinco.codec.grid.residual import decode as decode_residual

                    prediction = synthesize(latents, decoder, spec, header.height, header.width)
                    layer = decode_residual(payload[head.size + n_net + n_lat :], prediction)
                    checksum = zlib.crc32(layer.symbols.astype("<i4").tobytes(), checksum)
                payload = payload[:1] + struct.pack("<I", checksum) + payload[5:]
            except (BitstreamError, ValueError, IndexError):
                pass  # not parseable: the decoder must refuse it
    return _repack(header, spec, payload)


def rebuilt(
    data: bytes, *, weights: list[tuple[int, int, int]], exponents: list[tuple[int, int]], latents: list[tuple[int, int, int]]
) -> bytes:
    """A version-1 payload rebuilt from the file's networks and latents with some values replaced (re-coded, so the
    result is a well-formed file whose networks and latents are hostile): ``weights`` ``(tensor, flat index, value)``,
    ``exponents`` ``(tensor, exponent)``, ``latents`` ``(grid, flat index, value)``."""
    header, spec, payload = _parts(data)
    head = struct.Struct("<BII" if payload[0] == 1 else "<BIII")
    _, _, n_net, *rest = head.unpack_from(payload)
    n_lat = rest[0] if rest else len(payload) - head.size - n_net
    decoder = unpack_network(payload[head.size : head.size + n_net], spec, warm=load_warm_start(spec))
    grids = decode_latents(
        payload[head.size + n_net : head.size + n_net + n_lat], decoder, spec, spec.grid_shapes(header.height, header.width)
    )
    tensors, exps = [t.copy() for t in decoder.tensors], list(decoder.exponents)
    for tensor, index, value in weights:
        tensors[tensor % len(tensors)].reshape(-1)[index % tensors[tensor % len(tensors)].size] = value
    for tensor, exponent in exponents:
        exps[tensor % len(exps)] = exponent
    grids = [g.copy() for g in grids]
    for grid, index, value in latents:
        grids[grid % len(grids)].reshape(-1)[index % grids[grid % len(grids)].size] = value
    return _repack(header, spec, build_payload(grids, QuantizedDecoder(tuple(tensors), tuple(exps)), spec))


def check_outcome(data: bytes) -> None:
    """Decode: a one-line BitstreamError, or a checked image equal to the reference's."""
    try:
        parsed, image = decode_file(data)
    except BitstreamError as exc:
        assert str(exc) and "\n" not in str(exc)
        with pytest.raises((ref.ReferenceError, BitstreamError, InputError, ValueError, IndexError, struct.error, KeyError)):
            container = unpack(data)
            ref.decode(container.payload, container.block, parsed_height(data), parsed_width(data))
        return
    assert image.shape == (parsed.height, parsed.width) and image.dtype == np.float32
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    container = unpack(data)
    assert ref.decode(container.payload, container.block, parsed.height, parsed.width).image.tobytes() == image.tobytes()


def parsed_height(data: bytes) -> int:
    return unpack(data).header.height


def parsed_width(data: bytes) -> int:
    return unpack(data).header.width


@st.composite
def byte_mutations(draw):
    """A golden grid file with bytes of its payload (networks, latents, residual) changed, checksums recomputed."""
    data = draw(st.sampled_from(BASES))
    header, spec, payload = _parts(data)
    payload = bytearray(payload)
    start = 9 if payload[0] == 1 else 13  # past the head: the networks, the latents and the residual
    for _ in range(draw(st.integers(1, 4))):
        payload[draw(st.integers(start, len(payload) - 1))] ^= draw(st.integers(1, 255))
    return with_checksums(_repack(header, spec, bytes(payload)))


@st.composite
def value_mutations(draw):
    """A golden grid file re-coded with hostile weights, step exponents and latents: always well formed."""
    data = draw(st.sampled_from([b for b in BASES if unpack(b).payload[0] == 1] + [BASES[0]]))
    extreme = st.sampled_from([WEIGHT_LIMIT, -WEIGHT_LIMIT, 0, 1, -1, 12345])
    weights = draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, 10_000), extreme), max_size=40))
    exponents = draw(st.lists(st.tuples(st.integers(0, 60), st.integers(0, MAX_EXPONENT)), max_size=6))
    bound = unpack(data).block
    latent_bound = GridSpec.from_bytes(bound).latent_bound
    latents = draw(st.lists(st.tuples(st.integers(0, 7), st.integers(0, 5000), st.sampled_from([latent_bound, -latent_bound, 0])),
                            max_size=30))  # fmt: skip
    return rebuilt(data, weights=weights, exponents=exponents, latents=latents)


@settings(
    max_examples=120, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(byte_mutations())
def test_grid_payload_mutations_with_valid_checksums_are_refused_or_decode_to_a_checked_image(data):
    check_outcome(data)


@settings(
    max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)
@given(value_mutations())
def test_hostile_grid_weights_and_latents_decode_to_the_references_image(data):
    parsed, image = decode_file(data)  # well formed by construction: it must decode
    assert np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
    container = unpack(data)
    assert ref.decode(container.payload, container.block, parsed.height, parsed.width).image.tobytes() == image.tobytes()


def test_the_value_fuzz_reaches_the_clamps():
    """The hostile networks above are hostile: all weights at the limit drive the activations to the clamp."""
    data = BASES[0]
    header, spec, _ = _parts(data)
    n = 200
    hostile = rebuilt(
        data,
        weights=[(t, i, WEIGHT_LIMIT) for t in range(60) for i in range(n)],
        exponents=[(t, 0) for t in range(60)],
        latents=[],
    )
    parsed, image = decode_file(hostile)
    container = unpack(hostile)
    decoded = ref.decode(container.payload, container.block, parsed.height, parsed.width)
    assert np.abs(decoded.output).max() >= 1 << 24 or (image == 1).all()
    assert decoded.image.tobytes() == image.tobytes()


# ------------------------------------------------------------------------------------ INR: large images announced
LARGE_SCRIPT = """
import resource, sys, numpy as np
from sinco.codec.files import decode_file
parsed, image = decode_file(open(sys.argv[1], "rb").read())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(parsed.height, parsed.width, float(image.min()), float(image.max()), bool(np.isfinite(image).all()), peak)
"""


def _decode_peak(tmp_path: Path, height: int, width: int) -> tuple[list[str], int]:
    """Decode a siren file (width 16, depth 3, seed 0 weights) announcing ``height x width`` in a fresh process:
    its printed summary and its peak resident memory in bytes."""
    spec = INRSpec(arch="siren", width=16, depth=3)
    rng = np.random.default_rng(0)
    data = write_file(family="siren", spec=spec, payload=rng.normal(0, 0.3, spec.n_params()).astype("<f2").tobytes(),
                      height=height, width=width, vmin=0.0, vmax=1.0)  # fmt: skip
    assert parse_file(data).height * parse_file(data).width <= 8000 * len(data)  # within the caps: not refused early
    path = tmp_path / f"{height}x{width}.sinco"
    path.write_bytes(data)
    done = subprocess.run(
        [sys.executable, "-c", LARGE_SCRIPT, str(path)], capture_output=True, text=True, check=True, timeout=300
    )
    fields = done.stdout.split()
    return fields, int(fields[-1])


@pytest.mark.slow
def test_an_inr_file_announcing_a_large_image_decodes_within_bounded_memory(tmp_path):
    """A 1,342-byte siren file announcing 2048 x 4096 pixels (8.4 M, near the 0.001 bpp floor of the caps) decodes in
    a fresh process, in chunks: its peak memory exceeds a 16 x 16 decode's by less than four copies of the output
    image (32 MiB each) plus 64 MiB. Without the chunks, one layer's activations alone would take 512 MiB."""
    fields, peak = _decode_peak(tmp_path, 2048, 4096)
    height, width, low, high, finite, _ = fields
    assert (int(height), int(width)) == (2048, 4096) and finite == "True" and 0 <= float(low) <= float(high) <= 1
    _, baseline = _decode_peak(tmp_path, 16, 16)
    image_bytes = 2048 * 4096 * 4
    assert peak - baseline < 4 * image_bytes + (64 << 20), (peak, baseline)
