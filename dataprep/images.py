"""Image decode, encode and resize with OpenCV; arrays are H x W x C uint8, channels BGR."""

from __future__ import annotations

import os
import re
from pathlib import Path

import cv2
import numpy as np

from .errors import DataprepError, ImageError

INTERPOLATIONS = {
    "nearest": cv2.INTER_NEAREST,
    "linear": cv2.INTER_LINEAR,
    "cubic": cv2.INTER_CUBIC,
    "area": cv2.INTER_AREA,
    "lanczos": cv2.INTER_LANCZOS4,
}

ENCODINGS = {"jpg": ".jpg", "png": ".png"}

_SIZE = re.compile(r"^\s*(\d+)\s*[xX]\s*(\d+)\s*$")


def parse_size(text: str) -> tuple[int, int]:
    """``"HxW"`` (height first) to ``(H, W)``; a single number means a square."""
    match = _SIZE.match(text)
    if match:
        size = (int(match.group(1)), int(match.group(2)))
    elif text.strip().isdigit():
        size = (int(text), int(text))
    else:
        raise DataprepError(f"size {text!r} is not HxW (height x width, e.g. 100x100)")
    if min(size) < 1:
        raise DataprepError(f"size {text!r} must be positive")
    return size


def as_hwc(image: np.ndarray) -> np.ndarray:
    """Give a 2-D gray image its channel axis so every image is H x W x C."""
    return image[:, :, None] if image.ndim == 2 else image


def decode(data: bytes | np.ndarray, gray: bool = False) -> np.ndarray:
    """Decode image bytes as Caffe does: 3-channel BGR (alpha dropped), or 1 channel with gray.

    Raises ValueError when the bytes are not an image OpenCV can read.
    """
    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    flags = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    image = cv2.imdecode(buf, flags) if buf.size else None
    if image is None:
        raise ValueError("not a decodable image")
    return as_hwc(image)


def load_image(path: Path, where: str, gray: bool = False) -> tuple[bytes, np.ndarray]:
    """Read and decode one image file as Caffe does; returns (file bytes, H x W x C image).

    A missing or undecodable file raises ImageError naming ``where`` (list line and path).
    """
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ImageError(f"{where}: cannot read image ({exc.strerror})") from None
    try:
        return data, decode(data, gray=gray)
    except ValueError:
        raise ImageError(f"{where}: cannot decode image") from None


def encode(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode an H x W x C image as ``jpg`` or ``png`` bytes."""
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpg" else []
    ok, buf = cv2.imencode(ENCODINGS[fmt], image, params)
    if not ok:
        raise ImageError(f"cannot encode image as {fmt}")
    return buf.tobytes()


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "linear") -> np.ndarray:
    """Exact resize to ``(H, W)``, squashing the aspect ratio as convert_imageset does."""
    if image.shape[:2] == tuple(size):
        return image
    out = cv2.resize(image, (size[1], size[0]), interpolation=INTERPOLATIONS[interpolation])
    return as_hwc(out)


def write_image(dest: Path, image: np.ndarray, quality: int = 95) -> None:
    """Encode by ``dest``'s extension and write it complete or not at all: a temporary
    sibling is renamed into place, so a file that exists is a finished one."""
    ext = dest.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ImageError(f"cannot encode as {ext}")
    tmp = dest.with_name(f".{dest.name}.partial")  # a rerun rewrites a killed run's leftover
    try:
        out = open(tmp, "wb")
    except FileNotFoundError:  # the first file of its folder: make it then, not per image
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = open(tmp, "wb")
    with out:
        out.write(data)
    os.replace(tmp, dest)
