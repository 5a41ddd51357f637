"""Per-record error policy: raise on the first bad record, or log it, skip it and count."""

from __future__ import annotations

import heapq
import itertools
import logging

from .errors import DataprepError

log = logging.getLogger(__name__)


class OnError:
    """Decides what a bad record does: raise (default) or, with ``skip=True``, skip and count.

    Skips are logged in list order: errors that carry a list line wait until the run
    reaches that line (a bad label on line 5, found while reading the list, is logged after
    the unreadable images of lines 2 and 4); ``finish`` logs what is still waiting.
    """

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.skipped = 0
        self._waiting: list[tuple[int, int, str]] = []
        self._order = itertools.count()

    def __call__(self, error: DataprepError) -> None:
        if not self.skip:
            raise error
        self.skipped += 1
        line = getattr(error, "line", None)
        if line is None:
            log.warning("skipped: %s", error)
            return
        heapq.heappush(self._waiting, (line, next(self._order), str(error)))

    def reached(self, line: int | None) -> None:
        """The run has dealt with list line ``line``: log the waiting skips up to it."""
        if line is None:
            return
        while self._waiting and self._waiting[0][0] <= line:
            log.warning("skipped: %s", heapq.heappop(self._waiting)[2])

    def finish(self) -> int:
        """Log every waiting skip; returns the number of skips."""
        while self._waiting:
            log.warning("skipped: %s", heapq.heappop(self._waiting)[2])
        return self.skipped
