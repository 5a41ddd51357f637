"""List files: ``path label1 label2 ...`` lines, the input of every conversion command.

Rules (the same for every command):

* one image per line: a path, then zero or more labels separated by whitespace;
* labels are integers (``3``) or floats (``0.125``, ``1e-3``);
* a path containing spaces: in a list of one label per line, as Caffe writes and reads it
  (``convert_imageset`` and the ``ImageData`` layer split a line at its last space), so
  ``my photos/img 03.jpg 1`` is that path with label 1; in lists without labels or with
  several, in double quotes (``"my dir/a.jpg" 0.5 0.25``), which Caffe's tools do not
  read. ``dataprep list`` writes Caffe's unquoted form for one-label lines;
* blank lines and lines whose first non-blank character is ``#`` are ignored;
* every line of a list carries the same number of labels.
"""

from __future__ import annotations

import io
import os
import re
import shlex
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Sequence

from .errors import ListFileError, OnError, UsageError
from .staging import add_list

Label = int | float


@dataclass(frozen=True)
class Entry:
    """One parsed list line: where it came from, the image path as written, its labels."""

    line: int
    path: str
    labels: tuple[Label, ...]


@dataclass
class ListFile:
    """A parsed list: entries in file order, the label count and the (absolute) folder paths
    resolve against."""

    name: str
    entries: list[Entry]
    label_count: int
    root: Path

    @property
    def integer_labels(self) -> bool:
        """True when every label of every entry is an integer (what a Datum label can hold)."""
        return all(isinstance(v, int) for e in self.entries for v in e.labels)

    def resolve(self, entry: Entry) -> Path:
        """The file an entry names: its path joined to the list's root."""
        return self.root / entry.path

    def __len__(self) -> int:
        return len(self.entries)


def parse_label(text: str) -> Label:
    """An int when the text is an integer literal, else a float; ValueError otherwise.
    (Parsed as a float first: trying int() on every float label would raise and catch an
    exception per label of a regression list.)"""
    value = float(text)
    if value != value or value in (_INF, -_INF):
        raise ValueError(text)
    if value.is_integer() and not any(c in text for c in ".eE"):
        return int(text)
    return value


_INF = float("inf")


def _split(text: str, label_count: int | None) -> list[str]:
    """A line's fields: quoted paths (a line starting with a quote) as the shell splits
    them; else on whitespace when every field after the first is a number and their count
    is the list's (known, or this first line's); else, in a list of one label, Caffe's
    split at the last space (a path with spaces, then the label)."""
    if text[0] in "\"'":
        return shlex.split(text, posix=True)
    fields = text.split()
    labels = fields[1:]
    if all(_is_number(v) for v in labels) and label_count in (None, len(labels)):
        return fields
    path, _, last = text.rpartition(" ")
    if label_count in (None, 1) and path.strip() and _is_number(last):
        return [path.rstrip(), last]
    return fields


def parse_lines(
    lines: Iterable[str],
    name: str = "<list>",
    on_error: OnError | None = None,
    label_count: int | None = None,
) -> tuple[list[Entry], int]:
    """Parse list lines into entries; bad lines go to ``on_error`` (default: raise).

    Returns the entries and the label count (taken from the first good line unless given).
    """
    on_error = on_error or OnError()
    entries: list[Entry] = []
    for number, text in enumerate(lines, start=1):
        if number == 1:
            text = text.removeprefix("\ufeff")  # the byte-order mark Windows editors write
        stripped = text.strip()
        if not stripped or stripped[0] == "#":
            continue
        if "\0" in stripped:  # no file name holds one; a binary file given as a list
            on_error(ListFileError(f"{name}:{number}: a NUL byte: not a list line", number))
            continue
        try:
            fields = _split(stripped, label_count)
        except ValueError as exc:
            on_error(ListFileError(f"{name}:{number}: cannot parse line ({exc}): {stripped!r}", number))
            continue
        path, raw = fields[0], fields[1:]
        try:
            labels = tuple(map(parse_label, raw))
        except ValueError:
            bad = next(v for v in raw if not _is_number(v))
            on_error(ListFileError(f"{name}:{number}: {path}: label {bad!r} is not a number", number))
            continue
        if label_count is None:
            label_count = len(labels)
        if len(labels) != label_count:
            on_error(
                ListFileError(
                    f"{name}:{number}: {path}: {len(labels)} labels, expected {label_count}", number
                )
            )
            continue
        entries.append(Entry(number, path, labels))
    return entries, label_count or 0


def _is_number(text: str) -> bool:
    try:
        parse_label(text)
    except ValueError:
        return False
    return True


def read_list(
    source: str | os.PathLike,
    root: str | os.PathLike | None = None,
    on_error: OnError | None = None,
    allow_empty: bool = False,
) -> ListFile:
    """Read a list file (``-`` for stdin); paths resolve against ``root`` or the list's folder."""
    if str(source) == "-":
        stdin = getattr(sys.stdin, "buffer", None)
        name, text = "<stdin>", os.fsdecode(stdin.read()) if stdin is not None else sys.stdin.read()
        default_root = Path.cwd()
    else:
        path = Path(source)
        name = str(path)
        try:  # file names are bytes on Linux: any that are not UTF-8 stay as they are
            text = os.fsdecode(_list_bytes(path))
        except FileNotFoundError:
            raise UsageError(f"{name}: no such list file") from None
        except OSError as exc:
            raise ListFileError(f"{name}: cannot read list: {exc.strerror}") from None
        # a pipe's paths (<(grep ...)) resolve against the current folder, as stdin's do
        default_root = path.parent if path.is_file() else Path.cwd()
    entries, count = parse_lines(io.StringIO(text), name=name, on_error=on_error)
    if not entries and not allow_empty:
        raise ListFileError(f"{name}: the list is empty")
    # absolute: a Dask worker resolving the entries has another working directory
    folder = Path(os.path.abspath(root if root is not None else default_root))
    listfile = ListFile(name, entries, count, folder)
    add_list(listfile)  # no output of the running command may replace it or its images
    return listfile


MAX_LINE = 1 << 16  # bytes: no list line is longer (a path is at most 4096)


def _list_bytes(path: Path) -> bytes:
    """A list file's bytes: a regular file, or a pipe (``-``'s siblings: ``<(grep ...)``),
    read with a bound on the line length; devices and folders are refused, and a list in
    UTF-16 is named as such."""
    import stat

    mode = os.stat(path).st_mode
    if stat.S_ISDIR(mode):
        raise ListFileError(f"{path}: a folder, not a list file (dataprep list makes one from a folder)")
    if not (stat.S_ISREG(mode) or stat.S_ISFIFO(mode) or stat.S_ISSOCK(mode)):
        raise ListFileError(f"{path}: a device, not a list file")
    chunks, line = [], 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            last = block.rfind(b"\n")
            line = line + len(block) if last < 0 else len(block) - last - 1
            if (last < 0 and line > MAX_LINE) or max(map(len, block.split(b"\n")), default=0) > MAX_LINE:
                raise ListFileError(f"{path}: a line over {MAX_LINE // 1024} KB: not a list of paths")
            chunks.append(block)
    data = b"".join(chunks)
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or (len(data) > 3 and data[1:4:2] == b"\0\0"):
        raise ListFileError(f"{path}: UTF-16 text: save the list as UTF-8 (or ASCII)")
    return data


def shuffle_order(n: int, seed: int) -> list[int]:
    """The order ``--shuffle --seed`` puts ``n`` list entries in: every command that
    shuffles or re-checks a shuffled store uses this one permutation."""
    import numpy as np

    return np.random.default_rng(seed).permutation(n).tolist()


def format_path(path: str) -> str:
    """A path as a list line writes it: quoted when it contains whitespace or quotes."""
    if any(c.isspace() for c in path) or '"' in path or "'" in path:
        return shlex.quote(path) if '"' in path else f'"{path}"'
    return path


def format_line(path: str, labels: Sequence[Label] = ()) -> str:
    """One list line; floats written with ``repr`` so they read back exactly. A path with
    spaces is written as Caffe reads it when the line has one label (unquoted: Caffe splits
    at the last space), else quoted."""
    values = [repr(v) if isinstance(v, float) else str(v) for v in labels]
    caffe = len(labels) == 1 and "\n" not in path and path[:1] not in "\"'" and path == path.strip()
    return " ".join([path if caffe else format_path(path), *values])


def write_list(path: str | os.PathLike, lines: Iterable[str]) -> None:
    """Write list lines to ``path``, one per line."""
    Path(path).write_text("".join(line + "\n" for line in lines), errors="surrogateescape")  # names as read


def class_lines(names: Sequence[str]) -> list[str]:
    """The lines of a class-name file (``classes.txt``): ``index name``."""
    return [f"{k} {name}" for k, name in enumerate(names)]


def read_class_names(path: str | Path) -> list[str]:
    """Class names, class 0 first, from a class-name file: ``class_lines``' own ``0
    circles`` lines, ImageNet's ``n01440764 tench, Tinca tinca`` (the id left out), or one
    name per line."""
    with open(path) as f:
        lines = [line.strip() for line in f if line.strip()]
    heads = [line.split(None, 1) for line in lines]
    if all(len(h) == 2 for h in heads) and (
        [h[0] for h in heads] == [str(k) for k in range(len(heads))]
        or all(re.fullmatch(r"n\d{8}", h[0]) for h in heads)
    ):
        return [h[1] for h in heads]
    return lines
