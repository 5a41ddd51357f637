"""Resize image folders or lists to files: exact size, shorter side, or shorter side plus
center crop. Resumable, through the file-job pipeline (``filejob``)."""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

from .errors import OnError, UsageError
from .filejob import FileTask, Item, JobResult, OutputOptions, file_job
from .images import as_hwc, interpolation_flag
from .parallel import Executor


@dataclass(frozen=True)
class ResizeSpec:
    """What to do to each image. Sizes are (H, W); ``interpolation`` None picks area when
    shrinking and cubic when enlarging (quality first)."""

    size: tuple[int, int] | None = None
    shorter: int | None = None
    crop: tuple[int, int] | None = None
    interpolation: str | None = None

    def __post_init__(self) -> None:
        if (self.size is None) == (self.shorter is None):
            raise UsageError("give exactly one of --resize and --shorter-side")
        if self.crop is not None and self.shorter is None:
            raise UsageError("--center-crop goes with --shorter-side")
        if self.crop is not None and min(self.crop) > self.shorter:
            raise UsageError(
                f"--center-crop {self.crop[0]}x{self.crop[1]} is larger than the shorter side {self.shorter}"
            )

    def settings(self) -> dict:
        """What the outputs depend on, by option name (see ``filejob.check_settings``)."""
        return {
            "size": self.size,
            "shorter_side": self.shorter,
            "center_crop": self.crop,
            "interpolation": self.interpolation,
        }


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
        image = as_hwc(cv2.resize(image, (out_w, out_h), interpolation=interpolation_flag(interpolation)))
    return center_crop(image, spec.crop) if spec.crop else image


@dataclass(frozen=True)
class _ResizeTask(FileTask):
    """Resize each item to one output. On ``device`` "gpu" a chunk is resized together with
    ``transforms.resize`` (weight-matrix products), one upload and one download."""

    spec: ResizeSpec

    def outputs(self, item: Item) -> list[str]:
        return [item.output]

    def render(self, todo: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
        if self.output.device == "cpu":
            return [[resize_image(image, self.spec)] for _, image in todo]
        return [[image] for image in self._on_device([image for _, image in todo])]

    def _on_device(self, images: list[np.ndarray]) -> list[np.ndarray]:
        from . import transforms as T
        from .gpu import array_module, to_device, to_host

        out = []
        for image in to_device(images, array_module(self.output.device)):
            hw = target_size(image.shape, self.spec)
            interpolation = self.spec.interpolation or (
                "area" if hw[0] * hw[1] <= image.shape[0] * image.shape[1] else "linear"
            )
            resized = T.to_uint8(T.resize(image, hw, interpolation))
            out.append(center_crop(resized, self.spec.crop) if self.spec.crop else resized)
        return to_host(out)


GPU_INTERPOLATIONS = ("area", "linear")


def resize_all(
    src: Path,
    out: Path,
    spec: ResizeSpec,
    executor: Executor,
    output: OutputOptions = OutputOptions(),
    on_error: OnError | None = None,
    progress: Callable[[int], object] | None = None,
) -> JobResult:
    """Resize a folder or a list file's images into ``out`` (see ``filejob.file_job``).

    ``output.device`` "gpu" resizes with CuPy (area or linear; the default enlarges with
    linear there, not cubic) and fails clearly without CuPy and a GPU; "auto" uses the GPU
    only when it is usable."""
    from .gpu import resolve_device

    output = replace(output, device=resolve_device(output.device))
    if output.device == "gpu" and spec.interpolation and spec.interpolation not in GPU_INTERPOLATIONS:
        raise UsageError(
            f"--interpolation {spec.interpolation} is not available with "
            f"--device gpu; use {' or '.join(GPU_INTERPOLATIONS)}"
        )

    def make_task(items: list[Item], resolved: OutputOptions) -> _ResizeTask:
        return _ResizeTask(items, str(out), resolved, spec)

    return file_job(src, out, spec.settings(), make_task, executor, output, on_error, progress)
