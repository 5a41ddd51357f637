"""The store interface: one writer and one reader contract shared by HDF5, LMDB and LevelDB.

Writers build at a temporary path and move into place on ``close()``; the manifest, a JSON
document with the record count, shapes, label layout, preprocessing and a checksum per
record, is written last as the completion marker.
"""

from __future__ import annotations

import errno
import json
import os
import re
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

import numpy as np
from isal.isal_zlib import crc32

from ..errors import RecordError, StoreError
from ..records import Record

FORMAT_VERSION = 1
MANIFEST_NAME = "dataprep.json"
CHECKSUM = "crc32"


def checksum(*buffers: bytes | memoryview) -> str:
    """The per-record checksum the manifests hold: CRC-32 as 8 hex digits.

    It detects truncation, bit rot and edited records; a cryptographic hash ran several
    times slower and became a visible share of conversion time (docs/performance.md).
    ISA-L's CRC-32 (the same sums as zlib's) runs at about 50 GB/s here against zlib's 3.4,
    so every read can check its records.
    """
    crc = 0
    for buf in buffers:
        crc = crc32(buf, crc)
    return f"{crc:08x}"


def index_runs(indices: list[int]) -> Iterator[tuple[int, int]]:
    """Sorted indices as [start, stop) runs, so neighbouring records are read in one range."""
    start = prev = None
    for i in indices:
        if start is None:
            start = prev = i
        elif i == prev + 1:
            prev = i
        else:
            yield start, prev + 1
            start = prev = i
    if start is not None:
        yield start, prev + 1


def mismatch(path: str | os.PathLike, key: str) -> RecordError:
    """A record whose bytes differ from the manifest's checksum: bit rot, an edit."""
    return RecordError(f"{path}: record {key}: checksum mismatch")


def check_space(path: str | os.PathLike, nbytes: int) -> None:
    """OSError (ENOSPC) naming ``path`` when its file system has less than ``nbytes`` free:
    for writers whose library does not survive a failed write (HDF5)."""
    stat = os.statvfs(Path(path).parent)
    if stat.f_bavail * stat.f_frsize < nbytes:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))


def shards_of(path: Path, pattern: str) -> list[Path]:
    """The files beside ``path`` whose names fully match ``pattern``: the shards of an
    output set already there, which a new set replaces as a whole."""
    folder = path.parent
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.iterdir() if re.fullmatch(pattern, p.name))


def write_error(path: str | os.PathLike, exc: OSError, written: int) -> StoreError:
    """A write that failed (a full disk) as one line: the store, the cause, how far it got
    (LevelDB words its causes as bytes naming its own files: the cause alone is kept)."""
    cause = exc.strerror
    if cause is None:
        first = exc.args[0] if exc.args else exc
        cause = first.decode(errors="replace") if isinstance(first, bytes) else str(first)
        cause = cause.rpartition(": ")[2] or cause
    return StoreError(f"{path}: {cause} (wrote {written} records)")


def build_manifest(kind: str, count: int, shape: Any, dtype: str, meta: dict, **extra: Any) -> dict:
    """The one manifest layout every writer records: format and version, kind, record
    count, shape and dtype, the writer's ``meta`` (source, labels, preprocessing), then
    the backend's ``extra`` fields and the checksum kind."""
    return {
        "format": "dataprep", "format_version": FORMAT_VERSION, "kind": kind, "count": count,
        "shape": shape, "dtype": dtype, **meta, **extra, "checksum": CHECKSUM,
    }  # fmt: skip


def dump_manifest(manifest: dict) -> str:
    """Manifest JSON with stable key order, so identical stores have identical bytes."""
    return json.dumps(manifest, sort_keys=True, separators=(",", ":"))


class StoreWriter(ABC):
    """Writes records in index order to a store; a context manager that aborts on error.

    Used as a context manager it closes on success (``outputs`` then lists what it wrote)
    and aborts on any exception, Ctrl-C included. ``encoder()`` returns a picklable callable
    ``Record -> payload`` run in worker processes (the expensive, parallel part); ``put``
    stores one payload in the parent.
    """

    meta: dict  # what the manifest records besides the records (origin, labels, preprocessing)

    outputs: list[Path] = []
    requires_uniform_shape = False  # HDF5 needs one shape; Datum stores only with --check-size

    @abstractmethod
    def encoder(self) -> Callable[[Record], Any]: ...

    @abstractmethod
    def put(self, index: int, key: str, payload: Any) -> None: ...

    @abstractmethod
    def close(self) -> list[Path]:
        """Finish, write the manifest, move into place; returns the outputs."""

    def flush(self) -> None:
        """Write out what is buffered (where a full disk shows), before any store of a set
        is committed."""

    @abstractmethod
    def abort(self) -> None:
        """Remove everything written so far."""

    def __enter__(self) -> "StoreWriter":
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        if exc_type is not None:
            self.abort()
            return
        try:
            self.outputs = self.close()
        except BaseException:
            self.abort()
            raise


class StoredRecord(tuple):
    """A record read back: a tuple ``(array, labels)`` (the C x H x W array and a 1-D float
    array: what a PyTorch DataLoader collates) that also carries its ``key`` and, for an
    encoded record, the image file's bytes (``data``) that ``convert`` passes on."""

    def __new__(
        cls, key: str, array: np.ndarray, labels: np.ndarray, data: bytes | None = None
    ) -> "StoredRecord":
        record = super().__new__(cls, (array, labels))
        record.key, record.data = key, data
        return record

    def __getnewargs__(self) -> tuple:
        return (self.key, self[0], self[1], self.data)

    @property
    def array(self) -> np.ndarray:
        return self[0]

    @property
    def labels(self) -> np.ndarray:
        return self[1]


@dataclass
class RecordCheck:
    """One record as verification sees it: the key, the decoded array and labels (None when
    it does not decode: ``error`` says why), and whether its checksum matches the manifest
    (None when there is none to compare with)."""

    key: str
    array: np.ndarray | None
    labels: np.ndarray | None
    error: str | None = None
    checksum_ok: bool | None = None


class StoreReader(ABC):
    """Random and range access to a store's records, in key (training) order.

    Also a map-style dataset for ``torch.utils.data.DataLoader`` (without importing torch):
    ``len()``, ``reader[i]`` gives ``(array, labels)`` (``transform`` applied to the array),
    and a reader is picklable: file handles are never pickled, and a process that did not
    open them (a spawned or forked DataLoader worker) opens its own on first use."""

    kind: str
    path: Path
    manifest: dict | None
    transform: Callable[[np.ndarray], Any] | None = None
    # how records line up with the entries of the list they came from: "datum_key" (keys
    # carry the entry's index), "path" (keys are the paths) or "position"
    lined_up_by: str = "position"

    def checked_records(self) -> Iterator[RecordCheck]:
        """Every record for verification, in order, with its checksum compared."""
        for rec in self:
            yield RecordCheck(rec.key, rec.array, rec.labels)

    def structure_problems(self) -> list[str]:
        """Problems of the store as a whole (parts that disagree on their length, ...)."""
        return []

    def unfinished(self) -> bool:
        """Whether the store is a dataprep output whose writer never finished."""
        return False

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def keys(self) -> list[str]: ...

    @abstractmethod
    def iter_range(self, start: int, stop: int, check: bool = True) -> Iterator[StoredRecord]:
        """Records ``start..stop-1`` in order: workers split a store by index ranges. Each is
        checked against the manifest's checksum where there is one (``check``): a damaged
        record stops the reader instead of passing on into a new store, a mean or a net."""

    def iter_indices(self, indices: list[int], check: bool = True) -> Iterator[tuple[int, StoredRecord]]:
        """``(index, record)`` for sorted, distinct ``indices`` (a shuffled training batch),
        checked as ``iter_range`` checks them. Here a range per run of neighbours; backends
        that find a record by its key read them all in one transaction or read."""
        for start, stop in index_runs(indices):
            yield from enumerate(self.iter_range(start, stop, check), start)

    def iter_sound(
        self, start: int, stop: int, damaged: list[RecordError]
    ) -> Iterator[tuple[int, StoredRecord]]:
        """``(index, record)`` for records ``start..stop-1`` that read cleanly: a damaged one
        is left out and its error appended to ``damaged`` (what ``--skip-bad`` reads)."""
        i = start
        while i < stop:
            try:
                for record in self.iter_range(i, stop):
                    yield i, record
                    i += 1
                return
            except RecordError as exc:
                damaged.append(exc)
                i += 1

    def all_labels(self) -> np.ndarray:
        """Every record's labels as an N x k float64 array."""
        rows = [rec.labels for rec in self]
        return np.stack(rows) if rows else np.empty((0, 0))

    def encoded(self) -> bool:
        """Whether records hold compressed image bytes."""
        return False

    def files_on_disk(self) -> list[Path]:
        """The files that make up the store."""
        return (
            [p for p in Path(self.path).rglob("*") if p.is_file()]
            if Path(self.path).is_dir()
            else [Path(self.path)]
        )

    def __getitem__(self, index: int) -> StoredRecord:
        if not -len(self) <= index < len(self):
            raise IndexError(index)
        index %= len(self)
        record = next(self.iter_range(index, index + 1))
        if self.transform is None:
            return record
        return StoredRecord(record.key, self.transform(record.array), record.labels, record.data)

    def _handle(self, name: str, opener: Callable[[], Any]) -> Any:
        """The file handle ``name`` of this process: opened here on first use, so handles
        never cross a fork or a pickle (LMDB and HDF5 forbid that)."""
        handles = self.__dict__.setdefault("_handles", {})
        pid = os.getpid()
        if handles.get("pid") != pid:
            moved = "pid" in handles or self.__dict__.get("_pickled", False)
            handles.clear()
            handles["pid"] = pid
            handles["moved"] = moved
        if name not in handles:
            handles[name] = self._open_in_process(name, opener, handles["moved"])
        return handles[name]

    def _open_in_process(self, name: str, opener: Callable[[], Any], moved: bool) -> Any:
        return opener()

    def _own_handles(self) -> dict:
        """The handles this process opened (not those a fork inherited)."""
        handles = self.__dict__.get("_handles", {})
        if handles.get("pid") != os.getpid():
            return {}
        return {k: v for k, v in handles.items() if k not in ("pid", "moved")}

    def __getstate__(self) -> dict:
        state = {k: v for k, v in self.__dict__.items() if k != "_handles"}
        state["_pickled"] = True
        return state

    def __iter__(self) -> Iterator[StoredRecord]:
        return self.iter_range(0, len(self))

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
