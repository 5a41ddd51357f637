"""The random-frequency noise dataset of Caffe's regression tutorial, reproducible per sample.

Sample ``i`` depends only on ``(seed, i)``: draw ``h`` in ``[1, H-1]`` and ``w`` in
``[1, W-1]``, fill an ``h x w`` matrix with uniform ``[0, 1)`` values, upscale it to
``H x W`` with bicubic interpolation, clip, and store it as 8-bit gray. The labels are the
horizontal and vertical frequencies ``fx = w / W`` and ``fy = h / H``, or with ``classes=K``
the bin of ``fx`` among ``K`` equal bins of ``[0, 1)``.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import cv2
import numpy as np

from .errors import UsageError
from .images import ENCODINGS, encode
from .listfile import Label, class_lines, format_line, write_list
from .parallel import Executor, ordered_map
from .records import Record, Subset
from .splits import SPLIT_NAMES, assign
from .staging import Staging

if TYPE_CHECKING:
    from .stores.hdf5 import Hdf5Options


@dataclass(frozen=True)
class NoiseSource:
    """``n`` noise samples of ``size`` (H, W) from ``seed``; keys are ``prefix/NAME.ext``."""

    n: int
    size: tuple[int, int] = (100, 100)
    seed: int = 0
    classes: int | None = None
    ext: str = "png"
    prefix: str = ""
    label: str = "freq"  # "age": fx as an integer 0..99, for bounded-integer regression

    def __post_init__(self) -> None:
        if self.n < 1:
            raise UsageError(f"--n must be at least 1, got {self.n}")
        if min(self.size) < 2:
            raise UsageError(f"noise images need at least 2x2 pixels, got {self.size}")
        if self.classes is not None and self.classes < 1:
            raise UsageError(f"--classes must be at least 1, got {self.classes}")
        if self.label not in ("freq", "age"):
            raise UsageError(f"--label {self.label!r}: choose freq or age")
        if self.label == "age" and self.classes is not None:
            raise UsageError("--label age and --classes are two labellings: give one")

    @property
    def integer(self) -> bool:
        """Whether the labels are one integer (a class, an age): the Datum's own label."""
        return self.classes is not None or self.label == "age"

    def __len__(self) -> int:
        return self.n

    def sample(self, index: int) -> tuple[np.ndarray, int, int]:
        """The H x W x 1 uint8 image of sample ``index`` and its drawn (h, w)."""
        height, width = self.size
        rng = np.random.default_rng([self.seed, index])
        h = int(rng.integers(1, height))
        w = int(rng.integers(1, width))
        small = rng.random((h, w), dtype=np.float32)
        big = cv2.resize(small, (width, height), interpolation=cv2.INTER_CUBIC)
        image = np.rint(np.clip(big, 0.0, 1.0) * 255.0).astype(np.uint8)
        return image[:, :, None], h, w

    def labels(self, h: int, w: int) -> tuple[Label, ...]:
        """``(fx, fy)``; ``(class,)`` with ``classes``; ``(age,)``, fx mapped to 0..99."""
        fx, fy = w / self.size[1], h / self.size[0]
        if self.label == "age":
            return (min(int(fx * 100), 99),)
        if self.classes is None:
            return (fx, fy)
        return (min(int(fx * self.classes), self.classes - 1),)

    def name(self, index: int, h: int, w: int) -> str:
        """``{i:05d}_{fx:.2f}_{fy:.2f}.ext``, the index widened past 100000 samples."""
        digits = max(5, len(str(self.n - 1)))
        fx, fy = w / self.size[1], h / self.size[0]
        return f"{index:0{digits}d}_{fx:.2f}_{fy:.2f}.{self.ext}"

    def meta(self) -> dict:
        """The generator and its label layout, as a store's manifest records them."""
        columns = ["age"] if self.label == "age" else ["class"] if self.classes is not None else ["fx", "fy"]
        return {
            "source": f"dataprep noise (seed {self.seed})",
            "labels": {"count": len(columns), "kind": "int" if self.integer else "float", "columns": columns},
            "preprocessing": {"channels": "auto", "gray": True, "resize": None},
        }

    def record(self, index: int) -> Record:
        image, h, w = self.sample(index)
        key = self.name(index, h, w)
        return Record(f"{self.prefix}/{key}" if self.prefix else key, image, self.labels(h, w))


def class_names(classes: int) -> list[str]:
    """Names of the ``fx`` bins: class k holds ``k/K <= fx < (k+1)/K``."""
    return [f"fx[{k / classes:.4g},{(k + 1) / classes:.4g})" for k in range(classes)]


@dataclass(frozen=True)
class _WriteFiles:
    """Worker task: write samples ``start..stop-1`` as image files into ``folder``."""

    source: NoiseSource
    folder: Path
    fmt: str
    quality: int

    def __call__(self, start: int, stop: int) -> list[tuple[str, tuple[Label, ...]]]:
        out = []
        for i in range(start, stop):
            image, h, w = self.source.sample(i)
            name = self.source.name(i, h, w)
            (self.folder / name).write_bytes(encode(image, self.fmt, self.quality))
            out.append((name, self.source.labels(h, w)))
        return out


@dataclass
class NoiseFiles:
    """What ``write_noise_files`` made: the image folder and the list files, by role."""

    folder: Path
    lists: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)


def write_noise_files(
    source: NoiseSource,
    out: Path,
    lists_dir: Path,
    counts: list[int],
    executor: Executor,
    fmt: str = "jpg",
    quality: int = 95,
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
    classes_out: Path | None = None,
) -> NoiseFiles:
    """Write every sample as an image file in ``out`` and the split lists in ``lists_dir``.

    ``train.txt``/``val.txt`` hold ``path labels``, ``test.txt`` paths only and
    ``test_labels.txt`` the held-back labels; paths are relative to ``lists_dir``. A split
    with no samples gets no list. With classes, ``classes.txt`` (or ``classes_out``) names
    them. Everything is built at temporary paths and moved into place when complete.
    """
    if fmt not in ENCODINGS:
        raise UsageError(f"unknown image format {fmt!r}; choose from {', '.join(ENCODINGS)}")
    result = NoiseFiles(Path(out))
    rel = Path(os.path.relpath(out, lists_dir)).as_posix()
    parts = {
        name: idx
        for name, idx in zip(SPLIT_NAMES, assign(source.n, counts, source.seed))
        if len(idx) or name == "train"
    }
    with Staging(overwrite) as staging:
        folder = staging.path(out, allow_empty_dir=True)
        roles = [*parts, *(["test_labels"] if "test" in parts else [])]
        result.lists = {role: lists_dir / f"{role}.txt" for role in roles}
        if source.classes is not None:
            result.lists["classes"] = Path(classes_out) if classes_out else lists_dir / "classes.txt"
        outputs = {role: staging.path(dest) for role, dest in result.lists.items()}
        folder.mkdir()
        task = _WriteFiles(source, folder, fmt, quality)
        written = list(ordered_map(task, source.n, executor, progress=progress))
        for split, indices in parts.items():
            rows = [(f"{rel}/{written[i][0]}", written[i][1]) for i in indices]
            labelled = split != "test"
            write_list(outputs[split], [format_line(p, ls if labelled else ()) for p, ls in rows])
            if split == "test":
                write_list(outputs["test_labels"], [format_line(p, ls) for p, ls in rows])
            result.counts[split] = len(indices)
        if source.classes is not None:
            write_list(outputs["classes"], class_lines(class_names(source.classes)))
    return result


def _hdf5_writer(
    out: Path, split: str, n: int, source: NoiseSource, overwrite: bool, meta: dict, hdf5: "Hdf5Options"
):
    from .stores.hdf5 import Hdf5Writer

    default = ["label"] if source.integer else ["freq"]
    return Hdf5Writer(
        out / f"{split}.h5", overwrite=overwrite, expected=n, meta=meta, **hdf5.writer_options(default)
    )


def _datum_writer(backend: str):
    def make(
        out: Path, split: str, n: int, source: NoiseSource, overwrite: bool, meta: dict, hdf5: "Hdf5Options"
    ):
        from .stores.datum import DatumWriter

        db = out / f"{split}_{backend}"
        labels = None if source.integer else db.with_name(db.name + "_labels")
        return DatumWriter(db, backend=backend, overwrite=overwrite, labels_path=labels, meta=meta)

    return make


def _wds_writer(
    out: Path, split: str, n: int, source: NoiseSource, overwrite: bool, meta: dict, hdf5: "Hdf5Options"
):
    from .stores.wds import WdsWriter

    return WdsWriter(out / split, overwrite=overwrite, meta=meta)


# --to choice -> writer factory for one split's store
NOISE_STORES = {
    "hdf5": _hdf5_writer,
    "lmdb": _datum_writer("lmdb"),
    "leveldb": _datum_writer("leveldb"),
    "wds": _wds_writer,
}


def write_noise_stores(
    source: NoiseSource,
    out: Path,
    counts: list[int],
    kind: str,
    executor: Executor,
    overwrite: bool = False,
    hdf5: "Hdf5Options | None" = None,
    progress: Callable[[int], object] | None = None,
) -> dict[str, list[Path]]:
    """Stream the train/val/test samples straight into one store each in ``out``.

    No image files are created and nothing is decoded again (the README says what that
    saves). Pixels equal the PNG file route's exactly. Float labels go to HDF5 ``freq`` or,
    for Datum stores, a companion ``*_labels`` store; ``classes`` gives integer labels.
    """
    from .convert import open_writers, store_meta, write_stores
    from .stores.hdf5 import Hdf5Options

    hdf5 = hdf5 or Hdf5Options()
    if kind not in NOISE_STORES:
        raise UsageError(f"unknown store {kind!r}; choose from {', '.join(sorted(NOISE_STORES))}")
    out = Path(out)
    meta = store_meta(source, **(hdf5.manifest() if kind == "hdf5" else {}))
    splits = [
        (name, idx) for name, idx in zip(SPLIT_NAMES, assign(source.n, counts, source.seed)) if len(idx)
    ]
    writers = open_writers(
        functools.partial(NOISE_STORES[kind], out, name, len(idx), source, overwrite, meta, hdf5)
        for name, idx in splits
    )
    order = np.concatenate([idx for _, idx in splits]).tolist()
    parts = [(writer, len(idx)) for writer, (_, idx) in zip(writers, splits)]
    results = write_stores(Subset(source, order), parts, executor, progress=progress)
    outputs = {name: result.outputs for (name, _), result in zip(splits, results)}
    return outputs
