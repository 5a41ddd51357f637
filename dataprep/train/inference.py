"""Using a trained net: MODEL (a recipe YAML, a Caffe net prototxt, or a ``.npz`` snapshot,
which carries its recipe and its data's preparation) with weights (``.npz`` or
``.caffemodel``), inputs prepared exactly as in training, batched forward passes.

Raw images from a list go through what made the training store (decoding to its channels,
its resize, ``(pixel - mean) * scale``) and then the recipe's test-time transform; records
of a store are used as stored plus that transform.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import yaml

from ..errors import DataprepError, UsageError
from ..gpu import host
from .layers import LOSSES
from .net import HEADS, Net, wire
from .prototxt import is_prototxt, net_sections
from .recipe import Transform, build


@dataclass(frozen=True)
class Preparation:
    """How a raw image became a training record: channels (gray or color), an exact resize,
    then ``(pixel - mean) * scale`` (``mean``: values or a mean file, as a store records
    it)."""

    channels: str = "auto"
    resize: tuple[int, int] | None = None
    interpolation: str = "linear"
    mean: str | None = None
    scale: float = 1.0

    @classmethod
    def of_manifest(cls, preprocessing: dict) -> Preparation:
        """From a store manifest's (or a record source's) ``preprocessing``."""
        gray = preprocessing.get("gray")
        resize = preprocessing.get("resize")
        return cls(
            channels="gray" if gray else ("color" if gray is False else "auto"),
            resize=tuple(resize) if resize else None,
            interpolation=preprocessing.get("interpolation") or "linear",
            mean=None if preprocessing.get("mean") is None else str(preprocessing["mean"]),
            scale=float(preprocessing.get("scale") or 1.0),
        )

    def as_dict(self) -> dict:
        return {
            "channels": self.channels,
            "resize": list(self.resize) if self.resize else None,
            "interpolation": self.interpolation,
            "mean": self.mean,
            "scale": self.scale,
        }


@dataclass
class Model:
    """A net ready for inference: layers without losses and metrics, its input, what the
    training data's preparation was, the test-time transform, and weights by layer name."""

    name: str
    specs: list[dict]
    input: str
    target: str
    prepare: Preparation
    transform: Transform
    weights: dict[str, list[np.ndarray]]
    input_shape: tuple[int, ...] | None = None  # C x H x W where the model says (deploy nets)
    head: str | None = None  # the loss the net was trained with: how to read its output

    def net(self, batch: int, shape: tuple[int, ...], xp=np) -> Net:
        """The net for batches of ``batch`` inputs of shape C x H x W, weights loaded."""
        from .caffemodel import copy_weights

        net = Net(self.specs, {self.input: (batch, *shape)}, target=self.target, xp=xp)
        copied = copy_weights(net, self.weights, "the weights")
        missing = [layer.name for layer in net.layers if layer.params and layer.name not in copied]
        if missing:
            raise DataprepError(f"the weights have no blobs for layer(s) {', '.join(missing)}")
        return net

    @property
    def output(self) -> str:
        """The blob the net's last layer writes (before its losses)."""
        return self.specs[-1].get("top", [self.specs[-1]["name"]])[0] if self.specs else self.input


def _inference_specs(specs: list[dict]) -> list[dict]:
    """The net's layers that run at test time and need no target."""
    return [s for s in specs if s.get("type") not in HEADS and s.get("phase") != "TRAIN"]


def _head(specs: list[dict]) -> str | None:
    heads = [s["type"] for s in specs if s.get("type") in LOSSES]
    if heads:
        return heads[0]
    if specs and specs[-1].get("type") == "Softmax":  # a deploy classifier
        return "SoftmaxWithLoss"
    return None


def read_model(path: str | Path) -> tuple[dict, dict, Path | None]:
    """MODEL's sections (``name``, ``net``, ``data``, a deploy net's ``inputs``), the data
    preparation a snapshot carries, and the snapshot itself as weights (None otherwise)."""
    from .caffemodel import load_snapshot

    path = Path(path)
    if str(path).endswith(".npz"):
        saved = load_snapshot(path, ("recipe",))
        raw = yaml.safe_load(str(saved["recipe"]))
        prepare = (yaml.safe_load(str(saved["preparation"])) or {}) if "preparation" in saved else {}
        sections = {"name": raw.get("name", path.stem), "net": raw["net"], "data": raw.get("data", {})}
        if raw.get("inputs"):  # an exported deploy net's input shape
            sections["inputs"] = raw["inputs"]
        return sections, prepare, path
    if is_prototxt(path):
        return net_sections(path), {}, None
    from .recipe import load_recipe

    return load_recipe(path).raw, {}, None


def load_model(path: str | Path, weights: str | Path | None = None, prepare: dict | None = None) -> Model:
    """MODEL and its weights; ``prepare`` overrides the preparation (``--mean``, ``--scale``,
    ``--resize``, ``--gray``/``--color``), which a prototxt cannot carry."""
    from .caffemodel import read_weights

    path = Path(path)
    sections, saved_prepare, snapshot = read_model(path)
    weights = weights or snapshot
    if weights is None:
        raise UsageError(f"{path} holds no weights: give --weights (a .npz snapshot or a .caffemodel)")
    data = sections.get("data") or {}
    specs = wire(sections["net"], data.get("input", "data"), data.get("target", "label"))
    inputs = sections.get("inputs") or {}
    input_name = data.get("input") or (next(iter(inputs)) if inputs else "data")
    transform = build(Transform, data.get("transform") or {}, "data.transform")
    merged = {**saved_prepare, **{k: v for k, v in (prepare or {}).items() if v is not None}}
    return Model(
        name=str(sections.get("name") or path.stem),
        specs=_inference_specs(specs),
        input=input_name,
        target=data.get("target", "label"),
        prepare=Preparation(**{**Preparation().as_dict(), **merged, "resize": _size(merged.get("resize"))}),
        transform=transform,
        weights=read_weights(weights),
        input_shape=tuple(inputs[input_name][1:]) if input_name in inputs else None,
        head=_head(specs),
    )


def _size(value: Any) -> tuple[int, int] | None:
    return tuple(value) if value else None


@dataclass
class Inputs:
    """What to run the net on: a list of images (prepared as in training) or a store's
    records (used as stored), with their keys and labels, in order."""

    keys: list[str]
    labels: list[np.ndarray]
    batches: Iterator[tuple[int, list[np.ndarray]]]  # (first index, H x W x C arrays)
    count: int


def open_inputs(source: str | Path, model: Model, batch: int) -> Inputs:
    """A list file (``path [labels...]``) or a store, read in batches."""
    from ..stores import open_store, source_kind

    if source_kind(source) == "images":
        from ..listfile import read_list

        return _list_inputs(read_list(source), model, batch)
    reader = open_store(source)
    keys = reader.keys()
    labels = _stored_labels(reader)

    def batches() -> Iterator[tuple[int, list[np.ndarray]]]:
        try:
            for start in range(0, len(keys), batch):
                stop = min(start + batch, len(keys))
                yield start, [rec.array.transpose(1, 2, 0) for rec in reader.iter_range(start, stop)]
        finally:
            reader.close()

    return Inputs(keys, labels, batches(), len(keys))


def _stored_labels(reader) -> list[np.ndarray]:
    """Every record's labels, read once; none when the store holds no usable labels."""
    try:
        rows = reader.all_labels()
    except (DataprepError, KeyError, ValueError):
        return []
    return [np.asarray(row, np.float64) for row in rows] if len(rows) == len(reader) else []


def image_inputs(path: str | Path, model: Model) -> Inputs:
    """One image file (``visualize --image``), prepared as a list's images are."""
    from ..listfile import Entry, ListFile

    path = Path(path)
    return _list_inputs(ListFile(str(path), [Entry(1, path.name, ())], 0, path.parent), model, 1)


def _list_inputs(listfile, model: Model, batch: int) -> Inputs:
    from ..images import Channels
    from ..records import image_list_source

    prepare = model.prepare
    records = image_list_source(listfile, Channels(prepare.channels), prepare.resize, prepare.interpolation)
    mean = _mean(prepare.mean)

    def batches() -> Iterator[tuple[int, list[np.ndarray]]]:
        for start in range(0, len(listfile), batch):
            images = []
            for index in range(start, min(start + batch, len(listfile))):
                image = records.record(index).image.astype(np.float32)
                if mean is not None:
                    image = image - mean.transpose(1, 2, 0)
                images.append(image * np.float32(prepare.scale) if prepare.scale != 1 else image)
            yield start, images

    labels = [np.asarray(e.labels, np.float64) for e in listfile.entries] if listfile.label_count else []
    return Inputs([e.path for e in listfile.entries], labels, batches(), len(listfile))


def _mean(given: str | None) -> np.ndarray | None:
    """A store's recorded mean: values (``128`` or ``104,117,123``) or a mean file, as
    C x H x W (C, 1, 1 for values)."""
    if given is None:
        return None
    from ..stores.hdf5 import mean_array
    from ..stores.means import recorded_mean

    return mean_array(recorded_mean(given))


def run_batches(model: Model, inputs: Inputs, xp=np) -> Iterator[tuple[int, Net]]:
    """Forward passes over the inputs, batch by batch: (first index, the net after the pass,
    its blobs holding this batch's values). The net is built once per batch size."""
    t = model.transform
    mean = None
    if t.mean_file or t.mean_value:
        from .loader import load_mean

        mean = load_mean(t)
    nets: dict[tuple, Net] = {}
    for start, images in inputs.batches:
        data = np.stack([caffe_test_transform(image, t, mean) for image in images])
        key = data.shape
        if key not in nets:
            if model.input_shape and tuple(data.shape[1:]) != tuple(model.input_shape):
                raise DataprepError(
                    f"the inputs are {data.shape[1:]} (C x H x W) after preparation, the net takes "
                    f"{tuple(model.input_shape)}: check --resize, --gray/--color and the crop"
                )
            nets = {key: model.net(len(data), data.shape[1:], xp)}
        net = nets[key]
        net.forward({model.input: data}, train=False)
        yield start, net


def caffe_test_transform(image: np.ndarray, t: Transform, mean) -> np.ndarray:
    from ..transforms import caffe_transform

    return caffe_transform(image, t.crop_size, False, mean, t.scale, train=False)


@dataclass
class Prediction:
    """One input's result: regression values, or the top classes with their probabilities."""

    key: str
    values: list[float]
    classes: list[int] | None = None


def predict(model: Model, inputs: Inputs, top_k: int = 1, progress=None) -> Iterator[Prediction]:
    """The net's output for every input, in input order; classifiers (trained with
    SoftmaxWithLoss, or ending in Softmax) give their ``top_k`` classes."""
    classifier = model.head == "SoftmaxWithLoss"
    for start, net in run_batches(model, inputs):
        out = np.asarray(host(net.blobs[model.output]), np.float64)
        out = out.reshape(len(out), -1)
        if classifier:
            probabilities = out if model.specs[-1]["type"] == "Softmax" else _softmax(out)
            top = np.argsort(-probabilities, axis=1, kind="stable")[:, :top_k]
        for k, row in enumerate(out):
            key = inputs.keys[start + k]
            if classifier:
                classes = [int(c) for c in top[k]]
                yield Prediction(key, [float(probabilities[k, c]) for c in classes], classes)
            else:
                yield Prediction(key, [float(v) for v in row])
        if progress is not None:
            progress(len(out))


def _softmax(x: np.ndarray) -> np.ndarray:
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Score:
    """Against ground-truth labels by key, accumulated one prediction at a time (so a run
    over millions of inputs keeps only sums): the mean absolute error per column
    (regression) or the top-1 and top-k accuracy (classifiers)."""

    def __init__(self, truth: dict[str, np.ndarray]) -> None:
        self.truth = truth
        self.count = 0
        self.errors: np.ndarray | None = None
        self.top1 = self.topk = 0
        self.k = 1

    def add(self, p: Prediction) -> None:
        if p.key not in self.truth:
            return
        t = self.truth[p.key]
        self.count += 1
        if p.classes is not None:
            self.k = len(p.classes)
            self.top1 += p.classes[0] == int(t[0])
            self.topk += int(t[0]) in p.classes
            return
        error = np.abs(np.asarray(p.values) - t)
        self.errors = error if self.errors is None else self.errors + error

    def result(self) -> dict[str, Any]:
        if not self.count:
            raise DataprepError("no input has a ground-truth label (keys must match the inputs' paths)")
        if self.errors is None:
            return {
                "count": self.count,
                "accuracy": self.top1 / self.count,
                f"top{self.k}": self.topk / self.count,
            }
        per_column = self.errors / self.count
        return {"count": self.count, "mae": float(per_column.mean()), "mae_per_column": per_column.tolist()}


def read_truth(path: str | Path) -> dict[str, np.ndarray]:
    """Ground truth from a ``path label...`` list."""
    from ..listfile import read_list

    listfile = read_list(path)
    if not listfile.label_count:
        raise DataprepError(f"{path}: no labels on its lines (give `path label...` lines)")
    return {e.path: np.asarray(e.labels, np.float64) for e in listfile.entries}
