"""The two INR networks: SIREN and a ReLU MLP on a positional encoding (PE-MLP).

Both map pixel coordinates ``(N, 2)`` in ``[-1, 1]`` to intensities ``(N, 1)``. Each splits its
forward pass into :meth:`features` (a fixed, parameter-free map of the coordinates, computed once
per image during fitting) and :meth:`forward_features` (the trainable part).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from sinco.errors import InputError
from sinco.inr.encodings import PositionalEncoding

ARCHITECTURES = ("siren", "pe-mlp")
# SIREN frequencies far above the paper's 30 only alias; the bound keeps sin's argument finite.
MAX_W0 = 10_000.0


@dataclass(frozen=True)
class INRSpec:
    """Everything needed to rebuild an INR network; the ``.sinco`` header stores exactly this.

    Args:
        arch: ``"siren"`` or ``"pe-mlp"``.
        width: units per hidden layer.
        depth: number of hidden layers (each followed by its activation); a linear layer follows.
        w0: SIREN frequency of the hidden sine layers.
        w0_first: SIREN frequency of the first sine layer.
        n_freqs: PE-MLP number of encoding frequencies ``Lf``.
        skips: PE-MLP hidden-layer indices (``1 .. depth - 1``) whose input is the previous layer's
            output concatenated with the encoded coordinates again.

    Raises:
        InputError: if a field is out of range.
    """

    arch: str
    width: int
    depth: int
    w0: float = 30.0
    w0_first: float = 30.0
    n_freqs: int = 12
    skips: tuple[int, ...] = field(default=())

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise InputError(f"arch={self.arch!r}: expected one of {', '.join(ARCHITECTURES)}")
        if not 1 <= self.width <= 65535:
            raise InputError(f"width={self.width}: must be in 1..65535")
        if not 1 <= self.depth <= 255:
            raise InputError(f"depth={self.depth}: must be in 1..255")
        if self.arch == "siren":
            for name in ("w0", "w0_first"):
                value = getattr(self, name)
                if not (math.isfinite(value) and 0 < value <= MAX_W0):
                    raise InputError(f"{name}={value}: must be in (0, {MAX_W0:g}]")
            if self.skips:
                raise InputError(f"skips={self.skips}: only the pe-mlp architecture has skip connections")
        else:
            if not 1 <= self.n_freqs <= 32:
                raise InputError(f"n_freqs={self.n_freqs}: must be in 1..32")
            if len(set(self.skips)) != len(self.skips) or any(not 1 <= s < min(self.depth, 16) for s in self.skips):
                raise InputError(
                    f"skips={self.skips}: must be distinct hidden-layer indices in 1..{min(self.depth, 16) - 1}"
                )
            object.__setattr__(self, "skips", tuple(sorted(self.skips)))

    def n_params(self) -> int:
        """Number of trainable parameters of the network this spec describes."""
        h = self.width
        if self.arch == "siren":
            return (2 + 1) * h + (self.depth - 1) * (h + 1) * h + (h + 1)
        enc = 4 * self.n_freqs
        total = (enc + 1) * h
        for layer in range(1, self.depth):
            fan_in = h + (enc if layer in self.skips else 0)
            total += (fan_in + 1) * h
        return total + h + 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the fields that matter for this architecture."""
        data = asdict(self)
        if self.arch == "siren":
            del data["n_freqs"], data["skips"]
        else:
            del data["w0"], data["w0_first"]
            data["skips"] = list(self.skips)
        return data


class SineLayer(nn.Module):
    """``sin(w0 * (W x + b))`` with the SIREN initialisation (Sitzmann et al., 2020).

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
                # materialising the (N, width + 4 Lf) concatenation, a tenth of a CPU step.
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
        A freshly initialised :class:`Siren` or :class:`PEMLP`; the torch RNG state decides the
        initial weights, so seed it first for reproducible results.
    """
    return Siren(spec) if spec.arch == "siren" else PEMLP(spec)
