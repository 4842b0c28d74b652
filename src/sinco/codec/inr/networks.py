"""The two INR networks: SIREN and a ReLU MLP on a positional encoding (PE-MLP), and their weights as one vector.

Both map pixel coordinates ``(N, 2)`` in ``[-1, 1]`` to intensities ``(N, 1)``. Each splits its
forward pass into :meth:`features` (a fixed, parameter-free map of the coordinates, computed once
per image during fitting) and :meth:`forward_features` (the trainable part).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from sinco.codec.inr.encodings import PositionalEncoding
from sinco.codec.inr.spec import INRSpec
from sinco.errors import InputError


class SineLayer(nn.Module):
    """``sin(w0 * (W x + b))`` with the SIREN initialization (Sitzmann et al., 2020).

    Args:
        in_features: input size.
        out_features: output size.
        w0: frequency factor.
        is_first: first layer (weights ``U(-1/in, 1/in)``) or hidden layer
            (weights ``U(-sqrt(6/in)/w0, sqrt(6/in)/w0)``).
    """

    def __init__(self, in_features: int, out_features: int, *, w0: float, is_first: bool) -> None:
        super().__init__()
        self.w0 = float(w0)
        self.linear = nn.Linear(in_features, out_features)
        bound = 1.0 / in_features if is_first else math.sqrt(6.0 / in_features) / self.w0
        with torch.no_grad():
            self.linear.weight.uniform_(-bound, bound)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Args: x ``(N, in_features)``. Returns: ``(N, out_features)``."""
        return torch.sin(self.w0 * self.linear(x))


class Siren(nn.Module):
    """SIREN: ``depth`` sine layers of ``width`` units and a linear output layer.

    Args:
        spec: an :class:`INRSpec` with ``arch == "siren"``.
    """

    def __init__(self, spec: INRSpec) -> None:
        super().__init__()
        if spec.arch != "siren":
            raise InputError(f"Siren needs arch='siren', got {spec.arch!r}")
        self.spec = spec
        layers: list[nn.Module] = [SineLayer(2, spec.width, w0=spec.w0_first, is_first=True)]
        layers += [SineLayer(spec.width, spec.width, w0=spec.w0, is_first=False) for _ in range(spec.depth - 1)]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(spec.width, 1)
        bound = math.sqrt(6.0 / spec.width) / spec.w0
        with torch.no_grad():
            self.head.weight.uniform_(-bound, bound)

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        """SIREN takes the raw coordinates. Args: coords ``(N, 2)``. Returns: ``(N, 2)``."""
        return coords

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Args: feats ``(N, 2)``. Returns: intensities ``(N, 1)``."""
        return self.head(self.body(feats))

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Args: coords ``(N, 2)`` in ``[-1, 1]``. Returns: intensities ``(N, 1)``."""
        return self.forward_features(self.features(coords))


class PEMLP(nn.Module):
    """ReLU MLP on a NeRF positional encoding, with the encoding fed again into the ``skips`` layers.

    Args:
        spec: an :class:`INRSpec` with ``arch == "pe-mlp"``.
    """

    def __init__(self, spec: INRSpec) -> None:
        super().__init__()
        if spec.arch != "pe-mlp":
            raise InputError(f"PEMLP needs arch='pe-mlp', got {spec.arch!r}")
        self.spec = spec
        self.encoding = PositionalEncoding(spec.n_freqs)
        enc = self.encoding.out_features
        layers = [nn.Linear(enc, spec.width)]
        for layer in range(1, spec.depth):
            fan_in = spec.width + (enc if layer in spec.skips else 0)
            layers.append(nn.Linear(fan_in, spec.width))
        self.layers = nn.ModuleList(layers)
        self.head = nn.Linear(spec.width, 1)
        self._skips = frozenset(spec.skips)

    def features(self, coords: torch.Tensor) -> torch.Tensor:
        """Args: coords ``(N, 2)``. Returns: the encoding ``(N, 4 * n_freqs)``."""
        return self.encoding(coords)

    def forward_features(self, feats: torch.Tensor) -> torch.Tensor:
        """Args: feats ``(N, 4 * n_freqs)``. Returns: intensities ``(N, 1)``."""
        x = feats
        for index, layer in enumerate(self.layers):
            if index in self._skips:
                # [x, feats] W^T + b computed as x W1^T + feats W2^T + b: the same layer without
                # materializing the (N, width + 4 Lf) concatenation, a tenth of a CPU step.
                width = x.shape[-1]
                weight = layer.weight
                x = torch.relu(torch.addmm(torch.addmm(layer.bias, x, weight[:, :width].t()), feats, weight[:, width:].t()))
            else:
                x = torch.relu(layer(x))
        return self.head(x)

    def forward(self, coords: torch.Tensor) -> torch.Tensor:
        """Args: coords ``(N, 2)`` in ``[-1, 1]``. Returns: intensities ``(N, 1)``."""
        return self.forward_features(self.features(coords))


INR = Siren | PEMLP


def build_inr(spec: INRSpec) -> INR:
    """Instantiate the network an :class:`INRSpec` describes (float32, on the CPU).

    Args:
        spec: the architecture.

    Returns:
        A freshly initialized :class:`Siren` or :class:`PEMLP`; the torch RNG state decides the
        initial weights, so seed it first for reproducible results.
    """
    return Siren(spec) if spec.arch == "siren" else PEMLP(spec)

# A network's parameters as one flat vector, and back. The order is that of ``model.parameters()``: layer by
# layer, each layer's weight (row-major, ``out x in``) then its bias. The INR payload stores the weights in this
# order, and the training loop keeps a batch of networks as rows of one ``(S, P)`` tensor in it.
def flatten_parameters(model: nn.Module) -> torch.Tensor:
    """All parameters of ``model`` as one flat float32 CPU tensor.

    Args:
        model: the network.

    Returns:
        Tensor of shape ``(P,)``.
    """
    return torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in model.parameters()])


def load_flat_parameters(model: nn.Module, flat: np.ndarray | torch.Tensor) -> None:
    """Copy a flat parameter vector into ``model`` (any float dtype, cast to each parameter's).

    Args:
        model: the network to fill.
        flat: array of shape ``(P,)`` with ``P`` the model's parameter count.

    Raises:
        InputError: if the length does not match.
    """
    values = torch.as_tensor(np.asarray(flat, dtype=np.float32) if isinstance(flat, np.ndarray) else flat)
    total = sum(p.numel() for p in model.parameters())
    if values.numel() != total:
        raise InputError(f"parameter vector has {values.numel()} values, the network needs {total}")
    offset = 0
    with torch.no_grad():
        for p in model.parameters():
            n = p.numel()
            p.copy_(values[offset : offset + n].reshape(p.shape).to(p.dtype))
            offset += n
