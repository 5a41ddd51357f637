"""Progress bars: tqdm on stderr, hidden when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm

# No monitor thread: bars here are refreshed on every update anyway, and a live thread
# would stop worker processes from being plain forks (see parallel.fork_safe).
tqdm.monitor_interval = 0


def progress_bar(total: int | None, desc: str, unit: str = "img", enabled: bool = True) -> tqdm:
    """A tqdm bar for ``total`` items showing items/s; ``enabled=False`` hides it."""
    return tqdm(
        total=total,
        desc=desc,
        unit=unit,
        unit_scale=True,
        file=sys.stderr,
        disable=None if enabled else True,
        dynamic_ncols=True,
        leave=False,
    )
