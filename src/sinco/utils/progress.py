"""Progress bars that suit both a terminal and a log file.

On a terminal a bar redraws itself at most twice a second. When stderr is a file or a pipe (a batch job's log,
CI), every redraw would be a line of the log, so a bar writes at most one line every :data:`LOG_INTERVAL`
seconds there.
"""

from __future__ import annotations

import sys
from typing import Any

#: Seconds between two lines of a bar written into a log (stderr not a terminal).
LOG_INTERVAL = 10.0
TERMINAL_INTERVAL = 0.5


def progress_bar(*, total: int | None, desc: str, unit: str = "it", leave: bool = False, initial: int = 0, bar_format: str | None = None) -> Any:
    """A ``tqdm`` bar on stderr, throttled when stderr is not a terminal.

    Args:
        total: expected count (``None``: unknown).
        desc: the bar's label.
        unit: what is counted.
        leave: keep the finished bar on screen.
        initial: the count already done (a resumed run).
        bar_format: tqdm's format string (``None``: tqdm's default).

    Returns:
        The bar; call ``update(n)`` and ``close()``.

    Example::

        bar = progress_bar(total=900, desc="grid fit", unit="step")
        bar.update(1)
        bar.close()
    """
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, leave=leave, initial=initial, dynamic_ncols=interactive,
                mininterval=TERMINAL_INTERVAL if interactive else LOG_INTERVAL, maxinterval=max(LOG_INTERVAL, 10.0),
                bar_format=bar_format)  # fmt: skip
