"""What a user checks before training: a store's summary, and a montage of its samples."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np

from .stores import open_store
from .stores.base import StoreReader

CELL = 96  # pixels a sample gets in the montage (longer side)
TEXT_ROWS = 14


def disk_usage(reader: StoreReader) -> int:
    """Bytes the store's files occupy on disk (allocated blocks: LMDB files may be sparse)."""
    return sum(os.stat(p).st_blocks * 512 for p in reader.files_on_disk())


def column_names(manifest: dict, k: int, datasets: list[str] | None = None) -> list[str]:
    """Names for the k label columns as the store names them: HDF5 dataset names (``freq[0]``,
    ``freq[1]`` for one N x 2 dataset), else the manifest's columns, else ``label[i]``."""
    layout = manifest.get("labels") or {}
    names = datasets if datasets is not None else layout.get("names")
    if names is None and len(layout.get("columns") or []) == k:
        return list(layout["columns"])
    names = names or []
    if len(names) == k:
        return list(names)
    base = names[0] if len(names) == 1 else "label"
    return [base] if k == 1 else [f"{base}[{i}]" for i in range(k)]


def shape_range(reader: StoreReader) -> tuple[list[int], list[int]]:
    """The smallest and largest C, H, W over every record (one pass over the store)."""
    lo = hi = None
    for rec in reader:
        shape = np.array(rec.array.shape)
        lo = shape if lo is None else np.minimum(lo, shape)
        hi = shape if hi is None else np.maximum(hi, shape)
    return lo.tolist(), hi.tolist()


def label_stats(labels: np.ndarray, integer: bool) -> list[dict]:
    """Per label column: min, max, mean, and for integer labels a class histogram."""
    stats = []
    for column in labels.T:
        entry = {"min": float(column.min()), "max": float(column.max()), "mean": float(column.mean())}
        if integer:
            values, counts = np.unique(column.astype(np.int64), return_counts=True)
            entry["histogram"] = {int(v): int(c) for v, c in zip(values, counts)}
        stats.append(entry)
    return stats


def summarize(path: str | Path, first_keys: int = 5) -> dict:
    """Type, count, data shape and dtype, encoding, labels, size on disk and first keys."""
    with open_store(path) as reader:
        n = len(reader)
        first = reader[0] if n else None
        labels = reader.all_labels() if n else np.empty((0, 0))
        integer = bool(labels.size) and bool(np.all(labels == np.round(labels)))
        manifest = reader.manifest or {}
        uniform = manifest.get("shape") is not None or reader.kind == "hdf5"
        lo, hi = shape_range(reader) if n and not uniform else ([], [])
        k = labels.shape[1] if labels.ndim == 2 else 0
        return {
            "path": str(path),
            "type": reader.kind,
            "count": n,
            "shape": list(first.array.shape) if first is not None and lo == hi else None,
            "shape_min": lo if lo != hi else None,
            "shape_max": hi if lo != hi else None,
            "dtype": str(first.array.dtype) if first is not None else None,
            "uniform_shape": lo == hi,
            "encoded": reader.encoded(),
            "labels": {
                "columns": labels.shape[1] if labels.ndim == 2 else 0,
                "integer": integer,
                "columns_named": column_names(manifest, k, getattr(reader, "label_names", None)),
                "stats": label_stats(labels, integer) if labels.size else [],
            },
            "bytes_on_disk": disk_usage(reader),
            "first_keys": reader.keys()[:first_keys],
            "manifest": bool(manifest),
            "preprocessing": manifest.get("preprocessing"),
        }


def _stretched(image: np.ndarray) -> np.ndarray:
    """Values stretched to 0..255 uint8 (uint8 data as it is)."""
    if image.dtype == np.uint8:
        return image
    lo, hi = float(image.min()), float(image.max())
    return ((image - lo) * (255.0 / (hi - lo)) if hi > lo else image * 0).astype(np.uint8)


def _displayable(array: np.ndarray) -> np.ndarray:
    """A C x H x W record as an H x W x 3 uint8 BGR picture (float data stretched to
    0..255). Features (channel counts other than 1, 3 or 4, as ``extract`` writes) show
    their first channel as a heat map, or a C x 1 x 1 vector as a square of its values."""
    c, h, w = array.shape
    if c not in (1, 3, 4):
        plane = array[0] if h * w > 1 else _square(array.ravel())
        return cv2.applyColorMap(_stretched(plane), cv2.COLORMAP_VIRIDIS)
    image = _stretched(array.transpose(1, 2, 0))
    if image.shape[2] == 1:
        image = cv2.cvtColor(image, cv2.COLOR_GRAY2BGR)
    return np.ascontiguousarray(image[:, :, :3])


def _square(values: np.ndarray) -> np.ndarray:
    """A vector laid out row by row in the smallest square that holds it (the rest: its minimum)."""
    side = math.ceil(math.sqrt(values.size))
    square = np.full(side * side, values.min(), values.dtype)
    square[: values.size] = values
    return square.reshape(side, side)


def _label_text(labels: np.ndarray) -> str:
    return " ".join(f"{v:.3g}" for v in labels.tolist())


def make_grid(path: str | Path, count: int = 64, random: bool = False, seed: int = 0) -> np.ndarray:
    """A montage of ``count`` samples (the first, or a seeded random pick), labels under each,
    in true colours (a store in RGB order, as a CIFAR import, is turned to OpenCV's BGR)."""
    with open_store(path) as reader:
        n = len(reader)
        count = max(1, min(count, n))
        indices = (
            np.sort(np.random.default_rng(seed).choice(n, count, replace=False))
            if random
            else np.arange(count)
        )
        records = [reader[int(i)] for i in indices]
        rgb = ((reader.manifest or {}).get("preprocessing") or {}).get("channel_order") == "RGB"
    return montage([picture(rec.array, rgb) for rec in records], [_label_text(rec.labels) for rec in records])


def picture(array: np.ndarray, rgb: bool = False) -> np.ndarray:
    """A C x H x W record as a BGR picture in true colours (``rgb``: its planes are R, G, B)."""
    return _displayable(array[::-1] if rgb and array.shape[0] == 3 else array)


def montage(pictures: list[np.ndarray], captions: list[str]) -> np.ndarray:
    """BGR pictures in a near-square grid of CELL-pixel cells, each caption under its picture."""
    count = max(1, len(pictures))
    cols = math.ceil(math.sqrt(count))
    rows = math.ceil(count / cols)
    grid = np.full((rows * (CELL + TEXT_ROWS), cols * CELL, 3), 255, np.uint8)
    for k, (image, caption) in enumerate(zip(pictures, captions)):
        h, w = image.shape[:2]
        scale = CELL / max(h, w)
        image = cv2.resize(
            image,
            (max(1, round(w * scale)), max(1, round(h * scale))),
            interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_NEAREST,
        )
        y, x = (k // cols) * (CELL + TEXT_ROWS), (k % cols) * CELL
        grid[y : y + image.shape[0], x : x + image.shape[1]] = image
        cv2.putText(
            grid,
            caption,
            (x + 2, y + CELL + TEXT_ROWS - 3),
            cv2.FONT_HERSHEY_SIMPLEX,
            0.35,
            (0, 0, 0),
            1,
            cv2.LINE_AA,
        )
    return grid
