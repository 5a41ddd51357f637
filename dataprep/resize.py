"""Resize image folders or lists to files: exact size, shorter side, or shorter side plus
center crop. Resumable: each output is written under a temporary name and renamed when
complete, so a rerun skips exactly the outputs that are done."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

import cv2
import numpy as np

from .errors import DataprepError, ImageError
from .handlers import OnError
from .images import INTERPOLATIONS, as_hwc, load_image, write_image
from .listfile import ListFile, format_line, read_list
from .parallel import Executor, ordered_map
from .scan import DEFAULT_EXTENSIONS, images_under
from .staging import Staging

FORMATS = {"keep": None, "jpg": ".jpg", "png": ".png"}


@dataclass(frozen=True)
class ResizeSpec:
    """What to do to each image. Sizes are (H, W); ``interpolation`` None picks area when
    shrinking and cubic when enlarging (quality first)."""

    size: tuple[int, int] | None = None
    shorter: int | None = None
    crop: tuple[int, int] | None = None
    interpolation: str | None = None
    gray: bool = False
    fmt: str = "keep"
    quality: int = 95

    def __post_init__(self) -> None:
        if (self.size is None) == (self.shorter is None):
            raise DataprepError("give exactly one of --size and --shorter-side")
        if self.crop is not None and self.shorter is None:
            raise DataprepError("--center-crop goes with --shorter-side")
        if self.crop is not None and min(self.crop) > self.shorter:
            raise DataprepError(f"--center-crop {self.crop[0]}x{self.crop[1]} is larger than the "
                                f"shorter side {self.shorter}")
        if self.fmt not in FORMATS:
            raise DataprepError(f"unknown format {self.fmt!r}; choose from {', '.join(FORMATS)}")


def target_size(shape: tuple[int, ...], spec: ResizeSpec) -> tuple[int, int]:
    """The (H, W) an image of ``shape`` is resized to, before any crop."""
    if spec.size is not None:
        return spec.size
    h, w = shape[:2]
    scale = spec.shorter / min(h, w)
    return (spec.shorter, max(1, round(w * scale))) if h <= w else (max(1, round(h * scale)), spec.shorter)


def center_crop(image: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """The centered (H, W) window of an image (top-left biased when the margin is odd)."""
    h, w = image.shape[:2]
    top, left = (h - size[0]) // 2, (w - size[1]) // 2
    return image[top : top + size[0], left : left + size[1]]


def resize_image(image: np.ndarray, spec: ResizeSpec) -> np.ndarray:
    """Resize (and crop) one H x W x C image as ``spec`` says."""
    out_h, out_w = target_size(image.shape, spec)
    h, w = image.shape[:2]
    interpolation = spec.interpolation or ("area" if out_h * out_w <= h * w else "cubic")
    if (out_h, out_w) != (h, w):
        image = as_hwc(cv2.resize(image, (out_w, out_h), interpolation=INTERPOLATIONS[interpolation]))
    return center_crop(image, spec.crop) if spec.crop else image


class Item(NamedTuple):
    source: str  # absolute path of the input
    output: str  # relative path under OUT
    where: str  # for messages: "list:line: path" or the relative path


def output_name(relative: str, fmt: str) -> str:
    """The output's relative path: the input's, with the extension ``fmt`` asks for."""
    ext = FORMATS[fmt]
    return str(PurePosixPath(relative).with_suffix(ext)) if ext else relative


def contained(out: Path, relative: str, where: str) -> None:
    """Refuse an output that would land outside OUT (absolute paths, ``..`` past the top).
    A lexical check, a few microseconds per entry: symbolic links the user made inside OUT
    are followed as the user meant."""
    norm = os.path.normpath(relative)
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise DataprepError(f"{where}: output {relative!r} would land outside {out}")


def folder_items(src: Path, out: Path, fmt: str) -> list[Item]:
    """Every image under ``src``, mirrored under ``out``."""
    files = images_under(src, set(DEFAULT_EXTENSIONS))
    if not files:
        raise DataprepError(f"{src}: no images")
    return [Item(str(p), output_name(p.relative_to(src).as_posix(), fmt), p.relative_to(src).as_posix())
            for p in files]


def list_items(listfile, out: Path, fmt: str) -> list[Item]:
    """The images of a list; each entry's path is kept (made relative) under ``out``."""
    items = []
    for e in listfile.entries:
        where = f"{listfile.name}:{e.line}: {e.path}"
        relative = output_name(e.path, fmt)
        contained(out, relative, where)
        items.append(Item(str(listfile.resolve(e)), relative, where))
    return items


def load(item: Item, gray: bool) -> np.ndarray:
    """Decode an item's image; ImageError naming its list line and path."""
    return load_image(Path(item.source), item.where, gray)[1]


@dataclass(frozen=True)
class _ResizeTask:
    """Worker task: resize items ``start..stop-1``; each gives "done", "kept" or an error.

    On ``device`` "gpu" the chunk is decoded on the CPU, moved in one upload, resized with
    ``transforms.resize`` (weight-matrix products), moved back in one download and written."""

    items: list[Item]
    out: str
    spec: ResizeSpec
    overwrite: bool
    device: str = "cpu"

    def __call__(self, start: int, stop: int) -> list[str]:
        if self.device == "cpu":  # one image at a time: it stays in cache from decode to write
            return [self._one(i) for i in range(start, stop)]
        status: dict[int, str] = {}
        todo: list[tuple[int, np.ndarray]] = []
        for i in range(start, stop):
            if self._kept(i):
                status[i] = "kept"
                continue
            try:
                todo.append((i, load(self.items[i], self.spec.gray)))
            except ImageError as exc:
                status[i] = str(exc)
        for i, image in zip([i for i, _ in todo], self._on_device([image for _, image in todo])):
            write_image(Path(self.out) / self.items[i].output, image, self.spec.quality)
            status[i] = "done"
        return [status[i] for i in range(start, stop)]

    def _kept(self, i: int) -> bool:
        return not self.overwrite and (Path(self.out) / self.items[i].output).exists()

    def _one(self, i: int) -> str:
        if self._kept(i):
            return "kept"
        item = self.items[i]
        try:
            write_image(Path(self.out) / item.output, resize_image(load(item, self.spec.gray), self.spec),
                        self.spec.quality)
        except ImageError as exc:
            return str(exc)
        return "done"

    def _on_device(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from . import transforms as T
        from .gpu import array_module, to_device, to_host

        out = []
        for image in to_device(images, array_module(self.device)):
            hw = target_size(image.shape, self.spec)
            interpolation = self.spec.interpolation or (
                "area" if hw[0] * hw[1] <= image.shape[0] * image.shape[1] else "linear")
            resized = T.to_uint8(T.resize(image, hw, interpolation))
            out.append(center_crop(resized, self.spec.crop) if self.spec.crop else resized)
        return to_host(out)


GPU_INTERPOLATIONS = ("area", "linear")


class JobResult(NamedTuple):
    done: int
    kept: int
    skipped: int
    list_path: Path | None


def file_job(
    src: Path,
    out: Path,
    fmt: str,
    make_task: Callable[[list[Item]], Callable[[int, int], list[str]]],
    outputs: Callable[[Item], list[str]],
    executor: Executor,
    root: str | None = None,
    on_error: OnError | None = None,
    progress: Callable[[int], object] | None = None,
    check_list: Callable[[ListFile], None] | None = None,
) -> JobResult:
    """Run an image-to-files task over a folder (mirrored under ``out``) or a list file (its
    images under ``out``, the list rewritten as ``out/<list name>`` naming every output of
    every good entry with that entry's labels). Bad images follow ``on_error``; ``check_list``
    may refuse a list before any work starts."""
    on_error = on_error or OnError()
    src, out = Path(src), Path(out)
    listfile = None
    if str(src) != "-" and src.is_dir():
        items = folder_items(src, out, fmt)
    else:
        listfile = read_list(src, root=root, on_error=on_error)
        if check_list is not None:
            check_list(listfile)
        items = list_items(listfile, out, fmt)
    out.mkdir(parents=True, exist_ok=True)
    counts = {"done": 0, "kept": 0}
    good: list[int] = []
    for i, status in enumerate(ordered_map(make_task(items), len(items), executor, progress=progress)):
        if status in counts:
            counts[status] += 1
            good.append(i)
        else:
            on_error(ImageError(status))
    list_path = None
    if listfile is not None:
        list_path = out / (Path(listfile.name).name if str(src) != "-" else "list.txt")
        lines = [format_line(name, listfile.entries[i].labels) for i in good for name in outputs(items[i])]
        with Staging(overwrite=True) as staging:
            staging.path(list_path).write_text("".join(line + "\n" for line in lines))
    return JobResult(counts["done"], counts["kept"], on_error.skipped, list_path)


def resize_all(src: Path, out: Path, spec: ResizeSpec, executor: Executor, root: str | None = None,
               overwrite: bool = False, device: str = "cpu", on_error: OnError | None = None,
               progress: Callable[[int], object] | None = None) -> JobResult:
    """Resize a folder or a list file's images into ``out`` (see ``file_job``).

    ``device`` "gpu" resizes with CuPy (area or linear; the default enlarges with linear
    there, not cubic) and fails clearly without CuPy and a GPU; "auto" uses the GPU only
    when it is usable."""
    from .gpu import array_module

    if array_module(device) is np:
        device = "cpu"
    else:
        device = "gpu"
        if spec.interpolation and spec.interpolation not in GPU_INTERPOLATIONS:
            raise DataprepError(f"--interpolation {spec.interpolation} is not available with "
                                f"--device gpu; use {' or '.join(GPU_INTERPOLATIONS)}")
    return file_job(src, out, spec.fmt, lambda items: _ResizeTask(items, str(out), spec, overwrite, device),
                    lambda item: [item.output], executor, root=root, on_error=on_error,
                    progress=progress)
