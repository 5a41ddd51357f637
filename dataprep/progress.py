"""Progress: a tqdm bar on a terminal's stderr, and one closing line wherever stderr goes.

A hidden bar does not import tqdm at all: the import is a visible share of start-up (most
of it tqdm looking up its own version), which scripted runs would pay for nothing.

The core sees progress as a callable ``update(n)`` with ``set_total(n)``; see ``set_total``.
The command may state the exact result (``finish``): records written, not read.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from typing import Any, Callable

DEFAULT_COLUMNS = 80  # for terminals that report no width (0 columns)
KILL_HOOK = "DATAPREP_TEST_KILL_AT"  # tests: SIGKILL this process once progress reaches N


def set_total(progress: Callable[[int], object] | None, total: int) -> None:
    """Tell a progress callback the total once it is known (a no-op for plain callables)."""
    setter = getattr(progress, "set_total", None)
    if setter is not None:
        setter(total)


def _columns() -> int | None:
    """None (tqdm follows the terminal) unless the terminal reports a width of 0."""
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return DEFAULT_COLUMNS
    return None if width > 0 else DEFAULT_COLUMNS


class Progress:
    """Counts work, draws a tqdm bar (whole counts: ``12,345/20,000 img``) when ``drawn``,
    and ends with one summary line on stderr unless ``quiet``: count, seconds, rate."""

    def __init__(self, total: int | None, desc: str, unit: str, drawn: bool, quiet: bool) -> None:
        self.desc, self.unit, self.quiet = desc, unit, quiet
        self.count = 0
        self.final: tuple[int, str] | None = None
        self.started = time.perf_counter()
        self.kill_at = int(os.environ.get(KILL_HOOK) or 0)
        self.bar = self._bar(total) if drawn else None

    def _bar(self, total: int | None) -> Any:
        from tqdm import tqdm

        # No monitor thread: the bar is redrawn on every update anyway, and a live thread would
        # stop worker processes from being plain forks (see parallel.fork_safe).
        tqdm.monitor_interval = 0
        ncols = _columns()
        return tqdm(
            total=total,
            desc=self.desc,
            unit=self.unit,
            file=sys.stderr,
            leave=False,
            dynamic_ncols=ncols is None,
            ncols=ncols,
            bar_format=self._format(total),
        )

    def _format(self, total: int | None) -> str:
        unit = self.unit
        if total is None:
            return "{desc}: {n:,} " + unit + " [{elapsed}, {rate_fmt}]"
        return (
            "{desc}: {percentage:3.0f}%|{bar}| {n:,}/{total:,} "
            + unit
            + " [{elapsed}<{remaining}, {rate_fmt}]"
        )

    def __call__(self, n: int = 1) -> None:
        self.count += n
        if self.bar is not None:
            self.bar.update(n)
        if self.kill_at and self.count >= self.kill_at:  # a reproducible kill -9 for tests
            os.kill(os.getpid(), signal.SIGKILL)

    def set_total(self, total: int) -> None:
        if self.bar is not None:
            self.bar.total = total
            self.bar.bar_format = self._format(total)
            self.bar.refresh()

    def finish(self, count: int, note: str = "") -> None:
        """The exact count the closing line reports (records written, skips and earlier runs'
        work left out), and a note after it (``955 done before``)."""
        self.final = (count, note)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        if self.bar is not None:
            self.bar.close()
        if exc_type is not None or self.quiet:
            return
        count, note = self.final or (self.count, "")
        seconds = time.perf_counter() - self.started
        rate = count / seconds if seconds > 0 else 0.0
        sys.stderr.write(
            f"{self.desc}: {count:,} {self.unit} in {seconds:.1f} s ({rate:,.0f} {self.unit}/s)"
            + (f"; {note}" if note else "")
            + "\n"
        )


def progress_bar(
    total: int | None, desc: str, unit: str = "img", enabled: bool = True, closing: bool = True
) -> Progress:
    """Progress for ``total`` items: a bar on a terminal's stderr and a closing line, both
    off with ``enabled=False`` (``-q``); ``closing=False`` keeps only the bar."""
    return Progress(total, desc, unit, enabled and sys.stderr.isatty(), quiet=not (enabled and closing))
