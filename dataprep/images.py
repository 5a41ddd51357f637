"""Image decode, encode and resize with OpenCV; arrays are H x W x C uint8, channels BGR."""

from __future__ import annotations

import contextlib
import os
import re
import struct
import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Iterable, Iterator, NamedTuple

import numpy as np

from .errors import ImageError, UsageError

# OpenCV's flag names: OpenCV is imported where an image is first decoded, encoded or
# resized, not with this module (`mean` of raw records never loads it)
INTERPOLATIONS = {
    "nearest": "INTER_NEAREST",
    "linear": "INTER_LINEAR",
    "cubic": "INTER_CUBIC",
    "area": "INTER_AREA",
    "lanczos": "INTER_LANCZOS4",
}

ENCODINGS = {"jpg": ".jpg", "png": ".png"}

SIZE_FORMS = "HxW (height x width, e.g. 100x150) or S for an S x S square (e.g. 227)"
_SIZE = re.compile(r"^(\d+)x(\d+)$|^(\d+)$")


def parse_size(text: str, option: str = "size") -> tuple[int, int]:
    """The one size grammar of every option: ``HxW`` (height first, a lower-case x, no
    spaces) or a single number ``S`` for a square; returns ``(H, W)``."""
    match = _SIZE.match(text)
    if not match:
        raise UsageError(f"{option} {text!r}: give {SIZE_FORMS}")
    h, w, square = match.groups()
    size = (int(square), int(square)) if square else (int(h), int(w))
    if min(size) < 1:
        raise UsageError(f"{option} {text!r}: sides must be at least 1")
    return size


def interpolation_flag(name: str) -> int:
    """OpenCV's flag for one of INTERPOLATIONS."""
    import cv2

    return getattr(cv2, INTERPOLATIONS[name])


def describe_shape(shape: tuple[int, ...], layout: str = "HWC") -> str:
    """A shape as every message words it: ``191x384 (HxW) with 3 channels``, whatever the
    array's axis order (``layout`` "HWC" for images, "CHW" for stored records)."""
    if len(shape) != 3:
        return "x".join(map(str, shape))
    c, h, w = (shape[2], shape[0], shape[1]) if layout == "HWC" else shape
    return f"{h}x{w} (HxW) with {c} channel{'s' if c != 1 else ''}"


def as_hwc(image: np.ndarray) -> np.ndarray:
    """Give a 2-D gray image its channel axis so every image is H x W x C."""
    return image[:, :, None] if image.ndim == 2 else image


CHANNEL_MODES = ("auto", "gray", "color")


MAX_PIXELS = 178_956_970  # Pillow's decompression-bomb limit; --max-pixels sets it, 0: none


class TooLarge(ValueError):
    """An image whose header declares more pixels than MAX_PIXELS: refused undecoded."""


def file_format(data: bytes) -> str:
    """``jpg`` or ``png`` as the bytes' signature says (other formats: ``png``, the
    extension dataprep gives images it encodes)."""
    return "jpg" if bytes(data[:2]) == b"\xff\xd8" else "png"


def header_size(data: bytes | np.ndarray) -> tuple[int, int] | None:
    """(height, width) as a PNG, JPEG, GIF, BMP, TIFF or WebP header declares it, read
    without decoding; None for other formats or a header too short to say. A JPEG's frame
    header is found however far behind comments and APP segments it is: the walk jumps
    from segment to segment by their lengths."""
    head = bytes(data[:65536])
    if head[:8] == b"\x89PNG\r\n\x1a\n" and head[12:16] == b"IHDR":
        width, height = struct.unpack(">II", head[16:24])
        return height, width
    if head[:6] in (b"GIF87a", b"GIF89a"):
        width, height = struct.unpack("<HH", head[6:10])
        return height, width
    if head[:2] == b"BM" and len(head) >= 26:
        width, height = struct.unpack("<ii", head[18:26])
        return abs(height), abs(width)
    if head[:4] in (b"II*\x00", b"MM\x00*"):
        return _tiff_size(head)
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return _webp_size(head)
    if head[:2] == b"\xff\xd8":
        return _jpeg_size(data if len(data) > len(head) else head)
    return None


def _jpeg_size(data) -> tuple[int, int] | None:
    for marker, payload in _jpeg_segments(data):  # up to the frame header (SOF)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC) and len(payload) >= 5:
            height, width = struct.unpack(">HH", bytes(payload[1:5]))
            return height, width
    return None


def _tiff_size(head: bytes) -> tuple[int, int] | None:
    """ImageLength and ImageWidth of a TIFF's first directory (SHORT or LONG values)."""
    order = "<" if head[:2] == b"II" else ">"
    ifd = struct.unpack(order + "I", head[4:8])[0]
    if ifd + 2 > len(head):
        return None
    found = {}
    for k in range(struct.unpack(order + "H", head[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        if at + 12 > len(head):
            break
        tag, kind = struct.unpack(order + "HH", head[at : at + 4])
        if tag in (256, 257) and kind in (3, 4):
            found[tag] = struct.unpack(
                order + ("H" if kind == 3 else "I"), head[at + 8 : at + (10 if kind == 3 else 12)]
            )[0]
    return (found[257], found[256]) if len(found) == 2 else None


def _webp_size(head: bytes) -> tuple[int, int] | None:
    """The canvas of a WebP: lossy (VP8), lossless (VP8L) or extended (VP8X)."""
    chunk = head[12:16]
    if chunk == b"VP8X" and len(head) >= 30:
        width = int.from_bytes(head[24:27], "little") + 1
        height = int.from_bytes(head[27:30], "little") + 1
        return height, width
    if chunk == b"VP8L" and len(head) >= 25:
        bits = int.from_bytes(head[21:25], "little")
        return ((bits >> 14) & 0x3FFF) + 1, (bits & 0x3FFF) + 1
    if chunk == b"VP8 " and len(head) >= 30:
        width, height = struct.unpack("<HH", head[26:30])
        return height & 0x3FFF, width & 0x3FFF
    return None


def _jpeg_segments(data: bytes) -> Iterator[tuple[int, bytes]]:
    """A JPEG's marker segments before its scan data, as (marker, payload); none for other
    formats."""
    if bytes(data[:2]) != b"\xff\xd8":
        return
    i = 2
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = int(data[i + 1])
        if marker == 0xFF:  # a fill byte
            i += 1
            continue
        if marker in (0xDA, 0xD9):  # the scan, or the end
            return
        size = struct.unpack(">H", bytes(data[i + 2 : i + 4]))[0]
        yield marker, data[i + 4 : i + 2 + size]
        i += 2 + size


def exif_orientation(data: bytes) -> int:
    """A JPEG's EXIF orientation tag (1: upright, the default; 2 to 8: mirrored or turned),
    read from its APP1 segment without decoding. Parsed here rather than with Pillow, whose
    ``getexif`` cost about as much as decoding a 100 x 100 JPEG."""
    for marker, payload in _jpeg_segments(data[:65536]):
        if marker == 0xE1 and payload[:6] == b"Exif\x00\x00":
            return _tiff_orientation(payload[6:])
    return 1


def _tiff_orientation(tiff: bytes) -> int:
    order = {b"II": "<", b"MM": ">"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return 1
    ifd = struct.unpack(order + "I", tiff[4:8])[0]
    if ifd + 2 > len(tiff):
        return 1
    for k in range(struct.unpack(order + "H", tiff[ifd : ifd + 2])[0]):
        at = ifd + 2 + 12 * k
        if at + 12 > len(tiff):
            break
        tag, kind = struct.unpack(order + "HH", tiff[at : at + 4])
        if tag == 0x0112 and kind == 3:  # SHORT
            value = struct.unpack(order + "H", tiff[at + 8 : at + 10])[0]
            return value if 1 <= value <= 8 else 1
    return 1


def _check_pixels(data: bytes | np.ndarray) -> None:
    size = header_size(data) if MAX_PIXELS else None
    if size is not None and size[0] * size[1] > MAX_PIXELS:
        raise TooLarge(
            f"{size[0]}x{size[1]} (HxW) is {size[0] * size[1] / 1e6:.0f} megapixels, over --max-pixels "
            f"{MAX_PIXELS} (a decompression bomb?); --max-pixels 0 turns the check off"
        )


class NotAFile(ValueError):
    """A list entry that names a FIFO, a device or a folder."""


def read_image_file(path: str | os.PathLike) -> bytes:
    """An image file's bytes: only a regular file (a FIFO would hang the read, /dev/zero
    never end it); opened without blocking, so a FIFO is refused, not waited on."""
    import stat

    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    mode = os.fstat(fd).st_mode
    if not stat.S_ISREG(mode):
        os.close(fd)
        kind = "a folder" if stat.S_ISDIR(mode) else ("a FIFO" if stat.S_ISFIFO(mode) else "a device")
        raise NotAFile(f"{kind}, not an image file")
    with open(fd, "rb") as f:
        return f.read()


_STDERR_LOCK = threading.Lock()


@contextlib.contextmanager
def _codec_quiet() -> Iterator[None]:
    """libpng's and libjpeg's own lines ("libpng error: IDAT: CRC error", "Premature end of
    JPEG file") go to the null device: dataprep names the file in one line of its own."""
    with _STDERR_LOCK:
        try:
            saved = os.dup(2)
        except OSError:  # no stderr at all
            yield
            return
        null = os.open(os.devnull, os.O_WRONLY)
        try:
            os.dup2(null, 2)
            yield
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            os.close(null)


def decode(data: bytes | np.ndarray, channels: str = "color") -> np.ndarray:
    """Decode image bytes as Caffe does: ``color`` gives 3-channel BGR (gray expanded, alpha
    dropped), ``gray`` 1 channel, ``auto`` the file's own (1 for gray, 3 for color).

    Raises ValueError when the bytes are not an image OpenCV can read.
    """
    return _decode(data, channels)[0]


def _decode(data: bytes | np.ndarray, channels: str) -> tuple[np.ndarray, bool]:
    """The decoded H x W x C image, and whether its pixels are the file's own decode
    (False after a channel conversion: such pixels must be re-encoded, never passed
    through as the file's bytes)."""
    import cv2

    buf = np.frombuffer(data, np.uint8) if isinstance(data, bytes) else data
    _check_pixels(buf)  # from the header, before a decoder allocates the pixels
    try:
        with _codec_quiet():
            image = cv2.imdecode(buf, cv2.IMREAD_ANYCOLOR) if buf.size else None
    except cv2.error as exc:  # OpenCV's own pixel limit, behind the header checks
        if "MAX_IMAGE_PIXELS" in str(exc):
            raise TooLarge("over OpenCV's pixel limit (--max-pixels)") from None
        raise ValueError("not a decodable image") from None
    if image is None:
        raise ValueError("not a decodable image")
    if channels == "color" and image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2BGR), False  # exact: gray replicated
    if channels == "gray" and image.ndim == 3:
        # the codec's own gray conversion (libjpeg keeps the luma), as Caffe's imread does
        with _codec_quiet():
            return as_hwc(cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)), False
    return as_hwc(image), True


class Loaded(NamedTuple):
    data: bytes | None
    image: np.ndarray
    orientation: int


@dataclass(frozen=True)
class Channels:
    """How many channels images get. ``mode`` is what the user asked: ``auto`` (images keep
    their own: gray stays 1 channel, color is BGR), ``gray`` (always 1) or ``color`` (always
    3, convert_imageset's default). ``resolve`` fixes ``count`` from the first image in
    ``auto``: a gray first image makes a later color one an error naming both (a dataset
    has one channel count), a color first image expands later gray ones, as Caffe does."""

    mode: str = "auto"
    count: int | None = None
    first: str = ""  # where the first image is, for the mixed-channels error

    def __post_init__(self) -> None:
        if self.mode not in CHANNEL_MODES:
            raise UsageError(f"channels {self.mode!r}: choose from {', '.join(CHANNEL_MODES)}")

    def resolve(self, candidates: Iterable[tuple[Path, str]]) -> "Channels":
        """Fix ``count``; in ``auto`` from the first of ``candidates`` (path, where) that
        decodes (unreadable ones are skipped here: the run reports them in order)."""
        if self.count is not None:
            return self
        if self.mode != "auto":
            return replace(self, count=1 if self.mode == "gray" else 3)
        for path, where in candidates:
            try:
                image = decode(read_image_file(path), "auto")
            except (OSError, ValueError):
                continue
            return replace(self, count=image.shape[2], first=where)
        return replace(self, count=3)

    def load(self, path: Path, where: str, line: int | None = None) -> Loaded:
        """Read and decode one image file: the file's bytes when the pixels are exactly its
        own decode (else None), the H x W x C image (upright: an EXIF orientation is
        applied), and that orientation (1: none).

        A missing, undecodable or (in ``auto``) wrongly colored file raises ImageError
        naming ``where`` (list line and path)."""
        try:
            data = read_image_file(path)
        except OSError as exc:
            hint = ""
            if " " in str(path) and not os.path.exists(path):  # Caffe's split at the last space
                hint = "; a one-label list line splits at its last space, as in Caffe: one label too many?"
            raise ImageError(f"{where}: cannot read image ({exc.strerror}{hint})", line) from None
        except NotAFile as exc:
            raise ImageError(f"{where}: {exc}", line) from None
        count = self.count or (1 if self.mode == "gray" else 3)
        wanted = "gray" if count == 1 else "color"
        try:
            image, native = _decode(data, "auto" if self.mode == "auto" and count == 1 else wanted)
        except TooLarge as exc:
            raise ImageError(f"{where}: {exc}", line) from None
        except ValueError:
            raise ImageError(f"{where}: cannot decode image", line) from None
        if image.shape[2] != count:
            raise ImageError(
                f"{where}: a color image, but the first image ({self.first}) is gray: "
                "pass --color for 3-channel BGR records (or --gray to convert "
                "every image to gray)",
                line,
            )
        return Loaded(data if native else None, image, exif_orientation(data))

    def manifest(self) -> dict:
        """What a store's manifest records: the mode asked for and the channel count."""
        return {"channels": self.mode, "gray": self.count == 1}


def encode(image: np.ndarray, fmt: str = "png", quality: int = 95) -> bytes:
    """Encode an H x W x C image as ``jpg`` or ``png`` bytes."""
    import cv2

    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if fmt == "jpg" else []
    ok, buf = cv2.imencode(ENCODINGS[fmt], image, params)
    if not ok:
        raise ImageError(f"cannot encode image as {fmt}")
    return buf.tobytes()


def planar_bytes(image: np.ndarray) -> bytes:
    """An H x W x C uint8 image's pixels in C x H x W order (a raw Datum's, CVMatToDatum's):
    OpenCV's split, 30 us for 256 x 256 x 3 where NumPy's transposing copy took 54."""
    if image.shape[2] == 1:
        return image.tobytes()
    import cv2

    return b"".join(cv2.split(np.ascontiguousarray(image)))


def resize(image: np.ndarray, size: tuple[int, int], interpolation: str = "linear") -> np.ndarray:
    """Exact resize to ``(H, W)``, squashing the aspect ratio as convert_imageset does."""
    import cv2

    if image.shape[:2] == tuple(size):
        return image
    out = cv2.resize(image, (size[1], size[0]), interpolation=interpolation_flag(interpolation))
    return as_hwc(out)


def partial_path(dest: Path) -> Path:
    """Where ``write_image`` writes ``dest`` before renaming it into place."""
    return dest.with_name(f".{dest.name}.partial")


def write_image(dest: Path, image: np.ndarray, quality: int = 95) -> None:
    """Encode by ``dest``'s extension and write it complete or not at all: a temporary
    sibling is renamed into place, so a file that exists is a finished one."""
    import cv2

    ext = dest.suffix.lower() or ".png"
    params = [cv2.IMWRITE_JPEG_QUALITY, int(quality)] if ext in (".jpg", ".jpeg") else []
    ok, data = cv2.imencode(ext, image, params)
    if not ok:
        raise ImageError(f"cannot encode as {ext}")
    tmp = partial_path(dest)  # a rerun rewrites a killed run's leftover
    try:
        out = open(tmp, "wb")
    except FileNotFoundError:  # the first file of its folder: make it then, not per image
        dest.parent.mkdir(parents=True, exist_ok=True)
        out = open(tmp, "wb")
    try:
        with out:
            out.write(data)
        os.replace(tmp, dest)
    except OSError as exc:  # a full disk: named by the file it could not write
        tmp.unlink(missing_ok=True)
        raise OSError(exc.errno, exc.strerror, str(dest)) from None
    except BaseException:  # Ctrl-C between the write and the rename: no partial stays
        tmp.unlink(missing_ok=True)
        raise
