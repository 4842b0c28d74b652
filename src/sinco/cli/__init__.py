"""The ``sinco`` command line: a thin layer over the library, one module per command group.

Heavy imports (torch, MONAI) happen inside the commands, so ``sinco --help`` is instant. Every usage error or bad
input prints at most two lines on stderr (the error, and where to read more) and exits with status 2; see
:mod:`sinco.cli.common` for the exit codes.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import NoReturn

from sinco.cli import benchmark, compress, demo, files, seg
from sinco.cli.common import EXIT_BAD_INPUT, EXIT_INTERRUPTED, EXIT_OS_ERROR
from sinco.errors import SincoError
from sinco.version import __version__


class _Parser(argparse.ArgumentParser):
    """An argument parser whose usage errors are one line and a pointer to ``--help``, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"sinco: error: {message}\nsee '{self.prog} --help'\n")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``sinco`` command."""
    parser = _Parser(prog="sinco", description="Compress medical images with overfitted neural codecs.")
    parser.add_argument("--version", action="version", version=f"sinco {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)
    for group in (compress, files, benchmark, demo, seg):
        group.add_parsers(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run the ``sinco`` command.

    Args:
        argv: arguments without the program name (default: ``sys.argv[1:]``).

    Returns:
        The exit status (:mod:`sinco.cli.common`).
    """
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error already printed
        return int(exc.code or 0)
    # A plain `kill` unwinds like Ctrl-C, so temporary files are removed and outputs stay whole.
    previous = signal.signal(signal.SIGTERM, _terminate) if threading.current_thread() is threading.main_thread() else None
    try:
        return args.func(args)
    except SincoError as exc:
        print(f"sinco: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print("sinco: interrupted; no output was left half-written", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as exc:
        print(f"sinco: error: {exc.strerror or exc}{f': {exc.filename!r}' if exc.filename else ''}", file=sys.stderr)
        return EXIT_OS_ERROR
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _terminate(signum: int, frame: object) -> None:
    raise KeyboardInterrupt
