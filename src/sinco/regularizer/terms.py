"""The data terms an objective can use, and the rule that picks one (no torch needed: configurations import it).

The SINCO objective is ``data term + lam * (1 - Dice(g(x_hat), s))``; the data term's scale against ``lam`` is what
the choice sets (:func:`sinco.regularizer.loss.data_term` computes it).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: ``mse`` (mean squared error), ``sse`` (sum of squared errors, the squared l2 norm), ``l2`` (the l2 norm).
DATA_TERMS = ("mse", "sse", "l2")
#: The data term of a regularized fit (the SINCO methods, compress with ``--seg-model``) when none is given: the
#: paper's ``||x_hat - x||^2`` read literally, the sum of squared errors. With the mean (mse), lambda = 1 lets the
#: Dice term dominate and the fit makes adversarial images (14-22 dB); sse and l2 keep the image
#: (docs/regularizer.md), and sse's weight against the Dice term does not change as the fit improves.
REGULARIZED_DATA_TERM = "sse"
#: A configuration's default: :data:`REGULARIZED_DATA_TERM` when the fit has a segmentation network, else ``mse``.
AUTO_DATA_TERM = "auto"


def resolve_data_term(data_term: str | None, *, regularized: bool) -> str:
    """The data term a fit uses: ``data_term`` itself, or for ``"auto"``/``None`` the rule's choice.

    Args:
        data_term: ``"mse"``, ``"sse"``, ``"l2"``, ``"auto"`` or ``None`` (not given).
        regularized: whether the fit has a segmentation network (at any lambda, so a method's lambda-0 baseline
            uses the same data term as its regularized runs).

    Returns:
        :data:`REGULARIZED_DATA_TERM` for an unnamed term of a regularized fit, ``"mse"`` for an unnamed term of a
        plain one, otherwise ``data_term``.

    Example::

        resolve_data_term("auto", regularized=True)  # "sse"
    """
    if data_term is None or data_term == AUTO_DATA_TERM:
        return REGULARIZED_DATA_TERM if regularized else "mse"
    return data_term


def with_resolved_data_term(overrides: Mapping[str, Any], *, regularized: bool, accepted: set[str] | frozenset[str]) -> dict[str, Any]:
    """``overrides`` with ``data_term`` resolved by :func:`resolve_data_term`, so saved configurations name it.

    Args:
        overrides: fitting options as given (``None``: not given).
        regularized: whether the fit has the structural regularizer.
        accepted: the fitting options the codec family reads (a family without ``data_term`` is left alone).

    Returns:
        A new dict.
    """
    out = dict(overrides)
    if "data_term" in accepted:
        out["data_term"] = resolve_data_term(out.get("data_term"), regularized=regularized)
    return out
