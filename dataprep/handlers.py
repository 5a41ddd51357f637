"""Per-record error policy: raise on the first bad record, or log it, skip it and count."""

from __future__ import annotations

import logging

from .errors import DataprepError

log = logging.getLogger(__name__)


class OnError:
    """Decides what a bad record does: raise (default) or, with ``skip=True``, skip and count."""

    def __init__(self, skip: bool = False) -> None:
        self.skip = skip
        self.skipped = 0

    def __call__(self, error: DataprepError) -> None:
        if not self.skip:
            raise error
        self.skipped += 1
        log.warning("skipped: %s", error)
