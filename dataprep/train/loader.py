"""Batches for training: read from a store or the noise generator, transformed as Caffe's
``transform_param`` says, reshuffled every epoch from the seed, prefetched by a background
thread, or, once they prove cheap, made by the training loop itself (``BatchLoader._watch``).
Only a few batches are ever in memory, never the whole store. LevelDB allows one process per
database, so one thread reads it.
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataprepError, ImageError, OnError, UsageError
from ..images import describe_shape, parse_size
from ..records import ImageListSource
from ..stores.base import index_runs
from ..transforms import AugmentSpec, apply, caffe_transform, sample_params
from .recipe import Source, Transform

PREFETCH = 3  # batches read ahead
WATCHED = 8  # batches handed out before choosing between the thread and the consumer
SYNC_SHARE = 0.1  # a batch made in under this share of the time between batches: by the consumer


@dataclass
class Samples:
    """Random access to a source's samples: H x W x C images (uint8 or float) and labels,
    from a store ``reader`` or a record source (the noise generator, an image list). A
    damaged record or bad image stops the run, or with a skipping ``on_error`` is logged
    once and its place in a batch taken by the next sound sample in store order."""

    reader: Any
    records: Any
    on_error: OnError = field(default_factory=OnError)
    _damaged: set[int] = field(default_factory=set)

    def __len__(self) -> int:
        return len(self.records) if self.records is not None else len(self.reader)

    def read(self, indices: list[int]) -> list[tuple[np.ndarray, np.ndarray]]:
        found = self._read(sorted(set(indices)))
        return [found[i] if i in found else self._stand_in(i) for i in indices]

    def _read(self, ordered: list[int]) -> dict[int, tuple[np.ndarray, np.ndarray]]:
        found = {}
        if self.records is not None:
            for i in ordered:
                try:
                    record = self.records.record(i)
                except ImageError as exc:
                    self._damaged_at(i, exc)
                    continue
                found[i] = (record.image, np.asarray(record.labels, np.float64))
            return found
        if not self.on_error.skip:  # the whole batch in one transaction or read
            for i, rec in self.reader.iter_indices(ordered):
                found[i] = _sample(rec)
            return found
        for start, stop in index_runs(ordered):
            damaged: list[DataprepError] = []
            for i, rec in self.reader.iter_sound(start, stop, damaged):
                found[i] = _sample(rec)
            for i, exc in zip(sorted(set(range(start, stop)) - found.keys()), damaged):
                self._damaged_at(i, exc)
        return found

    def _damaged_at(self, index: int, error: DataprepError) -> None:
        if index not in self._damaged:  # each damaged sample logged and counted once
            self.on_error(error)  # raises unless skipping
            self.on_error.reached(error.line)
            self._damaged.add(index)

    def _stand_in(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The next sound sample after the damaged ``index``, in store order."""
        for step in range(1, len(self)):
            j = (index + step) % len(self)
            if j not in self._damaged:
                found = self._read([j])
                if j in found:
                    return found[j]
        raise DataprepError(f"{getattr(self.reader, 'path', 'the source')}: no sound record left to train on")

    def preprocessing(self) -> dict:
        """How the source's records were made from raw images (a store manifest's or a
        record source's ``preprocessing``): what inference repeats on new images."""
        if self.reader is not None:
            return dict((getattr(self.reader, "manifest", None) or {}).get("preprocessing") or {})
        records = getattr(self.records, "source", self.records)  # a Subset of a generator
        return dict(records.meta().get("preprocessing") or {}) if hasattr(records, "meta") else {}

    def labels(self) -> dict:
        """The source's label layout (count, kind, names), as its manifest records it."""
        if self.reader is not None:
            return dict((getattr(self.reader, "manifest", None) or {}).get("labels") or {})
        records = getattr(self.records, "source", self.records)
        return dict(records.meta().get("labels") or {}) if hasattr(records, "meta") else {}

    def close(self) -> None:
        if self.reader is not None:
            self.reader.close()


def _sample(rec) -> tuple[np.ndarray, np.ndarray]:
    """A stored record as a sample: an image as H x W x C; other arrays (N x D HDF5 data) as
    they are."""
    return (rec.array.transpose(1, 2, 0) if rec.array.ndim == 3 else rec.array, rec.labels)


def open_samples(source: Source, on_error: OnError | None = None) -> Samples:
    """The samples of a recipe source: a store through the stores' read API, a list file
    of images (decoded like the store commands decode them), or noise samples
    ``[offset, offset + n)`` straight from the generator; bad ones follow ``on_error``."""
    on_error = on_error or OnError()
    if source.noise is not None:
        from ..noise import NoiseSource
        from ..records import Subset

        spec = source.noise
        generator = NoiseSource(
            n=spec.offset + spec.n, size=parse_size(spec.size), seed=spec.seed, classes=spec.classes
        )
        return Samples(None, Subset(generator, range(spec.offset, spec.offset + spec.n)), on_error)
    from ..stores import open_store, source_kind

    try:
        kind = source_kind(source.path)
    except UsageError:
        if Path(source.path).is_absolute():
            raise
        raise UsageError(
            f"{source.path}: no store there: the recipe's data paths resolve against the current "
            f"folder ({Path.cwd()}), as Caffe's do, not against the recipe's or the solver's"
        ) from None
    if kind == "images":  # decoded as the store commands do (Caffe's ImageData)
        from ..images import Channels
        from ..listfile import read_list
        from ..records import image_list_source

        listfile = read_list(source.path, root=source.root or None, on_error=on_error)
        channels = Channels("auto" if source.color is None else ("color" if source.color else "gray"))
        size = parse_size(source.resize) if source.resize else None
        return Samples(None, image_list_source(listfile, channels, size), on_error)
    if source.root or source.resize or source.color is not None:
        raise UsageError(f"recipe data: root, resize and color go with a list of images, not {source.path}")
    return Samples(open_store(source.path), None, on_error)


@dataclass(frozen=True)
class _Decode:
    """The executor's task for an image list: decode the images at ``order[start:stop]``
    (in a worker process), each as (image, labels) or the ImageError it raised."""

    records: Any
    order: np.ndarray

    def __call__(self, start: int, stop: int) -> list[Any]:
        out: list[Any] = []
        for index in self.order[start:stop]:
            try:
                record = self.records.record(int(index))
            except ImageError as exc:
                out.append(exc)
                continue
            out.append((record.image, np.asarray(record.labels, np.float64)))
        return out


class _Decoded:
    """An image list's samples in an epoch's order, decoded ahead by the executor's workers
    (Caffe's ImageData decodes in its prefetch thread; here off this process's GIL too).
    A bad image follows the samples' ``on_error`` as when read in place."""

    def __init__(self, samples: Samples, workers: int) -> None:
        from ..parallel import make_executor

        self.samples, self.executor = samples, make_executor(workers, len(samples))
        self.epoch, self.next_offset, self.stream = -1, 0, None

    def take(self, drawn: list[tuple[int, int]], offsets: list[int], order_of) -> list[tuple]:
        """The samples ``drawn`` ((epoch, index) at epoch ``offsets``), in order."""
        from ..parallel import ordered_map

        out = []
        for (epoch, index), offset in zip(drawn, offsets):
            if epoch != self.epoch or offset != self.next_offset:  # a new epoch (or a resume)
                self.close()
                order = order_of(epoch)[offset:]
                self.stream = ordered_map(_Decode(self.samples.records, order), len(order), self.executor)
                self.epoch = epoch
            item = next(self.stream)
            self.next_offset = offset + 1
            if isinstance(item, ImageError):
                self.samples._damaged_at(index, item)
                item = self.samples._stand_in(index)
            out.append(item)
        return out

    def close(self) -> None:
        if self.stream is not None:
            self.stream.close()  # stops the workers
            self.stream = None


def _check_augment(spec: AugmentSpec, image: np.ndarray) -> None:
    """Refuse what the images cannot take: color operations on gray images, a crop larger
    than the image without ``pad``."""
    color = spec.color_only()
    if image.shape[2] == 1 and color:
        names = " and ".join(f"augment.{name}" for name in color)
        raise UsageError(f"recipe {names}: work on color images only, and the training images are gray")
    h, w = image.shape[:2]
    if spec.crop and not spec.pad and (spec.crop[0] > h or spec.crop[1] > w):
        raise UsageError(
            f"recipe augment.crop {spec.crop[0]}x{spec.crop[1]} is larger than the training images "
            f"({describe_shape(image.shape)}): give augment.pad: true"
        )


class SelfFed:
    """The batches of a net whose DummyData layers make its inputs: nothing to read, the
    layers' own batch size."""

    samples = None
    position = 0

    def __init__(self, batch_size: int) -> None:
        self.batch_size = self.n = batch_size

    def next(self) -> dict[str, np.ndarray]:
        return {}

    def close(self) -> None:
        pass


class BatchLoader:
    """Endless batches ``{input: N x C x H x W float32, target: N x k (or N) float32}`` from
    a source, in epochs; each epoch's order comes from ``default_rng([seed, epoch])`` when
    shuffling. ``train`` draws random crops and mirrors; otherwise crops are centred."""

    def __init__(
        self,
        source: Source,
        batch_size: int,
        transform: Transform,
        input_name: str = "data",
        target_name: str = "label",
        shuffle: bool = False,
        seed: int = 0,
        train: bool = True,
        prefetch: int = PREFETCH,
        start: int = 0,
        augment: AugmentSpec | None = None,
        augment_seed: int = 0,
        on_error: OnError | None = None,
        workers: int = 1,
    ) -> None:
        self.samples = open_samples(source, on_error)
        self.n = len(self.samples)
        if self.n == 0:
            raise UsageError(f"recipe data: {source.path or 'the generator'} holds no samples")
        listed = isinstance(self.samples.records, ImageListSource)
        self._decoded = _Decoded(self.samples, workers) if listed and workers > 1 else None
        self.batch_size, self.transform = batch_size, transform
        self.names = (input_name, target_name)
        self.shuffle, self.seed, self.train = shuffle, seed, train
        self.mean = transform.mean()
        self.augment, self.augment_seed = augment, augment_seed
        first = self.samples.read([0])[0][0]
        self.record_shape = first.shape  # H x W x C as stored, before augmentation and crop
        if augment is not None:
            _check_augment(augment, first)
            first = apply(first, sample_params(np.random.default_rng(0), first.shape[:2], augment), augment)
        if transform.crop_size > min(first.shape[:2]):
            raise UsageError(
                f"recipe data.transform.crop_size {transform.crop_size} is larger than the images of "
                f"{source.path or 'the generator'} ({describe_shape(first.shape)})"
            )
        self.position = start  # samples handed out so far (epochs * n + offset); a resume starts later
        self._epoch, self._perm = -1, np.arange(0)
        import cv2

        # OpenCV's own thread pool would contend with the training threads for the cores;
        # one thread is plenty for per-sample decoding (0.64 -> 0.60 s per iteration here)
        cv2.setNumThreads(1)
        self._queue: queue.Queue = queue.Queue(maxsize=prefetch)
        self._stop = threading.Event()
        self._making: list[float] = []  # CPU seconds the thread took per batch
        self._handed: list[float] | None = []  # when batches were handed out, until the choice
        self._thread: threading.Thread | None = threading.Thread(
            target=self._fill, daemon=True, name="batch-loader"
        )
        self._thread.start()

    def _order(self, epoch: int) -> np.ndarray:
        if not self.shuffle:
            return np.arange(self.n)
        return np.random.default_rng([self.seed, epoch]).permutation(self.n)

    def _indices(self, start: int) -> list[tuple[int, int]]:
        """(epoch, sample index) of each sample of the batch starting at overall position
        ``start``."""
        out = []
        for position in range(start, start + self.batch_size):
            epoch, offset = divmod(position, self.n)
            if epoch != self._epoch:
                self._epoch, self._perm = epoch, self._order(epoch)
            out.append((epoch, int(self._perm[offset])))
        return out

    def _read(self, start: int, drawn: list[tuple[int, int]]) -> list[tuple]:
        """The drawn samples: decoded ahead by the workers (an image list), or read here."""
        if self._decoded is None:
            return self.samples.read([i for _, i in drawn])
        offsets = [position % self.n for position in range(start, start + len(drawn))]
        return self._decoded.take(drawn, offsets, self._order)

    def _make(self, start: int) -> dict[str, np.ndarray]:
        drawn = self._indices(start)
        rng = np.random.default_rng([self.seed, start, 1])  # crops and mirrors, repeatable
        t = self.transform
        read = self._read(start, drawn)
        labels = [label for _, label in read]
        whole = (  # nothing drawn per image: the batch transformed in one pass
            self.augment is None
            and not t.crop_size
            and not (t.mirror and self.train)
            and all(image.ndim == 3 and image.shape == read[0][0].shape for image, _ in read)
        )
        if whole:
            stacked = np.stack([image for image, _ in read])
            batch = caffe_transform(stacked, 0, t.mirror, self.mean, t.scale, self.train)
        else:
            images = []
            for (epoch, index), (image, _) in zip(drawn, read):
                if self.augment is not None:  # drawn per (seed, epoch, index): a run repeats
                    drawing = np.random.default_rng([self.augment_seed, epoch, index])
                    params = sample_params(drawing, image.shape[:2], self.augment)
                    image = apply(image, params, self.augment)
                if image.ndim != 3:  # not an image (HDF5Data of any dimensionality): as stored, as in Caffe
                    images.append(np.asarray(image, np.float32))
                else:
                    images.append(
                        caffe_transform(image, t.crop_size, t.mirror, self.mean, t.scale, self.train, rng)
                    )
            batch = np.stack(images)
        target = np.stack(labels).astype(np.float32)
        if target.shape[1] == 1:
            target = target[:, 0]
        return {self.names[0]: batch.astype(np.float32, copy=False), self.names[1]: target}

    def _fill(self) -> None:
        start = self.position
        while not self._stop.is_set():
            started = time.thread_time()  # its own work, not its waits for the GIL and a core
            try:
                made: dict[str, np.ndarray] | BaseException = self._make(start)
            except BaseException as exc:  # reported to the consumer, which raises it
                made = exc
            if self._handed is not None:  # until the choice: the list stays short
                self._making.append(time.thread_time() - started)
            start += self.batch_size
            if not self._hand_over(made) or isinstance(made, BaseException):
                return

    def _hand_over(self, made: dict[str, np.ndarray] | BaseException) -> bool:
        """Put ``made`` in the queue, waiting while it is full; False once told to stop (an
        error made ahead too: a consumer that stops the thread never waits on a full queue)."""
        while not self._stop.is_set():
            try:
                self._queue.put(made, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def next(self) -> dict[str, np.ndarray]:
        """The next batch: from the reader thread (waiting when it is behind), or, once
        batches are known to be cheap, made here."""
        if self._thread is None:
            batch = self._make(self.position)
        else:
            batch = self._queue.get()
            if isinstance(batch, BaseException):
                raise batch
            self._watch()
        self.position += self.batch_size
        return batch

    def _watch(self) -> None:
        """After WATCHED batches: where making one takes under SYNC_SHARE of the time between
        them, the thread stops and the consumer makes each batch before its pass. Both cores
        run the layers, so a thread beside them costs more than its own time (LeNet: 16.1
        to 16.3 ms an iteration with the thread, 15.3 to 15.5 without). The batches are the
        same either way: each is a function of its position."""
        if self._handed is None:  # chosen: the thread
            return
        self._handed.append(time.perf_counter())
        if len(self._handed) < WATCHED + 2:  # the first pass is set-up: its gap not counted
            return
        gaps = np.diff(self._handed[1:])
        self._handed = None
        if np.median(self._making) < SYNC_SHARE * np.median(gaps):
            self._stop.set()
            self._thread.join()
            self._thread = None  # what it made ahead is dropped: the positions say what is next
            while not self._queue.empty():
                self._queue.get()

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        if self._decoded is not None:
            self._decoded.close()
        self.samples.close()
