"""``.sinco`` files of any codec family: write, parse, decode.

:mod:`sinco.codec.format` lays out the bytes; this module hands the family block and payload to
the family the header names, so a file is fully checked (caps, CRC, block, payload length)
before its family allocates anything.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from sinco.codec.format import FileHeader, pack, unpack
from sinco.codec.registry import family_by_id, get_family


@dataclass(frozen=True)
class SincoFile:
    """A parsed ``.sinco`` file.

    Args:
        version: format version it was written in.
        header: the common header (family id, shape, intensity range).
        family: the codec family's name.
        spec: the family's spec, read from the family block.
        payload: the payload bytes.
    """

    version: int
    header: FileHeader
    family: str
    spec: Any
    payload: bytes

    @property
    def height(self) -> int:
        """Image rows."""
        return self.header.height

    @property
    def width(self) -> int:
        """Image columns."""
        return self.header.width

    @property
    def vmin(self) -> float:
        """Intensity that 0 maps back to."""
        return self.header.vmin

    @property
    def vmax(self) -> float:
        """Intensity that 1 maps back to."""
        return self.header.vmax


def write_file(*, family: str, spec: Any, payload: bytes, height: int, width: int, vmin: float, vmax: float) -> bytes:
    """The bytes of a version-2 ``.sinco`` file.

    Args:
        family: the codec family's name.
        spec: its spec (written as the family block).
        payload: the family's payload.
        height: image rows.
        width: image columns.
        vmin: original intensity of 0.
        vmax: original intensity of 1.

    Returns:
        The file's bytes.

    Raises:
        InputError: if a value does not fit the format.
    """
    codec = get_family(family)
    header = FileHeader(family_id=codec.family_id, height=height, width=width, vmin=vmin, vmax=vmax)
    return pack(header, block=codec.encode_spec(spec), payload=payload)


def parse_file(data: bytes) -> SincoFile:
    """Parse and validate a ``.sinco`` file (version 1 or 2) without decoding its image.

    Args:
        data: the whole file.

    Returns:
        The :class:`SincoFile`.

    Raises:
        BitstreamError: naming what is wrong (see :func:`sinco.codec.format.unpack`), an unknown
            family, an invalid family block, or a payload length its spec cannot have.
    """
    container = unpack(data)
    header = container.header
    family = family_by_id(header.family_id)
    spec = family.decode_spec(container.block, version=container.version)
    family.check_payload(spec, payload_bytes=len(container.payload), height=header.height, width=header.width)
    return SincoFile(version=container.version, header=header, family=family.name, spec=spec, payload=container.payload)


def decode_file(data: bytes) -> tuple[SincoFile, np.ndarray]:
    """Decode a ``.sinco`` file to its ``[0, 1]`` image, deterministically, on the CPU in float32.

    Args:
        data: the whole file.

    Returns:
        ``(file, image)`` with ``image`` float32 ``(H, W)`` in ``[0, 1]``.

    Raises:
        BitstreamError: if the file is not valid.
    """
    parsed = parse_file(data)
    image = get_family(parsed.family).decode(parsed.spec, parsed.payload, height=parsed.height, width=parsed.width)
    if image.shape != (parsed.height, parsed.width) or image.dtype != np.float32:
        raise RuntimeError(f"internal error: the {parsed.family} decoder returned {image.dtype} {image.shape}")
    return parsed, image
