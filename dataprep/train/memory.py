"""The memory a net will take, added up at set-up before anything large is allocated, and
the limit it must fit: so a net too big for the machine is one line naming the estimate
and its largest layers, not a MemoryError deep in NumPy or a kill by the kernel.

Training counts each parameter four times (the value, its gradient and up to two solver
histories), each blob twice (values and gradients) and the inputs once more for each
batch the loader prefetches; inference counts each once.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import os
import resource
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

from ..errors import DataprepError

log = logging.getLogger("dataprep")

MAX_MEMORY: int | None = None  # --max-memory in bytes: None finds the machine's limit, 0 turns it off
PREFETCH = 3  # the loader's batches ahead (train/loader.py)


class MemoryEstimateError(DataprepError):
    """The net cannot fit in the memory this process may use."""


def describe(count: float) -> str:
    for unit, scale in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{int(count)} bytes"


def parse_size(text: str) -> int:
    """``8G``, ``512M``, ``1.5GB``, ``0`` (off) as bytes."""
    text = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}.get(text[-1:], 1)
    number = text[:-1] if scale != 1 else text
    return int(float(number) * scale)


def memory_limit() -> tuple[int, str]:
    """The smallest of the cgroup's memory limit, the address-space limit (``ulimit -v``)
    and the physical memory, with what it is."""
    found = [(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"), "the physical memory")]
    soft, _ = resource.getrlimit(resource.RLIMIT_AS)
    if soft != resource.RLIM_INFINITY:
        found.append((soft, "the address-space limit (ulimit -v)"))
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        with contextlib.suppress(OSError, ValueError):
            text = Path(path).read_text().strip()
            if text != "max" and int(text) < 1 << 60:
                found.append((int(text), "the cgroup's memory limit"))
    return min(found)


def available() -> int | None:
    """MemAvailable of /proc/meminfo, in bytes."""
    with contextlib.suppress(OSError, ValueError, StopIteration):
        lines = Path("/proc/meminfo").read_text().splitlines()
        return int(next(line for line in lines if line.startswith("MemAvailable:")).split()[1]) * 1024
    return None


@dataclass
class Budget:
    """What the net's layers take so far, by layer, against ``limit``."""

    limit: int
    source: str
    train: bool
    used: int = 0
    layers: dict[str, int] = field(default_factory=dict)

    def charge(self, layer: str, nbytes: int, kind: str) -> None:
        """Add a blob (``kind`` "blob", "input") or a parameter ("param") of ``nbytes``;
        refuse before it is allocated when the total passes the limit."""
        times = {"param": 4, "blob": 2, "input": 2 + PREFETCH}[kind] if self.train else 1
        cost = nbytes * times
        self.used += cost
        self.layers[layer] = self.layers.get(layer, 0) + cost
        if self.limit and self.used > self.limit:
            largest = sorted(self.layers.items(), key=lambda item: -item[1])[:3]
            names = ", ".join(f"{name} {describe(size)}" for name, size in largest)
            raise MemoryEstimateError(
                f"the net needs at least {describe(self.used)} ({'training' if self.train else 'inference'}; "
                f"largest: {names}), over {describe(self.limit)}, {self.source}: a smaller batch or "
                "input, fewer outputs, or --max-memory SIZE (0: no check)"
            )

    def warn_available(self) -> None:
        free = available()
        if free is not None and self.used > free:
            log.warning(
                "the net needs about %s and %s is available now: the machine may swap or kill it",
                describe(self.used),
                describe(free),
            )


_BUDGET: contextvars.ContextVar[Budget | None] = contextvars.ContextVar("budget", default=None)


@contextlib.contextmanager
def budget(train: bool) -> Iterator[Budget]:
    """The budget the layers set up inside the block charge (``charge``)."""
    if MAX_MEMORY is None:
        limit, source = memory_limit()
    else:
        limit, source = MAX_MEMORY, "--max-memory"
    current = Budget(limit, source, train)
    token = _BUDGET.set(current)
    try:
        yield current
    finally:
        _BUDGET.reset(token)


def charge(layer: str, nbytes: int, kind: str) -> None:
    """Charge the running budget, if any (a layer set up outside a Net has none)."""
    current = _BUDGET.get()
    if current is not None:
        current.charge(layer, nbytes, kind)
