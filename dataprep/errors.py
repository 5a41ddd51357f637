"""Errors a user can fix, and the policy for bad records (``OnError``: raise, or skip and
count). The CLI turns each error into one line: exit 2 for usage errors (bad or
conflicting options, inputs named on the command line that are missing), 1 for the rest
(data errors found while working)."""

from __future__ import annotations

import heapq
import itertools
import logging

log = logging.getLogger(__name__)


class DataprepError(Exception):
    """Base class of every error dataprep reports to the user without a traceback.

    ``line`` is the list line the error belongs to, when there is one: skipped lines are
    reported in list order by it.
    """

    def __init__(self, message: str, line: int | None = None) -> None:
        super().__init__(message)
        self.line = line

    def __reduce__(self):  # keep ``line`` across the worker pipe
        return (type(self), (str(self), self.line))


class MissingPackage(DataprepError):
    """An optional package the asked-for feature needs is not installed: an environment
    problem (exit 1), with the install line that fits how dataprep was installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(f"{feature} needs {package}: {install_line(extra)}")


def install_line(extra: str) -> str:
    """``pip install -e '/path/to/clone[extra]'`` for an install from a clone (editable,
    or the tree itself), else ``pip install 'dataprep-caffe[extra]'`` (the package index:
    ``dataprep`` there is another project)."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    if (root / "pyproject.toml").is_file() and "site-packages" not in root.parts:
        return f"pip install -e '{root}[{extra}]'"
    return f"pip install 'dataprep-caffe[{extra}]'"


class UsageError(DataprepError):
    """A bad or conflicting option value, or a missing input named on the command line."""


class ListFileError(DataprepError):
    """A list file line that cannot be parsed (names the file and line number)."""


class ImageError(DataprepError):
    """An image that is missing, undecodable or of the wrong size."""


class StoreExistsError(DataprepError):
    """The destination exists and --overwrite was not given."""


class StoreError(DataprepError):
    """A store that cannot be opened, read or written."""


class RecordError(StoreError):
    """One damaged record of a store (a checksum mismatch, undecodable bytes): the records
    around it can still be read, so ``--skip-bad`` may leave it out."""


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
