"""Errors a user can fix. The CLI turns each into one line: exit 2 for usage errors (bad or
conflicting options, inputs named on the command line that are missing), 1 for the rest
(data errors found while working)."""

from __future__ import annotations


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
