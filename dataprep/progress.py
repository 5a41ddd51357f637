"""Progress bars: tqdm on stderr, hidden when quiet or when stderr is not a terminal.

A hidden bar does not import tqdm at all: the import is a visible share of start-up (most
of it tqdm looking up its own version), which scripted runs would pay for nothing.

The core sees a bar as a callable ``update(n)`` with ``set_total(n)``; see ``set_total``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable

DEFAULT_COLUMNS = 80  # for terminals that report no width (0 columns)


def set_total(progress: Callable[[int], object] | None, total: int) -> None:
    """Tell a progress callback the total once it is known (a no-op for plain callables)."""
    setter = getattr(progress, "set_total", None)
    if setter is not None:
        setter(total)


class _Hidden:
    """A bar nobody sees: counts nothing, draws nothing."""

    def __call__(self, n: int = 1) -> None:
        pass

    def set_total(self, total: int) -> None:
        pass

    def __enter__(self) -> _Hidden:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def _columns() -> int | None:
    """None (tqdm follows the terminal) unless the terminal reports a width of 0."""
    try:
        width = os.get_terminal_size(sys.stderr.fileno()).columns
    except (OSError, ValueError):
        return DEFAULT_COLUMNS
    return None if width > 0 else DEFAULT_COLUMNS


class _Bar:
    """A tqdm bar with whole counts (``12,345/20,000 img``) and a closing summary line on
    stderr: count, seconds and items per second."""

    def __init__(self, total: int | None, desc: str, unit: str) -> None:
        from tqdm import tqdm

        # No monitor thread: the bar is redrawn on every update anyway, and a live thread would
        # stop worker processes from being plain forks (see parallel.fork_safe).
        tqdm.monitor_interval = 0
        self.desc, self.unit = desc, unit
        self.count = 0
        self.started = time.perf_counter()
        ncols = _columns()
        self.bar = tqdm(
            total=total,
            desc=desc,
            unit=unit,
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
        self.bar.update(n)

    def set_total(self, total: int) -> None:
        self.bar.total = total
        self.bar.bar_format = self._format(total)
        self.bar.refresh()

    def __enter__(self) -> "_Bar":
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        self.bar.close()
        if exc_type is None:
            seconds = time.perf_counter() - self.started
            rate = self.count / seconds if seconds > 0 else 0.0
            sys.stderr.write(
                f"{self.desc}: {self.count:,} {self.unit} in {seconds:.1f} s ({rate:,.0f} {self.unit}/s)\n"
            )


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> Any:
    """A bar for ``total`` items on a terminal's stderr; ``enabled=False`` hides it."""
    if not enabled or not sys.stderr.isatty():
        return _Hidden()
    return _Bar(total, desc, unit)
