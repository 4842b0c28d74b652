"""Configuration of the codec stage: which family, which rate, which family options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sinco.codec.registry import DEFAULT_FAMILY, get_family, refuse_option
from sinco.errors import InputError


@dataclass(frozen=True)
class CodecConfig:
    """The codec family and rate of a compression.

    Args:
        arch: a registered family name (:mod:`sinco.codec.registry`; default :data:`~sinco.codec.registry.DEFAULT_FAMILY`).
        bpp: target bits per pixel.
        options: the family's codec options (its :attr:`~sinco.codec.family.CodecFamily.options`);
            absent or ``None`` = the family's default.

    Raises:
        InputError: for an unknown family, a non-positive rate, or an option the family does not read.
    """

    arch: str = DEFAULT_FAMILY
    bpp: float = 1.2
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        family = get_family(self.arch)
        if not (isinstance(self.bpp, (int, float)) and math.isfinite(self.bpp) and self.bpp > 0):
            raise InputError(f"--bpp {self.bpp}: must be a positive number")
        object.__setattr__(self, "options", {k: v for k, v in self.options.items() if v is not None})
        codec_options = {o.dest for o in family.options}
        for key in self.options:
            if key not in codec_options:
                raise refuse_option(family, key)
        depth = self.options.get("depth")
        if depth is not None and not 1 <= depth <= 255:
            raise InputError(f"--depth {depth}: must be in 1..255")

    @property
    def family(self) -> Any:
        """The :class:`~sinco.codec.family.CodecFamily`."""
        return get_family(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {"arch": self.arch, "bpp": self.bpp, "options": options}
