import math

import pytest
import torch

from sinco.codec.inr.encodings import PositionalEncoding, make_coordinates
from sinco.errors import InputError


def test_coordinates_span_minus_one_to_one_in_row_major_order():
    coords = make_coordinates(3, 4)
    assert coords.shape == (12, 2)
    assert coords.dtype == torch.float32
    assert coords[0].tolist() == [-1.0, -1.0]
    assert coords[3].tolist() == [-1.0, 1.0]  # end of the first row
    assert coords[4].tolist() == [0.0, -1.0]  # start of the second row
    assert coords[-1].tolist() == [1.0, 1.0]
    assert torch.allclose(coords[:4, 1], torch.tensor([-1.0, -1 / 3, 1 / 3, 1.0]))


def test_single_row_maps_to_zero():
    assert make_coordinates(1, 2).tolist() == [[0.0, -1.0], [0.0, 1.0]]


def test_coordinates_reject_empty_shapes():
    with pytest.raises(InputError, match="at least 1"):
        make_coordinates(0, 4)


def test_positional_encoding_golden_values():
    enc = PositionalEncoding(n_freqs=2)
    out = enc(torch.tensor([[0.0, 0.5]], dtype=torch.float64))
    # Per frequency k: sin(2^k pi c) for both coordinates, then cos(2^k pi c) for both.
    expected = [
        0.0, 1.0, 1.0, 0.0,  # k = 0: sin(0), sin(pi/2), cos(0), cos(pi/2)
        0.0, 0.0, 1.0, -1.0,  # k = 1: sin(0), sin(pi), cos(0), cos(pi)
    ]  # fmt: skip
    assert out.shape == (1, 8)
    assert torch.allclose(out[0], torch.tensor(expected, dtype=torch.float64), atol=1e-12)


def test_positional_encoding_shape_and_highest_frequency():
    enc = PositionalEncoding(n_freqs=12)
    assert enc.out_features == 48
    c = torch.tensor([[0.3, -0.7]])
    out = enc(c)
    assert out.shape == (1, 48) and out.dtype == torch.float32
    # The phase is taken in float64 from the float32 coordinate, so it matches math.sin to float32 rounding.
    row, col = (float(v) for v in c[0])
    assert out[0, 44].item() == pytest.approx(math.sin(2**11 * math.pi * row), abs=1e-7)
    assert out[0, 47].item() == pytest.approx(math.cos(2**11 * math.pi * col), abs=1e-7)
    assert sum(p.numel() for p in enc.parameters()) == 0
    assert "freqs" not in enc.state_dict()


@pytest.mark.parametrize("bad", [0, -1, 2.5])
def test_positional_encoding_rejects_bad_frequency_count(bad):
    with pytest.raises(InputError, match="n_freqs"):
        PositionalEncoding(n_freqs=bad)
