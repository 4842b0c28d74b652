"""What the commands share besides their options: exit codes and writing JSON."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

#: Exit status: success; an operating-system failure (disk full, permission denied); bad input, bad usage or an invalid
#: ``.sinco`` file; some slices of ``compress-batch`` failed twice (their inputs were not written, the others were);
#: interrupted.
EXIT_OK, EXIT_OS_ERROR, EXIT_BAD_INPUT, EXIT_SLICES_FAILED, EXIT_INTERRUPTED = 0, 1, 2, 3, 130


def json_text(value: Any, *, indent: int | None = None) -> str:
    """``value`` as JSON (objects JSON does not know, such as paths, as their text)."""
    return json.dumps(value, indent=indent, default=str)


def write_sidecar(path: Path, record: dict[str, Any]) -> None:
    """Write a JSON record atomically (the ``OUT.sinco.json`` beside an output)."""
    from sinco.utils.atomic import atomic_write_bytes

    atomic_write_bytes(path, (json_text(record, indent=2) + "\n").encode())
