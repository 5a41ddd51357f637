"""Progress bars: tqdm on stderr, hidden when quiet or when stderr is not a terminal.

A hidden bar does not import tqdm at all: the import costs 35 ms of start-up (most of it
tqdm looking up its own version), which scripted runs would pay for nothing.
"""

from __future__ import annotations

import sys
from typing import Any


class _Hidden:
    """A bar nobody sees: counts nothing, draws nothing."""

    def update(self, n: int = 1) -> None:
        pass

    def __enter__(self) -> _Hidden:
        return self

    def __exit__(self, *exc: object) -> None:
        return None


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> Any:
    """A tqdm bar for ``total`` items showing items/s on a terminal; ``enabled=False`` hides it."""
    if not enabled or not sys.stderr.isatty():
        return _Hidden()
    from tqdm import tqdm

    # No monitor thread: the bar is redrawn on every update anyway, and a live thread would
    # stop worker processes from being plain forks (see parallel.fork_safe).
    tqdm.monitor_interval = 0
    return tqdm(total=total, desc=desc, unit=unit, unit_scale=True, file=sys.stderr,
                dynamic_ncols=True, leave=False)
