"""The classic datasets from the files users have (nothing is downloaded): CIFAR-10 and
CIFAR-100 (Python pickle batches or the binary version, extracted or as the ``.tar.gz``)
and MNIST (IDX files, gzipped or not), as record sources for the stores.

Records are what Caffe's ``convert_cifar_data`` and ``convert_mnist_data`` stored: the
file's pixel bytes unchanged (CIFAR: R, G and B planes, so channel order RGB unless
``bgr``), keys ``%05d`` (CIFAR) or ``%08d`` (MNIST). Pickles go through an unpickler that
admits only what a CIFAR batch holds (dicts, lists, bytes, NumPy arrays): a crafted
pickle cannot run code. A malformed file is one ``DataprepError`` naming it.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import gzip
import pickle
import shutil
import struct
import tarfile
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .errors import DataprepError, UsageError
from .images import encode
from .parallel import Executor, ordered_map
from .records import Record
from .staging import Staging, add_inputs

CIFAR_BYTES = 3072  # 32 x 32 x 3, as R, G and B planes


class _BatchUnpickler(pickle.Unpickler):
    """Only the NumPy reconstruction a CIFAR batch needs (and ``_codecs.encode``, which
    protocol-2 pickles written by Python 3 use for bytes); anything else is refused."""

    ALLOWED = {
        ("_codecs", "encode"),
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self.ALLOWED:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR batch")
        return super().find_class(module, name)


def read_pickle(path: Path) -> dict:
    """A CIFAR pickle as a dict with str keys (the official files are Python 2 pickles
    with bytes keys)."""
    try:
        with open(path, "rb") as f:
            loaded = _BatchUnpickler(f, encoding="bytes").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as exc:
        raise DataprepError(f"{path}: not a CIFAR pickle batch: {exc}") from None
    if not isinstance(loaded, dict):
        raise DataprepError(f"{path}: not a CIFAR pickle batch: a {type(loaded).__name__}, not a dict")
    return {k.decode() if isinstance(k, bytes) else k: v for k, v in loaded.items()}


@dataclass(frozen=True)
class Part:
    """One file of a split: where its images start in the split, how many it holds."""

    path: Path
    start: int
    count: int


@dataclass
class ArrayFileSource:
    """Records from files of fixed-size images (CIFAR pickles or binaries, MNIST IDX),
    read one file at a time in each process (bounded memory); picklable for the workers.

    ``kind`` picks the reader: ``cifar-pickle``, ``cifar-bin`` (``label_bytes`` before each
    image, ``label_index`` the one used) or ``idx``."""

    kind: str
    parts: list[Part]
    shape: tuple[int, int, int]  # C x H x W
    key_width: int
    label_key: str = "labels"  # the pickle's label list
    label_bytes: int = 1
    label_index: int = 0
    labels_path: Path | None = None  # MNIST's separate label file
    bgr: bool = False
    description: str = ""
    names: list[str] = field(default_factory=list)
    _cache: tuple = field(default=(None, None, None), repr=False, compare=False)

    def __len__(self) -> int:
        return sum(p.count for p in self.parts)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_cache": (None, None, None)}

    def _load(self, part: Part) -> tuple[np.ndarray, np.ndarray]:
        if self._cache[0] == part.path:
            return self._cache[1], self._cache[2]
        images, labels = self._read(part)
        self._cache = (part.path, images, labels)
        return images, labels

    def _read(self, part: Part) -> tuple[np.ndarray, np.ndarray]:
        c, h, w = self.shape
        if self.kind == "cifar-pickle":
            batch = read_pickle(part.path)
            return np.asarray(batch["data"], np.uint8).reshape(-1, c, h, w), np.asarray(batch[self.label_key])
        if self.kind == "cifar-bin":
            raw = np.fromfile(part.path, np.uint8).reshape(-1, self.label_bytes + c * h * w)
            return raw[:, self.label_bytes :].reshape(-1, c, h, w), raw[:, self.label_index]
        images = read_idx(part.path, 2051)[1]
        return images.reshape(-1, c, h, w), read_idx(self.labels_path, 2049)[1]

    def record(self, index: int) -> Record:
        for part in self.parts:
            if index < part.start + part.count:
                images, labels = self._load(part)
                chw = images[index - part.start]
                image = chw.transpose(1, 2, 0)
                if self.bgr:
                    image = image[:, :, ::-1]
                key = f"{index:0{self.key_width}d}"
                return Record(key, np.ascontiguousarray(image), (int(labels[index - part.start]),), None, key)
        raise IndexError(index)

    def meta(self) -> dict:
        order = ("BGR" if self.bgr else "RGB") if self.shape[0] == 3 else "gray"
        return {
            "source": self.description,
            "labels": {"count": 1, "kind": "int", "names": self.names},
            "preprocessing": {
                "channels": "color" if self.shape[0] == 3 else "gray",
                "gray": self.shape[0] == 1,
                "resize": None,
                "channel_order": order,
            },
        }


def read_idx(path: Path, magic: int) -> tuple[tuple[int, ...], np.ndarray]:
    """An IDX file (MNIST): big-endian magic (2051 images, 2049 labels) and counts, then
    unsigned bytes; gzipped or not."""
    data = _bytes(path)
    if len(data) < 8:
        raise DataprepError(f"{path}: truncated IDX file ({len(data)} bytes)")
    found = struct.unpack(">I", data[:4])[0]
    if found != magic:
        raise DataprepError(
            f"{path}: magic number {found}, expected {magic} ({'images' if magic == 2051 else 'labels'})"
        )
    ndim = 3 if magic == 2051 else 1
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    body = np.frombuffer(data, np.uint8, offset=4 + 4 * ndim)
    if body.size != int(np.prod(dims)):
        raise DataprepError(
            f"{path}: truncated: {body.size} bytes of data, the header says {int(np.prod(dims))}"
        )
    return dims, body.reshape(dims)


def _bytes(path: Path) -> bytes:
    raw = Path(path).read_bytes()
    return gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw


def _find(folder: Path, *names: str) -> Path | None:
    """The first of ``names`` anywhere under ``folder`` (archives add a top folder)."""
    for name in names:
        found = sorted(folder.rglob(name))
        if found:
            return found[0]
    return None


MAX_MEMBER = 200 << 20  # bytes: larger than any file of CIFAR-10/100 or MNIST (CIFAR-100's train: 157 MB)
BIN_RECORDS = (3073, 3074)  # CIFAR-10's and CIFAR-100's binary record sizes


def _check_member(src: Path, member: tarfile.TarInfo) -> None:
    """A member's declared size against what the dataset's files can be, before a byte of
    it is read: a small archive may hold a huge member of zeros."""
    name = Path(member.name).name
    if member.size > MAX_MEMBER:
        raise DataprepError(
            f"{src}: {member.name} is {member.size / 1e6:.0f} MB, larger than any file of the "
            "dataset: not the official archive"
        )
    if name.endswith(".bin") and not any(member.size % size == 0 for size in BIN_RECORDS):
        raise DataprepError(
            f"{src}: {member.name} is {member.size} bytes, not a whole number of 3073- or 3074-byte records"
        )


def unpack(src: Path, into: Path) -> Path:
    """A ``.tar.gz`` extracted into ``into`` (data files only, no links or paths outside),
    or the folder as it is."""
    if src.is_dir():
        return src
    if not tarfile.is_tarfile(src):
        raise UsageError(f"{src}: give the extracted folder or the .tar.gz archive")
    try:
        with tarfile.open(src) as archive:
            for member in archive:  # each header checked as it is read, before its data
                if not member.isfile() or Path(member.name).is_absolute() or ".." in Path(member.name).parts:
                    continue
                _check_member(src, member)
                target = into / member.name
                target.parent.mkdir(parents=True, exist_ok=True)
                with archive.extractfile(member) as f, open(target, "wb") as out:
                    shutil.copyfileobj(f, out, 1 << 20)  # streamed, never whole in memory
    except (EOFError, tarfile.TarError, zlib.error) as exc:  # a download cut short, a damaged one
        raise DataprepError(f"{src}: a damaged archive ({exc or type(exc).__name__})") from None
    return into


def _missing(src: Path, what: str) -> UsageError:
    return UsageError(f"{src}: no {what} found in it")


def cifar_sources(
    folder: Path, src: Path, classes: int = 10, label: str = "fine", bgr: bool = False
) -> dict[str, ArrayFileSource]:
    """The train and test sources of CIFAR-10 (``classes`` 10) or CIFAR-100, from pickle
    batches or the binary version, and the class names."""
    c = (3, 32, 32)
    if classes == 10:
        pickles = {
            "train": [_find(folder, f"data_batch_{k}") for k in range(1, 6)],
            "test": [_find(folder, "test_batch")],
        }
        binaries = {
            "train": [_find(folder, f"data_batch_{k}.bin") for k in range(1, 6)],
            "test": [_find(folder, "test_batch.bin")],
        }
        meta_pickle, meta_text = _find(folder, "batches.meta"), _find(folder, "batches.meta.txt")
        label_key, label_bytes, label_index, names_key = "labels", 1, 0, "label_names"
    else:
        pickles = {"train": [_find(folder, "train")], "test": [_find(folder, "test")]}
        binaries = {"train": [_find(folder, "train.bin")], "test": [_find(folder, "test.bin")]}
        meta_pickle = _find(folder, "meta")
        meta_text = _find(folder, f"{label}_label_names.txt")
        label_key, label_bytes = f"{label}_labels", 2
        label_index, names_key = (1 if label == "fine" else 0), f"{label}_label_names"
    name = f"CIFAR-{classes}"
    if all(p is not None for ps in binaries.values() for p in ps):
        kind, files, names = "cifar-bin", binaries, _text_names(meta_text)
    elif all(p is not None and p.is_file() for ps in pickles.values() for p in ps):
        kind, files = "cifar-pickle", pickles
        names = (
            [n.decode() if isinstance(n, bytes) else str(n) for n in read_pickle(meta_pickle)[names_key]]
            if meta_pickle
            else []
        )
    else:
        raise _missing(
            src,
            f"{name} batches (pickles data_batch_1..5 and test_batch, or the .bin files)"
            if classes == 10
            else f"{name} files (pickles train, test and meta, or train.bin and test.bin)",
        )
    sources = {}
    label_classes = classes if label == "fine" else 20  # CIFAR-100's coarse labels: 20
    for split, paths in files.items():
        parts, start = [], 0
        for path in paths:
            count = _count(kind, path, label_key, label_bytes, label_index, label_classes)
            parts.append(Part(path, start, count))
            start += count
        sources[split] = ArrayFileSource(
            kind,
            parts,
            c,
            5,
            label_key,
            label_bytes,
            label_index,
            None,
            bgr,
            f"{name} {split} ({src.name})",
            names,
        )
    return sources


def _text_names(path: Path | None) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()] if path else []


def _count(kind: str, path: Path, label_key: str, label_bytes: int, label_index: int, classes: int) -> int:
    """Images in one file, checked: whole records, as many labels as images, and every label
    within ``0..classes - 1`` (a damaged or foreign batch: stores would hold labels no
    classifier of the set has)."""
    if kind == "cifar-bin":
        size = path.stat().st_size
        record = label_bytes + CIFAR_BYTES
        if size == 0 or size % record:
            raise DataprepError(
                f"{path}: {size} bytes is not a whole number of {record}-byte records (truncated?)"
            )
        labels = np.asarray(np.memmap(path, np.uint8, "r").reshape(-1, record)[:, label_index])
    else:
        batch = read_pickle(path)
        if "data" not in batch or label_key not in batch:
            raise DataprepError(f"{path}: not a CIFAR batch: no 'data' or '{label_key}' entry")
        data = np.asarray(batch["data"])
        if data.ndim != 2 or data.shape[1] != CIFAR_BYTES:
            raise DataprepError(f"{path}: data of shape {data.shape}, expected N x {CIFAR_BYTES}")
        if len(batch[label_key]) != len(data):
            raise DataprepError(f"{path}: {len(data)} images but {len(batch[label_key])} labels")
        labels = np.asarray(batch[label_key])
    bad = np.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        raise DataprepError(
            f"{path}: image {int(bad[0])} has label {int(labels[bad[0]])}, outside 0..{classes - 1}"
        )
    return len(labels)


def mnist_sources(folder: Path, src: Path) -> dict[str, ArrayFileSource]:
    """The train and test sources of MNIST's IDX files (``t10k`` is the test split)."""
    sources = {}
    for split, prefix in (("train", "train"), ("test", "t10k")):
        images = _find(
            folder,
            f"{prefix}-images-idx3-ubyte",
            f"{prefix}-images-idx3-ubyte.gz",
            f"{prefix}-images.idx3-ubyte",
        )
        labels = _find(
            folder,
            f"{prefix}-labels-idx1-ubyte",
            f"{prefix}-labels-idx1-ubyte.gz",
            f"{prefix}-labels.idx1-ubyte",
        )
        if images is None or labels is None:
            raise _missing(src, f"MNIST {prefix}-images-idx3-ubyte and {prefix}-labels-idx1-ubyte files")
        (n, h, w), (m,) = read_idx(images, 2051)[0], read_idx(labels, 2049)[0]
        if n != m:
            raise DataprepError(f"{images}: {n} images but {labels.name} holds {m} labels")
        sources[split] = ArrayFileSource(
            "idx",
            [Part(images, 0, n)],
            (1, h, w),
            8,
            labels_path=labels,
            description=f"MNIST {split} ({src.name})",
            names=[str(d) for d in range(10)],
        )
    return sources


def open_dataset(
    name: str, src: Path, into: Path, label: str = "fine", bgr: bool = False
) -> dict[str, ArrayFileSource]:
    """The train and test sources of ``name`` (cifar10, cifar100, mnist) from ``src``, an
    extracted folder or an archive (unpacked into ``into``)."""
    if not src.exists():
        raise UsageError(f"{src}: no such file or folder")
    add_inputs(src)  # no output of the import may replace the official files
    folder = unpack(src, into).absolute()  # the sources' files, as workers open them
    if name == "mnist":
        if bgr:
            raise UsageError("--bgr: MNIST images are gray")
        return mnist_sources(folder, src)
    return cifar_sources(folder, src, 10 if name == "cifar10" else 100, label, bgr)


STORE_KINDS = ("lmdb", "leveldb", "hdf5", "wds", "files")


@dataclass(frozen=True)
class _WriteImages:
    """Worker task: records ``start..stop-1`` as PNG files in class folders."""

    source: ArrayFileSource
    folder: Path
    split: str

    def __call__(self, start: int, stop: int) -> list[tuple[str, int]]:
        rows = []
        for i in range(start, stop):
            record = self.source.record(i)
            label = record.labels[0]
            names = self.source.names
            relative = f"{self.split}/{names[label] if label < len(names) else label}/{record.key}.png"
            path = self.folder / relative
            path.parent.mkdir(parents=True, exist_ok=True)
            rgb = (
                self.source.shape[0] == 3 and not self.source.bgr
            )  # files are written BGR, as OpenCV reads them
            path.write_bytes(encode(record.image[:, :, ::-1] if rgb else record.image, "png"))
            rows.append((relative, label))
        return rows


def write_dataset(
    name: str,
    sources: dict[str, ArrayFileSource],
    out: Path,
    kind: str,
    executor: Executor,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
) -> list[Path]:
    """Each split into ``out``: stores ``{name}_{split}_{kind}`` (HDF5: ``{name}_{split}.h5``
    with its ``_h5.txt`` list) keyed as Caffe's converters did, or with ``files`` PNGs in
    class folders and ``{split}.txt`` lists; and ``{name}_classes.txt``. Every output
    claimed before any is written, and staged."""

    if kind not in STORE_KINDS:
        raise UsageError(f"--to {kind}: choose from {', '.join(STORE_KINDS)}")
    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    try:
        return _write_dataset(name, sources, out, kind, executor, overwrite, progress)
    except BaseException:
        if created:  # a failed run leaves no empty OUT behind
            with contextlib.suppress(OSError):
                out.rmdir()
        raise


def _write_dataset(name, sources, out, kind, executor, overwrite, progress) -> list[Path]:
    from .convert import open_writers, store_meta, write_stores
    from .records import Chain

    if kind == "files":
        return _write_files(name, sources, out, executor, overwrite, progress)
    if kind == "wds":  # image files are BGR to OpenCV: true color
        sources = {split: dataclasses.replace(source, bgr=True) for split, source in sources.items()}
    from .listfile import class_lines, write_list

    with Staging(overwrite) as staging:  # the class file claimed with the stores, before any is written
        classes = staging.path(out / f"{name}_classes.txt")
        writers = open_writers(
            functools.partial(_split_writer, name, split, source, out, kind, overwrite, store_meta(source))
            for split, source in sources.items()
        )
        parts = [(writer, len(source)) for writer, source in zip(writers, sources.values())]
        results = write_stores(Chain(tuple(sources.values())), parts, executor, progress=progress)
        write_list(classes, class_lines(next(iter(sources.values())).names))
    return [*(path for result in results for path in result.outputs), out / f"{name}_classes.txt"]


def _split_writer(name, split, source, out, kind, overwrite, meta):
    """The store of one split: ``{name}_{split}_{kind}``, or ``{name}_{split}.h5``."""
    if kind == "hdf5":
        from .stores.hdf5 import Hdf5Writer

        return Hdf5Writer(out / f"{name}_{split}.h5", overwrite=overwrite, expected=len(source), meta=meta)
    if kind == "wds":
        from .stores.wds import WdsWriter

        return WdsWriter(out / f"{name}_{split}_wds", overwrite=overwrite, meta=meta)
    from .stores.datum import DatumWriter

    return DatumWriter(
        out / f"{name}_{split}_{kind}", backend=kind, overwrite=overwrite, meta=meta, plain_keys=True
    )


def _write_files(name, sources, out, executor, overwrite, progress) -> list[Path]:
    from .listfile import class_lines, format_line, write_list

    names = next(iter(sources.values())).names
    with Staging(overwrite) as staging:
        lists = {split: staging.path(out / f"{name}_{split}.txt") for split in sources}
        folder = staging.path(out / name, allow_empty_dir=True)
        classes = staging.path(out / f"{name}_classes.txt")
        folder.mkdir()
        for split, source in sources.items():
            rows = list(
                ordered_map(_WriteImages(source, folder, split), len(source), executor, progress=progress)
            )
            write_list(lists[split], [format_line(f"{name}/{path}", (label,)) for path, label in rows])
        write_list(classes, class_lines(names))
    return [out / name, *(out / f"{name}_{split}.txt" for split in sources), out / f"{name}_classes.txt"]
