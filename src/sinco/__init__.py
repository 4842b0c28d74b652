"""sinco: medical image compression with overfitted neural codecs.

The Python API (:mod:`sinco.api`) is reachable from here: :func:`compress`, :func:`decompress`,
:func:`compress_volume`, :func:`compress_file` and :func:`decompress_file`. Nothing heavy is imported until one of
them is first used.

Packages: :mod:`sinco.codec` (the ``.sinco`` container, the codec families and their registry),
:mod:`sinco.compression` (compressing images, volumes and archives, measured on the decoded file),
:mod:`sinco.classical` (the codecs sinco is compared with), :mod:`sinco.benchmark`, :mod:`sinco.regularizer`
(the SINCO structural regularizer), :mod:`sinco.seg` (its segmentation network), :mod:`sinco.data`,
:mod:`sinco.metrics`, :mod:`sinco.cli`.
"""

from __future__ import annotations

import importlib
from typing import Any

from sinco.version import __version__

__all__ = ["__version__", "compress", "compress_file", "compress_volume", "decompress", "decompress_file"]
_API = ("compress", "compress_file", "compress_volume", "decompress", "decompress_file")


def __getattr__(name: str) -> Any:
    if name in _API:
        return getattr(importlib.import_module("sinco.api"), name)
    raise AttributeError(f"module 'sinco' has no attribute {name!r}")
