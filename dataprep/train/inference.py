"""Using a trained net: MODEL (a recipe YAML, a Caffe net prototxt, or a ``.npz`` snapshot,
which carries its recipe and its whole preparation by value) with weights (``.npz`` or
``.caffemodel``), inputs prepared exactly as in training, batched forward passes.

Raw images (one file, a folder, a list) go through the model's ``Preparation``: decoding to
its channels and channel order, its resize, the centre crop and every normalization step;
records of a store are used as stored plus the steps the store did not apply.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Mapping

import numpy as np

from ..errors import DataprepError, UsageError
from ..scan import DEFAULT_EXTENSIONS as IMAGE_EXTENSIONS
from .preparation import Preparation, of_legacy, of_record, transform_step, with_options
from .prototxt_cache import is_prototxt
from .wiring import HEADS, LOSSES, wire

if TYPE_CHECKING:  # the net, Caffe's files and recipes are imported where a model needs them:
    from .net import Net  # an .onnx MODEL needs none of them (predict's start-up)
    from .schema import Transform

log = logging.getLogger("dataprep")


@dataclass
class Model:
    """A net ready for inference: layers without losses and metrics, its input, what the
    training data's preparation was, the test-time transform, and weights by layer name."""

    name: str
    specs: list[dict]
    input: str
    target: str
    prepare: Preparation
    weights: Mapping[str, list[np.ndarray]]  # StoredWeights: read at first use
    input_shape: tuple[int, ...] | None = None  # C x H x W where the model says (deploy nets)
    head: str | None = None  # the loss the net was trained with: how to read its output
    session: Any = None  # MODEL.onnx: a future of its onnxruntime session; else None
    hint: dict | None = None  # what the command line named: its kept graph's hint (graph_cache)

    def net(self, batch: int, shape: tuple[int, ...], xp=np) -> Net:
        """The net for batches of ``batch`` inputs of shape C x H x W, weights loaded."""
        from .caffemodel import copy_weights
        from .net import Net

        net = Net(
            self.specs, {self.input: (batch, *shape)}, target=self.target, xp=xp, train=False, fill=False
        )
        copied = copy_weights(net, self.weights, "the weights")
        missing = [layer.name for layer in net.layers if layer.params and layer.name not in copied]
        if missing:
            surgery = any(_surgery_source(m, self.weights) not in (None, m) for m in missing)
            hint = " (net surgery: --reshape-params carries fc6's blobs into fc6-conv)" if surgery else ""
            raise DataprepError(f"the weights have no blobs for layer(s) {', '.join(missing)}{hint}")
        return net

    def folded(self) -> Model:
        """This model with each Convolution -> BatchNorm -> Scale chain folded into the
        Convolution (``fold.fold_batchnorm``): the same outputs, fewer passes."""
        from .fold import fold_batchnorm

        if self.session is not None:  # an ONNX graph: onnxruntime fuses what it can itself
            return self
        specs, weights = fold_batchnorm(self.specs, self.weights)
        return dataclasses.replace(self, specs=specs, weights=weights)

    @property
    def classifier(self) -> bool:
        return (self.prepare.task or ("classifier" if self.head == "SoftmaxWithLoss" else "")) == "classifier"

    @property
    def output(self) -> str:
        """The blob the net's last layer writes (before its losses)."""
        return self.specs[-1].get("top", [self.specs[-1]["name"]])[0] if self.specs else self.input


class StoredWeights(Mapping):
    """A weights file's blobs by layer name, read at first use: an engine that finds the
    model's graph built already (``graph_cache``) never reads them."""

    def __init__(
        self, path: str | Path, read: Callable[[], dict[str, list[np.ndarray]]], how: str = ""
    ) -> None:
        from .graph_cache import file_identity

        self.identity = [*file_identity(path), how]  # the file as it is now, and how it is read
        self._read, self._blobs = read, None

    def _loaded(self) -> dict[str, list[np.ndarray]]:
        if self._blobs is None:
            self._blobs = self._read()
        return self._blobs

    def __getitem__(self, layer: str) -> list[np.ndarray]:
        return self._loaded()[layer]

    def __iter__(self) -> Iterator[str]:
        return iter(self._loaded())

    def __len__(self) -> int:
        return len(self._loaded())


def _inference_specs(specs: list[dict]) -> list[dict]:
    """The net's layers that run at test time and need no target."""
    return [s for s in specs if s.get("type") not in HEADS and s.get("phase") != "TRAIN"]


def model_head(specs: list[dict]) -> str | None:
    """The loss a net was trained with (a deploy classifier's: its Softmax's)."""
    heads = [s["type"] for s in specs if s.get("type") in LOSSES]
    if heads:
        return heads[0]
    if specs and specs[-1].get("type") == "Softmax":  # a deploy classifier
        return "SoftmaxWithLoss"
    return None


@dataclass
class ModelFile:
    """What MODEL holds: its sections (``name``, ``net``, ``data``, a deploy net's
    ``inputs``), its preparation (options not yet applied) and, for a snapshot, itself as
    the weights."""

    sections: dict
    preparation: Preparation
    snapshot: Path | None


def model_sections(path: str | Path) -> tuple[dict, dict | None]:
    """MODEL's sections (``name``, ``net``, ``data``, a deploy net's ``inputs``, an exported
    prototxt's ``preparation`` note) and, for a snapshot, its arrays."""
    path = Path(path)
    if str(path).endswith(".npz"):
        from .caffemodel import load_snapshot

        saved = load_snapshot(path, ("recipe",))
        import yaml

        raw = yaml.safe_load(str(saved["recipe"]))
        sections = {"name": raw.get("name", path.stem), "net": raw["net"], "data": raw.get("data", {})}
        if raw.get("inputs"):  # an exported deploy net's input shape
            sections["inputs"] = raw["inputs"]
        return sections, saved
    if is_prototxt(path):
        from .prototxt_cache import net_sections

        return net_sections(path), None
    from .recipe import load_recipe

    return load_recipe(path).raw, None


def read_model(path: str | Path) -> ModelFile:
    """MODEL's sections and preparation: a snapshot's by value (an old snapshot's by the
    paths it recorded), a prototxt's from its transform_param and dataprep's note, a
    recipe's from its training store and ``data.transform``."""
    path = Path(path)
    sections, saved = model_sections(path)
    if saved is not None:
        import yaml

        fields = (yaml.safe_load(str(saved["preparation"])) or {}) if "preparation" in saved else {}
        if fields.get("version"):
            return ModelFile(sections, of_record(fields, saved), path)
        return ModelFile(sections, _with_task(of_legacy(path, fields, _transform(sections)), sections), path)
    if is_prototxt(path):
        return ModelFile(sections, _declared(sections), None)
    from .recipe import load_recipe

    return ModelFile(sections, _of_recipe(load_recipe(path)), None)


def _of_recipe(recipe) -> Preparation:
    """A recipe's preparation: its training store's, as a snapshot would record it (its
    transform alone where the store is not found)."""
    from .loader import open_samples
    from .preparation import of_training

    data = recipe.data
    if data.train is None:  # a net that makes its inputs (DummyData): only what it declares
        return _declared(recipe.raw)
    try:
        samples = open_samples(data.train)
    except DataprepError:
        return _declared(recipe.raw)
    try:
        shape = samples.read([0])[0][0].shape
        crop = data.transform.crop_size
        return of_training(
            samples.preprocessing(),
            data.transform,
            shape[:2],
            (shape[2], crop, crop) if crop else (shape[2], *shape[:2]),
            model_head(recipe.net),
            samples.labels(),
        )
    finally:
        samples.close()


def _transform(sections: dict) -> Transform:
    from .schema import Transform, build

    return build(Transform, (sections.get("data") or {}).get("transform") or {}, "data.transform")


def _declared(sections: dict) -> Preparation:
    """A prototxt's or recipe's preparation: its transform, and what an exported deploy
    prototxt's note adds (channels, channel order, resize, the task)."""
    transform = _transform(sections)
    step = transform_step(transform)
    note = sections.get("preparation") or {}
    size = {
        k: tuple(note[k]) if note.get(k) else None for k in ("resize", "image_size", "classes", "label_names")
    }
    prep = Preparation(
        channels=note.get("channels") or "auto",
        channel_order=note.get("channel_order"),
        interpolation=note.get("interpolation") or "linear",
        crop=int(transform.crop_size or 0),
        steps=(step,) if step is not None else (),
        task=note.get("task"),
        **size,
    )
    return prep if prep.task else _with_task(dataclasses.replace(prep), sections)


def _with_task(prep: Preparation, sections: dict) -> Preparation:
    data = sections.get("data") or {}
    head = model_head(wire(sections["net"], data.get("input", "data"), data.get("target", "label")))
    task = None if head is None else ("classifier" if head == "SoftmaxWithLoss" else "regression")
    return dataclasses.replace(prep, task=task)


def load_model(path: str | Path, weights: str | Path | None = None, options: dict | None = None) -> Model:
    """MODEL and its weights, its preparation completed by ``options`` (``mean``,
    ``scale``, ``crop``, ``resize``, ``channels``, ``channel_order``) by the one rule of
    ``preparation.with_options``; ``reshape_params``: the weights carried across net
    surgery (``carried_across``)."""
    path = Path(path)
    if path.suffix == ".onnx":
        return _onnx_model(path, weights, options or {})
    found = read_model(path)
    sections = found.sections
    weights = weights or found.snapshot
    if weights is None:
        raise UsageError(f"{path} holds no weights: give --weights (a .npz snapshot or a .caffemodel)")
    data = sections.get("data") or {}
    specs = wire(sections["net"], data.get("input", "data"), data.get("target", "label"))
    inputs = sections.get("inputs") or {}
    input_name = data.get("input") or (next(iter(inputs)) if inputs else "data")
    options = {k: v for k, v in (options or {}).items() if v is not None}
    prepare = with_options(found.preparation, str(path), options)
    if not prepare.declared:
        log.warning(
            "%s declares no preparation (no mean, no scale): pixels 0..255 go in as they are; "
            "give --mean and --scale if it was trained on prepared ones",
            path,
        )
    if options.get("reshape_params"):
        blobs = StoredWeights(
            weights, lambda: carried_across(_read_weights(weights), specs), "reshape_params"
        )
    else:
        blobs = StoredWeights(weights, lambda: _read_weights(weights))
    return Model(
        name=str(sections.get("name") or path.stem),
        specs=_inference_specs(specs),
        input=input_name,
        target=data.get("target", "label"),
        prepare=prepare,
        weights=blobs,
        input_shape=tuple(inputs[input_name][1:]) if input_name in inputs else None,
        head=model_head(specs),
    )


def _read_weights(path: str | Path) -> dict[str, list[np.ndarray]]:
    """A weights file's blobs, with Caffe's formats imported only now (a kept graph needs none)."""
    from .caffemodel import read_weights

    return read_weights(path)


ONNX_FILLS = ("resize", "channels")  # what an exported graph may lack; it does the rest itself


def _onnx_model(path: Path, weights, options: dict) -> Model:
    """A graph ``dataprep export -o X.onnx`` wrote, as MODEL: its metadata says how images
    are decoded for it (channels, resize, the stored size); the graph itself reorders the
    channels, crops, subtracts the mean and scales, and ends in the classifier's ``prob``.
    onnxruntime opens it in a thread (``session``: a future, ``engines.onnx_session``) while
    the command reads and decodes the first inputs."""
    import json

    from .engines import onnx_session
    from .onnx_metadata import read_metadata

    if weights is not None:
        raise UsageError(f"{path} holds its weights: leave out --weights")
    given = sorted(k for k, v in options.items() if v and k not in ONNX_FILLS)
    if given:
        raise UsageError(
            f"--{given[0].replace('_', '-')}: {path} does its own preparation in the graph: "
            "leave the option out"
        )
    try:
        noted = read_metadata(path).get("dataprep.preparation")
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except (OSError, ValueError) as exc:
        raise DataprepError(f"{path}: not an ONNX file ({exc})") from None
    if noted is None:
        raise UsageError(f"{path}: no dataprep preparation in its metadata (export it with dataprep export)")
    meta = json.loads(noted)

    session = onnx_session(str(path))  # started by the command line's MODEL, or now
    fill = {k: options.get(k) for k in ONNX_FILLS if options.get(k) is not None}
    prepare = with_options(
        Preparation(
            channels=meta.get("channels") or "auto",
            channel_order="BGR",  # what OpenCV decodes and the graph takes
            resize=tuple(meta["resize"]) if meta.get("resize") else None,
            interpolation=meta.get("interpolation") or "linear",
            image_size=tuple(meta["image_size"]) if meta.get("image_size") else None,
            input_shape=tuple(meta["shape"]),
            task=meta.get("task"),
            classes=tuple(meta["classes"]) if meta.get("classes") else None,
            label_names=tuple(meta["label_names"]) if meta.get("label_names") else None,
        ),
        str(path),
        fill,
    )
    outputs = list(meta["outputs"])
    classifier = meta.get("task") == "classifier"
    output = "prob" if classifier and "prob" in outputs else outputs[-1]
    return Model(
        name=path.stem,
        specs=[  # the graph's outputs, as layers of one top; the one predict reads last
            {"name": o, "type": "Softmax" if o == "prob" else "Output", "top": [o]}
            for o in [*(o for o in outputs if o != output), output]
        ],
        input=meta.get("input") or "data",
        target="label",
        prepare=prepare,
        weights={},
        input_shape=tuple(meta["shape"]),
        head="SoftmaxWithLoss" if classifier else None,
        session=session,
    )


SURGERY_SUFFIXES = ("-conv", "_conv")  # Caffe's net-surgery example: fc6 -> fc6-conv


def carried_across(weights: dict[str, list[np.ndarray]], specs: list[dict]) -> dict[str, list[np.ndarray]]:
    """Net surgery (Caffe's example by hand): each learned layer takes the blobs of its own
    name, or of its name without ``-conv``, flattened so they load into whatever shape of
    the same count the layer now has (an InnerProduct's 4096 x 9216 as a Convolution's
    4096 x 256 x 6 x 6); a line per layer carried from another name or shape."""
    carried = dict(weights)
    for spec in specs:
        name = spec["name"]
        source = _surgery_source(name, weights)
        if source is None:
            continue
        blobs = weights[source]
        carried[name] = [b.reshape(-1) for b in blobs]  # copy_weights shapes a flat blob of the right count
        if source != name or spec["type"] == "Convolution" and blobs[0].ndim != 4:
            shapes = ", ".join("x".join(map(str, b.shape)) for b in blobs)
            log.info(
                "--reshape-params: layer %s takes the blobs of %s (%s), reshaped as it needs",
                name,
                source,
                shapes,
            )
    return carried


def _surgery_source(name: str, weights: dict) -> str | None:
    """The weights' layer a net's layer ``name`` takes: its own, or ``fc6``'s for ``fc6-conv``."""
    if name in weights:
        return name
    return next(
        (name[: -len(s)] for s in SURGERY_SUFFIXES if name.endswith(s) and name[: -len(s)] in weights), None
    )


@dataclass
class Inputs:
    """What to run the net on: image files (``raw``: prepared from pixels) or a store's
    records (used as stored), with their keys and labels, in order."""

    keys: list[str]
    labels: list[np.ndarray]
    batches: Iterator[tuple[int, list[np.ndarray]]]  # (first index, H x W x C arrays)
    count: int
    raw: bool = True


def remembering(inputs: Inputs, keep: int = 3) -> tuple[Inputs, dict[int, np.ndarray]]:
    """``inputs`` whose raw images of the last ``keep`` batches stay readable by input
    index (the prepare thread reads one batch ahead): pictures of chosen inputs without a
    second read, in bounded memory."""
    seen: dict[int, np.ndarray] = {}
    starts: collections.deque = collections.deque()

    def batches():
        for start, images in inputs.batches:
            seen.update(enumerate(images, start))
            starts.append((start, len(images)))
            if len(starts) > keep:
                old, count = starts.popleft()
                for index in range(old, old + count):
                    seen.pop(index, None)
            yield start, images

    return dataclasses.replace(inputs, batches=batches()), seen


def open_inputs(source: str | Path, model: Model, batch: int) -> Inputs:
    """One image file, a folder (a store, or else its images, recursively and sorted), a list
    file (``path [labels...]``; ``-`` for one on stdin) or a store, read in batches."""
    from ..errors import StoreError
    from ..listfile import read_list
    from ..stores import open_store, source_kind, store_kind

    path = Path(source)
    if str(source) == "-":
        return _list_inputs(read_list("-"), model, batch)
    if path.is_dir():
        try:
            store_kind(path)
        except StoreError:
            return _folder_inputs(path, model, batch)
    elif path.is_file() and path.suffix.lower().lstrip(".") in IMAGE_EXTENSIONS:
        return image_inputs(path, model)
    if source_kind(source) == "images":
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

    return Inputs(keys, labels, batches(), len(keys), raw=False)


def _stored_labels(reader) -> list[np.ndarray]:
    """Every record's labels, read once; none when the store holds no usable labels."""
    try:
        rows = reader.all_labels()
    except (DataprepError, KeyError, ValueError):
        return []
    return [np.asarray(row, np.float64) for row in rows] if len(rows) == len(reader) else []


def image_inputs(path: str | Path, model: Model, batch: int = 1) -> Inputs:
    """One image file, prepared as a list's images are."""
    from ..listfile import Entry, ListFile

    path = Path(path)
    return _list_inputs(
        ListFile(str(path), [Entry(1, path.name, ())], 0, path.parent.absolute()), model, batch
    )


def _folder_inputs(folder: Path, model: Model, batch: int) -> Inputs:
    """Every image below ``folder`` (sorted), keyed by its path relative to it."""
    from ..listfile import Entry, ListFile
    from ..scan import images_under

    found = images_under(folder, set(IMAGE_EXTENSIONS))
    if not found:
        raise DataprepError(f"{folder}: no images ({', '.join(IMAGE_EXTENSIONS)}) and not a store")
    entries = [Entry(k + 1, str(p.relative_to(folder)), ()) for k, p in enumerate(found)]
    return _list_inputs(ListFile(str(folder), entries, 0, folder.absolute()), model, batch)


def _list_inputs(listfile, model: Model, batch: int) -> Inputs:
    from ..images import Channels
    from ..records import image_list_source

    prepare = model.prepare
    records = image_list_source(listfile, Channels(prepare.channels), prepare.resize, prepare.interpolation)

    def batches() -> Iterator[tuple[int, list[np.ndarray]]]:
        for start in range(0, len(listfile), batch):
            images = []
            for index in range(start, min(start + batch, len(listfile))):
                record = records.record(index)
                prepare.check_size(record.image, record.origin)
                images.append(record.image)
            yield start, images

    labels = [np.asarray(e.labels, np.float64) for e in listfile.entries] if listfile.label_count else []
    return Inputs([e.path for e in listfile.entries], labels, batches(), len(listfile))


def run_batches(
    model: Model, inputs: Inputs, blobs: list[str], engine: str | None = None, xp=np, oversample: bool = False
) -> Iterator[tuple[int, dict[str, np.ndarray]]]:
    """Forward passes over the inputs, batch by batch, on ``engine`` (``engines.ENGINES``):
    (first index, the ``blobs`` asked for, by name). The next batch is read, decoded and
    prepared in a thread while the net runs on this one (OpenCV and the products release
    the GIL). With ``oversample`` each input runs as its ten crops (``Preparation.windows``),
    the blobs then N x 10 x ...."""
    from concurrent.futures import ThreadPoolExecutor

    from .engines import make_engine
    from .gil import quick_switches

    runner = make_engine(engine, model, blobs, xp)
    batches = iter(inputs.batches)
    with ThreadPoolExecutor(1, thread_name_prefix="prepare") as pool, quick_switches():
        ahead = pool.submit(_prepared, model, inputs, batches, oversample)
        while True:
            item = ahead.result()
            if item is None:
                return
            ahead = pool.submit(_prepared, model, inputs, batches, oversample)
            start, data = item
            found = runner.run(data, blobs)
            if oversample:
                found = {name: value.reshape(-1, 10, *value.shape[1:]) for name, value in found.items()}
            yield start, found


def _prepared(
    model: Model, inputs: Inputs, batches, oversample: bool = False
) -> tuple[int, np.ndarray] | None:
    """The next batch as the net's input (each image's ten crops in a row with
    ``oversample``), or None at the end."""
    item = next(batches, None)
    if item is None:
        return None
    start, images = item
    prep = model.prepare
    if oversample:
        prepared = [prep.prepare(i, inputs.raw, at) for i in images for at in prep.windows(*i.shape[:2])]
    else:
        prepared = [prep.prepare(image, inputs.raw) for image in images]
    shapes = {p.shape for p in prepared}
    want = model.input_shape or prepared[0].shape
    if len(shapes) > 1 or tuple(prepared[0].shape) != tuple(want):
        odd = next(k for k, p in enumerate(prepared) if tuple(p.shape) != tuple(want)) // (
            10 if oversample else 1
        )
        raise DataprepError(
            f"{inputs.keys[start + odd]}: the input is {_chw(prepared[odd].shape)} (C x H x W) after "
            f"preparation, the net takes {_chw(want)}: give --resize HxW (and --gray/--color)"
        )
    return start, np.stack(prepared)


def _chw(shape) -> str:
    return " x ".join(str(v) for v in shape)


@dataclass
class Prediction:
    """One input's result: regression values, or the top classes with their probabilities."""

    key: str
    values: list[float]
    classes: list[int] | None = None


def predict(
    model: Model,
    inputs: Inputs,
    top_k: int = 1,
    progress=None,
    engine: str | None = None,
    oversample: bool = False,
) -> Iterator[Prediction]:
    """The net's output for every input, in input order; classifiers (trained with
    SoftmaxWithLoss, or ending in Softmax) give their ``top_k`` classes. ``oversample``:
    the mean over each input's ten crops of its probabilities (or values), as pycaffe's
    Classifier.predict."""
    classifier = model.classifier
    for start, found in run_batches(model, inputs, [model.output], engine, oversample=oversample):
        out = np.asarray(found[model.output], np.float64)
        count = len(out)
        out = out.reshape(count * (10 if oversample else 1), -1)
        if classifier and model.specs[-1]["type"] != "Softmax":
            out = _softmax(out)
        if oversample:  # the crops' probabilities (or values) averaged
            out = out.reshape(count, 10, -1).mean(axis=1)
        if classifier:
            probabilities = out
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
