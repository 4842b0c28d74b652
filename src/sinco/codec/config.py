"""Configuration of the codec stage: which family, which rate, which family options."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sinco.codec.families import DEFAULT_FAMILY
from sinco.errors import InputError


@dataclass(frozen=True)
class CodecConfig:
    """The codec family and rate of a compression.

    Args:
        arch: a registered family name (``sinco.codec.families``; default :data:`~sinco.codec.families.DEFAULT_FAMILY`).
        bpp: target bits per pixel.
        options: the family's codec options (its :attr:`~sinco.codec.families.base.CodecFamily.options`);
            absent or ``None`` = the family's default.

    Raises:
        InputError: for an unknown family, a non-positive rate, or an option the family does not read.
    """

    arch: str = DEFAULT_FAMILY
    bpp: float = 1.2
    options: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        from sinco.codec.families import get_family

        family = get_family(self.arch)
        if not (isinstance(self.bpp, (int, float)) and math.isfinite(self.bpp) and self.bpp > 0):
            raise InputError(f"--bpp {self.bpp}: must be a positive number")
        object.__setattr__(self, "options", {k: v for k, v in self.options.items() if v is not None})
        family.check_options(self.options)
        depth = self.options.get("depth")
        if depth is not None and not 1 <= depth <= 255:
            raise InputError(f"--depth {depth}: must be in 1..255")

    @property
    def family(self) -> Any:
        """The :class:`~sinco.codec.families.base.CodecFamily`."""
        from sinco.codec.families import get_family

        return get_family(self.arch)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        options = {k: list(v) if isinstance(v, tuple) else v for k, v in self.options.items()}
        return {"arch": self.arch, "bpp": self.bpp, "options": options}
