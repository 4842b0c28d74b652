"""What describes an INR network: :class:`INRSpec` (no torch needed, so the codec families' headers
can be read without importing it)."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

from sinco.errors import InputError

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

    @property
    def widest_input(self) -> int:
        """Inputs of the widest layer (a PE-MLP skip layer takes the encoding too): bounds decoding memory."""
        return self.width + (4 * self.n_freqs if self.skips else 0)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dictionary of the fields that matter for this architecture."""
        data = asdict(self)
        if self.arch == "siren":
            del data["n_freqs"], data["skips"]
        else:
            del data["w0"], data["w0_first"]
            data["skips"] = list(self.skips)
        return data
