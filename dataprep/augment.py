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

    def __call__(self, start: int, stop: int) -> list[str]:
        return [self._one(i) for i in range(start, stop)]

    def _one(self, i: int) -> str:
        item = self.items[i]
        dests = [Path(self.out) / copy_name(item.output, k) for k in range(self.copies)]
        if not self.overwrite and all(d.exists() for d in dests):
            return "kept"
        try:
            image = load(item, self.gray)
            for k, dest in enumerate(dests):
                if self.spec.crop and (self.spec.crop[0] > image.shape[0] or self.spec.crop[1] > image.shape[1]):
                    raise ImageError(f"{item.where}: --crop {self.spec.crop[0]}x{self.spec.crop[1]} "
                                     f"is larger than the image ({image.shape[0]}x{image.shape[1]})")
                rng = np.random.default_rng([self.seed, i, k])
                variant = apply(image, sample_params(rng, image.shape[:2], self.spec), self.spec)
                write_image(dest, variant, self.quality)
        except ImageError as exc:
            return str(exc)
        return "done"


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
                on_error: OnError | None = None,
                progress: Callable[[int], object] | None = None) -> JobResult:
    """Write ``copies`` augmented variants of every image of a folder or list into ``out``."""
    if copies < 1:
        raise DataprepError("--copies must be at least 1")

    def check(listfile: ListFile) -> None:
        check_labels(spec, listfile.label_count > 0 and not listfile.integer_labels, force)

    def make_task(items: list[Item]) -> _AugmentTask:
        return _AugmentTask(items, str(out), spec, copies, seed, gray, quality, overwrite)

    return file_job(Path(src), Path(out), fmt, make_task,
                    lambda item: [copy_name(item.output, k) for k in range(copies)], executor,
                    root=root, on_error=on_error, progress=progress, check_list=check)
