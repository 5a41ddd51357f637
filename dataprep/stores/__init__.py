"""Caffe-compatible stores: writers and readers for HDF5, LMDB and LevelDB."""

from __future__ import annotations

import importlib
from functools import partial
from pathlib import Path
from typing import Any, Callable

import numpy as np

from ..errors import StoreError, UsageError
from ..staging import add_inputs
from .base import StoredRecord, StoreReader, StoreWriter

# The backends load when a store of their kind is opened or written, not with this package:
# finding out what a path holds (predict) never pays for protobuf or h5py.
BACKENDS = {
    "hdf5": ("hdf5", "Hdf5"),
    "lmdb": ("datum", "Datum"),
    "leveldb": ("datum", "Datum"),
    "wds": ("wds", "Wds"),
}


def _backend(kind: str, role: str) -> Callable[..., Any]:
    """The ``role`` (Reader or Writer) class of ``kind``'s backend, imported now; Datum
    stores are told which key-value store they live in."""
    module, prefix = BACKENDS[kind]
    found = getattr(importlib.import_module(f".{module}", __name__), prefix + role)
    return partial(found, backend=kind) if module == "datum" else found


def _writer(kind: str) -> Callable[..., StoreWriter]:
    return lambda *args, **kwargs: _backend(kind, "Writer")(*args, **kwargs)


STORES: dict[str, Callable[..., StoreWriter]] = {kind: _writer(kind) for kind in BACKENDS}

__all__ = ["STORES", "StoreReader", "StoreWriter", "StoredRecord", "open_store", "source_kind", "store_kind"]


def store_kind(path: str | Path) -> str:
    """``hdf5``, ``lmdb``, ``leveldb`` or ``wds`` from what is at ``path``."""
    from .wds import prefix_of

    path = Path(path)
    if prefix_of(path) is not None:
        return "wds"
    if path.is_dir():
        if (path / "data.mdb").is_file():
            return "lmdb"
        if (path / "CURRENT").is_file():
            return "leveldb"
        raise StoreError(f"{path}: neither an LMDB nor a LevelDB directory")
    if path.suffix.lower() in (".h5", ".hdf5", ".hdf") and path.is_file():
        return "hdf5"
    if path.suffix == ".txt" and path.is_file():
        tokens = path.read_text().split()
        if tokens and all(t.lower().endswith((".h5", ".hdf5", ".hdf")) for t in tokens):
            return "hdf5"
        raise StoreError(f"{path}: not a list of HDF5 files")
    if not path.exists():
        raise UsageError(f"{path}: no store there")
    raise StoreError(f"{path}: unknown store type")


def source_kind(path: str | Path) -> str:
    """What a path to read records from holds: a store's kind, or ``images`` for a list
    file of ``path label...`` lines (what training and inference also read)."""
    try:
        return store_kind(path)
    except StoreError:
        if not str(path).endswith(".txt"):
            raise
        return "images"


def open_problems(path: str | Path) -> list[str]:
    """What keeps the store at ``path`` from opening whole (for ``verify``): each file of an
    ``_h5.txt`` list that is missing or unreadable. Other stores report through errors."""
    path = Path(path)
    if store_kind(path) == "hdf5" and path.suffix == ".txt":
        from .hdf5 import h5_list_problems

        return h5_list_problems(path)
    return []


def open_store(path: str | Path, transform: Callable[[np.ndarray], Any] | None = None) -> StoreReader:
    """A reader for any store dataprep writes (LMDB or LevelDB folder, .h5 file, _h5.txt
    list, WebDataset shards by their prefix or manifest); also a PyTorch map-style dataset
    whose items are ``(transform(array), labels)``."""
    kind = store_kind(path)
    reader = _backend(kind, "Reader")(path)
    reader.transform = transform
    add_inputs(path, *reader.files_on_disk())  # no output of the running command may replace it
    return reader
