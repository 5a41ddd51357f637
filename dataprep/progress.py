"""Progress bars: tqdm on stderr, hidden when quiet or when stderr is not a terminal."""

from __future__ import annotations

import sys

from tqdm import tqdm


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
