"""Offline augmentation: K seeded variants of every image, written as files with a list.

The random parameters of output (image i, copy k) come from ``default_rng([seed, i, k])``
alone, so the files are identical for any worker count.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from .errors import DataprepError, ImageError
from .gpu import array_module, to_device, to_host
from .handlers import OnError
from .images import write_image
from .listfile import ListFile
from .parallel import Executor
from .resize import Item, JobResult, file_job, load
from .transforms import AugmentSpec, apply, sample_params


def copy_name(output: str, k: int) -> str:
    """``dir/name.jpg`` -> ``dir/name_aug3.jpg``."""
    p = PurePosixPath(output)
    return str(p.with_name(f"{p.stem}_aug{k}{p.suffix}"))


@dataclass(frozen=True)
class _AugmentTask:
    """Worker task: decode each image once and write its K variants."""

    items: list[Item]
    out: str
    spec: AugmentSpec
    copies: int
    seed: int
    gray: bool
    quality: int
    overwrite: bool
    device: str = "cpu"

    def __call__(self, start: int, stop: int) -> list[str]:
        """Decode the chunk on the CPU, transform it on ``device`` (one upload and one
        download per chunk), encode and write on the CPU."""
        xp = array_module(self.device)
        status: dict[int, str] = {}
        todo: list[tuple[int, np.ndarray, list[Path]]] = []
        for i in range(start, stop):
            item = self.items[i]
            dests = [Path(self.out) / copy_name(item.output, k) for k in range(self.copies)]
            if not self.overwrite and all(d.exists() for d in dests):
                status[i] = "kept"
                continue
            try:
                image = load(item, self.gray)
                self._check(item, image)
            except ImageError as exc:
                status[i] = str(exc)
                continue
            todo.append((i, image, dests))
        images = to_device([image for _, image, _ in todo], xp)
        variants = [apply(image, sample_params(np.random.default_rng([self.seed, i, k]),
                                               image.shape[:2], self.spec), self.spec)
                    for (i, _, dests), image in zip(todo, images) for k in range(len(dests))]
        host = iter(to_host(variants))
        for i, _, dests in todo:
            for dest in dests:
                write_image(dest, next(host), self.quality)
            status[i] = "done"
        return [status[i] for i in range(start, stop)]

    def _check(self, item: Item, image: np.ndarray) -> None:
        crop = self.spec.crop
        if crop and (crop[0] > image.shape[0] or crop[1] > image.shape[1]):
            raise ImageError(f"{item.where}: --crop {crop[0]}x{crop[1]} is larger than the image "
                             f"({image.shape[0]}x{image.shape[1]})")


def check_labels(spec: AugmentSpec, float_labels: bool, force: bool) -> None:
    """Refuse transforms that change what regression labels describe, unless forced."""
    unsafe = spec.unsafe_for_float_labels()
    if float_labels and unsafe and not force:
        names = ", ".join("--" + n.replace("_", "-") for n in unsafe)
        raise DataprepError(
            f"{names} change(s) scale or orientation, which float (regression) labels may "
            "describe; pass --force if your labels do not depend on them")


def augment_all(src: Path, out: Path, spec: AugmentSpec, copies: int, executor: Executor,
                seed: int = 0, gray: bool = False, fmt: str = "keep", quality: int = 95,
                root: str | None = None, overwrite: bool = False, force: bool = False,
                device: str = "cpu", on_error: OnError | None = None,
                progress: Callable[[int], object] | None = None) -> JobResult:
    """Write ``copies`` augmented variants of every image of a folder or list into ``out``.

    ``device`` "gpu" runs the transforms with CuPy (an error without CuPy and a GPU, never
    a silent CPU fallback); "auto" uses the GPU only when it is usable."""
    if copies < 1:
        raise DataprepError("--copies must be at least 1")
    device = "gpu" if array_module(device) is not np else "cpu"  # fails here, before any work

    def check(listfile: ListFile) -> None:
        check_labels(spec, listfile.label_count > 0 and not listfile.integer_labels, force)

    def make_task(items: list[Item]) -> _AugmentTask:
        return _AugmentTask(items, str(out), spec, copies, seed, gray, quality, overwrite, device)

    return file_job(Path(src), Path(out), fmt, make_task,
                    lambda item: [copy_name(item.output, k) for k in range(copies)], executor,
                    root=root, on_error=on_error, progress=progress, check_list=check)
