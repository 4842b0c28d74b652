"""Configuration of the fitting stage."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

from sinco.errors import InputError

PAPER_STEPS = 50_000
# Below this many steps a compile (about 15 s for a SIREN on 2 CPU cores) costs more than it saves.
COMPILE_MIN_STEPS = 1000


@dataclass(frozen=True)
class FitConfig:
    """How an INR is fitted to an image.

    Args:
        steps: Adam steps over the full image (the paper uses 50,000).
        lr: Adam learning rate (paper: 1e-3).
        seed: seeds the network initialisation; the same seed, input and device give the same file.
        log_every: steps between progress-bar PSNR updates.
        lam: weight of the structural regulariser (paper: 1); used only with a segmentation model,
            and 0 there means plain fitting.
        reg_every: apply the regulariser on every ``reg_every``-th step only (1 = every step).
        compile: compile the network's forward and backward with ``torch.compile``: ``"auto"``
            (for SIREN fits of at least :data:`COMPILE_MIN_STEPS` steps, where the ~15 s compile
            pays back), ``"on"`` or ``"off"``. Compiled steps compute the same function in a
            different floating-point order, so files differ in the last bits from eager ones.

    Raises:
        InputError: if a value is out of range.
    """

    steps: int = PAPER_STEPS
    lr: float = 1e-3
    seed: int = 0
    log_every: int = 50
    lam: float = 1.0
    reg_every: int = 1
    compile: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"--steps {self.steps}: must be a non-negative integer")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr {self.lr}: must be a positive number")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"--seed {self.seed}: must be an integer in 0..2^63-1")
        if not (math.isfinite(self.lam) and self.lam >= 0):
            raise InputError(f"--lam {self.lam}: must be a non-negative number")
        if not isinstance(self.reg_every, int) or self.reg_every < 1:
            raise InputError(f"--reg-every {self.reg_every}: must be a positive integer")
        if self.compile not in ("auto", "on", "off"):
            raise InputError(f"--compile {self.compile!r}: expected auto, on or off")
        if self.log_every < 1:
            raise InputError(f"log_every={self.log_every}: must be at least 1")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        return asdict(self)
