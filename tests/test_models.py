import math

import pytest
import torch

from sinco.codec.inr.networks import PEMLP, Siren, build_inr
from sinco.codec.inr.sizing import param_bpp, size_for_bpp
from sinco.codec.inr.spec import INRSpec
from sinco.errors import InputError

SPECS = [
    INRSpec(arch="siren", width=7, depth=1),
    INRSpec(arch="siren", width=31, depth=5),
    INRSpec(arch="pe-mlp", width=5, depth=1, n_freqs=3),
    INRSpec(arch="pe-mlp", width=24, depth=4, skips=(2,)),
    INRSpec(arch="pe-mlp", width=9, depth=5, n_freqs=6, skips=(3, 1, 4)),
]


@pytest.mark.parametrize("spec", SPECS, ids=str)
def test_parameter_count_formula_matches_the_network(spec):
    model = build_inr(spec)
    assert sum(p.numel() for p in model.parameters()) == spec.n_params()
    out = model(torch.rand(10, 2) * 2 - 1)
    assert out.shape == (10, 1)


def test_siren_initialization_bounds():
    torch.manual_seed(0)
    spec = INRSpec(arch="siren", width=64, depth=3, w0=30.0, w0_first=30.0)
    model = Siren(spec)
    first = model.body[0].linear.weight
    hidden = model.body[1].linear.weight
    assert first.abs().max() <= 1 / 2 and first.abs().max() > 0.45  # U(-1/in, 1/in), in = 2
    bound = math.sqrt(6 / 64) / 30
    assert hidden.abs().max() <= bound and hidden.abs().max() > 0.9 * bound
    assert model.head.weight.abs().max() <= bound


def test_siren_forward_is_sine_of_w0_times_affine():
    spec = INRSpec(arch="siren", width=1, depth=1, w0=30.0, w0_first=10.0)
    model = Siren(spec)
    with torch.no_grad():
        model.body[0].linear.weight.copy_(torch.tensor([[0.1, 0.0]]))
        model.body[0].linear.bias.zero_()
        model.head.weight.fill_(2.0)
        model.head.bias.fill_(0.5)
    c = torch.tensor([[0.3, 0.9]])
    assert model(c).item() == pytest.approx(2.0 * math.sin(10.0 * 0.03) + 0.5, rel=1e-6)


def test_pemlp_skip_layer_takes_encoding_again():
    spec = INRSpec(arch="pe-mlp", width=8, depth=3, n_freqs=4, skips=(2,))
    model = PEMLP(spec)
    assert model.layers[0].in_features == 16
    assert model.layers[1].in_features == 8
    assert model.layers[2].in_features == 8 + 16


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"arch": "relu", "width": 4, "depth": 2}, "arch"),
        ({"arch": "siren", "width": 0, "depth": 2}, "width"),
        ({"arch": "siren", "width": 4, "depth": 0}, "depth"),
        ({"arch": "siren", "width": 4, "depth": 2, "w0": -1.0}, "w0"),
        ({"arch": "siren", "width": 4, "depth": 2, "skips": (1,)}, "skips"),
        ({"arch": "pe-mlp", "width": 4, "depth": 2, "skips": (2,)}, "skips"),
        ({"arch": "pe-mlp", "width": 4, "depth": 3, "skips": (0,)}, "skips"),
        ({"arch": "pe-mlp", "width": 4, "depth": 2, "n_freqs": 0}, "n_freqs"),
    ],
)
def test_spec_validation_names_the_field(kwargs, match):
    with pytest.raises(InputError, match=match):
        INRSpec(**kwargs)


@pytest.mark.parametrize("arch", ["siren", "pe-mlp"])
@pytest.mark.parametrize("bpp", [0.6, 1.2, 2.0, 4.0])
def test_size_for_bpp_is_the_widest_network_within_budget(arch, bpp):
    skips = (3,) if arch == "pe-mlp" else ()
    spec = size_for_bpp(arch, bpp=bpp, height=240, width=240, depth=6, skips=skips)
    assert spec.depth == 6 and spec.skips == skips
    assert param_bpp(spec.n_params(), bits_per_param=16, n_pixels=240 * 240) <= bpp
    wider = INRSpec(arch=arch, width=spec.width + 1, depth=spec.depth, skips=spec.skips)
    assert param_bpp(wider.n_params(), bits_per_param=16, n_pixels=240 * 240) > bpp


def test_paper_rate_on_a_brats_slice():
    # 1.2 bpp on 240 x 240 at 16 bits a parameter allows 4,320 parameters.
    spec = size_for_bpp("siren", bpp=1.2, height=240, width=240, depth=5)
    assert spec.width == 31 and spec.n_params() == 4093


def test_size_for_bpp_rejects_an_impossible_rate():
    with pytest.raises(InputError, match="--bpp 0.01: too low"):
        size_for_bpp("pe-mlp", bpp=0.01, height=32, width=32, depth=6)
    with pytest.raises(InputError, match="--bpp"):
        size_for_bpp("siren", bpp=float("nan"), height=32, width=32, depth=8)


def test_pemlp_skip_layer_equals_the_concatenation():
    torch.manual_seed(0)
    model = PEMLP(INRSpec(arch="pe-mlp", width=8, depth=3, n_freqs=4, skips=(2,)))
    feats = model.features(torch.rand(50, 2) * 2 - 1)
    x = feats
    for index, layer in enumerate(model.layers):
        x = torch.relu(layer(torch.cat([x, feats], dim=-1) if index == 2 else x))
    torch.testing.assert_close(model.forward_features(feats), model.head(x), rtol=1e-6, atol=1e-6)
