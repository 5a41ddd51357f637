"""Where a missing SOURCE comes from, so the commands compose in a shell pipeline: the
paths another dataprep command printed on stdout (``dataprep hdf5 train.txt | dataprep
mean``), or on a terminal the current folder's training store, found by the names the
shipped recipes and the tour use.
"""

from __future__ import annotations

import io
import logging
import os
import stat
import sys
from pathlib import Path
from typing import Callable

from .errors import UsageError

log = logging.getLogger("dataprep")

# the training store's names in the recipes and the tour, most specific first
TRAINING_STORES = (
    "train_h5.txt",
    "train.h5",
    "train_lmdb",
    "*_train_lmdb",
    "train_leveldb",
    "*_train_leveldb",
)
MAX_LINE = 1 << 16  # a path line longer than this is no path


def piped_lines() -> list[str] | None:
    """The non-empty lines on standard input when it is a pipe or a file (``[]`` when it
    closed without any); None for a terminal, a device (``< /dev/null``) or no stdin."""
    stream = sys.stdin
    if stream is None:
        return None
    try:
        fd = stream.fileno()
    except (OSError, ValueError, io.UnsupportedOperation):  # an in-memory stream (tests)
        text = stream.read()
        return _lines(text) if text else None
    if os.isatty(fd):
        return None
    mode = os.fstat(fd).st_mode
    if not (stat.S_ISFIFO(mode) or stat.S_ISREG(mode) or stat.S_ISSOCK(mode)):
        return None
    buffer = getattr(stream, "buffer", None)
    return _lines(os.fsdecode(buffer.read()) if buffer is not None else stream.read())


def _lines(text: str) -> list[str]:
    lines = [line.strip() for line in text.splitlines()]
    return [line for line in lines if line and len(line) <= MAX_LINE]


def training_stores(folder: Path) -> list[Path]:
    """The training stores in ``folder`` by their usual names; an ``_h5.txt`` list and the
    ``.h5`` files it names are one store."""
    found: list[Path] = []
    for pattern in TRAINING_STORES:
        for path in sorted(folder.glob(pattern)):
            if path not in found and path.exists():
                found.append(path)
    named: set[Path] = set()
    for path in found:
        if path.name.endswith("_h5.txt"):
            named |= {(path.parent / line.strip()).resolve() for line in _safe_lines(path)}
    return [p for p in found if p.resolve() not in named]


def _safe_lines(path: Path) -> list[str]:
    try:
        return path.read_text(errors="replace").splitlines()[:10000]
    except OSError:
        return []


def missing_source(command: str, usable: Callable[[str], bool], form: str) -> str:
    """SOURCE for ``command`` when none was given: the first usable path on a pipe (exit 2
    when it carries none), else the current folder's one training store (exit 2 for none
    or several, listing what was found and ``form``). Named on stderr."""
    lines = piped_lines()
    if lines is not None:
        for line in lines:
            if usable(line):
                log.info("%s: %s (from standard input)", command, line)
                return line
        shown = ", ".join(lines[:3]) + (" ..." if len(lines) > 3 else "")
        raise UsageError(
            f"{command}: no store or list among the paths on standard input"
            + (f" ({shown})" if lines else " (it closed empty: did the command before it fail?)")
        )
    found = training_stores(Path())
    if len(found) == 1:
        log.info("%s: %s (the training store in this folder)", command, found[0])
        return str(found[0])
    names = ", ".join(p.name for p in found)
    raise UsageError(
        f"{command}: "
        + (f"several training stores here ({names}): name one" if found else "no training store here")
        + f" ({'/'.join(TRAINING_STORES)}); the form: {form}"
    )


def is_store(path: str) -> bool:
    """Whether ``path`` holds a store dataprep reads."""
    from .errors import DataprepError
    from .stores import store_kind

    try:
        store_kind(path)
    except (DataprepError, OSError):
        return False
    return True


def is_store_or_list(path: str) -> bool:
    """A store, or a list file of images (what ``mean`` reads)."""
    return is_store(path) or (path.endswith(".txt") and Path(path).is_file())


def image_lists(paths: list[str]) -> list[str]:
    """The lists of images among piped ``paths``, in order; each other path is passed over
    with one line: a file that is no list of images, or one naming the same images as a
    list without labels among them (its ground truth, as ``noise``'s test_labels.txt is
    for test.txt: ``predict --labels`` takes it)."""
    from .errors import DataprepError
    from .listfile import read_list
    from .scan import DEFAULT_EXTENSIONS

    lists = {}
    for path in paths:
        try:
            listfile = read_list(path)
        except (DataprepError, OSError, UnicodeError) as exc:
            log.info("hdf5: %s passed over: not a list of images (%s)", path, exc)
            continue
        first = listfile.entries[0]
        if first.path.rsplit(".", 1)[-1].lower() not in DEFAULT_EXTENSIONS:
            log.info("hdf5: %s passed over: not a list of images (%s)", path, first.path)
            continue
        lists[path] = listfile
    unlabelled = {tuple(e.path for e in lf.entries): path for path, lf in lists.items() if not lf.label_count}
    kept = []
    for path, listfile in lists.items():
        twin = unlabelled.get(tuple(e.path for e in listfile.entries))
        if listfile.label_count and twin is not None:
            log.info("hdf5: %s passed over: the labels of %s (predict --labels takes it)", path, twin)
            continue
        kept.append(path)
    return kept
