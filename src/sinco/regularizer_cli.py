"""Command-line options of the structural regulariser and its independent judge (compress and benchmark).

Kept apart from :mod:`sinco.cli` so the commands only gain a call or two; nothing heavy is imported
until a command runs.
"""

from __future__ import annotations

import argparse
import math
from typing import Any

from sinco.errors import InputError


def add_regularizer_arguments(p: argparse.ArgumentParser, *, benchmark: bool) -> None:
    """The options shared by ``compress`` and ``benchmark``: target, perturbations, judge (``--data-term`` is a fitting option).

    ``--seg-model`` itself is declared by each command (repeatable: ``--seg-model A --seg-model B``).
    """
    p.add_argument("--seg-target", default="mask", metavar="mask|self",
                   help="regulariser target: mask (the ground truth) or self (the loss network's own mask of the "
                        "uncompressed slice: no ground truth needed)" + ("" if benchmark else "; with self, --mask is optional"))  # fmt: skip
    p.add_argument("--seg-perturb", type=int, default=0, metavar="N",
                   help="average the Dice term over N random perturbations of the network's input each step "
                        "(flip, +-10%% intensity scaling, noise 0.02; seeded by --seed) (default: 0, off)")  # fmt: skip
    p.add_argument("--eval-seg-model", default=None, metavar="JUDGE.pt",
                   help="independent judge: Dice by a segmentation network the regulariser did not use "
                        "(refused if it is a loss network)" + ("" if benchmark else "; reported as dice_eval"))  # fmt: skip


def parse_lams(text: str | float, *, allow_list: bool) -> tuple[float, ...]:
    """Parse ``--lam``: one number, or (``allow_list``, the benchmark) comma-separated numbers.

    Raises:
        InputError: for a list where one value is expected, a non-number, or a negative or non-finite value.
    """
    parts = [part.strip() for part in str(text).split(",")]
    if len(parts) > 1 and not allow_list:
        raise InputError(f"--lam {text}: a list of lambdas is for 'sinco benchmark' (one record per value); give one value here")
    try:
        values = tuple(float(part) for part in parts)
    except ValueError:
        raise InputError(f"--lam {text}: expected {'comma-separated numbers' if allow_list else 'a number'}") from None
    bad = [v for v in values if not (math.isfinite(v) and v >= 0)]
    if bad:
        raise InputError(f"--lam {text}: lambdas must be non-negative numbers")
    if len(set(values)) != len(values):
        raise InputError(f"--lam {text}: a value is listed twice")
    return values


def regularizer_options(args: argparse.Namespace, *, seed: int) -> Any:
    """The :class:`~sinco.fit.losses.RegularizerOptions` of the parsed options (perturbations seeded by ``seed``)."""
    from sinco.fit.losses import RegularizerOptions

    return RegularizerOptions(target=args.seg_target, perturb=args.seg_perturb, seed=seed)


def load_networks(seg_paths: list[str] | None, judge_path: str | None) -> tuple[list[Any], Any]:
    """Load the loss network(s) and the judge, refusing a judge that is a loss network.

    Returns:
        ``(seg_models, judge)``; ``judge`` is ``None`` without ``--eval-seg-model``.

    Raises:
        InputError: for an unreadable checkpoint, or a judge equal to a loss network.
    """
    from sinco.eval.judge import load_judge
    from sinco.seg.network import load_seg_model

    seg_models = [load_seg_model(path) for path in seg_paths or []]
    judge = None if judge_path is None else load_judge(judge_path, loss_models=seg_models)
    return seg_models, judge
