"""The classical codecs sinco compares against, declared once: name -> codec, in the order tables list them."""

from __future__ import annotations

from sinco.classical.base import Codec
from sinco.classical.images import AVIF, JPEG, JPEG2000, JPEGXL, WebP
from sinco.classical.video import AVIF10, AVIF12, HEVC, VVC, HEVCRandomAccess, VVCRandomAccess
from sinco.errors import InputError

#: Every classical image codec of the slice benchmark (``ndim`` 2).
CLASSICAL_CODECS: dict[str, type[Codec]] = {c.name: c for c in (JPEG, JPEG2000, JPEGXL, AVIF, AVIF10, AVIF12, WebP, HEVC, VVC)}

#: Every classical volume codec (``ndim`` 3: the slices of a slab coded together) of the volume benchmark.
VOLUME_CODECS: dict[str, type[Codec]] = {c.name: c for c in (HEVCRandomAccess, VVCRandomAccess)}


def get_codec(name: str) -> Codec:
    """The classical codec called ``name``.

    Raises:
        InputError: if no codec has that name.
    """
    if name not in CLASSICAL_CODECS:
        raise InputError(f"codec {name!r}: expected one of {', '.join(CLASSICAL_CODECS)}")
    return CLASSICAL_CODECS[name]()


# Lossless and near-lossless codecs (``sinco benchmark --lossless``): a registry of their own, since they code integer
# levels at their own depth rather than an image in [0, 1] at a quality.
from sinco.classical.lossless import FFV1, HTJ2K, JPEGLS, JPEG2000Reversible, JPEGXLLossless, LosslessCodec  # noqa: E402

#: Every lossless classical codec of ``sinco benchmark --lossless``, in the order tables list them.
LOSSLESS_CODECS: dict[str, type[LosslessCodec]] = {c.name: c for c in (JPEGLS, JPEG2000Reversible, HTJ2K, JPEGXLLossless, FFV1)}
