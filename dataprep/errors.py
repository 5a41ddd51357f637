"""Errors a user can fix: the CLI turns each into one line and exit code 1."""


class DataprepError(Exception):
    """Base class of every error dataprep reports to the user without a traceback."""


class ListFileError(DataprepError):
    """A list file line that cannot be parsed (names the file and line number)."""


class ImageError(DataprepError):
    """An image that is missing, undecodable or of the wrong size."""


class StoreExistsError(DataprepError):
    """The destination exists and --overwrite was not given."""


class StoreError(DataprepError):
    """A store that cannot be opened, read or written."""
