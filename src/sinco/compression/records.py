"""The JSON record saved beside every output: the input, the full configuration, the seed and the result."""

from __future__ import annotations

import math
from typing import Any

import torch

from sinco.codec.config import CodecConfig
from sinco.version import __version__


def finite(value: Any) -> Any:
    """``value``, or ``None`` for a non-finite float (JSON has no inf or nan)."""
    return None if isinstance(value, float) and not math.isfinite(value) else value


def sidecar_record(*, input: dict[str, Any], codec: CodecConfig, fit_config: Any, device: str, result: dict[str, Any],
                   regularizer: dict[str, Any] | None = None, slices: list[dict] | None = None) -> dict[str, Any]:  # fmt: skip
    """The JSON record saved beside every output: the input, the full configuration, the seed and the result.

    Args:
        input: where the image came from (path, slice(s), axis, channel, range...).
        codec: the codec configuration.
        fit_config: the fitting configuration (with the seed).
        device: the ``--device`` asked for.
        result: the measured result (:meth:`~sinco.compression.image.CompressResult.to_dict` or a volume's metrics).
        regularizer: the regularizer's inputs, if any.
        slices: per-slice rows of a volume.

    Returns:
        A JSON-ready dictionary (non-finite floats as ``None``).
    """
    # The thread count changes a fit's floating-point rounding (so its bytes), not the decoder's integer arithmetic.
    record = {"sinco_version": __version__, "input": input, "codec": codec.to_dict(), "fit": fit_config.to_dict(),
              "regularizer": regularizer, "device": device, "torch_threads": torch.get_num_threads(), "result": result}  # fmt: skip
    if slices is not None:
        record["slices"] = [{k: finite(v) for k, v in row.items()} for row in slices]
    return record
