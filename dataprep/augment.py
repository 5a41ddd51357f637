"""Offline augmentation: K seeded variants of every image, written as files with a list.

The random parameters of output (list line i, copy k) come from ``default_rng([seed, i, k])``
alone, so the files are identical for any worker count. A line repeated in the list (to
oversample it) is its own item: its variants are drawn and numbered after the earlier
occurrences' (``NAME_aug{K}`` onwards for the second).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Callable

import numpy as np

from .errors import DataprepError, ImageError, OnError, UsageError
from .filejob import FileTask, Item, JobResult, OutputOptions, file_job
from .gpu import array_module, to_device, to_host
from .images import Channels
from .listfile import ListFile
from .parallel import Executor
from .transforms import AugmentSpec, apply, sample_params


def copy_name(output: str, k: int) -> str:
    """``dir/name.jpg`` -> ``dir/name_aug3.jpg``."""
    p = PurePosixPath(output)
    return str(p.with_name(f"{p.stem}_aug{k}{p.suffix}"))


@dataclass(frozen=True)
class _AugmentTask(FileTask):
    """Decode each image once and write its K variants; transforms run on ``device``. The
    chunk's images go up in one upload and the variants come back in one download; the
    drawn lighting shifts and noise (made on the CPU) go up per variant."""

    spec: AugmentSpec
    copies: int
    seed: int

    def outputs(self, item: Item) -> list[str]:
        first = item.occurrence * self.copies
        return [copy_name(item.output, first + k) for k in range(self.copies)]

    def repeats(self, item: Item) -> bool:
        return False  # every line draws its own variants

    def render(self, todo: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
        images = to_device([image for _, image in todo], array_module(self.output.device))
        variants = [
            apply(
                image,
                sample_params(np.random.default_rng([self.seed, i, k]), image.shape[:2], self.spec),
                self.spec,
            )
            for (i, _), image in zip(todo, images)
            for k in range(self.copies)
        ]
        host = to_host(variants)
        return [host[j * self.copies : (j + 1) * self.copies] for j in range(len(todo))]

    def check(self, item: Item, image: np.ndarray) -> None:
        crop = self.spec.crop
        if crop and not self.spec.pad and (crop[0] > image.shape[0] or crop[1] > image.shape[1]):
            raise ImageError(
                f"{item.where}: --crop {crop[0]}x{crop[1]} is larger than the image "
                f"({image.shape[0]}x{image.shape[1]}); pass --pad to pad small images",
                item.line,
            )


def cli_option(name: str) -> str:
    return "--" + name.replace("_", "-")


def check_labels(
    spec: AugmentSpec, float_labels: bool, force: bool, option: Callable[[str], str] = cli_option
) -> None:
    """Refuse transforms that change what regression labels describe, unless forced;
    ``option`` names a setting as the caller's user wrote it (``--crop-scale``)."""
    unsafe = spec.unsafe_for_float_labels()
    if float_labels and unsafe and not force:
        names = ", ".join(option(n) for n in unsafe)
        raise DataprepError(
            f"{names} change(s) scale or orientation, which float (regression) labels may "
            f"describe; pass {option('force')} if your labels do not depend on them"
        )


def check_channels(spec: AugmentSpec, channels: Channels) -> None:
    """Refuse color operations on 1-channel images."""
    color_ops = spec.color_only()
    if channels.count == 1 and color_ops:
        names = " and ".join("--" + n for n in color_ops)
        why = (
            "--gray makes every output 1-channel"
            if channels.mode == "gray"
            else f"the first image ({channels.first}) is gray, so every output is 1-channel"
        )
        error = UsageError if channels.mode == "gray" else DataprepError
        raise error(
            f"{names} work on color images only, but {why}: drop {names}, or pass "
            "--color for 3-channel outputs"
        )


def augment_all(
    src: Path,
    out: Path,
    spec: AugmentSpec,
    copies: int,
    executor: Executor,
    seed: int = 0,
    output: OutputOptions = OutputOptions(),
    force: bool = False,
    on_error: OnError | None = None,
    progress: Callable[[int], object] | None = None,
) -> JobResult:
    """Write ``copies`` augmented variants of every image of a folder or list into ``out``.

    ``output.device`` "gpu" runs the transforms with CuPy (an error without CuPy and a GPU,
    never a silent CPU fallback); "auto" uses the GPU only when it is usable."""
    if copies < 1:
        raise UsageError("--copies must be at least 1")

    def check(listfile: ListFile | None, resolved: Channels) -> None:
        if listfile is not None:
            check_labels(spec, listfile.label_count > 0 and not listfile.integer_labels, force)
        check_channels(spec, resolved)

    def make_task(items: list[Item], resolved: OutputOptions) -> _AugmentTask:
        return _AugmentTask(items, str(out), resolved, spec, copies, seed)

    settings = {**spec.settings(), "copies": copies, "seed": seed}
    return file_job(src, out, settings, make_task, executor, output, on_error, progress, check)
