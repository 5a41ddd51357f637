"""Datum stores (LMDB or LevelDB): records keyed ``%08d_<path>``, as Caffe's convert_imageset.

Float or multi-column labels cannot live in ``Datum.label`` (one int32); they go to a
companion store with the same keys whose Datums carry the labels in ``float_data``.
The manifest sits in a sidecar file inside each store's folder, never as a key.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, NamedTuple

import numpy as np
from google.protobuf.message import DecodeError

from ..errors import DataprepError, RecordError, StoreError, UsageError
from ..images import decode, encode
from ..records import Record
from ..staging import Staging
from .base import (
    CHECKSUM,
    MANIFEST_NAME,
    RecordCheck,
    StoredRecord,
    StoreReader,
    StoreWriter,
    build_manifest,
    checksum,
    dump_manifest,
    mismatch,
    write_error,
)
from .caffe_pb import datum_encoded, datum_floats, datum_raw, parse_datum
from .leveldb_kv import LevelDbReadKV, LevelDbWriteKV
from .lmdb_kv import LmdbReadKV, LmdbWriteKV

BACKENDS = {
    "lmdb": (LmdbWriteKV, LmdbReadKV),
    "leveldb": (LevelDbWriteKV, LevelDbReadKV),
}
INT32 = (-(2**31), 2**31 - 1)
COMMIT_EVERY = 1000  # records, as convert_imageset; or sooner, at COMMIT_BYTES
COMMIT_BYTES = 16 << 20  # small commits spread the writing evenly between the chunks


def datum_key(index: int, key: str) -> bytes:
    """``format_int(index, 8) + "_" + path``: key order is list order."""
    return os.fsencode(f"{index:08d}_{key}")  # a file name's bytes, UTF-8 or not


def check_datum_labels(label_count: int, integer: bool, labels_db: bool, source: str) -> None:
    """Refuse labels a Datum cannot hold unless a float_data labels store is asked for."""
    if labels_db or label_count == 0 or (label_count == 1 and integer):
        return
    what = f"{label_count} labels" if label_count > 1 else "a float label"
    raise DataprepError(
        f"{source} has {what} per line, but a Datum label is one int32: pass --labels-db PATH "
        "to store the labels as float_data in a companion store, or use `dataprep hdf5`"
    )


class DatumPayload(NamedTuple):
    value: bytes
    labels_value: bytes | None
    shape: tuple[int, ...]
    checksum: str


@dataclass(frozen=True)
class DatumEncoder:
    """Record -> serialized Datum (and labels Datum); runs in worker processes."""

    encoded: bool = False
    encode_type: str | None = None
    labels_db: bool = False

    def _label(self, record: Record) -> int:
        labels = record.labels
        if len(labels) == 1 and isinstance(labels[0], int):
            if not INT32[0] <= labels[0] <= INT32[1]:
                raise DataprepError(f"{record.origin or record.key}: label {labels[0]} overflows int32")
            return labels[0]
        return 0

    def _data(self, record: Record) -> bytes:
        if self.encode_type is None and record.data is not None:
            return record.data  # the original file, untouched: no re-encoding loss
        fmt = self.encode_type or ("jpg" if record.key.lower().endswith((".jpg", ".jpeg")) else "png")
        return encode(record.image, fmt)

    def __call__(self, record: Record) -> DatumPayload:
        label = self._label(record)
        if self.encoded:
            value = datum_encoded(self._data(record), label)
        else:
            value = datum_raw(record.image, label)
        labels_value = datum_floats(record.labels, label) if self.labels_db else None
        hw_c = record.image.shape
        return DatumPayload(value, labels_value, (hw_c[2], hw_c[0], hw_c[1]), checksum(value))


def feature_payload(array: np.ndarray, label: int = 0) -> DatumPayload:
    """A C x H x W float array (a layer's output for one input) as a float_data Datum."""
    value = datum_floats(array, label, array.shape)
    return DatumPayload(value, None, tuple(array.shape), checksum(value))


class DatumWriter(StoreWriter):
    """Writes a new LMDB or LevelDB Datum store (and its labels store) at temporary paths."""

    def __init__(
        self,
        path: str | Path,
        *,
        backend: str = "lmdb",
        overwrite: bool = False,
        labels_path: str | Path | None = None,
        encoded: bool = False,
        encode_type: str | None = None,
        meta: dict | None = None,
        dtype: str = "uint8",
        plain_keys: bool = False,
    ) -> None:
        if backend not in BACKENDS:
            raise UsageError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
        self.backend = backend
        self.path = Path(path)
        self.labels_path = Path(labels_path) if labels_path is not None else None
        self.meta = dict(meta or {})
        self.dtype = dtype  # float32 for features (extract)
        self.plain_keys = plain_keys  # the record keys as they are (%05d: convert_cifar_data's)
        self._encoder = DatumEncoder(encoded, encode_type, self.labels_path is not None)
        self._staging = Staging(overwrite)
        make_kv = BACKENDS[backend][0]
        try:
            tmp = self._staging.path(self.path)
            self._kv = make_kv(tmp)
            self._labels_kv = self._labels_tmp = None
            if self.labels_path is not None:
                self._labels_tmp = self._staging.path(self.labels_path)
                self._labels_kv = make_kv(self._labels_tmp)
        except BaseException:
            self._staging.abort()
            raise
        self._tmp = tmp
        self._batch: list[tuple[bytes, bytes]] = []
        self._batch_bytes = 0
        self._labels_batch: list[tuple[bytes, bytes]] = []
        self._checksums: list[str] = []
        self._label_checksums: list[str] = []
        self._shapes: set[tuple[int, ...]] = set()
        self._label_width: int | None = None

    def encoder(self) -> Callable[[Record], DatumPayload]:
        return self._encoder

    def put(self, index: int, key: str, payload: DatumPayload) -> None:
        k = key.encode() if self.plain_keys else datum_key(index, key)
        self._batch.append((k, payload.value))
        self._checksums.append(payload.checksum)
        self._shapes.add(payload.shape)
        if payload.labels_value is not None:
            self._labels_batch.append((k, payload.labels_value))
            self._label_checksums.append(checksum(payload.labels_value))
            if self._label_width is None:
                self._label_width = parse_datum(payload.labels_value).channels
        self._batch_bytes += len(payload.value)
        if len(self._batch) >= COMMIT_EVERY or self._batch_bytes >= COMMIT_BYTES:
            self.flush()

    def flush(self) -> None:
        try:
            if self._batch:
                self._kv.write_batch(self._batch)
                self._batch, self._batch_bytes = [], 0
            if self._labels_batch and self._labels_kv is not None:
                self._labels_kv.write_batch(self._labels_batch)
                self._labels_batch = []
        except OSError as exc:  # a full disk, found before LMDB touches an unbacked page
            raise write_error(self.path, exc, len(self._checksums) - len(self._batch)) from None

    def _manifest(self, count: int, shape: Any, dtype: str, checksums: list[str], **extra) -> dict:
        manifest = build_manifest(self.backend, count, shape, dtype, self.meta, **extra)
        return {**manifest, "checksums": checksums}

    def close(self) -> list[Path]:
        self.flush()
        self._kv.close()
        count = len(self._checksums)
        shape = list(next(iter(self._shapes))) if len(self._shapes) == 1 else None
        labels_layout = dict(self.meta.get("labels", {}))
        if self.labels_path is not None:
            labels_layout["db"] = self.labels_path.name
        main = self._manifest(
            count,
            shape,
            self.dtype,
            self._checksums,
            encoded=self._encoder.encoded,
            role="data",
            labels=labels_layout,
        )
        (self._tmp / MANIFEST_NAME).write_text(dump_manifest(main))
        outputs = [self.path]
        if self._labels_kv is not None:
            self._labels_kv.close()
            side = self._manifest(
                count,
                [self._label_width, 1, 1],
                "float32",
                self._label_checksums,
                encoded=False,
                role="labels",
                labels_of=self.path.name,
                labels=labels_layout,
            )
            (self._labels_tmp / MANIFEST_NAME).write_text(dump_manifest(side))
            outputs.append(self.labels_path)
        self._staging.commit()
        return outputs

    def abort(self) -> None:
        for kv in (self._kv, self._labels_kv):
            try:
                if kv is not None:
                    kv.close()
            except Exception:  # already closed or broken: removal below is what matters
                pass
        self._staging.abort()


def read_manifest(folder: Path) -> dict | None:
    """The sidecar manifest of a Datum store, or None for stores written by other tools."""
    path = Path(folder) / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise StoreError(f"{path}: unreadable manifest: {exc}") from None


def datum_array(datum, gray: bool = False) -> np.ndarray:
    """The C x H x W array a Datum holds: raw pixels, float_data, or encoded bytes decoded as
    Caffe's data layer does (3-channel BGR, or 1 channel with ``gray``)."""
    if datum.encoded:
        try:
            image = decode(datum.data, "gray" if gray else "color")
        except ValueError:
            raise StoreError("encoded Datum holds undecodable image bytes") from None
        return image.transpose(2, 0, 1)  # a view: consumers that sum or copy need no extra pass
    data = datum.data  # each read of a bytes field copies it out of the message
    if data:
        return np.frombuffer(data, np.uint8).reshape(datum.channels, datum.height, datum.width)
    return np.asarray(datum.float_data, np.float32).reshape(datum.channels, datum.height, datum.width)


class DatumReader(StoreReader):
    """Reads an LMDB or LevelDB Datum store; labels come from its labels store when it has one."""

    lined_up_by = "datum_key"

    def __init__(self, path: str | Path, backend: str = "lmdb") -> None:
        self.kind = backend
        self.path = Path(path)
        self.manifest = read_manifest(self.path)
        self._open_kv()  # now: a missing or broken store is an error here, not later
        self._keys: list[bytes] | None = None
        self._labels: DatumReader | None = None
        self.gray = bool(((self.manifest or {}).get("preprocessing") or {}).get("gray"))
        db = ((self.manifest or {}).get("labels") or {}).get("db")
        if db and (self.manifest or {}).get("role") != "labels":
            self._labels = DatumReader(self.path.parent / db, backend)

    def _open_kv(self):
        return self._handle("kv", lambda: BACKENDS[self.kind][1](self.path))

    @property
    def _kv(self):
        return self._open_kv()

    def _open_in_process(self, name, opener, moved):
        try:
            return opener()
        except StoreError as exc:
            if moved and self.kind == "leveldb":  # LevelDB locks a database to one process
                raise StoreError(
                    f"{self.path}: LevelDB admits one process per database, and another process "
                    "has it open: read it from one process (DataLoader num_workers=0), or convert "
                    "it to LMDB"
                ) from None
            raise exc

    def __len__(self) -> int:
        return len(self._kv) if self._keys is None else len(self._keys)

    def raw_keys(self) -> list[bytes]:
        if self._keys is None:
            self._keys = self._kv.keys()
        return self._keys

    def keys(self) -> list[str]:
        return [os.fsdecode(k) for k in self.raw_keys()]

    def raw_values(self, start: int, stop: int) -> Iterator[tuple[bytes, bytes | memoryview]]:
        """Serialized ``(key, value)`` pairs ``start..stop-1`` (for checksums and parsing); a
        value may be a view that is valid only until the next pair is asked for."""
        keys = self.raw_keys()
        if start >= stop or start >= len(keys):
            return iter(())
        return self._kv.items_from(keys[start], min(stop, len(keys)) - start)

    def encoded(self) -> bool:
        for key, value in self.raw_values(0, 1):  # parsed while its view is valid
            return bool(self._datum(key, value).encoded)
        return False

    def all_labels(self) -> np.ndarray:
        if self._labels is not None:
            return np.stack([rec.array.ravel() for rec in self._labels]).astype(np.float64)
        return np.array([[self._datum(k, v).label] for k, v in self.raw_values(0, len(self))], np.float64)

    def _datum(self, key: bytes, value: bytes):
        """The record's Datum; RecordError naming the store and key for bytes that are none."""
        try:
            return parse_datum(value)
        except DecodeError as exc:
            raise RecordError(f"{self.path}: record {os.fsdecode(key)}: not a Datum ({exc})") from None

    def files_on_disk(self) -> list[Path]:
        own = super().files_on_disk()
        return own + (self._labels.files_on_disk() if self._labels is not None else [])

    def _sums(self) -> list[str] | None:
        manifest = self.manifest or {}
        return manifest.get("checksums") if manifest.get("checksum") == CHECKSUM else None

    def iter_range(self, start: int, stop: int, check: bool = True) -> Iterator[StoredRecord]:
        labels = self._labels.iter_range(start, stop, check) if self._labels is not None else None
        sums = self._sums() if check else None
        for i, (key, value) in enumerate(self.raw_values(start, stop), start):
            yield self._record(i, key, value, sums, None if labels is None else next(labels))

    def iter_indices(self, indices: list[int], check: bool = True) -> Iterator[tuple[int, StoredRecord]]:
        """The records at sorted ``indices``, each found by its key in one transaction: a
        shuffled batch of LeNet's 64 was 62 ranges, each a transaction and a cursor."""
        keys = self.raw_keys()
        indices = [i for i in indices if i < len(keys)]
        labels = self._labels.iter_indices(indices, check) if self._labels is not None else None
        sums = self._sums() if check else None
        for i, value in zip(indices, self._kv.values_of([keys[i] for i in indices])):
            yield i, self._record(i, keys[i], value, sums, None if labels is None else next(labels)[1])

    def _record(self, i: int, key: bytes, value, sums, labels: StoredRecord | None) -> StoredRecord:
        """Record ``i`` from its serialized Datum, checked against the manifest's checksum;
        its labels from the side store where there is one."""
        if sums is not None and i < len(sums) and checksum(value) != sums[i]:
            raise mismatch(self.path, os.fsdecode(key))
        try:
            datum = parse_datum(value)
            array = datum_array(datum, self.gray)
        except (StoreError, ValueError, DecodeError) as exc:  # no manifest to check it against
            raise RecordError(f"{self.path}: record {os.fsdecode(key)}: {exc}") from None
        label_values = labels.array.ravel() if labels is not None else np.array([datum.label], np.float64)
        return StoredRecord(os.fsdecode(key), array, label_values, datum.data if datum.encoded else None)

    def close(self) -> None:
        for handle in self._own_handles().values():
            handle.close()
        self.__dict__.pop("_handles", None)
        if self._labels is not None:
            self._labels.close()

    def structure_problems(self) -> list[str]:
        if self._labels is not None and len(self._labels) != len(self):
            return [f"{self._labels.path}: {len(self._labels)} label records for {len(self)} records"]
        return []

    def checked_records(self) -> Iterator[RecordCheck]:
        """Every record with its serialized bytes checked against the manifest's CRC-32."""
        sums = self._sums()
        labels = self._labels
        label_records = iter(labels) if labels is not None and len(labels) == len(self) else None
        for i, (raw_key, value) in enumerate(self.raw_values(0, len(self))):
            key = os.fsdecode(raw_key)
            ok = checksum(value) == sums[i] if sums is not None and i < len(sums) else None
            stored_labels = next(label_records).array.ravel() if label_records is not None else None
            try:
                datum = parse_datum(value)
                array = datum_array(datum, self.gray)
            except Exception as exc:  # protobuf DecodeError, bad image bytes, bad dimensions
                yield RecordCheck(key, None, None, f"cannot decode: {exc}", ok)
                continue
            if stored_labels is None:
                stored_labels = np.array([datum.label], np.float64)
            yield RecordCheck(key, array, stored_labels, None, ok)
