"""HDF5 stores for Caffe's HDF5Data layer: float32 ``data`` (N x C x H x W) plus label datasets.

Rows stream into chunked, resizable datasets, so memory does not grow with N. HDF5Data
reads a whole file into memory and a blob holds at most INT_MAX elements, so large outputs
are split into shards ``NAME_000.h5, NAME_001.h5, ...``, all named in ``NAME_h5.txt``.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Sequence

import numpy as np

from ..errors import DataprepError, StoreError, UsageError
from ..images import describe_shape
from ..listfile import write_list
from ..records import Record
from ..staging import Staging, exists, refuse_existing, remove
from .base import (
    CHECKSUM,
    RecordCheck,
    StoredRecord,
    StoreReader,
    StoreWriter,
    build_manifest,
    check_space,
    checksum,
    dump_manifest,
    mismatch,
    shards_of,
    write_error,
)
from .means import resolve_mean

INT_MAX = 2**31 - 1
COMPRESSIONS = {"none": None, "gzip": "gzip"}  # only filters plain libhdf5 (and so Caffe) reads
LIBVER = ("v108", "v108")  # readable by the HDF5 1.8/1.10 that Caffe builds link
CHUNK_BYTES = 4 << 20  # h5py writes large chunks much faster than 1 MiB ones (performance.md)
BUFFER_BYTES = 8 << 20
_SIZE = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*$", re.IGNORECASE)


def parse_shard_size(text: str) -> tuple[int | None, int | None]:
    """``"10000"`` -> (rows, None); ``"1GB"`` / ``"500MiB"`` -> (None, bytes)."""
    if text.strip().isdigit():
        rows = int(text)
        if rows < 1:
            raise UsageError("--shard-size must be at least 1 image")
        return rows, None
    match = _SIZE.match(text)
    if not match or not match.group(2) and not text.strip().upper().endswith("B"):
        raise UsageError(f"--shard-size {text!r}: give images per file (10000) or a size (1GB)")
    factor = 1024 ** " KMGT".index(match.group(2).upper() or " ")
    return None, max(1, int(float(match.group(1)) * factor))


def parse_label_names(text: str) -> list[str]:
    """``"freq"`` or ``"fx, fy"``: comma-separated HDF5 dataset names, spaces trimmed."""
    names = [n.strip() for n in text.split(",")]
    if not all(names):
        raise UsageError(f"--label-names {text!r}: give one name, or comma-separated names")
    if len(set(names)) != len(names) or "data" in names:
        raise UsageError(f"--label-names {text!r}: names must differ from each other and from 'data'")
    return names


@dataclass(frozen=True)
class Hdf5Options:
    """The HDF5 output options (``hdf5``, ``noise --to hdf5``), parsed once for both."""

    label_names: list[str] | None = None  # None: the command's default
    mean: np.ndarray | None = None
    mean_given: str | None = None  # --mean's text or --mean-file's path, for the manifest
    scale: float = 1.0
    shard_rows: int | None = None
    shard_bytes: int | None = None
    compression: str | None = None
    relative: bool = False

    @classmethod
    def parse(
        cls,
        label_names: str | None = None,
        mean: str | None = None,
        mean_file: str | None = None,
        scale: float = 1.0,
        shard_size: str | None = None,
        compression: str = "none",
        relative: bool = False,
    ) -> "Hdf5Options":
        """Options as the command line gives them (text) to values; UsageError on bad ones."""
        if compression not in COMPRESSIONS:
            raise UsageError(f"--compression {compression!r}: choose from {', '.join(COMPRESSIONS)}")
        rows, nbytes = parse_shard_size(shard_size) if shard_size else (None, None)
        return cls(
            parse_label_names(label_names) if label_names else None,
            resolve_mean(mean, mean_file),
            mean if mean is not None else mean_file,
            scale,
            rows,
            nbytes,
            COMPRESSIONS[compression],
            relative,
        )

    def writer_options(self, default_labels: Sequence[str]) -> dict:
        """Keyword arguments of ``Hdf5Writer``."""
        return dict(
            label_names=self.label_names or list(default_labels),
            mean=self.mean,
            scale=self.scale,
            shard_rows=self.shard_rows,
            shard_bytes=self.shard_bytes,
            compression=self.compression,
            relative=self.relative,
        )

    def manifest(self) -> dict:
        """The preprocessing these options bake into the data."""
        return {"mean": self.mean_given, "scale": self.scale}


def mean_array(values: Sequence[float] | np.ndarray | None) -> np.ndarray | None:
    """A mean broadcastable to C x H x W: scalar, per channel (C,), or a C x H x W image."""
    if values is None:
        return None
    mean = np.asarray(values, dtype=np.float32)
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim == 1:
        mean = mean.reshape(-1, 1, 1)
    return mean


class Hdf5Payload(NamedTuple):
    pixels: np.ndarray  # C x H x W uint8 (float32 when converting an HDF5 store)
    labels: np.ndarray  # float32

    def __reduce__(self):
        # As raw bytes: pickling two small arrays the NumPy way costs several times more per
        # record in the workers (docs/performance.md).
        pixels = self.pixels
        return _payload, (pixels.tobytes(), pixels.shape, pixels.dtype.str, self.labels.tobytes())


def _payload(pixels: bytes, shape: tuple[int, ...], dtype: str, labels: bytes) -> Hdf5Payload:
    """An unpickled payload: read-only views of the received bytes."""
    return Hdf5Payload(np.frombuffer(pixels, dtype).reshape(shape), np.frombuffer(labels, np.float32))


@dataclass(frozen=True)
class ArrayEncoder:
    """Record -> C x H x W uint8 pixels and float32 labels; runs in workers.

    The float conversion, ``(pixel - mean) * scale``, happens in the writer on whole
    buffers: shipping uint8 from the workers moves a quarter of the bytes.
    """

    def __call__(self, record: Record) -> Hdf5Payload:
        pixels = np.ascontiguousarray(record.image.transpose(2, 0, 1))
        return Hdf5Payload(pixels, np.asarray(record.labels, dtype=np.float32))


def _broadcasts(small: tuple[int, ...], shape: tuple[int, ...]) -> bool:
    try:
        return np.broadcast_shapes(small, shape) == shape
    except ValueError:
        return False


def _chw(shape: tuple[int, ...]) -> str:
    """A mean's shape in words: a C x H x W image, or values per channel."""
    if len(shape) == 3 and shape[1:] != (1, 1):
        return describe_shape(shape, "CHW")
    return f"{shape[0]} value(s) per channel" if shape else "one value"


def shard_name(path: Path, index: int) -> Path:
    return path.with_name(f"{path.stem}_{index:03d}{path.suffix}")


def default_list_path(path: Path) -> Path:
    """``train.h5`` -> ``train_h5.txt``, the file an HDF5Data layer's ``source`` names."""
    return path.with_name(f"{path.stem}_h5.txt")


class _Shard:
    """One HDF5 file being filled through a row buffer; mean and scale applied per buffer."""

    def __init__(
        self,
        tmp: Path,
        shape: tuple[int, ...],
        label_shapes: dict[str, tuple[int, ...]],
        rows: int,
        compression: str | None,
        mean: np.ndarray | None,
        scale: float,
        dtype: str = "float32",
    ) -> None:
        import h5py

        self.tmp = tmp
        self.file = h5py.File(tmp, "w", libver=LIBVER)
        row_bytes = int(np.prod(shape)) * np.dtype(dtype).itemsize
        chunk = max(1, min(rows, CHUNK_BYTES // row_bytes))
        self.buffer_rows = max(chunk, BUFFER_BYTES // row_bytes)
        opts = dict(dtype="f4", compression=compression, track_times=False)
        self.data = self.file.create_dataset(
            "data", (0, *shape), maxshape=(None, *shape), chunks=(chunk, *shape), **{**opts, "dtype": dtype}
        )
        self.labels = {
            name: self.file.create_dataset(
                name, (0, *s), maxshape=(None, *s), chunks=(max(1, min(rows, 4096)), *s), **opts
            )
            for name, s in label_shapes.items()
        }
        self.mean, self.scale = mean, np.float32(scale)
        self.buffer = np.empty((self.buffer_rows, *shape), dtype)
        self.label_buffer = {n: np.empty((self.buffer_rows, *s), np.float32) for n, s in label_shapes.items()}
        self.label_rows: list[bytes] = []
        self.filled = 0
        self.count = 0
        self.keys: list[str] = []
        self.key_chars = 0  # summed as keys come: the space check runs at every flush
        self.checksums: list[str] = []

    def add(self, key: str, payload: Hdf5Payload, columns: Callable[[np.ndarray], dict]) -> None:
        self.buffer[self.filled] = payload.pixels
        for name, value in columns(payload.labels).items():
            self.label_buffer[name][self.filled] = value
        self.label_rows.append(payload.labels.tobytes())
        self.filled += 1
        self.count += 1
        self.keys.append(key)
        self.key_chars += len(key)
        if self.filled == self.buffer_rows:
            self.flush()

    def flush(self) -> None:
        if not self.filled:
            return
        rows = self.buffer[: self.filled]
        if self.mean is not None:
            rows -= self.mean
        if self.scale != 1:
            rows *= self.scale
        self.checksums.extend(checksum(row, labels) for row, labels in zip(rows, self.label_rows))
        self.label_rows.clear()
        # HDF5 crashes the process (SIGSEGV) while closing a file whose write failed for
        # want of space: the space is checked first, with room for the keys and sums
        start, chunk = self.data.shape[0], self.data.chunks[0]
        new_chunks = -(-(start + self.filled) // chunk) - -(-start // chunk)  # each allocated whole
        labels = sum(b[0].nbytes for b in self.label_buffer.values())
        need = new_chunks * chunk * self.buffer[0].nbytes + self.filled * labels
        keys = self.key_chars + 8 * self.count  # the keys and sums written at close
        check_space(self.tmp, need + keys + (64 << 10))  # and HDF5's own headers
        start = self.data.shape[0]
        for ds, buf in [
            (self.data, self.buffer),
            *((self.labels[n], b) for n, b in self.label_buffer.items()),
        ]:
            ds.resize(start + self.filled, axis=0)
            ds.write_direct(buf, np.s_[: self.filled], np.s_[start:])
        self.filled = 0

    def close(self) -> None:
        import h5py

        self.flush()
        try:
            for key in self.keys:
                key.encode()
            keys = np.array(self.keys, dtype=h5py.string_dtype())
        except UnicodeEncodeError:  # file names that are not UTF-8: their bytes, as they are
            keys = np.array([os.fsencode(k) for k in self.keys], dtype=h5py.string_dtype("ascii"))
        self.file.attrs["dataprep_keys"] = keys
        self.file.attrs["dataprep_checksums"] = np.array([int(c, 16) for c in self.checksums], np.uint32)
        self.file.close()


class Hdf5Writer(StoreWriter):
    """Writes ``NAME.h5`` (or shards) and ``NAME_h5.txt`` listing them, for HDF5Data layers."""

    requires_uniform_shape = True

    def __init__(
        self,
        path: str | Path,
        *,
        list_path: str | Path | None = None,
        overwrite: bool = False,
        label_names: Sequence[str] = ("label",),
        shard_rows: int | None = None,
        shard_bytes: int | None = None,
        compression: str | None = None,
        relative: bool = False,
        mean: np.ndarray | None = None,
        scale: float = 1.0,
        expected: int | None = None,
        meta: dict | None = None,
        dtype: str = "float32",
    ) -> None:
        self.path = Path(path)
        if dtype == "uint8" and (mean is not None or scale != 1):
            raise UsageError("uint8 HDF5 data holds pixels as they are: no mean or scale")
        self.dtype = dtype  # uint8: pixels as they are (convert of a pixel store)
        self.list_path = Path(list_path) if list_path else default_list_path(self.path)
        if compression not in COMPRESSIONS.values():
            raise UsageError(f"unknown compression {compression!r}; choose gzip or none")
        self.label_names = list(label_names)
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self.compression = compression
        self.relative = relative
        self.expected = expected
        self.meta = dict(meta or {})
        self.overwrite = overwrite
        self._encoder = ArrayEncoder()
        self.mean, self.scale = mean_array(mean), scale
        self._old = self._existing_outputs()
        for old in self._old:
            refuse_existing(old, overwrite)
        refuse_existing(self.list_path, overwrite)
        self._staging = Staging(overwrite=True)  # shards are named as they fill
        if not overwrite:  # the list, written last, stands for the whole set
            self._staging.claim(self.list_path)
        self._shards: list[tuple[Path, _Shard]] = []
        self._rows_per_shard = 0
        self._numbered = False
        self._layout: dict[str, tuple[int, ...]] | None = None
        self._shape: tuple[int, ...] | None = None

    def _existing_outputs(self) -> list[Path]:
        shards = shards_of(self.path, re.escape(self.path.stem) + r"_\d{3,}" + re.escape(self.path.suffix))
        return [p for p in [self.path, *shards] if exists(p)]

    def encoder(self) -> Callable[[Record], Hdf5Payload]:
        return self._encoder

    def _columns(self, labels: np.ndarray) -> dict[str, np.ndarray]:
        if len(self.label_names) == 1:
            value = labels[0] if labels.shape[0] == 1 else labels
            return {self.label_names[0]: value}
        return {name: labels[i] for i, name in enumerate(self.label_names)}

    def _plan(self, payload: Hdf5Payload) -> None:
        self._shape = payload.pixels.shape
        if self.mean is not None and not _broadcasts(self.mean.shape, self._shape):
            images = describe_shape(self._shape, "CHW")
            raise DataprepError(f"the mean ({_chw(self.mean.shape)}) does not fit images of {images}")
        k = payload.labels.shape[0]
        if k == 0:
            self.label_names = []
        elif len(self.label_names) not in (1, k):
            raise DataprepError(
                f"{len(self.label_names)} label names ({','.join(self.label_names)}) for {k} label columns"
            )
        self._layout = {name: np.shape(v) for name, v in self._columns(payload.labels).items()} if k else {}
        elements = int(np.prod(self._shape))
        limits = [INT_MAX // elements]
        if self.shard_rows:
            limits.append(self.shard_rows)
        if self.shard_bytes:
            limits.append(max(1, self.shard_bytes // (elements * np.dtype(self.dtype).itemsize)))
        self._rows_per_shard = min(limits)
        self._numbered = bool(self.shard_rows or self.shard_bytes) or (
            self.expected is not None and self.expected > self._rows_per_shard
        )

    def _open_shard(self) -> _Shard:
        index = len(self._shards)
        if index and not self._numbered:
            raise DataprepError("more rows than one HDF5 file can hold; pass --shard-size")
        dest = shard_name(self.path, index) if self._numbered else self.path
        shard = _Shard(
            self._staging.path(dest),
            self._shape,
            self._layout,
            min(
                self._rows_per_shard, self.expected or self._rows_per_shard
            ),  # chunks no larger than the data
            self.compression,
            self.mean,
            self.scale,
            self.dtype,
        )
        self._shards.append((dest, shard))
        return shard

    def put(self, index: int, key: str, payload: Hdf5Payload) -> None:
        try:
            self._put(key, payload)
        except OSError as exc:  # a full disk: the records written so far, and the store's name
            raise write_error(self.path, exc, self._written()) from None

    def flush(self) -> None:
        if self._shards:
            try:
                self._shards[-1][1].flush()
            except OSError as exc:
                raise write_error(self.path, exc, self._written()) from None

    def _written(self) -> int:
        return sum(s.count - s.filled for _, s in self._shards)

    def _put(self, key: str, payload: Hdf5Payload) -> None:
        if self._shape is None:
            self._plan(payload)
        elif payload.pixels.shape != self._shape:
            raise DataprepError(
                f"{key}: {describe_shape(payload.pixels.shape, 'CHW')}, but the first "
                f"record is {describe_shape(self._shape, 'CHW')}"
            )
        shard = self._shards[-1][1] if self._shards else None
        if shard is None or shard.count == self._rows_per_shard:
            if shard is not None:
                shard.close()
            shard = self._open_shard()
        shard.add(key, payload, self._columns)

    def close(self) -> list[Path]:
        import h5py

        if not self._shards:
            raise DataprepError(f"{self.path}: no records to write")
        try:
            self._shards[-1][1].close()
        except OSError as exc:
            raise write_error(self.path, exc, self._written()) from None
        total = sum(s.count for _, s in self._shards)
        offset = 0
        for i, (_, shard) in enumerate(self._shards):
            meta = {**self.meta, "labels": {**self.meta.get("labels", {}), "names": self.label_names}}
            manifest = build_manifest(
                "hdf5",
                total,
                list(self._shape),
                self.dtype,
                meta,
                shard=i,
                shards=len(self._shards),
                shard_count=shard.count,
                offset=offset,
            )
            with h5py.File(shard.tmp, "r+") as f:
                f.attrs["dataprep"] = dump_manifest(manifest)
            offset += shard.count
        outputs = [dest for dest, _ in self._shards]
        write_list(self._staging.path(self.list_path), [self._listed(p) for p in outputs])
        self._staging.commit()
        for stale in self._old:
            if stale not in outputs:
                remove(stale)
        return [*outputs, self.list_path]

    def _listed(self, path: Path) -> str:
        if self.relative:
            return Path(os.path.relpath(path, self.list_path.parent)).as_posix()
        return str(path.absolute())

    def abort(self) -> None:
        for _, shard in self._shards:
            try:
                shard.file.close()
            except Exception:  # already closed: removal below is what matters
                pass
        self._staging.abort()


def _row_intact(row: np.ndarray, labels, stored_sum) -> bool:
    """Whether a row and its labels (as float32) still give the CRC-32 the file recorded."""
    return int(checksum(row, np.asarray(labels, np.float32).tobytes()), 16) == int(stored_sum)


def h5_list_problems(path: Path) -> list[str]:
    """What keeps an ``_h5.txt`` list's files from opening: missing, unreadable (truncated,
    corrupt) or with datasets of different lengths; one line each."""
    import h5py

    problems = []
    for file in read_h5_list(path):
        if not file.is_file():
            problems.append(f"{file}: listed in {Path(path).name} but missing")
            continue
        try:
            with h5py.File(file, "r") as f:
                lengths = {name: len(f[name]) for name in f}
        except OSError as exc:
            problems.append(f"{file}: cannot be read (truncated or corrupt): {exc}")
            continue
        if len(set(lengths.values())) > 1:
            problems.append(f"{file}: datasets of different lengths: {lengths}")
    return problems


def read_h5_list(path: Path) -> list[Path]:
    """The HDF5 files an ``_h5.txt`` names; relative entries resolve against its folder, else cwd."""
    folder = Path(path).parent
    files = []
    for token in Path(path).read_text().split():
        p = Path(token)
        files.append(p if p.is_absolute() or not (folder / p).exists() else folder / p)
    return files


class Hdf5Reader(StoreReader):
    """Reads one HDF5 file or every file of an ``_h5.txt`` list as one sequence of records."""

    kind = "hdf5"

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.paths = read_h5_list(self.path) if self.path.suffix == ".txt" else [self.path]
        if not self.paths:
            raise StoreError(f"{self.path}: lists no HDF5 files")
        raw = self.files[0].attrs.get("dataprep")
        self.manifest = json.loads(raw) if raw is not None else None
        names = (self.manifest or {}).get("labels", {}).get("names")
        self.label_names = names if names is not None else sorted(k for k in self.files[0] if k != "data")
        self.counts = [f["data"].shape[0] for f in self.files]
        self._keys: list[str] | None = None
        self.offsets = np.cumsum([0, *self.counts])
        self.lined_up_by = "path" if all("dataprep_keys" in f.attrs for f in self.files) else "position"

    @property
    def files(self) -> list:
        """This process's open files, in list order."""
        return self._handle("files", self._open_files)

    def _open_files(self) -> list:
        import h5py

        files = []
        for p in self.paths:
            try:
                files.append(h5py.File(p, "r"))
            except OSError as exc:
                for f in files:
                    f.close()
                raise StoreError(f"{p}: cannot open HDF5 file: {exc}") from None
        return files

    def _datasets(self) -> list[tuple]:
        """Per file, this process's data and label datasets and the rows' CRC-32s (None
        where the store records none), looked up once: a lookup by name costs as much as
        reading a row, and a shuffling loader reads a row at a time (the tutorial net's
        batch of 50 random rows: 25.8 -> 5.4 ms)."""
        return self._handle("datasets", self._open_datasets)

    def _open_datasets(self) -> list[tuple]:
        checked = (self.manifest or {}).get("checksum") == CHECKSUM
        sums = [f.attrs.get("dataprep_checksums") if checked else None for f in self.files]
        return [(f["data"], [f[n] for n in self.label_names], s) for f, s in zip(self.files, sums)]

    def unfinished(self) -> bool:
        return self.manifest is None and "dataprep_keys" in self.files[0].attrs

    def structure_problems(self) -> list[str]:
        problems = []
        for f in self.files:
            raw = f.attrs.get("dataprep")
            shard = json.loads(raw) if raw is not None else None
            if shard is not None and shard.get("shard_count") != len(f["data"]):
                problems.append(
                    f"{f.filename}: {len(f['data'])} rows, its manifest says {shard.get('shard_count')}"
                )
        return problems

    def checked_records(self) -> Iterator[RecordCheck]:
        """Every row with its data and label bytes checked against the file's CRC-32s."""
        for i, rec in enumerate(self.iter_range(0, len(self), check=False)):
            file_index = int(np.searchsorted(self.offsets, i, side="right") - 1)
            local = i - int(self.offsets[file_index])
            sums = self._datasets()[file_index][2]
            ok = (
                _row_intact(rec.array, rec.labels, sums[local])
                if sums is not None and local < len(sums)
                else None
            )
            yield RecordCheck(rec.key, rec.array, rec.labels, None, ok)

    def __len__(self) -> int:
        return int(self.offsets[-1])

    def all_labels(self) -> np.ndarray:
        columns = [
            np.concatenate([f[name][:].reshape(len(f[name]), -1) for f in self.files])
            for name in self.label_names
        ]
        return np.concatenate(columns, axis=1).astype(np.float64) if columns else np.empty((len(self), 0))

    def files_on_disk(self) -> list[Path]:
        return [Path(f.filename) for f in self.files] + ([self.path] if self.path.suffix == ".txt" else [])

    def keys(self) -> list[str]:
        """Keys the writer stored; row numbers for files written by other tools."""
        return list(self._all_keys())

    def _all_keys(self) -> list[str]:
        """The keys, read once: ``iter_range`` needs them for every range, and a training
        loader asks for many ranges."""
        if self._keys is None:
            keys: list[str] = []
            for f, n in zip(self.files, self.counts):
                stored = f.attrs.get("dataprep_keys")
                if stored is None or len(stored) != n:
                    stored = [str(len(keys) + i) for i in range(n)]
                keys.extend(os.fsdecode(k) if isinstance(k, bytes) else str(k) for k in stored)
            self._keys = keys
        return self._keys

    def iter_range(
        self, start: int, stop: int, check: bool = True, block: int = 256
    ) -> Iterator[StoredRecord]:
        keys = self._all_keys()
        stop = min(stop, len(self))
        for fi, (rows, columns, stored) in enumerate(self._datasets()):
            lo, hi = max(start, self.offsets[fi]), min(stop, self.offsets[fi + 1])
            sums = stored if check else None
            for b in range(lo, hi, block):
                e = min(b + block, hi)
                local = slice(int(b - self.offsets[fi]), int(e - self.offsets[fi]))
                data = rows[local]
                labels = [column[local].reshape(e - b, -1) for column in columns]
                for j in range(e - b):
                    row_labels = np.concatenate([column[j] for column in labels]) if labels else np.empty(0)
                    local_row = local.start + j
                    if sums is not None and local_row < len(sums):
                        if not _row_intact(data[j], row_labels, sums[local_row]):
                            raise mismatch(self.path, keys[b + j])
                    yield StoredRecord(keys[b + j], data[j], row_labels.astype(np.float64))

    def close(self) -> None:
        for f in self._own_handles().get("files", []):
            f.close()
        self.__dict__.pop("_handles", None)
