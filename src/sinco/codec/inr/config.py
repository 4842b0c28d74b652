"""How an INR (SIREN or PE-MLP) is fitted: :class:`INRFitConfig` and the presets of the two families."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any

from sinco.errors import InputError
from sinco.regularizer.terms import AUTO_DATA_TERM, DATA_TERMS, resolve_data_term

PAPER_STEPS = 50_000
# Below this many steps a compile (about 15 s for a SIREN on 2 CPU cores) costs more than it saves.
COMPILE_MIN_STEPS = 1000
OPTIMIZERS = ("adam", "adam+lbfgs")


@dataclass(frozen=True)
class INRFitConfig:
    """How an INR is fitted to an image.

    Args:
        steps: Adam steps over the full image (the paper uses 50,000).
        lr: Adam learning rate (paper: 1e-3).
        seed: seeds the network initialization; the same seed, input and device give the same file.
        log_every: steps between progress-bar PSNR updates.
        lam: weight of the structural regularizer (paper: 1); used only with a segmentation model,
            and 0 there means plain fitting.
        data_term: the objective's data term: ``"mse"`` (mean squared error), ``"sse"`` (sum of
            squared errors, the squared l2 norm), ``"l2"`` (the l2 norm) or ``"auto"``: ``"sse"``
            when the fit has a segmentation network, else ``"mse"`` (:func:`resolve_data_term`,
            applied by :func:`sinco.compression.image.compress_images` and the fitting loop; the CLI and the
            benchmark resolve it first, so saved configurations name the term used); see
            :func:`sinco.regularizer.loss.data_term`. It sets the data term's scale against ``lam``; PSNR
            and the MSE reported are the same whichever is chosen.
        reg_every: apply the regularizer on every ``reg_every``-th step only (1 = every step).
        schedule: learning-rate schedule: ``"constant"`` (the paper's) or ``"cosine"`` (linear warm-up
            over ``warmup`` steps, then a half cosine from ``lr`` down to ``lr * final_lr_ratio``).
        warmup: warm-up steps of the cosine schedule.
        final_lr_ratio: last learning rate of the cosine schedule, relative to ``lr``.
        optimizer: ``"adam"`` (the paper's), or ``"adam+lbfgs"``: Adam for ``lbfgs_after`` steps,
            then L-BFGS (strong-Wolfe line search, ``lbfgs_history`` pairs) on the full objective
            for the rest. ``steps`` counts gradient evaluations in both phases, so both spend the
            same compute per step.
        lbfgs_after: Adam steps before L-BFGS takes over.
        lbfgs_history: curvature pairs L-BFGS keeps.
        quantize_tail: the last ``quantize_tail`` of the ``steps`` are Adam steps at ``quantize_lr``
            on the fp16-rounded weights (straight-through gradient), judged on what the file will
            hold: the weights are tuned to their rounding. 0 = off.
        quantize_lr: Adam's learning rate in the quantization tail.
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
    data_term: str = AUTO_DATA_TERM
    schedule: str = "constant"
    warmup: int = 0
    final_lr_ratio: float = 0.01
    optimizer: str = "adam"
    lbfgs_after: int = 1000
    lbfgs_history: int = 50
    quantize_tail: int = 0
    quantize_lr: float = 3e-6
    compile: str = "auto"

    def __post_init__(self) -> None:
        if not isinstance(self.steps, int) or self.steps < 0:
            raise InputError(f"--steps {self.steps}: must be a non-negative integer")
        if not (math.isfinite(self.lr) and self.lr > 0):
            raise InputError(f"--lr {self.lr}: must be a positive number")
        if not isinstance(self.seed, int) or not 0 <= self.seed < 2**63:
            raise InputError(f"--seed {self.seed}: must be an integer in 0..2^63-1")
        if not (isinstance(self.lam, (int, float)) and math.isfinite(self.lam) and self.lam >= 0):
            raise InputError(f"--lam {self.lam}: must be a non-negative number")
        if self.data_term not in (*DATA_TERMS, AUTO_DATA_TERM):
            raise InputError(f"--data-term {self.data_term!r}: expected one of {', '.join(DATA_TERMS)}")
        if not isinstance(self.reg_every, int) or self.reg_every < 1:
            raise InputError(f"--reg-every {self.reg_every}: must be a positive integer")
        if self.schedule not in ("constant", "cosine"):
            raise InputError(f"--schedule {self.schedule!r}: expected constant or cosine")
        if not isinstance(self.warmup, int) or self.warmup < 0:
            raise InputError(f"--warmup {self.warmup}: must be a non-negative integer")
        if not 0 < self.final_lr_ratio <= 1:
            raise InputError(f"final_lr_ratio={self.final_lr_ratio}: must be in (0, 1]")
        if self.optimizer not in OPTIMIZERS:
            raise InputError(f"--optimizer {self.optimizer!r}: expected one of {', '.join(OPTIMIZERS)}")
        if not isinstance(self.lbfgs_after, int) or self.lbfgs_after < 0:
            raise InputError(f"--lbfgs-after {self.lbfgs_after}: must be a non-negative integer")
        if not isinstance(self.lbfgs_history, int) or not 1 <= self.lbfgs_history <= 1000:
            raise InputError(f"--lbfgs-history {self.lbfgs_history}: must be in 1..1000")
        if not isinstance(self.quantize_tail, int) or not 0 <= self.quantize_tail <= self.steps:
            raise InputError(f"--quantize-tail {self.quantize_tail}: must be in 0..--steps ({self.steps})")
        if not (math.isfinite(self.quantize_lr) and self.quantize_lr > 0):
            raise InputError(f"quantize_lr={self.quantize_lr}: must be a positive number")
        if self.compile not in ("auto", "on", "off"):
            raise InputError(f"--compile {self.compile!r}: expected auto, on or off")
        if self.log_every < 1:
            raise InputError(f"log_every={self.log_every}: must be at least 1")

    @property
    def main_steps(self) -> int:
        """Gradient evaluations before the quantization tail."""
        return self.steps - self.quantize_tail

    @property
    def adam_steps(self) -> int:
        """Adam steps before the quantization tail (all of them, or those before L-BFGS takes over)."""
        return self.main_steps if self.optimizer == "adam" else min(self.main_steps, self.lbfgs_after)

    def lr_at(self, step: int) -> float:
        """Adam's learning rate at step ``step`` (0-based) under the schedule, before any divergence halving.

        The cosine schedule spans the Adam phase (:attr:`adam_steps`).
        """
        if self.schedule == "constant":
            return self.lr
        if step < self.warmup:
            return self.lr * (step + 1) / self.warmup
        span = max(self.adam_steps - self.warmup, 1)
        progress = min((step - self.warmup) / span, 1.0)
        low = self.lr * self.final_lr_ratio
        return low + 0.5 * (self.lr - low) * (1 + math.cos(math.pi * progress))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy of the fields."""
        return asdict(self)

    def resolved(self, *, regularized: bool) -> INRFitConfig:
        """This configuration with ``data_term`` ``"auto"`` replaced by the term the fit uses (:func:`resolve_data_term`)."""
        return replace(self, data_term=resolve_data_term(self.data_term, regularized=regularized))


# The paper's protocol: 50,000 steps of Adam at a constant 1e-3 (both families' "paper" preset).
PAPER_PRESET: dict[str, Any] = {"steps": PAPER_STEPS, "lr": 1e-3, "schedule": "constant", "warmup": 0, "optimizer": "adam"}
#: Preset name -> settings, per family.
INR_PRESETS: dict[str, dict[str, dict[str, Any]]] = {
    "siren": {
        "paper": PAPER_PRESET,
        # 4,000 gradient evaluations: Adam at 1e-3 for 2,000, then L-BFGS; the last 200 tune the weights to their fp16
        # rounding, which L-BFGS solutions lost 0.3-0.75 dB to. Chosen on BraTS pat0003 slice 96, checked on pat0006
        # slice 99 (benchmarks/time_to_quality.py).
        "fast": {"steps": 4_000, "lr": 1e-3, "schedule": "constant", "warmup": 0, "optimizer": "adam+lbfgs", "lbfgs_after": 2_000,
                 "quantize_tail": 200, "quantize_lr": 3e-6},
    },
    "pe-mlp": {
        "paper": PAPER_PRESET,
        # 4,000 gradient evaluations: Adam at 1e-3 for 1,000, then L-BFGS (reached 20,000 paper steps' quality on a
        # slice it was not tuned on: benchmarks/time_to_quality.py).
        "fast": {"steps": 4_000, "lr": 1e-3, "schedule": "constant", "warmup": 0, "optimizer": "adam+lbfgs", "lbfgs_after": 1_000},
    },
}  # fmt: skip
