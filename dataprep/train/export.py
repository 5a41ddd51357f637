"""``dataprep export``: any model dataprep runs (recipe, prototxt, snapshot), with its
weights or freshly initialized ones, out as ``.caffemodel``, ``.npz`` or ``.onnx``.

Every format is written from one deploy net: the model's layers without its losses,
metrics and TRAIN-only layers, over its input at batch 1 (the batch stays free in ONNX).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from ..errors import UsageError
from ..staging import Staging, add_inputs
from .inference import read_model
from .net import Net
from .preparation import Preparation, with_options
from .wiring import HEADS, wire

FORMATS = (".onnx", ".caffemodel", ".npz", ".prototxt")
RANDOM_FILLERS = {"weight_filler": {"type": "xavier"}, "bias_filler": {"type": "gaussian", "std": 0.01}}
LEARNED_WEIGHTS = ("Convolution", "Deconvolution", "InnerProduct")


@dataclass
class Deploy:
    """A model as a deploy net: its name, entries (bottoms and tops explicit), the input
    blob and its C x H x W, its whole preparation, and the built net."""

    name: str
    specs: list[dict]
    input: str
    chw: tuple[int, ...]
    preparation: Preparation
    net: Net

    @property
    def pixels_chw(self) -> tuple[int | str, ...]:
        """The C x H x W of the images the model takes before its crop (what the ONNX graph
        takes): the training records' size, or ``H`` and ``W`` where it is not known."""
        prep = self.preparation
        if not prep.crop:
            return self.chw
        return (self.chw[0], *(prep.image_size or ("H", "W")))

    @property
    def classifier(self) -> bool:
        return self.preparation.task == "classifier"

    def prepared(self, pixels: np.ndarray) -> np.ndarray:
        """N x C x H x W pixels as decoded (BGR) as the net takes them (what the ONNX graph
        does first)."""
        return np.stack([self.preparation.prepare(p.transpose(1, 2, 0)) for p in pixels])


def deploy_specs(sections: dict) -> tuple[list[dict], str]:
    """The model's layers as a deploy net has them, and its input blob: losses, Accuracy
    and TRAIN-only layers dropped (the data layers are already inputs)."""
    data = sections.get("data") or {}
    inputs = sections.get("inputs") or {}
    input_name = data.get("input") or (next(iter(inputs)) if inputs else "data")
    specs = wire(sections["net"], input_name, data.get("target", "label"))
    kept = [spec for spec in specs if spec["type"] not in HEADS and spec.get("phase") != "TRAIN"]
    return [{k: v for k, v in spec.items() if k not in ("phase", "loss_weight")} for spec in kept], input_name


def load_deploy(
    path: str | Path,
    weights: str | Path | None = None,
    random_init: int | None = None,
    shape: tuple[int, ...] | None = None,
) -> Deploy:
    """MODEL as a deploy net with weights: from ``weights``, the snapshot itself, or with
    ``random_init`` every learnable blob filled from that seed (the layer's filler where it
    has one, else xavier weights and small gaussian biases; BatchNorm's statistics mean 0,
    variance 1, factor 1, since zeros would divide by sqrt(eps) in every block)."""
    from .caffemodel import copy_weights, read_weights

    found = read_model(path)
    sections, snapshot = found.sections, found.snapshot
    if random_init is not None and (weights or snapshot):
        raise UsageError(
            f"--random-init makes weights for a model without them; {weights or snapshot} has them"
        )
    source = weights or snapshot
    if source is None and random_init is None:
        raise UsageError(f"{path} holds no weights: give --weights, or --random-init SEED")
    specs, input_name = deploy_specs(sections)
    inputs = sections.get("inputs") or {}
    preparation = with_options(found.preparation, str(path), {})  # an old snapshot's missing mean stops here
    chw = tuple(
        shape
        or (inputs[input_name][1:] if input_name in inputs else _trained_shape(path, sections, preparation))
    )
    if random_init is not None:
        specs = [
            {**{k: v for k, v in RANDOM_FILLERS.items() if spec["type"] in LEARNED_WEIGHTS}, **spec}
            for spec in specs
        ]
    net = Net(
        specs,
        {input_name: (1, *chw)},
        rng=np.random.default_rng(random_init or 0),
        train=False,
        fill=source is None,
    )
    if source is not None:
        copy_weights(net, read_weights(source), source)
    else:
        for layer in net.layers:
            if layer.type == "BatchNorm":
                for blob, value in zip(layer.params, (0.0, 1.0, 1.0)):
                    blob[...] = value
    name = str(sections.get("name") or Path(path).stem)
    return Deploy(name, specs, input_name, chw, preparation, net)


def _trained_shape(path, sections: dict, preparation: Preparation) -> tuple[int, ...]:
    """The net's input C x H x W: as a snapshot recorded it, else from the training store."""
    from .timing import store_shape

    if preparation.input_shape:
        return tuple(preparation.input_shape)
    return store_shape(path, sections.get("data") or {})


def export(
    path: str | Path,
    out: str | Path,
    weights: str | Path | None = None,
    random_init: int | None = None,
    shape: tuple[int, ...] | None = None,
    overwrite: bool = False,
    deploy_form: bool = True,
) -> list[Path]:
    """Write MODEL to ``out``, its suffix choosing the format (``FORMATS``); a
    ``.caffemodel`` comes with ``NAME_deploy.prototxt`` unless not ``deploy_form``, and a
    prototxt whose mean is an image with ``NAME_mean.binaryproto``. Returns what was
    written, every file staged and committed together."""
    out = Path(out)
    suffix = out.suffix.lower()
    if suffix not in FORMATS:
        raise UsageError(f"-o {out}: the suffix chooses the format: {', '.join(FORMATS)}")
    add_inputs(path, *([weights] if weights else []))  # -o over the model it reads is refused
    deploy = load_deploy(path, weights, random_init, shape)
    files: dict[Path, bytes] = {}
    if suffix == ".prototxt":
        files.update(deploy_files(deploy, out))
    else:
        writer = {".onnx": onnx_bytes, ".caffemodel": caffemodel_of, ".npz": npz_bytes}[suffix]
        files[out] = writer(deploy)
        if suffix == ".caffemodel" and deploy_form:
            files.update(deploy_files(deploy, out.with_name(f"{out.stem}_deploy.prototxt")))
    with Staging(overwrite) as staging:
        for dest, data in files.items():
            staging.path(dest).write_bytes(data)
    return list(files)


def _input_layer(deploy: Deploy, mean_file: str | None = None):
    """Caffe's Input layer of the deploy net (batch 1), with the preparation as its
    transform_param when ``mean_file`` is given (Caffe ignores it there; pycaffe users and
    ``predict`` read it)."""
    from ..stores.caffe_pb import LayerParameter

    data = LayerParameter(name=deploy.input, type="Input", top=[deploy.input])
    data.input_param.shape.add().dim.extend([1, *deploy.chw])
    if mean_file is None:
        return data
    prep = deploy.preparation
    step = prep.folded()
    t = data.transform_param
    if prep.crop:
        t.crop_size = prep.crop
    if step.mean is not None and step.mean.shape[1:] == (1, 1):
        t.mean_value.extend(float(v) for v in step.mean.ravel())
    elif step.mean is not None:
        t.mean_file = mean_file
    if step.scale != 1.0:
        t.scale = step.scale
    return data


def deploy_files(deploy: Deploy, out: Path) -> dict[Path, bytes]:
    """Caffe's deploy form: ``out`` (an Input layer of the net's input shape carrying the
    preparation, no losses or data layers; a classifier ends in Softmax ``prob``), and
    ``NAME_mean.binaryproto`` beside it when the mean is an image."""
    import json

    from google.protobuf import text_format

    from ..stores.caffe_pb import LayerParameter, blob_bytes
    from .caffemodel import net_message
    from .prototxt import PREPARATION_NOTE

    prep = deploy.preparation
    step = prep.folded()
    mean_path = out.with_name(f"{out.stem.removesuffix('_deploy')}_mean.binaryproto")
    files: dict[Path, bytes] = {}
    if step.mean is not None and step.mean.shape[1:] != (1, 1):
        files[mean_path] = blob_bytes(step.mean)
    net = net_message(
        deploy.net, deploy.name, deploy.specs, [_input_layer(deploy, mean_path.name)], blobs=False
    )
    if deploy.classifier and deploy.specs and deploy.specs[-1]["type"] != "Softmax":
        logits = net.layer[-1].top[0]
        net.layer.append(LayerParameter(name="prob", type="Softmax", bottom=[logits], top=["prob"]))
    note = {k: v for k, v in prep.metadata().items() if k != "model_channel_order"}
    note["channel_order"] = prep.channel_order or "BGR"
    header = (
        f"# {deploy.name}: the deploy net, written by dataprep export\n{PREPARATION_NOTE}{json.dumps(note)}\n"
    )
    files[out] = (header + text_format.MessageToString(net)).encode()
    return {out: files[out], **{k: v for k, v in files.items() if k != out}}


def caffemodel_of(deploy: Deploy) -> bytes:
    """A binary NetParameter: the deploy net's Input layer, then every layer with its blobs
    in Caffe's order and shapes."""
    from .caffemodel import caffemodel_bytes

    return caffemodel_bytes(deploy.net, deploy.name, deploy.specs, [_input_layer(deploy)])


def npz_bytes(deploy: Deploy) -> bytes:
    """Weights and preparation as ``predict``, ``extract``, ``visualize`` and ``train
    --weights`` take them (``param/LAYER/i``, the net as a recipe); no training state."""
    import io

    from ..gpu import host

    recipe = {
        "name": deploy.name,
        "data": {"input": deploy.input},
        "inputs": {deploy.input: [1, *deploy.chw]},
        "net": deploy.specs,
    }
    arrays = {f"param/{layer.name}/{i}": host(layer.params[i]) for layer, i in deploy.net.params()}
    arrays["recipe"] = np.array(yaml.safe_dump(recipe, sort_keys=False))
    fields, means = deploy.preparation.record()
    arrays["preparation"] = np.array(yaml.safe_dump(fields, sort_keys=False))
    arrays.update(means)
    buffer = io.BytesIO()
    np.savez(buffer, **arrays)
    return buffer.getvalue()


def onnx_bytes(deploy: Deploy) -> bytes:
    from .onnx_export import onnx_model

    return onnx_model(deploy).SerializeToString()


def init_caffemodel(recipe, shape: tuple[int, ...] | None = None) -> bytes:
    """The layers whose kernels fixed fillers (range, values) set, with those blobs, as a
    .caffemodel Caffe starts from (the solver's ``weights``): Caffe has no such fillers."""
    from .caffemodel import caffemodel_bytes
    from .prototxt import fixed_layers
    from .timing import store_shape

    sections = {"name": recipe.name, "net": recipe.raw["net"], "data": recipe.raw.get("data") or {}}
    specs, input_name = deploy_specs(sections)
    chw = tuple(shape or store_shape(recipe.name, sections["data"]))
    net = Net(specs, {input_name: (1, *chw)}, train=False)
    return caffemodel_bytes(net, recipe.name, specs, [], only=set(fixed_layers(recipe)))
