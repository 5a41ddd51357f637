"""Picklable tasks for the executor tests (spawned workers import this module)."""

from __future__ import annotations

import os
import time
from dataclasses import dataclass


@dataclass(frozen=True)
class Square:
    delay: float = 0.0

    def __call__(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        time.sleep(self.delay)
        return [(i, i * i, os.getpid()) for i in range(start, stop)]


@dataclass(frozen=True)
class FailAt:
    index: int

    def __call__(self, start: int, stop: int) -> list[int]:
        if start <= self.index < stop:
            raise ValueError(f"boom at {self.index}")
        return list(range(start, stop))


@dataclass(frozen=True)
class DieAt:
    """Kills the worker process that reaches ``index`` (the parent, which computes chunks
    too, only sleeps there, so the chunk is left to a child)."""

    index: int
    parent: int = 0

    def __call__(self, start: int, stop: int) -> list[int]:
        if os.getpid() == self.parent:
            time.sleep(0.01)  # make the parent slow, so children take most chunks
        elif start <= self.index < stop:
            os._exit(3)
        return list(range(start, stop))
