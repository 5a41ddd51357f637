"""Caffe's model definitions as recipes: a solver prototxt (with its net prototxt) or a net
prototxt read into the same mapping a YAML recipe gives, so one validation and one runner
serve both. Parsing is the protobuf library's ``text_format`` over caffe.proto's messages
(``stores/caffe_pb.py``).

Per layer type, LAYER_PARAMS names its parameter message and the fields dataprep runs;
recipe keys are those field names (``num_output``, ``weight_filler: {type, std}``). A
field outside that list, an unsupported layer type or a rule other than one phase stops
with one line naming the layer, the field and the prototxt line. Relative paths (the
solver's ``net``, data sources) resolve against the current folder, as Caffe's do.
"""

from __future__ import annotations

import contextvars
import dataclasses
import logging
from pathlib import Path
from typing import Any

from google.protobuf import text_format
from google.protobuf.descriptor import FieldDescriptor

from ..errors import UsageError
from ..stores.caffe_pb import NetParameter, SolverParameter

# layer type -> (its parameter message in LayerParameter, the fields dataprep runs)
_CONV = (
    "num_output", "bias_term", "pad", "kernel_size", "stride", "dilation", "group", "axis", "weight_filler",
    "bias_filler",
)  # fmt: skip
_HW = ("kernel_h", "kernel_w", "stride_h", "stride_w", "pad_h", "pad_w")  # see square_windows
LAYER_PARAMS: dict[str, tuple[str | None, tuple[str, ...]]] = {
    "Convolution": ("convolution_param", _CONV + _HW),
    "Deconvolution": ("convolution_param", _CONV + _HW),
    "Pooling": ("pooling_param", ("pool", "kernel_size", "stride", "pad", "global_pooling") + _HW),
    "InnerProduct": (
        "inner_product_param",
        ("num_output", "bias_term", "weight_filler", "bias_filler", "axis"),
    ),
    "ReLU": ("relu_param", ("negative_slope",)),
    "PReLU": ("prelu_param", ("filler", "channel_shared")),
    "ELU": ("elu_param", ("alpha",)),
    "Sigmoid": ("sigmoid_param", ()),
    "TanH": ("tanh_param", ()),
    "AbsVal": (None, ()),
    "Exp": ("exp_param", ("base", "scale", "shift")),
    "Log": ("log_param", ("base", "scale", "shift")),
    "Power": ("power_param", ("power", "scale", "shift")),
    "Dropout": ("dropout_param", ("dropout_ratio",)),
    "LRN": ("lrn_param", ("local_size", "alpha", "beta", "k", "norm_region")),
    "BatchNorm": ("batch_norm_param", ("use_global_stats", "moving_average_fraction", "eps")),
    "Flatten": ("flatten_param", ("axis", "end_axis")),
    "Reshape": ("reshape_param", ("shape", "axis", "num_axes")),
    "Concat": ("concat_param", ("axis", "concat_dim")),
    "Slice": ("slice_param", ("axis", "slice_point", "slice_dim")),
    "Eltwise": ("eltwise_param", ("operation", "coeff", "stable_prod_grad")),
    "Crop": ("crop_param", ("axis", "offset")),
    "Scale": ("scale_param", ("filler", "bias_term", "bias_filler")),
    "Bias": ("bias_param", ("axis", "num_axes", "filler")),
    "Silence": (None, ()),
    "ArgMax": ("argmax_param", ("out_max_val", "top_k", "axis")),
    "Softmax": ("softmax_param", ("axis",)),
    "SoftmaxWithLoss": (None, ()),
    "EuclideanLoss": (None, ()),
    "SigmoidCrossEntropyLoss": (None, ()),
    "ContrastiveLoss": ("contrastive_loss_param", ("margin", "legacy_version")),
    "Clip": ("clip_param", ("min", "max")),
    "Swish": ("swish_param", ("beta",)),
    "Threshold": ("threshold_param", ("threshold",)),
    "Tile": ("tile_param", ("axis", "tiles")),
    "Filter": (None, ()),
    "Split": (None, ()),
    "Reduction": ("reduction_param", ("operation", "axis", "coeff")),
    "MVN": ("mvn_param", ("normalize_variance", "across_channels", "eps")),
    "Embed": ("embed_param", ("num_output", "input_dim", "bias_term", "weight_filler", "bias_filler")),
    "Parameter": ("parameter_param", ("shape",)),
    "MultinomialLogisticLoss": (None, ()),
    "HingeLoss": ("hinge_loss_param", ("norm",)),
    "InfogainLoss": ("infogain_loss_param", ("source", "axis")),
    "SPP": ("spp_param", ("pyramid_height", "pool")),
    "DummyData": ("dummy_data_param", ("data_filler", "shape", "num", "channels", "height", "width")),
    "Accuracy": ("accuracy_param", ("top_k",)),
}
LIST_FIELDS = ("coeff", "slice_point", "offset")  # repeated fields that are lists; others take one value
PER_AXIS = ("kernel_size", "stride", "pad", "dilation")  # one value, or a list of one per spatial axis
LIST_PARAMS = ("dummy_data_param",)  # whose repeated fields are all lists (one per top)
LAYER_KEYS = ("name", "type", "bottom", "top", "phase", "loss_weight", "param")  # every layer's
RECIPE_ONLY = {"Scale": ("scale",), "SmoothL1Loss": ()}  # recipe layers Caffe writes otherwise
DEPRECATED_TRANSFORM = ("scale", "mean_file", "crop_size", "mirror")  # V1: in data_param
IGNORED = ("engine", "force_nd_im2col")  # Caffe's implementation choices: one engine here, the same values
DATA_LAYERS = ("HDF5Data", "Data", "ImageData", "Input")
log = logging.getLogger(__name__)
SOLVER_FIELDS = (  # SolverParameter fields the recipe's solver section takes as they are
    "base_lr",
    "momentum",
    "momentum2",
    "delta",
    "weight_decay",
    "lr_policy",
    "gamma",
    "stepsize",
    "stepvalue",
    "power",
    "max_iter",
    "display",
    "average_loss",
    "test_interval",
    "test_initialization",
    "snapshot",
    "snapshot_prefix",
    "iter_size",
    "clip_gradients",
    "regularization_type",
    "rms_decay",
    "snapshot_after_train",
    "debug_info",
)
# SolverParameter fields read elsewhere in solver_raw: the net, the type, the test count, the
# seed, the weights, the device and the snapshot format
READ_HERE = {"net", "train_net", "net_param", "type", "solver_type", "test_iter", "random_seed", "weights"}
READ_HERE |= {"solver_mode"}
READ_HERE |= {"snapshot_format", "test_state", "train_state", "train_net_param", "test_net", "test_net_param"}
SOLVER_IGNORED = {  # fields that change nothing dataprep computes: logged, then ignored
    "device_id": "the device is --device's choice",
    "layer_wise_reduce": "a multi-GPU setting",
    "test_compute_loss": "test passes always report every output, the losses included",
    "snapshot_diff": "snapshots hold the weights and the solver state, not the last gradients",
}


class _Where:
    """Prototxt line numbers of layers, for messages."""

    def __init__(self, path: Path, text: str) -> None:
        self.path, self.lines = path, text.splitlines()

    def layer(self, name: str) -> str:
        for number, line in enumerate(self.lines, 1):
            if f'name: "{name}"' in line or f"name: '{name}'" in line:
                return f"{self.path}:{number}"
        return str(self.path)


def layer_keys(kind: str) -> set[str]:
    """The keys a recipe layer of type ``kind`` takes: every layer's, and its fields."""
    fields = LAYER_PARAMS[kind][1] if kind in LAYER_PARAMS else ()
    return {*LAYER_KEYS, *fields, *RECIPE_ONLY.get(kind, ())}


def _parse(path: Path, message: Any) -> tuple[Any, _Where]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    try:
        text_format.Parse(text, message)
    except text_format.ParseError as exc:  # "3:12 : Message type ... has no field named ..."
        raise UsageError(f"{path}:{exc}") from None
    return message, _Where(path, text)


def _short(value: float) -> float:
    """A float32 field as the number written in the file (0.01, not 0.009999999776)."""
    return float(f"{value:.7g}")


def _repeated(field: FieldDescriptor) -> bool:
    if hasattr(field, "is_repeated"):  # protobuf 6 on; ``label`` before
        return field.is_repeated
    return field.label == FieldDescriptor.LABEL_REPEATED


def _value(message: Any, field: FieldDescriptor) -> Any:
    value = getattr(message, field.name)
    if _repeated(field):
        return [_scalar(field, v) for v in value]
    return _scalar(field, value)


def _scalar(field: FieldDescriptor, value: Any) -> Any:
    if field.type == FieldDescriptor.TYPE_ENUM:
        return field.enum_type.values_by_number[value].name
    if field.type == FieldDescriptor.TYPE_MESSAGE:
        return {f.name: _value(value, f) for f, _ in value.ListFields()}
    if field.type in (FieldDescriptor.TYPE_FLOAT, FieldDescriptor.TYPE_DOUBLE):
        return _short(value)
    return value


def _layer_entry(layer: Any, where: _Where) -> dict:
    """A recipe net entry of a LayerParameter."""
    name, kind = layer.name, layer.type
    at = f"{where.layer(name)}: layer {name!r}"
    p = layer.power_param
    phase = _layer_phase(layer, at)
    if kind == "Power" and p.power == 1 and p.shift == 0:  # a fixed factor: the recipe's Scale
        entry = {"name": name, "type": "Scale", "scale": _short(p.scale)}
        return (
            entry
            | {"bottom": list(layer.bottom), "top": list(layer.top)}
            | ({"phase": phase} if phase else {})
        )
    if kind not in LAYER_PARAMS:
        raise UsageError(f"{at}: type {kind!r} is not supported; dataprep runs {', '.join(LAYER_PARAMS)}")
    entry: dict[str, Any] = {"name": name, "type": kind, "bottom": list(layer.bottom), "top": list(layer.top)}
    if phase:
        entry["phase"] = phase
    if layer.loss_weight:
        entry["loss_weight"] = _short(layer.loss_weight[0])
    if layer.param:
        if any(p.HasField("share_mode") and p.share_mode == 1 for p in layer.param):  # PERMISSIVE
            raise UsageError(f"{at}: param.share_mode PERMISSIVE is not supported (shapes must match)")
        entry["param"] = [
            {
                f.name: _short(v) if isinstance(v, float) else v
                for f, v in p.ListFields()
                if f.name != "share_mode"
            }
            for p in layer.param
        ]
    for field, _ in layer.ListFields():
        if field.name.endswith("_param") and field.name != LAYER_PARAMS[kind][0]:
            raise UsageError(f"{at}: {field.name} does not belong to a {kind} layer")
        if field.name in ("propagate_down", "blobs"):
            raise UsageError(f"{at}: field {field.name} is not supported")
    message_name, allowed = LAYER_PARAMS[kind]
    if message_name and layer.HasField(message_name):
        for field, _ in getattr(layer, message_name).ListFields():
            if field.name in IGNORED:
                continue
            if field.name not in allowed:
                raise UsageError(f"{at}: {message_name}.{field.name} is not supported")
            value = _value(getattr(layer, message_name), field)
            if isinstance(value, list) and field.name not in LIST_FIELDS and message_name not in LIST_PARAMS:
                if len(value) != 1 and field.name not in PER_AXIS:
                    raise UsageError(f"{at}: {message_name}.{field.name}: give one value")
                value = value[0] if len(value) == 1 else value
            entry[field.name] = value
    return square_windows(entry, at)


def square_windows(entry: dict, at: str) -> dict:
    """``kernel_h``/``kernel_w`` (and stride, pad) as ``kernel_size`` when they are equal
    (the layers' tuned square paths); unequal ones stay, for their plain path."""
    for name in ("kernel", "stride", "pad"):
        h, w = entry.get(f"{name}_h"), entry.get(f"{name}_w")
        if h is not None and h == w:  # equal: the square field, as most nets write it
            del entry[f"{name}_h"], entry[f"{name}_w"]
            entry["kernel_size" if name == "kernel" else name] = h
    if "concat_dim" in entry:  # Concat's deprecated alias
        entry.setdefault("axis", entry.pop("concat_dim"))
    entry.pop("stable_prod_grad", None)  # Eltwise PROD's gradient is computed stably anyway
    return entry


@dataclasses.dataclass(frozen=True)
class NetState:
    """Caffe's NetState: the phase (0 TRAIN, 1 TEST), level and stages a net is built for."""

    phase: int
    level: int = 0
    stages: tuple[str, ...] = ()


# the states the nets being read are built for: the solver's train_state and test_states
# (Caffe's defaults without a solver: level 0, no stages)
NET_STATES: contextvars.ContextVar[tuple[NetState, ...]] = contextvars.ContextVar(
    "net_states", default=(NetState(0), NetState(1))
)
LEFT_OUT = "left out"  # a layer no state of the run includes
# whether the solver being read makes test nets (Caffe makes one per test_iter, or per test
# net file): only then does a data layer without rules feed them too
TESTED: contextvars.ContextVar[bool] = contextvars.ContextVar("tested", default=False)


def _meets(state: NetState, rule: Any) -> bool:
    """Caffe's Net::StateMeetsRule."""
    if rule.HasField("phase") and rule.phase != state.phase:
        return False
    if rule.HasField("min_level") and state.level < rule.min_level:
        return False
    if rule.HasField("max_level") and state.level > rule.max_level:
        return False
    return all(s in state.stages for s in rule.stage) and not any(s in state.stages for s in rule.not_stage)


def _included(state: NetState, layer: Any) -> bool:
    """Caffe's Net::FilterNet for one layer: any include rule met, else no exclude rule met."""
    if layer.include:
        return any(_meets(state, rule) for rule in layer.include)
    return not any(_meets(state, rule) for rule in layer.exclude)


def _layer_phase(layer: Any, at: str) -> str | None:
    """A layer's include/exclude rules (phase, levels, stages) against the run's states:
    in every net (None), the TRAIN or the TEST net only, or LEFT_OUT; a layer some test
    nets take and others not is refused."""
    if not layer.include and not layer.exclude:
        return None
    states = NET_STATES.get()
    train = {_included(s, layer) for s in states if s.phase == 0} or {False}
    test = {_included(s, layer) for s in states if s.phase == 1} or {False}
    if len(train) > 1 or len(test) > 1:
        raise UsageError(f"{at}: its rules take it into some test nets and not others: not supported")
    return {(True, True): None, (True, False): "TRAIN", (False, True): "TEST"}.get(
        (train.pop(), test.pop()), LEFT_OUT
    )


PREPARATION_NOTE = "# dataprep preparation: "  # what transform_param cannot say (dataprep export)


def _preparation_note(path: Path) -> dict:
    """The preparation a deploy prototxt written by ``dataprep export`` notes in a comment
    (channel order, resize, image size, the task and names)."""
    import json

    for line in path.read_text(errors="replace").splitlines()[:5]:
        if line.startswith(PREPARATION_NOTE):
            try:
                return json.loads(line[len(PREPARATION_NOTE) :])
            except ValueError:
                raise UsageError(f"{path}: the dataprep preparation line is damaged") from None
    return {}


def _data_layer(layer: Any, where: _Where) -> dict:
    """What the data section takes of an HDF5Data, Data or Input layer."""
    at = f"{where.layer(layer.name)}: layer {layer.name!r}"
    tops = list(layer.top)
    found: dict[str, Any] = {"input": tops[0]}
    if len(tops) > 2 and layer.type != "Input":
        raise UsageError(
            f"{at}: {len(tops)} tops: dataprep's data layers give the data and one label top (an HDF5 "
            "file's label datasets come together as its columns: a Slice layer cuts them apart)"
        )
    if len(tops) > 1:
        found["target"] = tops[1]
    if layer.HasField("transform_param"):
        t = layer.transform_param
        transform = {f.name: _value(t, f) for f, _ in t.ListFields()}
        unsupported = sorted(set(transform) - {"scale", "mirror", "crop_size", "mean_file", "mean_value"})
        if unsupported:
            raise UsageError(f"{at}: transform_param.{unsupported[0]} is not supported")
        if "mean_file" in transform:
            transform["mean_file"] = _beside(str(transform["mean_file"]), where.path)
        found["transform"] = transform
    if layer.type == "Input":
        shapes = [list(shape.dim) for shape in layer.input_param.shape]
        found["shapes"] = dict(zip(tops, shapes))
        return found
    params = {"HDF5Data": layer.hdf5_data_param, "ImageData": layer.image_data_param}.get(
        layer.type, layer.data_param
    )
    if not params.source:
        raise UsageError(f"{at}: give its source")
    if layer.type != "HDF5Data":
        _deprecated_transform(params, "image_data_param" if layer.type == "ImageData" else "data_param", at)
    found.update(source=params.source, batch_size=params.batch_size or 1)
    found["shuffle"] = bool(layer.type in ("HDF5Data", "ImageData") and params.shuffle)
    if layer.type == "ImageData":  # a list of images, decoded as Caffe's ImageDataLayer does
        image = {"path": params.source, "root": params.root_folder or "."}  # Caffe: from the current folder
        if params.new_height or params.new_width:
            if not (params.new_height and params.new_width):
                raise UsageError(f"{at}: give both new_height and new_width (Caffe's rule)")
            image["resize"] = f"{params.new_height}x{params.new_width}"
        image["color"] = bool(params.is_color)
        found["source"] = image
        if params.rand_skip:
            raise UsageError(f"{at}: image_data_param.rand_skip is not supported")
    return found


def _deprecated_transform(params: Any, label: str, at: str) -> None:
    """The V1 transformation fields left in a current-form data layer: Caffe's layer does
    not read them there (only the V1 upgrade moves them); said in a line, not dropped silently."""
    for name in DEPRECATED_TRANSFORM:
        if params.HasField(name):
            log.warning(
                "%s: %s.%s is the pre-2015 place; Caffe ignores it in this form and so does dataprep: "
                "give it in transform_param",
                at,
                params.DESCRIPTOR.name.replace("Parameter", "_param")
                .lower()
                .replace("imagedata", "image_data"),
                name,
            )


def _beside(path: str, prototxt: Path) -> str:
    """A relative file a prototxt names: from the current folder as in Caffe, else from the
    prototxt's folder (where ``dataprep export`` writes a deploy net's mean)."""
    if Path(path).is_absolute() or Path(path).exists() or not (prototxt.parent / path).exists():
        return path
    return str(prototxt.parent / path)


SHUFFLE_NOTE = (
    "# dataprep: data.shuffle: true (Caffe's Data layer reads in store order: write the store "
    "shuffled, dataprep lmdb --shuffle)\n"
)


def net_sections(path: str | Path) -> dict:
    """The ``data`` and ``net`` sections (and ``name``) of a net prototxt (train_val or
    deploy); a deploy net's Input shapes come back as ``inputs``."""
    path = Path(path)
    net, where = _parse(path, NetParameter())
    return message_sections(net, where)


V1_TYPES = {  # V1LayerParameter.LayerType -> LayerParameter.type, as Caffe's UpgradeV1LayerType
    "ABSVAL": "AbsVal", "ACCURACY": "Accuracy", "ARGMAX": "ArgMax", "BNLL": "BNLL", "CONCAT": "Concat",
    "CONTRASTIVE_LOSS": "ContrastiveLoss", "CONVOLUTION": "Convolution", "DATA": "Data",
    "DECONVOLUTION": "Deconvolution", "DROPOUT": "Dropout", "DUMMY_DATA": "DummyData",
    "EUCLIDEAN_LOSS": "EuclideanLoss", "ELTWISE": "Eltwise", "EXP": "Exp", "FLATTEN": "Flatten",
    "HDF5_DATA": "HDF5Data", "HDF5_OUTPUT": "HDF5Output", "HINGE_LOSS": "HingeLoss", "IM2COL": "Im2col",
    "IMAGE_DATA": "ImageData", "INFOGAIN_LOSS": "InfogainLoss", "INNER_PRODUCT": "InnerProduct",
    "LRN": "LRN", "MEMORY_DATA": "MemoryData", "MULTINOMIAL_LOGISTIC_LOSS": "MultinomialLogisticLoss",
    "MVN": "MVN", "POOLING": "Pooling", "POWER": "Power", "RELU": "ReLU", "SIGMOID": "Sigmoid",
    "SIGMOID_CROSS_ENTROPY_LOSS": "SigmoidCrossEntropyLoss", "SILENCE": "Silence", "SOFTMAX": "Softmax",
    "SOFTMAX_LOSS": "SoftmaxWithLoss", "SPLIT": "Split", "SLICE": "Slice", "TANH": "TanH",
    "WINDOW_DATA": "WindowData", "THRESHOLD": "Threshold",
}  # fmt: skip


def upgrade_v1(net: Any) -> Any:
    """A NetParameter in the pre-2015 ``layers`` form (V1LayerParameter) as Caffe's
    UpgradeNetAsNeeded leaves it: each layer's enum type as its name, ``blobs_lr`` and
    ``weight_decay`` (and named ``param``) into ``param`` specs, its ``*_param`` messages,
    rules, loss weights and blobs copied over."""
    upgraded = NetParameter()
    upgraded.CopyFrom(net)
    del upgraded.layers[:]
    kinds = type(net.layers.add()).LayerType
    del net.layers[-1]
    for old in net.layers:
        layer = upgraded.layer.add(name=old.name, type=V1_TYPES[kinds.Name(old.type)])
        layer.bottom.extend(old.bottom)
        layer.top.extend(old.top)
        layer.include.extend(old.include)
        layer.exclude.extend(old.exclude)
        layer.loss_weight.extend(old.loss_weight)
        layer.blobs.extend(old.blobs)
        for k in range(max(len(old.blobs_lr), len(old.weight_decay), len(old.param))):
            spec = layer.param.add()
            if k < len(old.param) and old.param[k]:
                spec.name = old.param[k]
            if k < len(old.blobs_lr):
                spec.lr_mult = old.blobs_lr[k]
            if k < len(old.weight_decay):
                spec.decay_mult = old.weight_decay[k]
        for field, value in old.ListFields():
            if field.name.endswith("_param") and field.name != "param":
                getattr(layer, field.name).CopyFrom(value)
        for params in (layer.data_param, layer.image_data_param):  # UpgradeNetDataTransformation
            for name in DEPRECATED_TRANSFORM:
                if params.HasField(name):
                    setattr(layer.transform_param, name, getattr(params, name))
                    params.ClearField(name)
    return upgraded


def self_fed(net: list[dict]) -> bool:
    """Whether a net makes its own inputs (a DummyData layer): it trains with no source."""
    return any(layer.get("type") == "DummyData" for layer in net)


def _data_states(layer: Any) -> tuple[bool, list[int]]:
    """Whether the TRAIN net takes a data layer, and which test nets (by number) do: its
    include/exclude rules (phase, levels, stages) against the run's states, as Caffe's
    FilterNet builds each net: a layer without rules feeds every net the solver makes."""
    states = NET_STATES.get()
    if not layer.include and not layer.exclude and not TESTED.get():
        return True, []
    taken = [state for state in states if _included(state, layer)]
    tests = [k for k, state in enumerate(s for s in states if s.phase == 1) if state in taken]
    return any(state.phase == 0 for state in taken), tests


def _test_sources(data: dict) -> None:
    """Test net #0's data layer as ``val``, the further test nets' as ``tests``, in the
    order of the run's test states; a test net without a data layer of its own is refused
    where there are several."""
    found = data.pop("by_test_net", {})
    if not found:
        return
    count = sum(state.phase == 1 for state in NET_STATES.get())
    if count > 1 and len(found) < count:
        missing = min(set(range(count)) - set(found))
        raise UsageError(f"test net #{missing} (its test_state) takes none of the net's data layers")
    if 0 in found:
        data["val"], data["val_batch_size"] = found[0]["source"], found[0]["batch_size"]
    data["tests"] = [found[k] for k in range(1, count)]
    if not data["tests"]:
        del data["tests"]


def message_sections(net: Any, where: "_Where") -> dict:
    """``net_sections`` of a parsed NetParameter (a file's, or a solver's inline net)."""
    path = where.path
    if net.layers:
        if net.layer:
            raise UsageError(f"{path}: mixes the V1 'layers' form with 'layer': give one")
        log.info("%s: upgraded from the pre-2015 'layers' form (V1LayerParameter), as Caffe does", path)
        net = upgrade_v1(net)
    data: dict[str, Any] = {}
    layers, inputs = [], {}
    for layer in net.layer:
        if layer.type not in DATA_LAYERS:
            entry = _layer_entry(layer, where)
            if entry.get("phase") != LEFT_OUT:
                layers.append(entry)
            continue
        found = _data_layer(layer, where)
        if "shapes" in found:
            inputs.update(found["shapes"])
            if "transform" in found:  # a deploy net's preparation (dataprep export writes it)
                data["transform"] = found["transform"]
            continue
        train, tests = _data_states(layer)
        taken = [("the TRAIN net", "train" in data and train)] + [
            (f"test net #{k}", k in data.get("by_test_net", {})) for k in tests
        ]
        for net_name, twice in taken:
            if twice:
                raise UsageError(
                    f"{where.layer(layer.name)}: {net_name} takes 2 data layers (their include/exclude "
                    "rules): give each net one"
                )
        for k in tests:  # the test nets it feeds (Caffe's FilterNet for each test state)
            data.setdefault("by_test_net", {})[k] = {
                "source": found["source"],
                "batch_size": found["batch_size"],
            }
        if train:
            noted = SHUFFLE_NOTE.split(" (")[0] in path.read_text(errors="replace")  # see recipe_prototxt
            data.update(train=found["source"], batch_size=found["batch_size"])
            data.update(shuffle=found["shuffle"] or noted, input=found["input"])
            if "target" in found:
                data["target"] = found["target"]
            if "transform" in found:
                data["transform"] = found["transform"]
    _test_sources(data)
    for k, shape in enumerate(net.input_shape):  # the deprecated NetParameter inputs
        inputs[net.input[k]] = list(shape.dim)
    if net.input_dim:  # older still: four input_dim values per input (ResNet-50's header)
        dims = list(net.input_dim)
        if len(dims) != 4 * len(net.input):
            raise UsageError(
                f"{path}: {len(dims)} input_dim values for {len(net.input)} input(s): give 4 each"
            )
        for k, name in enumerate(net.input):
            inputs[name] = dims[4 * k : 4 * k + 4]
    sections: dict[str, Any] = {"name": net.name or path.stem, "net": layers}
    note = _preparation_note(path)
    if note:
        sections["preparation"] = note
    if data:
        sections["data"] = data
    if inputs:
        sections["inputs"] = inputs
    return sections


def solver_raw(path: str | Path) -> dict:
    """The recipe mapping of a solver prototxt and the net it names (``net``,
    ``train_net``): what ``caffe train -solver`` would run."""
    path = Path(path)
    solver, where = _parse(path, SolverParameter())
    token = NET_STATES.set(_states(solver))
    tested = TESTED.set(bool(solver.test_iter or solver.test_net or solver.test_net_param))
    try:
        return _solver_nets(solver, path, where)
    finally:
        TESTED.reset(tested)
        NET_STATES.reset(token)


def _states(solver: Any) -> tuple[NetState, ...]:
    """The states a solver builds its nets for: train_state, and each test_state (one
    TEST state at level 0 without them), as Caffe's Solver::InitTrainNet/InitTestNets."""
    train = solver.train_state
    states = [NetState(0, train.level, tuple(train.stage))]
    states += [NetState(1, t.level, tuple(t.stage)) for t in solver.test_state] or [NetState(1)]
    return tuple(states)


def _solver_nets(solver: Any, path: Path, where: "_Where") -> dict:
    """The recipe of a parsed solver, its nets read for its states."""
    for inline in ("net_param", "train_net_param"):  # the net inline (lenet_consolidated_solver)
        if solver.HasField(inline):
            sections = message_sections(getattr(solver, inline), where)
            break
    else:
        net_path = solver.net or solver.train_net
        if not net_path:
            raise UsageError(f'{path}: give the net (net: "train_val.prototxt", or net_param {{ ... }})')
        sections = net_sections(_net_file(net_path, path))
    tests = [net_sections(_net_file(p, path)) for p in solver.test_net]
    tests += [message_sections(net, where) for net in solver.test_net_param]
    if len(tests) > 1 and len(solver.test_state) > 1:
        raise UsageError(f"{path}: several separate test nets and several test_state: give one or the other")
    if tests:
        _merge_test_net(sections, tests[0], path)
    for k, test in enumerate(tests[1:], 1):  # each a further test net (data.tests), in Caffe's order
        sections["data"].setdefault("tests", []).append(_further_test_net(tests[0], test, k, path))
    return _solver_recipe(solver, sections, path, where)


def _test_source(test: dict, path: Path) -> tuple[Any, Any]:
    """(source, batch size) of a separate test net's data layer."""
    found = test.get("data") or {}
    if found.get("val"):
        return found["val"], found.get("val_batch_size")
    if not found.get("train"):
        raise UsageError(f"{path}: its test net has no HDF5Data or Data layer to test from")
    return found["train"], found.get("batch_size")


def _further_test_net(first: dict, test: dict, k: int, path: Path) -> dict:
    """Test net #k of several separate ones: its own data layer, the same other layers as
    test net #0 (the net tests each source as it tests the first)."""
    layers = lambda net: [{**layer, "phase": None} for layer in net["net"]]  # noqa: E731
    if layers(test) != layers(first):
        raise UsageError(
            f"{path}: test net #{k} differs from test net #0 in more than its data layer: "
            "dataprep tests several sources through one test net"
        )
    source, batch_size = _test_source(test, path)
    return {"source": source, "batch_size": batch_size}


def _net_file(name: str, solver: Path) -> str:
    """A net file a solver names: from the current folder, as Caffe looks, else beside it."""
    beside = solver.parent / name
    if not Path(name).exists() and beside.exists():
        log.info(
            "%s: %s is not in the current folder; using the one beside the solver, %s", solver, name, beside
        )
        return str(beside)
    return name


def _merge_test_net(sections: dict, test: dict, path: Path) -> None:
    """Caffe's separate test net (``test_net``, ``test_net_param``: the pre-2014 pair of
    files) as the one net's TEST phase: its data layer the validation source, the layers
    only it has (the Accuracy) TEST layers, the train net's own (its loss) TRAIN ones. The
    layers both have must be the same layers: they share their weights by name in Caffe."""
    source, batch_size = _test_source(test, path)
    train_layers = {layer["name"]: layer for layer in sections["net"]}
    test_layers = {layer["name"]: layer for layer in test["net"]}
    for name, layer in test_layers.items():
        other = train_layers.get(name)
        if other is not None and {**other, "phase": None} != {**layer, "phase": None}:
            raise UsageError(
                f"{path}: layer {name!r} differs between the train and the test net: "
                "only their data layers and the layers one of them alone has may differ"
            )
    following: dict[str | None, list[dict]] = {}  # the test net's own layers, after the shared
    anchor = None  # layer before them, so the outputs keep the test net's order (Caffe's #k)
    for layer in test["net"]:
        if layer["name"] in train_layers:
            anchor = layer["name"]
        else:
            following.setdefault(anchor, []).append({**layer, "phase": "TEST"})
    merged = following.get(None, [])
    for layer in sections["net"]:
        if layer["name"] not in test_layers and not layer.get("phase"):
            layer["phase"] = "TRAIN"
        merged += [layer, *following.get(layer["name"], [])]
    sections["net"] = merged
    data = sections.setdefault("data", {})
    data["val"], data["val_batch_size"] = source, batch_size


def _solver_recipe(solver: Any, sections: dict, path: Path, where: "_Where") -> dict:
    """The recipe of a parsed solver and the sections of its net."""
    fed = self_fed(sections["net"])
    if "data" not in sections and not fed:
        raise UsageError(f"{path}: its net has no HDF5Data, Data, ImageData or DummyData layer to train from")
    sections.setdefault("data", {})
    section: dict[str, Any] = {}
    for field, _ in solver.ListFields():
        if field.name in SOLVER_FIELDS:
            section[field.name] = _value(solver, field)
        elif field.name in SOLVER_IGNORED:
            log.info("%s: %s is ignored: %s", path, field.name, SOLVER_IGNORED[field.name])
        elif field.name not in READ_HERE:
            raise UsageError(f"{path}: solver field {field.name} is not supported")
    section["type"] = _solver_type(solver, where)
    if solver.test_iter:
        section["test_iter"] = int(solver.test_iter[0])
    _test_iters(solver, sections)
    if solver.test_iter and "val" not in sections["data"] and not fed:
        raise UsageError(
            f"{path}: test_iter asks for a test net, and none of the net's data layers is in it (their "
            "include/exclude rules); Caffe would stop at its first layer: give it a TEST data layer"
        )
    if solver.random_seed >= 0:
        section["random_seed"] = int(solver.random_seed)
    if solver.weights:  # the weights Caffe starts from (an init .caffemodel)
        log.info(
            "%s: weights %s: dataprep fills fixed kernels from their fillers; --weights loads a file",
            path,
            ", ".join(solver.weights),
        )
    if solver.HasField("solver_mode"):
        mode = "GPU" if solver.solver_mode == 1 else "CPU"
        log.info(
            "%s: solver_mode %s is not a device choice here and is ignored: --device decides", path, mode
        )
    # beside each .npz (what --resume reads): Caffe's .caffemodel (BINARYPROTO, its default),
    # or its .caffemodel.h5 and .solverstate.h5 (HDF5)
    section["snapshot_format"] = "caffemodel" if solver.snapshot_format == 1 else "hdf5"
    return {"name": sections["name"], "data": sections["data"], "net": sections["net"], "solver": section}


def _test_iters(solver: Any, sections: dict) -> None:
    """Each further test net's ``test_iter`` (Caffe's, one per test net in order); test net
    #0's is the solver section's."""
    for k, test in enumerate(sections["data"].get("tests", []), 1):
        if "test_iter" not in test and k < len(solver.test_iter):
            test["test_iter"] = int(solver.test_iter[k])


def _solver_type(solver: Any, where: _Where) -> str:
    names = {
        "SGD": "SGD",
        "NESTEROV": "Nesterov",
        "ADAGRAD": "AdaGrad",
        "RMSPROP": "RMSProp",
        "ADADELTA": "AdaDelta",
        "ADAM": "Adam",
    }
    if solver.HasField("type"):
        kind = solver.type
    else:  # the deprecated enum
        kind = names.get(
            SolverParameter.DESCRIPTOR.fields_by_name["solver_type"]
            .enum_type.values_by_number[solver.solver_type]
            .name,
            "",
        )
    if kind.upper() not in names:
        raise UsageError(
            f"{where.path}: solver type {kind!r} is not supported; choose {', '.join(names.values())}"
        )
    return names[kind.upper()]


def _set(message: Any, key: str, value: Any) -> None:
    """Set a field from a recipe value: lists for repeated fields, mappings for messages,
    names for enums."""
    field = message.DESCRIPTOR.fields_by_name.get(key)
    if field is None:
        raise UsageError(f"{message.DESCRIPTOR.name} has no field {key!r}")
    values = value if isinstance(value, (list, tuple)) else [value]
    if not _repeated(field):
        values = [value]
    for item in values:
        if field.type == FieldDescriptor.TYPE_MESSAGE:
            target = getattr(message, key).add() if _repeated(field) else getattr(message, key)
            for k, v in item.items():
                _set(target, k, v)
            continue
        if field.type == FieldDescriptor.TYPE_ENUM:
            item = field.enum_type.values_by_name[str(item)].number
        if _repeated(field):
            getattr(message, key).append(item)
        else:
            setattr(message, key, item)


def layer_message(entry: dict, bottoms: list[str], tops: list[str]) -> Any:
    """The LayerParameter of a recipe net entry (with its resolved bottoms and tops): the
    inverse of reading one. A fixed-factor Scale becomes Caffe's Power layer; a fixed
    filler (range, values), which Caffe lacks, is left out: its blobs travel in a
    .caffemodel (``fixed_layers``)."""
    from ..stores.caffe_pb import LayerParameter

    kind = entry["type"]
    layer = LayerParameter(name=entry["name"], bottom=bottoms, top=tops)
    if kind == "Scale" and "scale" in entry:
        layer.type = "Power"
        layer.power_param.scale = float(entry["scale"])
        return layer
    layer.type = kind
    if entry.get("phase"):
        layer.include.add().phase = 0 if entry["phase"] == "TRAIN" else 1
    if "loss_weight" in entry:
        layer.loss_weight.append(float(entry["loss_weight"]))
    for spec in entry.get("param") or []:
        _set(layer, "param", spec)
    message_name, allowed = LAYER_PARAMS[kind]
    for key in allowed:
        if key in entry and not (key.endswith("filler") and _fixed(entry[key])):
            _set(getattr(layer, message_name), key, entry[key])
    return layer


FIXED_FILLERS = ("range", "values")  # dataprep's fillers for fixed kernels; Caffe has neither


def _fixed(filler: Any) -> bool:
    return isinstance(filler, dict) and filler.get("type") in FIXED_FILLERS


def fixed_layers(recipe) -> list[str]:
    """The layers whose blobs a fixed filler (range, values) sets: Caffe starts them from
    an init .caffemodel instead (``recipe to-prototxt`` writes it)."""
    return [
        str(entry.get("name"))
        for entry in recipe.raw["net"]
        if any(_fixed(v) for k, v in entry.items() if k.endswith("filler"))
    ]


CAFFE_LACKS = {"SmoothL1Loss": "SmoothL1Loss is not in BVLC Caffe (it is Fast R-CNN's)"}


def recipe_prototxt(recipe) -> tuple[str, str]:
    """Caffe's (solver, train_val) prototxt text of a recipe; what Caffe cannot express (a
    generator or image-list source, online augmentation, a layer it lacks) stops with a
    line naming it."""
    data, run, solver = recipe.data, recipe.run, recipe.solver
    if recipe.augment is not None:
        raise UsageError("recipe augment: Caffe has no online augmentation beyond transform_param")
    net = NetParameter(name=recipe.name)
    for split, source, batch in (
        ("train", data.train, data.batch_size),
        ("val", data.val, data.val_batch_size or data.batch_size),
    ):
        if source is None:
            continue
        layer = _data_message(source, batch, f"data.{split}")
        if split == "train" and data.shuffle and layer.type == "HDF5Data":
            layer.hdf5_data_param.shuffle = True
        layer.name, layer.top[:] = data.input, [data.input, data.target]
        layer.include.add().phase = 0 if split == "train" else 1
        default = type(data.transform)()
        transform = {
            k: v
            for k, v in dataclasses.asdict(data.transform).items()
            if v != getattr(default, k) and not (k == "mirror" and split == "val")  # mirror: TRAIN only
        }
        if transform:
            _fill(layer.transform_param, transform)
        net.layer.append(layer)
    from .wiring import wire

    for entry in wire(recipe.raw["net"], data.input, data.target):
        if entry["type"] in CAFFE_LACKS:
            raise UsageError(
                f"layer {entry['name']!r}: {CAFFE_LACKS[entry['type']]}: to-prototxt cannot write it"
            )
        net.layer.append(layer_message(entry, entry["bottom"], entry["top"]))
    fields = {
        "net": f"{recipe.name}_train_val.prototxt",
        "type": solver.type,
        "base_lr": solver.base_lr,
        "momentum": solver.momentum,
        "weight_decay": solver.weight_decay,
        "lr_policy": solver.lr_policy,
        "gamma": solver.gamma,
        "stepsize": solver.stepsize,
        "stepvalue": list(solver.stepvalue),
        "power": solver.power,
        "max_iter": run.max_iter,
        "display": run.display,
        "average_loss": run.average_loss,
        "snapshot": run.snapshot,
        "snapshot_prefix": run.snapshot_prefix,
        "random_seed": run.random_seed,
        "solver_mode": "CPU",
    }
    if solver.type == "Adam":
        fields.update(momentum2=solver.momentum2, delta=solver.delta)
    if data.val is not None:
        fields.update(
            test_interval=run.test_interval or run.max_iter, test_initialization=run.test_initialization
        )
        fields["test_iter"] = [run.test_iter or _one_pass(data.val, data.val_batch_size or data.batch_size)]
    if fixed_layers(recipe):
        fields["weights"] = [f"{recipe.name}_init.caffemodel"]
    message = SolverParameter()
    _fill(message, fields)
    net_text = text_format.MessageToString(net)
    if data.shuffle and net.layer[0].type == "Data":  # Caffe's Data layer cannot: carried for to-yaml
        net_text = SHUFFLE_NOTE + net_text
    return text_format.MessageToString(message), net_text


def _fill(message: Any, mapping: dict) -> None:
    for key, value in mapping.items():
        _set(message, key, value)


def _data_message(source, batch: int, where: str):
    """The data layer Caffe reads a recipe source with: HDF5Data, or Data for LMDB/LevelDB."""
    from ..errors import StoreError
    from ..stores import store_kind
    from ..stores.caffe_pb import LayerParameter

    if source.noise is not None:
        raise UsageError(
            f"recipe {where}: the noise generator has no Caffe data layer; write a store first "
            "(dataprep noise --to hdf5)"
        )
    if source.root or source.resize or source.color is not None:  # a list of images: ImageData
        layer = LayerParameter(type="ImageData")
        params = layer.image_data_param
        params.source, params.batch_size = source.path, batch
        if source.root and source.root != ".":
            params.root_folder = source.root
        if source.resize:
            params.new_height, params.new_width = (int(v) for v in source.resize.split("x"))
        if source.color is not None:
            params.is_color = source.color
        return layer
    if not Path(source.path).exists():  # not made yet: its name says which
        kind = (
            "hdf5"
            if source.path.endswith((".txt", ".h5", ".hdf5"))
            else ("leveldb" if "leveldb" in source.path.lower() else "lmdb")
        )
    else:
        try:
            kind = store_kind(source.path)
        except StoreError:
            raise UsageError(
                f"recipe {where}: {source.path} is no store Caffe reads (HDF5 list, LMDB, LevelDB)"
            ) from None
    layer = LayerParameter()
    if kind == "hdf5":
        layer.type = "HDF5Data"
        layer.hdf5_data_param.source = source.path
        layer.hdf5_data_param.batch_size = batch
    else:
        layer.type = "Data"
        layer.data_param.source = source.path
        layer.data_param.batch_size = batch
        layer.data_param.backend = 1 if kind == "lmdb" else 0
    return layer


def _one_pass(source, batch: int) -> int:
    from ..stores import open_store

    if not Path(source.path).exists():
        raise UsageError(
            f"recipe solver.test_iter: {source.path} is not here to count one pass over it: give the "
            "count (--set solver.test_iter=N)"
        )
    reader = open_store(source.path)
    try:
        return max(1, -(-len(reader) // batch))
    finally:
        reader.close()
