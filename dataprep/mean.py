"""Mean images: compute them exactly from any store or image list (compute_image_mean done
right), write and read ``mean.binaryproto`` / ``mean.npy``, parse ``--mean`` values."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator, NamedTuple, Protocol

import numpy as np

from .errors import DataprepError, ImageError, OnError, StoreError, UsageError
from .images import Channels, describe_shape
from .parallel import Executor, InlineExecutor, ordered_map
from .records import ImageListSource, image_list_source
from .staging import Staging, naming
from .stores import open_store, store_kind
from .stores.base import StoreReader
from .stores.caffe_pb import blob_bytes

CHANNEL_NAMES = {1: ["gray"], 3: ["B", "G", "R"], 4: ["B", "G", "R", "A"]}
RGB_NAMES = {1: ["gray"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}  # stores imported in RGB (CIFAR)
MEAN_CHUNK = 128  # fixed, so float sums (HDF5 sources) add up in the same order for any --workers
_U16_RUN = 257  # 257 * 255 < 2**16: uint8 images summed in uint16 before widening


class ArraySource(Protocol):
    """Indexed C x H x W arrays with keys; picklable, opened lazily in each process.
    ``shareable`` is false where only one process may open the data (LevelDB)."""

    shareable: bool

    def __len__(self) -> int: ...

    def arrays(
        self, start: int, stop: int, damaged: list[DataprepError] | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        """Arrays ``start..stop-1``; a bad one raises, or with ``damaged`` is left out and its
        error appended (``--skip-bad``)."""


_READERS: dict[str, StoreReader] = {}


@dataclass(frozen=True)
class StoreArrays:
    """The arrays of a store; each process opens it once (LMDB readers may share a file)."""

    path: str

    @property
    def shareable(self) -> bool:
        return self.reader().kind != "leveldb"

    def reader(self) -> StoreReader:
        if self.path not in _READERS:
            _READERS[self.path] = open_store(self.path)
        return _READERS[self.path]

    def __len__(self) -> int:
        return len(self.reader())

    def arrays(
        self, start: int, stop: int, damaged: list[DataprepError] | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        reader = self.reader()
        records = (
            reader.iter_range(start, stop)
            if damaged is None
            else (rec for _, rec in reader.iter_sound(start, stop, damaged))
        )
        for rec in records:
            yield rec.key, rec.array


@dataclass(frozen=True)
class ListArrays:
    """The images of a list file, decoded (and resized) as the store commands do."""

    source: ImageListSource
    shareable = True

    def __len__(self) -> int:
        return len(self.source)

    def arrays(
        self, start: int, stop: int, damaged: list[DataprepError] | None = None
    ) -> Iterator[tuple[str, np.ndarray]]:
        for i in range(start, stop):
            try:
                rec = self.source.record(i)
            except ImageError as exc:
                if damaged is None:
                    raise
                damaged.append(exc)
                continue
            yield rec.origin, rec.image.transpose(2, 0, 1)


class ChunkSum(NamedTuple):
    total: np.ndarray | None  # uint16 or uint64 for uint8 data, float64 otherwise
    count: int
    shape: tuple[int, ...] | None
    first_key: str
    mismatch: str | None  # "key: shape A differs from shape B"
    pixels: int = 0  # per-channel sums: the pixels summed in each channel
    damaged: tuple[DataprepError, ...] = ()  # left out (--skip-bad)


@dataclass(frozen=True)
class _SumTask:
    """Worker task: exact sum of a range of arrays (per channel only: any sizes)."""

    source: ArraySource
    per_channel: bool = False
    skip_bad: bool = False

    def __call__(self, start: int, stop: int) -> list[ChunkSum]:
        damaged: list[DataprepError] | None = [] if self.skip_bad else None
        part = self._channel_sums if self.per_channel else self._sums
        return [part(self.source.arrays(start, stop, damaged))._replace(damaged=tuple(damaged or ()))]

    def _sums(self, arrays: Iterator[tuple[str, np.ndarray]]) -> ChunkSum:
        total = run = None
        shape, first, count, in_run, hwc = None, "", 0, 0, False
        for key, array in arrays:
            if shape is None:
                shape, first = array.shape, key
                # decoded images are C x H x W views of H x W x C memory: sum in memory order
                hwc = not array.flags.c_contiguous and array.transpose(1, 2, 0).flags.c_contiguous
                native = array.transpose(1, 2, 0) if hwc else array
                integer = array.dtype == np.uint8
                total = np.zeros(native.shape, np.uint64 if integer else np.float64)
                run = np.zeros(native.shape, np.uint16) if integer else None
            elif array.shape != shape:
                return ChunkSum(
                    None, 0, shape, first, f"{key}: {_hw(array.shape)}, but {first} is {_hw(shape)}"
                )
            native = array.transpose(1, 2, 0) if hwc else array
            if run is not None:
                run += native
                in_run += 1
                if in_run == _U16_RUN:
                    total += run
                    run[:] = 0
                    in_run = 0
            else:
                total += native
            count += 1
        if run is not None:
            # a chunk's worth fits uint16: a quarter of the bytes to send, within the pipe's
            # buffer, so a worker does not wait on a busy parent to take its result
            total = run if count <= _U16_RUN else total + run
        if hwc:
            total = np.ascontiguousarray(total.transpose(2, 0, 1))
        return ChunkSum(total, count, shape, first, None)

    def _channel_sums(self, arrays: Iterator[tuple[str, np.ndarray]]) -> ChunkSum:
        total, shape, first, count, pixels = None, None, "", 0, 0
        for key, array in arrays:
            if total is None:
                total = np.zeros(array.shape[0], np.uint64 if array.dtype == np.uint8 else np.float64)
                shape, first = array.shape[:1], key
            elif array.shape[0] != shape[0]:
                return ChunkSum(
                    None, 0, shape, first, f"{key}: {array.shape[0]} channel(s), {shape[0]} in {first}"
                )
            total += array.sum(axis=(1, 2), dtype=total.dtype)
            pixels += array.shape[1] * array.shape[2]
            count += 1
        return ChunkSum(total, count, shape, first, None, pixels)


def _hw(shape: tuple[int, ...]) -> str:
    return describe_shape(shape, "CHW")


@dataclass
class MeanResult:
    """The mean image (C x H x W, float64), per-channel means and the record count."""

    mean: np.ndarray
    count: int
    order: str = "BGR"  # the store's channel order, which names the channels

    @property
    def channels(self) -> list[tuple[str, float]]:
        values = self.mean.mean(axis=(1, 2))
        table = RGB_NAMES if self.order == "RGB" else CHANNEL_NAMES
        names = table.get(len(values)) or CHANNEL_NAMES.get(
            len(values), [f"c{i}" for i in range(len(values))]
        )
        return list(zip(names, values.tolist()))


def compute_mean(
    source: ArraySource,
    executor: Executor,
    progress: Callable[[int], object] | None = None,
    per_channel: bool = False,
    on_error: OnError | None = None,
) -> MeanResult:
    """The exact mean of every array of ``source``: uint8 pixels are summed as integers and
    divided once, so the result has no drift and is identical for any worker count.

    ``per_channel`` gives only each channel's mean over every pixel (a C x 1 x 1 mean), which
    needs no common image size. A bad record or image stops the sum, or with a skipping
    ``on_error`` is left out, logged and counted."""
    n = len(source)
    if n == 0:
        raise DataprepError("the source holds no records")
    if not source.shareable:
        executor = InlineExecutor()  # LevelDB: one process at a time
    task = _SumTask(source, per_channel, on_error is not None and on_error.skip)
    total, count, shape, first, pixels = None, 0, None, "", 0
    try:
        for part in ordered_map(task, n, executor, chunk_size=MEAN_CHUNK, progress=progress):
            for error in part.damaged:
                on_error(error)
            if part.mismatch:
                raise _mixed(part.mismatch, per_channel)
            if part.shape is None:
                continue
            if shape is None:
                shape, first = part.shape, part.first_key
                total = part.total.astype(np.uint64 if part.total.dtype.kind == "u" else np.float64)
            elif part.shape != shape:
                raise _mixed(f"{part.first_key}: {_hw(part.shape)}, but {first} is {_hw(shape)}", per_channel)
            else:
                total += part.total
            count += part.count
            pixels += part.pixels
    finally:
        close_readers()  # workers keep theirs until they exit; this process closes its own
    if not count:
        raise DataprepError("no records to average: every record was skipped")
    if per_channel:
        return MeanResult((total.astype(np.float64) / pixels).reshape(-1, 1, 1), count)
    return MeanResult(total.astype(np.float64) / count, count)


def _mixed(mismatch: str, per_channel: bool) -> DataprepError:
    """Records that cannot share one mean, and what to do about it."""
    if per_channel:
        return DataprepError(f"records of different channel counts: {mismatch}: pass --gray or --color")
    return DataprepError(
        f"records of different sizes: {mismatch}: pass --resize HxW (a list) or --per-channel-only "
        "(per-channel means of any sizes)"
    )


def close_readers() -> None:
    """Close the stores this process opened through StoreArrays."""
    while _READERS:
        _READERS.popitem()[1].close()


# A forked worker opens the stores again for itself: LMDB handles must not cross a fork.
os.register_at_fork(after_in_child=close_readers)


def array_source(
    path: str,
    kind: str | None = None,
    root: str | None = None,
    channels: Channels = Channels(),
    resize: tuple[int, int] | None = None,
    on_error: OnError | None = None,
) -> ArraySource:
    """A store, or a list file of images (``kind`` "list"), as arrays; ``kind`` forces the
    type; bad list lines follow ``on_error``."""
    from .listfile import read_list

    if kind is None:
        try:
            store_kind(path)
            kind = "store"
        except (StoreError, UsageError):
            if not str(path).endswith(".txt") and path != "-":
                raise
            kind = "list"
    if kind == "list":
        return ListArrays(image_list_source(read_list(path, root=root, on_error=on_error), channels, resize))
    open_store(path).close()  # fail early, in this process, on a store that cannot be opened
    return StoreArrays(os.path.abspath(path))  # see parallel: paths in tasks


def channel_order(path: str) -> str:
    """The channel order a store's manifest records (``RGB`` for CIFAR imports); images
    decoded here are BGR."""
    try:
        with open_store(path) as reader:
            manifest = getattr(reader, "manifest", None) or {}
    except (DataprepError, OSError):
        return "BGR"
    return (manifest.get("preprocessing") or {}).get("channel_order") or "BGR"


def stage_mean(staging: Staging, binaryproto: Path | None, npy: Path | None) -> dict[str, tuple[Path, Path]]:
    """Claim the mean's outputs before the work (an existing one, or one over the source,
    is refused first): ``{format: (destination, temporary path)}``."""
    wanted = {"binaryproto": binaryproto, "npy": npy}
    return {fmt: (Path(dest), staging.path(dest)) for fmt, dest in wanted.items() if dest is not None}


def write_mean(result: MeanResult, staged: dict[str, tuple[Path, Path]]) -> list[Path]:
    """``mean.binaryproto`` (1 x C x H x W BlobProto) and/or ``mean.npy`` (C x H x W
    float32) into the paths ``stage_mean`` gave; returns the destinations."""
    mean32 = result.mean.astype(np.float32)
    for fmt, (dest, tmp) in staged.items():
        with naming(dest), open(tmp, "wb") as f:
            if fmt == "binaryproto":
                f.write(blob_bytes(mean32))
            else:
                np.save(f, mean32)
    return [dest for dest, _ in staged.values()]
