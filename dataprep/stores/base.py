"""The store interface: one writer and one reader contract shared by HDF5, LMDB and LevelDB.

Writers build at a temporary path and move into place on ``close()``; the manifest, a JSON
document with the record count, shapes, label layout, preprocessing and a checksum per
record, is written last as the completion marker.
"""

from __future__ import annotations

import json
import zlib
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, Callable, Iterator

import numpy as np

from ..records import Record

FORMAT_VERSION = 1
MANIFEST_NAME = "dataprep.json"
CHECKSUM = "crc32"


def checksum(*buffers: bytes | memoryview) -> str:
    """The per-record checksum the manifests hold: CRC-32 as 8 hex digits.

    It detects truncation, bit rot and edited records; a cryptographic hash ran several
    times slower and became a visible share of conversion time (docs/performance.md).
    """
    crc = 0
    for buf in buffers:
        crc = zlib.crc32(buf, crc)
    return f"{crc:08x}"


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

    outputs: list[Path] = []
    requires_uniform_shape = False  # HDF5 needs one shape; Datum stores only with --check-size

    @abstractmethod
    def encoder(self) -> Callable[[Record], Any]: ...

    @abstractmethod
    def put(self, index: int, key: str, payload: Any) -> None: ...

    @abstractmethod
    def close(self) -> list[Path]:
        """Finish, write the manifest, move into place; returns the outputs."""

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


@dataclass
class StoredRecord:
    """A record read back: its key, the C x H x W array and the labels (1-D float array)."""

    key: str
    array: np.ndarray
    labels: np.ndarray


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
    """Random and range access to a store's records, in key (training) order."""

    kind: str
    path: Path
    manifest: dict | None
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
    def iter_range(self, start: int, stop: int) -> Iterator[StoredRecord]:
        """Records ``start..stop-1`` in order: workers split a store by index ranges."""

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
        return next(self.iter_range(index, index + 1))

    def __iter__(self) -> Iterator[StoredRecord]:
        return self.iter_range(0, len(self))

    def close(self) -> None:
        """Release file handles."""

    def __enter__(self) -> "StoreReader":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
