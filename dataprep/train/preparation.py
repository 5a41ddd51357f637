"""A model's preparation of raw images, carried by value: what made its training records
from image files (channels, channel order, resize, ``(pixel - mean) * scale``), its test-time
transform (Caffe's centre crop, then ``(pixel - mean) * scale``), and what its output means
(classifier or regression, class and label names, the answering blob).

Snapshots and exports write it (``record`` / ``of_record``) so that a model gives the same
answers in any folder; ``predict``, ``extract``, ``visualize`` and the ONNX exporter apply it
the one way defined here (``prepare``): centre crop first, then each step with its mean
cut from the centre to the cropped size (the same numbers as Caffe's order, crop after the
store's step, since both are elementwise).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DataprepError, UsageError

VERSION = 2  # preparation records before this named mean files by path
log = logging.getLogger("dataprep")


@dataclass(frozen=True)
class Step:
    """``(pixel - mean) * scale``; ``stored``: applied when the training store was written
    (its records hold it already), else by the data layer's transform."""

    mean: np.ndarray | None = None  # C x H x W, or C x 1 x 1 values
    scale: float = 1.0
    stored: bool = False

    @property
    def empty(self) -> bool:
        return self.mean is None and self.scale == 1.0


Window = tuple[int, int, bool]  # a crop's top, left, and whether it is mirrored


@dataclass(frozen=True)
class Preparation:
    """Everything between an image file and the net's input, and how to read the output."""

    channels: str = "auto"  # gray | color | auto (as the file is)
    channel_order: str | None = None  # of color inputs: BGR as OpenCV decodes, RGB (CIFAR imports)
    resize: tuple[int, int] | None = None  # H x W the training images were resized to
    interpolation: str = "linear"
    image_size: tuple[int, int] | None = None  # H x W of the training records (before the crop)
    crop: int = 0  # Caffe's TEST-phase centre crop
    input_shape: tuple[int, ...] | None = None  # C x h x w of the net's input (after the crop)
    steps: tuple[Step, ...] = ()
    task: str | None = None  # classifier | regression
    classes: tuple[str, ...] | None = None  # class names, class 0 first
    label_names: tuple[str, ...] | None = None  # a regression's output names
    unresolved: str | None = None  # an old snapshot's mean file that is not found here

    @property
    def declared(self) -> bool:
        """Whether the model says how pixels are normalized (a mean or a scale)."""
        return any(not step.empty for step in self.steps) or self.unresolved is not None

    def has(self, what: str) -> bool:
        if what == "mean":
            return any(step.mean is not None for step in self.steps) or self.unresolved is not None
        if what == "scale":
            return any(step.scale != 1.0 for step in self.steps)
        return bool(getattr(self, what))

    def prepare(self, image: np.ndarray, raw: bool = True, window: Window | None = None) -> np.ndarray:
        """One H x W x C image (decoded and resized as ``decode`` does; a store's record
        when not ``raw``) as the net's C x h x w float32 input: the crop at ``window`` (top,
        left, mirrored; Caffe's TEST centre crop by default), a mean image of the record's
        size cut at the same place, as Caffe's DataTransformer reads it."""
        x = image
        if raw and self.channel_order == "RGB" and x.shape[2] == 3:
            x = x[:, :, ::-1]  # OpenCV decodes BGR
        h, w = x.shape[:2]
        top = left = 0
        if self.crop:
            top, left = window[:2] if window else ((h - self.crop) // 2, (w - self.crop) // 2)
            x = x[top : top + self.crop, left : left + self.crop]
        x = x.astype(np.float32).transpose(2, 0, 1)
        for step in self.steps:
            if step.stored and not raw:
                continue
            if step.mean is not None:
                same_place = step.mean.shape[1:] == (h, w) and self.crop
                x = x - (
                    step.mean[:, top : top + x.shape[1], left : left + x.shape[2]]
                    if same_place
                    else fit_mean(step.mean, x.shape)
                )
            if step.scale != 1.0:
                x = x * np.float32(step.scale)
        return np.ascontiguousarray(x[:, :, ::-1]) if window and window[2] else x

    def windows(self, h: int, w: int) -> list[Window]:
        """pycaffe's oversample: the four corner crops and the centre one, then the same
        five mirrored."""
        c = self.crop
        five = [(0, 0), (0, w - c), (h - c, 0), (h - c, w - c), ((h - c) // 2, (w - c) // 2)]
        return [(top, left, mirrored) for mirrored in (False, True) for top, left in five]

    def check_size(self, image: np.ndarray, what: str) -> None:
        """A decoded (and resized) image that the model's images were not: one line naming
        both sizes and the option that fixes it."""
        h, w = image.shape[:2]
        want = self.image_size
        if want is not None and (h, w) != tuple(want):
            fix = "--resize" if self.resize is None else "its recorded resize"
            raise DataprepError(
                f"{what}: the image is {h}x{w}, the model was trained on {want[0]}x{want[1]} images: "
                f"give {fix} {want[0]}x{want[1]}"
            )
        if self.crop and min(h, w) < self.crop:
            raise DataprepError(
                f"{what}: the image is {h}x{w}, smaller than the model's crop of {self.crop}: "
                f"give --resize HxW of at least {self.crop}x{self.crop}"
            )

    def record(self) -> tuple[dict, dict[str, np.ndarray]]:
        """As a snapshot or export stores it: scalars (YAML) and the means as arrays."""
        arrays = {}
        steps = []
        for k, step in enumerate(self.steps):
            entry: dict[str, Any] = {"scale": step.scale, "stored": step.stored, "mean": None}
            if step.mean is not None:
                entry["mean"] = f"preparation/mean{k}"
                arrays[entry["mean"]] = np.asarray(step.mean, np.float32)
            steps.append(entry)
        fields = {
            "version": VERSION,
            "channels": self.channels,
            "channel_order": self.channel_order,
            "resize": _listed(self.resize),
            "interpolation": self.interpolation,
            "image_size": _listed(self.image_size),
            "crop": self.crop,
            "input_shape": _listed(self.input_shape),
            "steps": steps,
            "task": self.task,
            "classes": _listed(self.classes),
            "label_names": _listed(self.label_names),
        }
        return fields, arrays

    def metadata(self) -> dict:
        """What a runtime needs to know that the ONNX graph does not do itself."""
        return {
            "channels": self.channels,
            "model_channel_order": self.channel_order or "BGR",
            "resize": _listed(self.resize),
            "interpolation": self.interpolation,
            "image_size": _listed(self.image_size),
            "crop": self.crop,
            "task": self.task,
            "classes": _listed(self.classes),
            "label_names": _listed(self.label_names),
        }

    def folded(self) -> Step:
        """All steps as one ``(pixel - mean) * scale`` (Caffe's one transform_param):
        ``((x - m1) s1 - m2) s2 = (x - (m1 + m2 / s1)) s1 s2``."""
        mean, scale = None, 1.0
        for step in self.steps:
            if step.mean is not None:
                add = np.asarray(step.mean, np.float64) / scale
                mean = add if mean is None else _broadcast_sum(mean, add)
            scale *= step.scale
        return Step(None if mean is None else mean.astype(np.float32), scale)


def _broadcast_sum(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    if a.shape[1:] != b.shape[1:] and a.shape[1:] != (1, 1) and b.shape[1:] != (1, 1):
        b = fit_mean(b, a.shape)
        a = fit_mean(a, b.shape)
    return a + b


def _listed(value) -> list | None:
    return list(value) if value else None


def fit_mean(mean: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A C x H x W mean for a C x h x w input: values as they are, an image of the input's
    size as it is, a larger one cut from its centre (Caffe's TEST crop of the mean, as of
    the data); a smaller one is an error naming both sizes."""
    mean = np.asarray(mean, np.float32)
    if mean.shape[1:] == (1, 1) or mean.shape[1:] == tuple(shape[1:]):
        return mean
    h, w = shape[1:]
    top, left = (mean.shape[1] - h) // 2, (mean.shape[2] - w) // 2
    if top < 0 or left < 0:
        raise DataprepError(
            f"the mean image is {mean.shape[1]}x{mean.shape[2]}, smaller than the input ({h}x{w}): "
            "give --resize to the mean's size, or a mean of values"
        )
    return mean[:, top : top + h, left : left + w]


def mean_of(given: Any) -> np.ndarray | None:
    """A mean as C x H x W (C x 1 x 1 for values) from values, an array or a mean file."""
    from ..stores.hdf5 import mean_array
    from ..stores.means import recorded_mean

    if given is None:
        return None
    if isinstance(given, np.ndarray):
        return mean_array(given)
    if isinstance(given, (list, tuple)):
        return mean_array(np.asarray(given, np.float32))
    return mean_array(recorded_mean(str(given)))


def transform_step(transform) -> Step | None:
    """A recipe's ``data.transform`` (Caffe's transform_param) as a step, its mean read now."""
    mean = transform.mean()
    if mean is None and transform.scale == 1.0:
        return None
    return Step(mean_of(mean), float(transform.scale))


def of_training(
    preprocessing: dict, transform, image_size, input_shape, head: str | None, labels: dict
) -> Preparation:
    """The preparation of a model trained on records made with the store manifest's
    ``preprocessing`` (records of ``image_size``) and fed through ``transform`` (as inputs
    of ``input_shape``); ``labels`` the manifest's labels, ``head`` the net's loss."""
    steps = []
    unresolved = None
    if preprocessing.get("mean") is not None or float(preprocessing.get("scale") or 1) != 1:
        given = preprocessing.get("mean")
        try:
            mean = mean_of(given)
        except DataprepError:  # a store whose mean file moved: said once, kept by name
            unresolved, mean = str(given), None
            log.warning("the training store's mean file %s is not found here: snapshots name it only", given)
        steps.append(Step(mean, float(preprocessing.get("scale") or 1), stored=True))
    step = transform_step(transform)
    if step is not None:
        steps.append(step)
    gray = preprocessing.get("gray")
    order = preprocessing.get("channel_order")
    names = tuple(labels.get("names") or ()) or None
    classifier = head == "SoftmaxWithLoss"
    resize = preprocessing.get("resize")
    return Preparation(
        channels="gray" if gray else ("color" if gray is False else "auto"),
        channel_order=order if order in ("BGR", "RGB") else "BGR",  # what dataprep decodes
        resize=tuple(resize) if resize else None,
        interpolation=preprocessing.get("interpolation") or "linear",
        image_size=tuple(image_size) if image_size else None,
        crop=int(transform.crop_size or 0),
        input_shape=tuple(input_shape),
        steps=tuple(steps),
        task=None if head is None else ("classifier" if classifier else "regression"),
        classes=names if classifier and int(labels.get("count") or 1) == 1 else None,
        label_names=names if not classifier and names else None,
        unresolved=unresolved,
    )


def of_record(fields: dict, arrays: dict) -> Preparation:
    """A snapshot's or export's preparation (``record``'s form)."""
    steps = tuple(
        Step(
            None if entry.get("mean") is None else np.asarray(arrays[entry["mean"]], np.float32),
            float(entry.get("scale", 1.0)),
            bool(entry.get("stored")),
        )
        for entry in fields.get("steps") or ()
    )
    return Preparation(
        channels=fields.get("channels") or "auto",
        channel_order=fields.get("channel_order"),
        resize=_tuple(fields.get("resize")),
        interpolation=fields.get("interpolation") or "linear",
        image_size=_tuple(fields.get("image_size")),
        crop=int(fields.get("crop") or 0),
        input_shape=_tuple(fields.get("input_shape")),
        steps=steps,
        task=fields.get("task"),
        classes=_tuple(fields.get("classes")),
        label_names=_tuple(fields.get("label_names")),
    )


def _tuple(value) -> tuple | None:
    return tuple(value) if value else None


def of_legacy(path: Path, fields: dict, transform) -> Preparation:
    """A snapshot written before models carried their means by value: its mean files are
    looked up by the paths it recorded; where one is not found, ``unresolved`` names it."""
    steps, unresolved = [], None
    given = fields.get("mean")
    if given is not None or float(fields.get("scale") or 1) != 1:
        try:
            mean = mean_of(given)
        except DataprepError:
            unresolved, mean = str(given), None
        steps.append(Step(mean, float(fields.get("scale") or 1), stored=True))
    try:
        step = transform_step(transform)
    except DataprepError:
        unresolved, step = str(transform.mean_file), Step(None, float(transform.scale))
    if step is not None:
        steps.append(step)
    resize = fields.get("resize")
    return Preparation(
        channels=fields.get("channels") or "auto",
        resize=tuple(resize) if resize else None,
        interpolation=fields.get("interpolation") or "linear",
        crop=int(transform.crop_size or 0),
        steps=tuple(steps),
        unresolved=unresolved,
    )


def with_options(prep: Preparation, model: str, options: dict) -> Preparation:
    """The one rule: the model's own preparation is applied once; options fill in only what
    it cannot know (``resize``, ``channels``, ``channel_order``, and ``mean``, ``scale``,
    ``crop`` where it has none). An option that contradicts the model is refused in one line
    naming both. An old snapshot's mean file not found here may be given as ``--mean``;
    ``mean_per_channel`` reduces the given mean to one value per channel."""
    changes: dict[str, Any] = {}
    for key, option in (("resize", "--resize"), ("channels", "--gray/--color"), ("channel_order", None)):
        value = options.get(key)
        if value is None:
            continue
        value = tuple(value) if key == "resize" else value
        mine = getattr(prep, key)
        if mine not in (None, "auto") and mine != value:
            shown = "x".join(map(str, mine)) if key == "resize" else mine
            raise UsageError(
                f"{option or '--channel-order'} contradicts {model}, which records {key} {shown}: "
                "leave the option out"
            )
        changes[key] = value
    mean, scale, crop = options.get("mean"), options.get("scale"), options.get("crop")
    if options.get("mean_per_channel"):
        if mean is None:
            raise UsageError("--mean-per-channel reduces the mean --mean gives: give --mean FILE too")
        mean = mean_of(mean).mean(axis=(1, 2), keepdims=True)  # pycaffe's mean.mean(1).mean(1)
    if prep.unresolved is not None:
        if mean is None:
            raise DataprepError(
                f"{model} was saved before models carried their mean: it names {prep.unresolved}, "
                "which is not found from here: give --mean FILE (or run where that path resolves)"
            )
        steps = [
            Step(mean_of(mean), s.scale, s.stored) if s.mean is None and s.stored else s for s in prep.steps
        ]
        if not any(s.stored for s in prep.steps):
            steps = [Step(mean_of(mean), s.scale) if s.mean is None else s for s in prep.steps]
        return dataclasses.replace(prep, **changes, steps=tuple(steps), unresolved=None)
    for given, what, shown in (
        (mean, "mean", "--mean"),
        (scale, "scale", "--scale"),
        (crop, "crop", "--crop"),
    ):
        if given is not None and prep.has(what):
            raise UsageError(
                f"{shown} {given}: {model} has its own {what} ({_describe(prep, what)}), applied "
                f"already: leave {shown} out"
            )
    if mean is not None or scale is not None:
        changes["steps"] = (*prep.steps, Step(mean_of(mean), float(scale if scale is not None else 1.0)))
    if crop is not None:
        changes["crop"] = int(crop)
    return dataclasses.replace(prep, **changes)


def _describe(prep: Preparation, what: str) -> str:
    if what == "crop":
        return str(prep.crop)
    if what == "scale":
        return " then ".join(f"{s.scale:g}" for s in prep.steps if s.scale != 1.0)
    means = [s.mean for s in prep.steps if s.mean is not None]
    return ", ".join(
        f"{m.shape[1]}x{m.shape[2]} image" if m.shape[1:] != (1, 1) else ",".join(f"{v:g}" for v in m.ravel())
        for m in means
    )
