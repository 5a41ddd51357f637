"""Small made-up datasets in the formats users hold: MNIST's four IDX files, CIFAR-10's
binary archive, a folder of color photos in class subfolders. The README's tour runs on
them without a download; each is seeded, and each class looks different, so a net can
learn it.
"""

from __future__ import annotations

import gzip
import io
import struct
import tarfile
from pathlib import Path

import cv2
import numpy as np

from .images import encode
from .staging import Staging

CIFAR10_NAMES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
PHOTO_CLASSES = ["circles", "squares", "stripes"]
CIFAR_TRAIN_BATCHES = 5


def digit(label: int, rng: np.random.Generator) -> np.ndarray:
    """A 28 x 28 gray image of the digit ``label``, shifted and noised."""
    image = np.zeros((28, 28), np.uint8)
    x, y = (int(v) for v in rng.integers(2, 9, 2))
    cv2.putText(image, str(label), (x, 20 + y // 2), cv2.FONT_HERSHEY_SIMPLEX, 0.8, 255, 2)
    return np.clip(image.astype(np.int16) + rng.integers(0, 40, image.shape), 0, 255).astype(np.uint8)


def tinted(label: int, classes: int, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """A color noise image (H x W x 3, BGR) whose hue and drawn shape follow ``label``."""
    hue = np.uint8(180 * label // classes)
    hsv = np.stack(
        [
            np.full(shape, hue, np.uint8),
            rng.integers(120, 256, shape, dtype=np.uint8),
            rng.integers(60, 200, shape, dtype=np.uint8),
        ],
        axis=2,
    )
    image = cv2.cvtColor(hsv, cv2.COLOR_HSV2BGR)
    h, w = shape
    kind = label % len(PHOTO_CLASSES)
    color = tuple(int(c) for c in rng.integers(0, 256, 3))
    if kind == 0:
        cv2.circle(image, (w // 2, h // 2), min(h, w) // 3, color, -1)
    elif kind == 1:
        cv2.rectangle(image, (w // 4, h // 4), (3 * w // 4, 3 * h // 4), color, -1)
    else:
        for x in range(0, w, max(4, w // 8)):
            cv2.line(image, (x, 0), (x, h), color, max(1, w // 32))
    return image


def _idx(magic: int, array: np.ndarray) -> bytes:
    """An IDX file's bytes: magic, the dimensions (big-endian), then the uint8 data."""
    return struct.pack(f">I{array.ndim}I", magic, *array.shape) + array.tobytes()


def write_mnist(out: Path, n: int, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """MNIST's four gzipped IDX files in ``out``: ``n`` training and ``n // 5`` test digits."""
    rng = np.random.default_rng(seed)
    written = []
    with Staging(overwrite) as staging:
        for prefix, count in (("train", n), ("t10k", max(1, n // 5))):
            labels = rng.integers(0, 10, count).astype(np.uint8)
            images = np.stack([digit(int(k), rng) for k in labels])
            for kind, magic, array in (("images-idx3", 2051, images), ("labels-idx1", 2049, labels)):
                dest = out / f"{prefix}-{kind}-ubyte.gz"
                staging.path(dest).write_bytes(gzip.compress(_idx(magic, array), mtime=0))
                written.append(dest)
    return written


def write_cifar10(out: Path, n: int, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """``cifar-10-binary.tar.gz`` in ``out``, laid out as the official archive: five
    training batches of ``n // 5`` records (label byte, then 3072 bytes of R, G and B
    planes), a test batch of ``n // 5`` and ``batches.meta.txt``."""
    rng = np.random.default_rng(seed)
    per_batch = max(1, n // CIFAR_TRAIN_BATCHES)
    names = [f"data_batch_{k}.bin" for k in range(1, CIFAR_TRAIN_BATCHES + 1)] + ["test_batch.bin"]
    dest = out / "cifar-10-binary.tar.gz"
    with Staging(overwrite) as staging:
        buffer = io.BytesIO()
        with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
            members = {"batches.meta.txt": ("\n".join(CIFAR10_NAMES) + "\n").encode()}
            for name in names:
                rows = []
                for label in rng.integers(0, 10, per_batch):
                    rgb = tinted(int(label), 10, (32, 32), rng)[:, :, ::-1]
                    rows.append(bytes([int(label)]) + np.ascontiguousarray(rgb.transpose(2, 0, 1)).tobytes())
                members[name] = b"".join(rows)
            for name, data in members.items():
                info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
                info.size = len(data)
                archive.addfile(info, io.BytesIO(data))
        staging.path(dest).write_bytes(buffer.getvalue())
    return [dest]


def write_photos(out: Path, n: int, seed: int = 0, overwrite: bool = False) -> list[Path]:
    """``n`` JPEG photos of 96 to 160 pixels a side in ``out/CLASS/``, the classes of
    ``PHOTO_CLASSES`` in turn; ``out`` itself is one output."""
    rng = np.random.default_rng(seed)
    with Staging(overwrite) as staging:
        folder = staging.path(out)
        for i in range(n):
            label = i % len(PHOTO_CLASSES)
            h, w = (int(v) for v in rng.integers(96, 161, 2))
            path = folder / PHOTO_CLASSES[label] / f"{i:04d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(encode(tinted(label, len(PHOTO_CLASSES), (h, w), rng), "jpg", quality=90))
    return [out]


EXAMPLES = {"mnist": write_mnist, "cifar10": write_cifar10, "photos": write_photos}
