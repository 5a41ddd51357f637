"""The one conversion pipeline: records decoded and encoded in workers, written in order.

``write_store`` serves every store (HDF5, LMDB, LevelDB) and every source (list files,
generated noise); ``list_source`` builds the source every store command reads.
"""

from __future__ import annotations

import contextlib
import itertools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np

from .errors import DataprepError, ImageError, OnError, StoreError, UsageError
from .images import Channels, describe_shape
from .listfile import read_list, shuffle_order
from .parallel import Executor, ordered_map
from .records import ImageListSource, Record, RecordSource, Subset, image_list_source
from .stores.base import StoreWriter

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _EncodeTask:
    """Worker task: load records and run the writer's encoder; bad images become data."""

    source: RecordSource
    encode: Callable[[Record], Any]

    def __call__(self, start: int, stop: int) -> list[tuple[Any, ImageError | None]]:
        out: list[tuple[Any, ImageError | None]] = []
        for i in range(start, stop):
            try:
                record = self.source.record(i)
            except ImageError as exc:
                out.append((None, exc))
                continue
            shape, payload = record.image.shape, self.encode(record)
            out.append(((record.key, record.origin, record.line, shape, payload, record.orientation), None))
        return out


@dataclass(frozen=True)
class ListInput:
    """How a store command reads its list: the folder paths resolve against, channels, an
    exact resize, a seeded shuffle, the size check and the skip policy."""

    root: str | None = None
    channels: Channels = Channels()
    resize: tuple[int, int] | None = None
    check_size: bool = False
    shuffle: bool = False
    skip_bad: bool = False
    seed: int = 0

    def source(self, list_path: str, on_error: OnError | None = None) -> RecordSource:
        """The list's images as a record source (see ``list_source``)."""
        return list_source(
            list_path, self.root, self.channels, self.resize, self.shuffle, self.seed, on_error
        )

    def manifest(self) -> dict:
        """The shuffle a store's manifest records, so ``verify --list`` can redo it."""
        return {"shuffle": self.shuffle, "seed": self.seed if self.shuffle else None}


def list_source(
    list_path: str,
    root: str | None = None,
    channels: Channels = Channels(),
    resize: tuple[int, int] | None = None,
    shuffle: bool = False,
    seed: int = 0,
    on_error: OnError | None = None,
) -> RecordSource:
    """The images of a list file as a record source (channel count resolved from the first
    image in ``auto``), shuffled (seeded) when asked."""
    listfile = read_list(list_path, root=root, on_error=on_error)
    source: RecordSource = image_list_source(listfile, channels, resize)
    if shuffle:
        source = Subset(source, shuffle_order(len(listfile), seed))
    return source


def base_source(source: RecordSource) -> RecordSource:
    """The source behind any subsets (a shuffle, a split)."""
    while isinstance(source, Subset):
        source = source.source
    return source


def image_list_of(source: RecordSource) -> ImageListSource | None:
    """The image list source behind ``source``, or None for generated ones."""
    base = base_source(source)
    return base if isinstance(base, ImageListSource) else None


def store_meta(source: RecordSource, **extra: Any) -> dict:
    """What a store's manifest records besides its records: origin, label layout and the
    preprocessing applied (so raw images can be prepared the same way later). The source
    describes itself (``meta()``); ``extra`` adds what the command applies on top."""
    base = base_source(source)
    meta = (
        base.meta()
        if hasattr(base, "meta")
        else {"source": type(base).__name__, "labels": {}, "preprocessing": {}}
    )
    return {**meta, "preprocessing": {**meta["preprocessing"], **extra}}


@dataclass
class WriteResult:
    outputs: list[Path]
    written: int
    skipped: int


def write_store(
    source: RecordSource,
    writer: StoreWriter,
    executor: Executor,
    on_error: OnError | None = None,
    check_size: bool = False,
    progress: Callable[[int], object] | None = None,
) -> WriteResult:
    """Stream every record of ``source`` through ``writer`` in index order.

    Decode and encode run in the executor's workers; this process only writes, so the store
    is identical for any worker count. A bad image stops the run (nothing is left at the
    destination) or, with a skipping ``on_error``, is logged and counted (list lines
    skipped earlier with the same ``on_error`` included). Sizes must agree when
    ``check_size`` or when the store needs one shape (HDF5).
    """
    on_error = on_error or OnError()
    (result,) = write_stores(source, [(writer, len(source))], executor, on_error, check_size, progress)
    result.skipped = on_error.skipped
    return result


def write_stores(
    source: RecordSource,
    parts: list[tuple[StoreWriter, int]],
    executor: Executor,
    on_error: OnError | None = None,
    check_size: bool = False,
    progress: Callable[[int], object] | None = None,
) -> list[WriteResult]:
    """Like ``write_store``, but the first ``n0`` records go to the first writer, the next
    ``n1`` to the second, and so on: one worker pool serves every split of a dataset.

    The writers must share one encoder. If any part fails, every writer is aborted.
    """
    on_error = on_error or OnError()
    writers = [w for w, _ in parts]
    encoder = writers[0].encoder()
    if any(w.encoder() != encoder for w in writers[1:]):
        raise ValueError("write_stores needs writers with identical encoders")
    bounds = np.cumsum([0, *(n for _, n in parts)]).tolist()
    if bounds[-1] != len(source):
        raise ValueError(f"parts cover {bounds[-1]} records, the source has {len(source)}")
    counts = []
    with contextlib.ExitStack() as stack:
        for writer in writers:
            stack.enter_context(writer)
        records = enumerate(
            ordered_map(_EncodeTask(source, encoder), len(source), executor, progress=progress)
        )
        for k, writer in enumerate(writers):
            part = itertools.islice(records, bounds[k + 1] - bounds[k])
            skipped = on_error.skipped
            uniform = check_size or writer.requires_uniform_shape
            written = _write_part(part, bounds[k], writer, on_error, uniform, _sizes_hint(source))
            counts.append((written, on_error.skipped - skipped))
        for writer in writers:  # every store's data out before the first commits: a full
            writer.flush()  # disk on the last then aborts them all
        _note_orientations(writers)
    return [WriteResult(w.outputs, n, skipped) for w, (n, skipped) in zip(writers, counts)]


def open_writers(makers: Iterable[Callable[[], StoreWriter]]) -> list[StoreWriter]:
    """Create every writer of a set (the splits of a dataset), or, when one cannot be made
    (an existing output), abort those already made."""
    writers: list[StoreWriter] = []
    try:
        for make in makers:
            writers.append(make())
    except BaseException:
        for writer in writers:
            writer.abort()
        raise
    return writers


def _sizes_hint(source: RecordSource) -> str:
    """What to do about images of several sizes where a store needs one."""
    if isinstance(base_source(source), StoreSource):
        return (
            "convert keeps each record's size: convert to lmdb or wds (any sizes), or rebuild from "
            "the images (dataprep hdf5 LIST --resize HxW)"
        )
    return "pass --resize HxW to give every image one size"


def _write_part(
    records: Iterable, start: int, writer: StoreWriter, on_error: OnError, uniform: bool, hint: str
) -> int:
    first: tuple[tuple[int, ...], str] | None = None
    written = 0
    oriented: list[str] = []
    for index, (item, error) in records:
        if error is not None:
            on_error(error)
            on_error.reached(error.line)
            continue
        key, origin, line, shape, payload, orientation = item
        if first is None:
            first = (shape, origin or key)
        elif uniform and shape != first[0]:
            on_error(
                ImageError(
                    f"{origin or key}: {describe_shape(shape)}, but the first image ({first[1]}) is "
                    f"{describe_shape(first[0])}: {hint}",
                    line,
                )
            )
            on_error.reached(line)
            continue
        on_error.reached(line)
        writer.put(index - start, key, payload)
        if orientation != 1:  # listed in the manifest: see _note_orientations
            oriented.append(key)
        written += 1
    if not written:
        raise DataprepError("no records to write: every input was skipped")
    if oriented:
        writer.meta["exif_oriented"] = oriented
    return written


def _note_orientations(writers: list[StoreWriter]) -> None:
    """Warn once when images carried an EXIF orientation: pixel records hold them upright,
    but a store of the files' own bytes (``--encoded``, WebDataset) shows them unrotated to
    a reader that ignores EXIF. The manifests list them (``exif_oriented``)."""
    keys = [k for w in writers for k in getattr(w, "meta", {}).get("exif_oriented", [])]
    if keys:
        log.warning(
            "%d image(s) carry an EXIF orientation (first: %s): pixel records store them upright; "
            "encoded records and WebDataset shards keep the file's bytes, which readers that ignore "
            "EXIF show unrotated (the manifest lists them under exif_oriented)",
            len(keys),
            keys[0],
        )


@dataclass
class StoreSource:
    """The records of a store as a record source (``convert``): H x W x C images and the
    stored labels, keys kept; picklable (each worker process opens its own reader)."""

    path: str
    keep_encoded: bool = False  # pass an encoded record's image bytes on (Record.data)

    def __post_init__(self) -> None:
        from .stores import open_store

        self._reader = open_store(os.path.abspath(self.path))  # see parallel: paths in tasks
        self.kind = self._reader.kind
        self.manifest = self._reader.manifest or {}
        self._count = len(self._reader)

    def __len__(self) -> int:
        return self._count

    def record(self, index: int) -> Record:
        try:
            stored = self._reader[index]
        except StoreError as exc:  # a damaged record: data for the skip policy, as a bad image
            message = str(exc).replace(os.path.abspath(self.path), str(self.path), 1)  # as given
            raise ImageError(message, index + 1) from None
        labels = tuple(int(v) if float(v).is_integer() and self._integer else float(v) for v in stored.labels)
        data = stored.data if self.keep_encoded else None
        return Record(
            stored.key, np.ascontiguousarray(stored.array.transpose(1, 2, 0)), labels, data, stored.key
        )

    def datum_keyed(self) -> bool:
        """Whether the keys are already Datum keys (``%08d_`` and the index, as a Datum
        store's, or an HDF5 store converted from one), to be kept as they are."""
        if self.kind in ("lmdb", "leveldb"):
            return True
        return self.kind == "hdf5" and all(
            k.startswith(f"{i:08d}_") for i, k in enumerate(self._reader.keys())
        )

    def pixels_are_uint8(self) -> bool:
        """Whether the records hold uint8 pixels (the first one's dtype: Caffe's stores
        carry no manifest to say so)."""
        return len(self) > 0 and self._reader[0].array.dtype == np.uint8

    @property
    def _integer(self) -> bool:
        return (self.manifest.get("labels") or {}).get("kind", "int") == "int"

    def meta(self) -> dict:
        base = {k: v for k, v in self.manifest.items() if k in ("labels", "preprocessing")}
        return {
            "source": f"{self.path} ({self.kind})",
            "labels": base.get("labels", {}),
            "preprocessing": base.get("preprocessing", {}),
        }

    def close(self) -> None:
        self._reader.close()


def convert_store(
    src: str,
    out: str,
    kind: str,
    workers: int | None = None,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
    on_error: OnError | None = None,
    decode: bool = False,
) -> WriteResult:
    """Every record of the store ``src`` into a new store ``out`` of ``kind``, in order, keys
    kept (Datum to Datum byte-for-byte keys), a new manifest written; damaged records
    (checksum mismatches) follow ``on_error``. uint8 pixels stay uint8 (in HDF5 too), and
    encoded records stay encoded in a Datum or WebDataset target unless ``decode``. Float
    labels going to a Datum store get a ``OUT_labels`` companion; float arrays cannot
    become Datum pixels. A LevelDB source is read by this process alone (LevelDB admits one)."""
    from .parallel import make_executor
    from .stores import STORES

    source = StoreSource(src)
    try:
        source.keep_encoded = kind != "hdf5" and not decode and source._reader.encoded()
        if kind not in STORES:
            raise UsageError(f"--to {kind}: choose from {', '.join(STORES)}")
        if kind != "hdf5" and (source.manifest.get("dtype") or "uint8") != "uint8":
            raise DataprepError(
                f"{src} holds {source.manifest.get('dtype')} arrays; {kind} holds uint8 pixels: "
                "convert it to hdf5, or rebuild the store from the images"
            )
        options: dict[str, Any] = {"overwrite": overwrite, "meta": store_meta(source)}
        if kind == "hdf5" and Path(out).suffix.lower() not in (".h5", ".hdf5"):
            out = str(out) + ".h5"
        if kind == "hdf5":
            options["expected"] = len(source)
            options["dtype"] = "uint8" if source.pixels_are_uint8() else "float32"
            names = (source.manifest.get("labels") or {}).get("names")
            if names:
                options["label_names"] = names
        elif kind != "wds":  # Datum
            options["plain_keys"] = source.datum_keyed()  # Datum keys as they were
            options["encoded"] = source.keep_encoded
            if not source._integer:
                options["labels_path"] = Path(str(out) + "_labels")
        executor = make_executor(1 if source.kind == "leveldb" else workers, len(source))
        return write_store(source, STORES[kind](out, **options), executor, on_error, progress=progress)
    finally:
        source.close()
