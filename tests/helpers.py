"""Test helpers: picklable tasks for the executor tests (spawned workers import this
module), synthetic image lists, running the CLI in a subprocess, comparing outputs."""

from __future__ import annotations

import gzip
import os
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np


@dataclass(frozen=True)
class Square:
    delay: float = 0.0

    def __call__(self, start: int, stop: int) -> list[tuple[int, int, int]]:
        time.sleep(self.delay)
        return [(i, i * i, os.getpid()) for i in range(start, stop)]


@dataclass(frozen=True)
class Stamped:
    """A chunk's start time and ``size`` bytes: a result larger than a pipe holds."""

    size: int

    def __call__(self, start: int, stop: int) -> list[tuple[float, bytes]]:
        return [(time.monotonic(), bytes(self.size))]


@dataclass(frozen=True)
class FailAt:
    index: int

    def __call__(self, start: int, stop: int) -> list[int]:
        if start <= self.index < stop:
            raise ValueError(f"boom at {self.index}")
        return list(range(start, stop))


@dataclass(frozen=True)
class DieAt:
    """Kills the worker process that reaches ``index`` (the parent, which computes chunks
    too, only sleeps there, so the chunk is left to a child)."""

    index: int
    parent: int = 0

    def __call__(self, start: int, stop: int) -> list[int]:
        if os.getpid() == self.parent:
            time.sleep(0.01)  # make the parent slow, so children take most chunks
        elif start <= self.index < stop:
            os._exit(3)
        return list(range(start, stop))


def run_dataprep(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the installed console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        **kw,
    )


def write_images(
    folder: Path, n: int, shape=(12, 16, 3), ext="png", seed=0, labels="int", list_name="list.txt", sizes=None
) -> tuple[Path, list[np.ndarray]]:
    """``n`` random images in ``folder/img/`` and a list file naming them; returns (list, images)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    images, lines = [], []
    for i in range(n):
        s = sizes[i] if sizes else shape
        image = rng.integers(0, 256, s, dtype=np.uint8)
        name = f"img/{i:04d}.{ext}"
        assert cv2.imwrite(str(folder / name), image)
        images.append(image if image.ndim == 3 else image[:, :, None])
        label = {"int": f"{i % 5}", "float": f"{i / 7:.6f} {i * 0.5}", "none": ""}[labels]
        lines.append(f"{name} {label}".strip())
    path = folder / list_name
    path.write_text("\n".join(lines) + "\n")
    return path, images


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or the file itself) by relative path, for byte comparisons."""
    root = Path(root)
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock.mdb" and not p.name.startswith("LOG")
    }


def leftovers(folder: Path) -> list[str]:
    """Anything a writer might have left in ``folder`` (temporary siblings and claims)."""
    names = (p.name for p in Path(folder).iterdir())
    return sorted(n for n in names if ".partial-" in n or ".old-" in n or n.endswith(".claim"))


def idx(magic: int, array: np.ndarray) -> bytes:
    """An IDX file's bytes (MNIST's format): magic, the dimensions, then the data."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.astype(np.uint8).tobytes()


def mnist_files(
    folder: Path, n: int = 4, zipped: bool = False, seed: int = 5
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """MNIST's four IDX files (train and t10k, ``n`` random 28 x 28 images each); returns
    the images and labels by prefix."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for prefix in ("train", "t10k"):
        images = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        labels = rng.integers(0, 10, n).astype(np.uint8)
        for kind, magic, array in (("images-idx3", 2051, images), ("labels-idx1", 2049, labels)):
            raw = idx(magic, array)
            name = f"{prefix}-{kind}-ubyte"
            (folder / (name + ".gz" if zipped else name)).write_bytes(gzip.compress(raw) if zipped else raw)
        made[prefix] = (images, labels)
    return made


def train_losses(log: str) -> list[float]:
    """The value of every ``Train net output`` line of a `train` log, in order."""
    return [
        float(line.rsplit("=", 1)[1].split()[0]) for line in log.splitlines() if "Train net output" in line
    ]


LMDB_PAGE = 4096


def lmdb_pages(data: bytes) -> dict[str, list[int]]:
    """Page numbers by LMDB page type (P_BRANCH 1, P_LEAF 2, P_OVERFLOW 4)."""
    found: dict[str, list[int]] = {}
    for number in range(2, len(data) // LMDB_PAGE):
        at = number * LMDB_PAGE
        if struct.unpack_from("<Q", data, at)[0] != number:
            continue  # an overflow page's continuation
        flags = struct.unpack_from("<H", data, at + 10)[0]
        for bit, name in ((1, "branch"), (2, "leaf"), (4, "overflow")):
            if flags & bit:
                found.setdefault(name, []).append(number)
    return found


def damage_lmdb(data: bytearray, where: str) -> None:
    """Damage an LMDB file's bytes in place, keeping its size: both meta pages, the first
    branch page, the first overflow page, or (``leaf``) a node's overflow page number."""
    pages = lmdb_pages(bytes(data))
    if where == "meta":  # both meta pages name a root past the file
        for meta in (0, 1):
            struct.pack_into("<Q", data, meta * LMDB_PAGE + 128, len(data) // LMDB_PAGE + 1000)
    elif where == "branch":
        data[pages["branch"][0] * LMDB_PAGE + 16 : pages["branch"][0] * LMDB_PAGE + 32] = b"\xff" * 16
    elif where == "overflow":
        data[pages["overflow"][0] * LMDB_PAGE : pages["overflow"][0] * LMDB_PAGE + 16] = b"\xff" * 16
    else:  # a leaf node's overflow page number far past the file: reading it is a SIGBUS
        at = pages["leaf"][0] * LMDB_PAGE
        node = at + struct.unpack_from("<H", data, at + 16)[0]
        key_size = struct.unpack_from("<H", data, node + 6)[0]
        struct.pack_into("<Q", data, node + 8 + key_size, 1 << 28)
