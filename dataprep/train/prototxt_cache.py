"""A net prototxt's sections (``prototxt.net_sections``), kept between commands.

Protobuf's text format parses in Python: GoogLeNet's deploy net took 49 ms, and importing
the parser and Caffe's messages 26 ms more, in every `predict` of a prototxt model; the
kept sections load in under a millisecond. They are found again by the file's path and
contents (read and hashed: 0.1 ms for GoogLeNet's) and dataprep's own source files, so an
edited prototxt is parsed again whatever its size and time stamp say. What the parse said
(the pre-2015 form upgraded, a field Caffe ignores) is said again each time.
They live beside the graphs, in ``$DATAPREP_CACHE/prototxt`` (``DATAPREP_CACHE=off``
keeps none), at most ``KEEP_BYTES`` of them.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
from pathlib import Path

KEEP_BYTES = 64 << 20  # GoogLeNet's deploy net keeps 33 KB
PARSER_LOG = "dataprep.train.prototxt"  # the logger the parse speaks through


def is_prototxt(path: str | Path) -> bool:
    """Whether ``path`` names a prototxt (a net or a solver), by its name: no parser loaded."""
    return str(path).endswith((".prototxt", ".pt"))


def net_sections(path: str | Path) -> dict:
    """``prototxt.net_sections`` of ``path``: kept from an earlier command, or parsed now
    (and kept)."""
    from .graph_cache import cache_root, keep_file, trim  # here: ``is_prototxt`` loads nothing

    root = cache_root()
    kept = _kept_path(root, path) if root is not None else None
    if kept is None:
        return _parsed(path)[0]
    with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
        found = json.loads(kept.read_text())
        sections, said = found["sections"], found["said"]
        if not isinstance(sections, dict) or not all(
            isinstance(level, int) and isinstance(message, str) for level, message in said
        ):
            raise ValueError("not sections")  # damaged: parsed again
        with contextlib.suppress(OSError):
            os.utime(kept)  # used now: the last to be dropped
        for level, message in said:
            logging.getLogger(PARSER_LOG).log(level, "%s", message)
        return sections
    sections, said = _parsed(path)
    record = json.dumps({"sections": sections, "said": said})
    # kept only if JSON gives it all back and the file did not change while it was parsed
    if json.loads(record)["sections"] == sections and _kept_path(root, path) == kept:
        if keep_file(kept, record.encode()):
            trim(kept.parent, "*.json", KEEP_BYTES, kept)
    return sections


def _kept_path(root: Path, path: str | Path) -> Path | None:
    """Where the sections of ``path`` as it is now are kept; None where it cannot be read
    (the parser says why)."""
    import hashlib

    from .graph_cache import key_of

    try:
        contents = Path(path).read_bytes()
    except OSError:
        return None
    name = {"prototxt": os.path.abspath(path), "sha256": hashlib.sha256(contents).hexdigest()}
    return root / "prototxt" / f"{key_of(name)}.json"


class _Said(logging.Handler):
    """What the parser logs, as (level, message) pairs."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.said: list[tuple[int, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.said.append((record.levelno, record.getMessage()))


def _parsed(path: str | Path) -> tuple[dict, list[tuple[int, str]]]:
    """The sections of ``path`` parsed now, and what the parser said meanwhile (it is said as
    well)."""
    from .prototxt import net_sections as parse

    said = _Said()
    logger = logging.getLogger(PARSER_LOG)
    logger.addHandler(said)
    try:
        return parse(path), said.said
    finally:
        logger.removeHandler(said)
