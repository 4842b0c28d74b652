"""Atomic output: write to a temporary file in the target folder, then rename over the target.

A crash or Ctrl-C therefore leaves either the previous file or the complete new one, never a
half-written file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

from sinco.errors import InputError


def _suffixes(path: Path) -> str:
    # Keep the full suffix (".nii.gz") so writers that pick a format from the name still work.
    return "".join(path.suffixes[-2:]) if path.name.endswith(".nii.gz") else path.suffix


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is renamed to ``path``.

    Args:
        path: the final output path. Its folder must exist.

    Returns:
        A context manager yielding the temporary :class:`~pathlib.Path` to write to.

    Raises:
        InputError: if the output folder does not exist.
    """
    target = Path(path)
    folder = target.parent if str(target.parent) else Path(".")
    if not folder.is_dir():
        raise InputError(f"output {str(target)!r}: folder {str(folder)!r} does not exist")
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" + _suffixes(target), dir=folder)
    os.close(fd)
    tmp = Path(tmp_name)
    # mkstemp creates 0600 files; give the output the permissions a plain open() would.
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (temporary file, fsync, rename).

    Args:
        path: output path.
        data: the bytes to store.

    Raises:
        InputError: if the output folder does not exist.
    """
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def check_output_path(output: str | os.PathLike[str], *, inputs: list[str | os.PathLike[str]], force: bool) -> Path:
    """Refuse to overwrite an input, or an existing output without ``force``.

    Args:
        output: the output path the user asked for.
        inputs: the input paths of the same command.
        force: whether an existing output may be replaced.

    Returns:
        ``output`` as a :class:`~pathlib.Path`.

    Raises:
        InputError: if ``output`` is one of ``inputs`` or exists and ``force`` is false.
    """
    out = Path(output)
    for item in inputs:
        item_path = Path(item)
        if item_path.exists() and out.exists() and os.path.samefile(item_path, out):
            raise InputError(f"-o {str(out)!r}: refusing to overwrite the input file")
    if out.exists() and not force:
        raise InputError(f"-o {str(out)!r}: file exists (pass --force to replace it)")
    if out.exists() and out.is_dir():
        raise InputError(f"-o {str(out)!r}: is a folder, expected a file path")
    return out
