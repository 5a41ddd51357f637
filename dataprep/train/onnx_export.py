"""A deploy net as an ONNX model (opset ``OPSET``), through the ``onnx`` package.

Each Caffe layer becomes the ONNX operators that compute the same values; where the
semantics differ the graph bridges them (``docs/caffe.md`` has the table): Caffe's pooling
rounds its output size up and clips the last window, so the padding at the end is
computed per layer; an average divides by the window's area inside the padded input, so
Caffe's padding is an explicit Pad and the rest is left out of the count. Blob names are
Caffe's; an in-place layer's earlier versions get a ``#k`` suffix, and the last keeps the
name. The batch dimension is free (``N``). A layer with no faithful ONNX form stops with
a line naming it.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np

from ..errors import MissingPackage, UsageError
from ..gpu import host
from .layers.geometry import pool_out

OPSET = 17
IR_VERSION = 8  # what opset 17 needs; runtimes a few years old still read it
WEIGHTED = ("Convolution", "Deconvolution", "InnerProduct")  # blobs passed as they are


def _onnx():
    try:
        import onnx
    except ImportError:
        raise MissingPackage("exporting to ONNX", "onnx", "the onnx package") from None
    return onnx


class _Graph:
    """Nodes, initializers and Caffe blob names as versioned ONNX value names."""

    def __init__(self, onnx, specs: list[dict]) -> None:
        self.onnx, self.helper = onnx, onnx.helper
        self.nodes: list = []
        self.initializers: list = []
        self.writes = {}
        for spec in specs:
            for top in spec["top"]:
                self.writes[top] = self.writes.get(top, 0) + 1
        self.written: dict[str, int] = {}
        self.current: dict[str, str] = {}
        self.count = 0

    def read(self, blob: str) -> str:
        return self.current.get(blob, blob)

    def write(self, blob: str) -> str:
        """The value name of the next write of ``blob``: the last one keeps its name."""
        k = self.written.get(blob, 0) + 1
        self.written[blob] = k
        name = blob if k == self.writes.get(blob, 1) else f"{blob}#{k}"
        self.current[blob] = name
        return name

    def const(self, name: str, array: Any, dtype=np.float32) -> str:
        tensor = self.onnx.numpy_helper.from_array(np.ascontiguousarray(np.asarray(array, dtype)), name)
        self.initializers.append(tensor)
        return name

    def temp(self, base: str) -> str:
        self.count += 1
        return f"{base}__{self.count}"

    def node(self, op: str, inputs: list[str], outputs: list[str], name: str, **attrs) -> None:
        self.nodes.append(self.helper.make_node(op, inputs, outputs, name=name, **attrs))


def _refuse(spec: dict, why: str) -> UsageError:
    return UsageError(f"layer {spec['name']} ({spec['type']}): {why}: it has no faithful ONNX form here")


def _pool(g: _Graph, spec, layer, x: str, out: str, shape) -> None:
    name = spec["name"]
    if layer.whole:
        g.node("GlobalMaxPool" if layer.method == "MAX" else "GlobalAveragePool", [x], [out], name)
        return
    _, _, h, w = shape
    kernel, strides, pads = (list(pair) for pair in layer.win)
    ends = []
    for size, k, s, p in zip((h, w), kernel, strides, pads):  # Caffe's size, by ONNX's rounding down
        end = (pool_out(size, k, s, p) - 1) * s + k - size - p
        if end < p and layer.method == "AVE" or end < 0:
            raise _refuse(spec, f"the last window of a {size} input ends inside it")
        ends.append(end)
    if layer.method == "MAX":
        g.node("MaxPool", [x], [out], name, kernel_shape=kernel, strides=strides, pads=[*pads, *ends])
        return
    if any(pads):  # Caffe's padding counts in an average's area: pad explicitly, the rest not
        padded = g.temp(name)
        widths = g.const(g.temp(f"{name}.pads"), [0, 0, *pads, 0, 0, *pads], np.int64)
        g.node("Pad", [x, widths], [padded], f"{name}/pad", mode="constant")
        x = padded
    g.node(
        "AveragePool",
        [x],
        [out],
        name,
        kernel_shape=kernel,
        strides=strides,
        pads=[0, 0, ends[0] - pads[0], ends[1] - pads[1]],
        count_include_pad=0,
    )


def _affine(g: _Graph, name: str, x: str, out: str, scale: float, shift: float) -> str:
    """``shift + scale * x`` (nodes only where they change something); returns its name."""
    if scale != 1:
        y = out if shift == 0 else g.temp(name)
        g.node("Mul", [x, g.const(g.temp(f"{name}.scale"), scale)], [y], f"{name}/scale")
        x = y
    if shift != 0:
        g.node("Add", [x, g.const(g.temp(f"{name}.shift"), shift)], [out], f"{name}/shift")
        x = out
    return x


def _channel_view(array: np.ndarray, ndim: int, axis: int = 1) -> np.ndarray:
    """A per-channel blob shaped to broadcast against an ``ndim``-dimensional blob."""
    return array.reshape(array.shape + (1,) * (ndim - axis - array.ndim))


def _conv(g: _Graph, spec: dict, layer, x: str, weights: list[str], out: str, shape) -> None:
    """Conv or ConvTranspose over the layer's spatial axes (Gemm with none); a channel
    ``axis`` past 1 folds the axes before it into the batch and back."""
    geo, name = layer.geo, spec["name"]
    if geo.axis == 0:
        raise _refuse(spec, "channel axis 0 (the batch axis)")
    src, dst = x, out
    if geo.axis != 1:
        src, dst = g.temp(f"{name}/images"), g.temp(name)
        images = g.const(g.temp(f"{name}.images"), [-1, *geo.images(shape)[1:]], np.int64)
        g.node("Reshape", [x, images], [src], f"{name}/images")
    if not geo.kernel:  # N x C: a product
        if spec["type"] != "Convolution":
            raise _refuse(spec, "a Deconvolution without spatial axes")
        g.node("Gemm", [src, *weights], [dst], name, transB=1)
    else:
        g.node(
            "Conv" if spec["type"] == "Convolution" else "ConvTranspose",
            [src, *weights],
            [dst],
            name,
            kernel_shape=list(geo.kernel),
            strides=list(geo.stride),
            pads=[*geo.pad, *geo.pad],
            dilations=list(geo.dilation),
            group=layer.group,
        )
    if dst != out:
        top = g.const(g.temp(f"{name}.shape"), [-1, *layer.shapes([shape])[0][1:]], np.int64)
        g.node("Reshape", [dst, top], [out], f"{name}/shape")


def _layer(g: _Graph, spec: dict, layer, shapes: dict) -> None:
    kind, name = spec["type"], spec["name"]
    ins = [g.read(b) for b in spec["bottom"]]
    x = ins[0] if ins else None
    shape = shapes[spec["bottom"][0]] if spec["bottom"] else None
    params = [host(p).astype(np.float32) for p in layer.params]
    if kind == "Silence":
        return
    outs = [g.write(t) for t in spec["top"]]
    out = outs[0]
    weights = [g.const(f"{name}.blob{i}", p) for i, p in enumerate(params)] if kind in WEIGHTED else []
    if kind in ("Convolution", "Deconvolution"):
        _conv(g, spec, layer, x, weights, out, shape)
    elif kind == "Pooling":
        _pool(g, spec, layer, x, out, shape)
    elif kind == "SPP":  # each level a pooling, flattened, concatenated (one level: the pooling)
        if len(layer.levels) == 1:
            _pool(g, spec, layer.levels[0], x, out, shape)
            return
        flats = []
        for pool in layer.levels:
            pooled, flat = g.temp(pool.name), g.temp(f"{pool.name}/flat")
            _pool(g, {**spec, "name": pool.name}, pool, x, pooled, shape)
            g.node("Flatten", [pooled], [flat], f"{pool.name}/flatten", axis=1)
            flats.append(flat)
        g.node("Concat", flats, [out], name, axis=1)
    elif kind == "InnerProduct":
        if layer.axis != 1:
            raise _refuse(spec, f"axis {layer.axis}")
        flat = g.temp(name)
        g.node("Flatten", [x], [flat], f"{name}/flatten", axis=1)
        g.node("Gemm", [flat, *weights], [out], name, transB=1)
    elif kind == "ReLU":
        if layer.p.get("negative_slope"):
            g.node("LeakyRelu", [x], [out], name, alpha=float(layer.p["negative_slope"]))
        else:
            g.node("Relu", [x], [out], name)
    elif kind == "PReLU":
        slope = params[0] if layer.shared else _channel_view(params[0], len(shape))
        g.node("PRelu", [x, g.const(f"{name}.slope", slope)], [out], name)
    elif kind in ("Sigmoid", "TanH", "AbsVal"):
        g.node({"Sigmoid": "Sigmoid", "TanH": "Tanh", "AbsVal": "Abs"}[kind], [x], [out], name)
    elif kind == "ELU":
        g.node("Elu", [x], [out], name, alpha=float(layer.p.get("alpha", 1.0)))
    elif kind == "Clip":
        low, high = g.const(f"{name}.min", layer.low), g.const(f"{name}.max", layer.high)
        g.node("Clip", [x, low, high], [out], name)
    elif kind == "Swish":
        scaled, gate = g.temp(name), g.temp(name)
        g.node(
            "Mul", [x, g.const(f"{name}.beta", float(layer.p.get("beta", 1.0)))], [scaled], f"{name}/scale"
        )
        g.node("Sigmoid", [scaled], [gate], f"{name}/sigmoid")
        g.node("Mul", [x, gate], [out], name)
    elif kind == "Threshold":
        above = g.temp(name)
        g.node(
            "Greater", [x, g.const(f"{name}.threshold", float(layer.p.get("threshold", 0.0)))], [above], name
        )
        g.node("Cast", [above], [out], f"{name}/float", to=g.onnx.TensorProto.FLOAT)
    elif kind == "Tile":
        repeats = [1] * len(shape)
        repeats[layer.axis] = layer.tiles
        g.node("Tile", [x, g.const(f"{name}.repeats", repeats, np.int64)], [out], name)
    elif kind == "Reduction":
        axes = g.const(f"{name}.axes", list(range(layer.axis, len(shape))), np.int64)
        op = {"SUM": "ReduceSum", "ASUM": "ReduceL1", "SUMSQ": "ReduceSumSquare", "MEAN": "ReduceMean"}[
            layer.operation
        ]
        reduced = g.temp(name)
        if op == "ReduceSum":
            g.node(op, [x, axes], [reduced], name, keepdims=0)
        else:  # opset 17: these take their axes as an attribute
            g.node(op, [x], [reduced], name, axes=list(range(layer.axis, len(shape))), keepdims=0)
        g.node("Mul", [reduced, g.const(f"{name}.coeff", layer.coeff)], [out], f"{name}/coeff")
    elif kind in ("Exp", "Log", "Power"):
        scale, shift = float(layer.p.get("scale", 1.0)), float(layer.p.get("shift", 0.0))
        if kind == "Exp":  # base ^ (shift + scale x) = e ^ (ln base * (shift + scale x))
            ln = 1.0 if float(layer.p.get("base", -1)) == -1 else math.log(float(layer.p["base"]))
            g.node("Exp", [_affine(g, name, x, g.temp(name), ln * scale, ln * shift)], [out], name)
        elif kind == "Log":
            base = float(layer.p.get("base", -1))
            inner = _affine(g, name, x, g.temp(name), scale, shift)
            if base == -1:
                g.node("Log", [inner], [out], name)
            else:
                logged = g.temp(name)
                g.node("Log", [inner], [logged], name)
                g.node(
                    "Mul",
                    [logged, g.const(g.temp(f"{name}.base"), 1 / math.log(base))],
                    [out],
                    f"{name}/base",
                )
        else:
            power = float(layer.p.get("power", 1.0))
            if power == 1:
                result = _affine(g, name, x, out, scale, shift)
                if result != out:
                    g.node("Identity", [result], [out], name)
            else:
                inner = _affine(g, name, x, g.temp(name), scale, shift)
                g.node("Pow", [inner, g.const(g.temp(f"{name}.power"), power)], [out], name)
    elif kind == "Dropout":
        g.node("Identity", [x], [out], name)
    elif kind == "LRN":
        if layer.pool is not None:
            raise _refuse(spec, "LRN within channels has no ONNX operator (ONNX's LRN runs across channels)")
        g.node(
            "LRN", [x], [out], name, size=layer.size, alpha=layer.alpha, beta=layer.beta, bias=layer.kconst
        )
    elif kind == "BatchNorm":
        mean, var, factor = params
        f = 0.0 if factor.ravel()[0] == 0 else 1.0 / float(factor.ravel()[0])
        c = mean.shape[0]
        scale, bias = g.const(f"{name}.gamma", np.ones(c)), g.const(f"{name}.beta", np.zeros(c))
        g.node(
            "BatchNormalization",
            [x, scale, bias, g.const(f"{name}.mean", mean * f), g.const(f"{name}.var", var * f)],
            [out],
            name,
            epsilon=float(layer.eps),
        )
    elif kind == "Scale":
        if layer.factor is not None:
            g.node("Mul", [x, g.const(f"{name}.factor", layer.factor)], [out], name)
        else:
            gamma = g.const(f"{name}.gamma", _channel_view(params[0], len(shape)))
            scaled = out if len(params) == 1 else g.temp(name)
            g.node("Mul", [x, gamma], [scaled], name)
            if len(params) > 1:
                g.node(
                    "Add",
                    [scaled, g.const(f"{name}.beta", _channel_view(params[1], len(shape)))],
                    [out],
                    f"{name}/bias",
                )
    elif kind == "Bias":
        view = (*layer.span, *(1,) * (len(shape) - layer.axis - len(layer.span)))
        if len(ins) > 1:
            bias = g.temp(name)
            g.node(
                "Reshape", [ins[1], g.const(g.temp(f"{name}.shape"), view, np.int64)], [bias], f"{name}/shape"
            )
        else:
            bias = g.const(f"{name}.bias", params[0].reshape(view))
        g.node("Add", [x, bias], [out], name)
    elif kind == "Softmax":
        g.node("Softmax", [x], [out], name, axis=layer.axis)
    elif kind == "Concat":
        g.node("Concat", ins, [out], name, axis=layer.axis)
    elif kind == "Slice":
        edges = [0, *layer.points, shape[layer.axis]]
        sizes = g.const(g.temp(f"{name}.split"), np.diff(edges), np.int64)
        g.node("Split", [x, sizes], outs, name, axis=layer.axis)
    elif kind == "Filter":  # the items where the selector is non-zero: Compress on axis 0
        flat, keep = g.temp(f"{name}/selector"), g.temp(f"{name}/keep")
        g.node("Reshape", [ins[-1], g.const(g.temp(f"{name}.flat"), [-1], np.int64)], [flat], f"{name}/flat")
        g.node("Cast", [flat], [keep], f"{name}/keep", to=g.onnx.TensorProto.BOOL)
        for k, (bottom, top) in enumerate(zip(ins, outs)):
            g.node("Compress", [bottom, keep], [top], f"{name}/{k}", axis=0)
    elif kind == "Eltwise":
        if layer.operation == "SUM":
            terms = []
            for c, term in zip(layer.coeff, ins):
                if c != 1:
                    scaled = g.temp(name)
                    g.node("Mul", [term, g.const(g.temp(f"{name}.coeff"), c)], [scaled], f"{name}/coeff")
                    term = scaled
                terms.append(term)
            g.node("Sum", terms, [out], name)
        else:
            g.node(
                "Mul" if layer.operation == "PROD" else "Max",
                ins[:2],
                [out if len(ins) == 2 else g.temp(name)],
                name,
            )
            for k, term in enumerate(ins[2:], 2):
                previous = g.nodes[-1].output[0]
                g.node(
                    "Mul" if layer.operation == "PROD" else "Max",
                    [previous, term],
                    [out if k == len(ins) - 1 else g.temp(name)],
                    f"{name}/{k}",
                )
    elif kind in ("Reshape", "Flatten"):
        target = shapes[spec["top"][0]]
        if target[0] != shape[0]:
            raise _refuse(spec, "it moves the batch axis")
        g.node("Reshape", [x, g.const(g.temp(f"{name}.shape"), [0, *target[1:]], np.int64)], [out], name)
    elif kind == "Crop":
        index = layer.index[layer.axis :]
        starts = g.const(g.temp(f"{name}.starts"), [i.start for i in index], np.int64)
        ends = g.const(g.temp(f"{name}.ends"), [i.stop for i in index], np.int64)
        axes = g.const(g.temp(f"{name}.axes"), list(range(layer.axis, layer.axis + len(index))), np.int64)
        g.node("Slice", [x, starts, ends, axes], [out], name)
    elif kind == "ArgMax":
        if layer.axis is None or layer.k != 1 or layer.with_values:
            raise _refuse(spec, "only ArgMax along an axis, top_k 1, without out_max_val")
        index = g.temp(name)
        g.node("ArgMax", [x], [index], name, axis=layer.axis, keepdims=1)
        g.node("Cast", [index], [out], f"{name}/float", to=g.onnx.TensorProto.FLOAT)
    else:
        raise _refuse(spec, "not mapped")


def _normalize(g: _Graph, deploy) -> None:
    """The graph's first nodes: pixels as OpenCV decodes them (BGR, the training records'
    size) to the net's input: channels to the model's order, Caffe's centre crop (offsets
    from the input's own size), then each step's ``(pixel - mean) * scale``, as
    ``Preparation.prepare`` does."""
    from .preparation import fit_mean

    prep, name = deploy.preparation, deploy.input
    x = name
    if prep.channel_order == "RGB" and deploy.chw[0] == 3:
        y = f"{name}#rgb"
        g.node("Gather", [x, g.const(f"{name}.rgb", [2, 1, 0], np.int64)], [y], "prepare/rgb", axis=1)
        x = y
    if prep.crop:
        crop = np.array([prep.crop, prep.crop], np.int64)
        shape, size, offset, start, end = (g.temp(f"{name}.crop") for _ in range(5))
        g.node("Shape", [x], [shape], "prepare/shape")
        g.node(
            "Slice",
            [shape, g.const(f"{name}.hw0", [2], np.int64), g.const(f"{name}.hw1", [4], np.int64)],
            [size],
            "prepare/size",
        )
        g.node("Sub", [size, g.const(f"{name}.crop", crop, np.int64)], [offset], "prepare/margin")
        g.node("Div", [offset, g.const(f"{name}.two", [2, 2], np.int64)], [start], "prepare/offset")
        g.node("Add", [start, f"{name}.crop"], [end], "prepare/end")
        y = f"{name}#crop"
        g.node("Slice", [x, start, end, g.const(f"{name}.axes", [2, 3], np.int64)], [y], "prepare/crop")
        x = y
    for k, step in enumerate(prep.steps):
        if step.mean is not None:
            y = f"{name}#mean{k}"
            mean = fit_mean(step.mean, deploy.chw)[None]
            g.node("Sub", [x, g.const(f"{name}.mean{k}", mean)], [y], f"prepare/mean{k}")
            x = y
        if step.scale != 1:
            y = f"{name}#scale{k}"
            g.node("Mul", [x, g.const(f"{name}.scale{k}", step.scale)], [y], f"prepare/scale{k}")
            x = y
    g.current[name] = x


def onnx_model(deploy, extra_outputs: list[str] = (), check: bool = True) -> Any:
    """The ONNX ModelProto of an ``export.Deploy``: Caffe's blob names for the input and
    the outputs (tops no later layer reads, and any blobs of ``extra_outputs``), the
    preparation as metadata JSON."""
    onnx = _onnx()
    helper = onnx.helper
    net, specs = deploy.net, deploy.specs
    g = _Graph(onnx, specs)
    layers = {layer.name: layer for layer in net.layers}
    _normalize(g, deploy)
    for spec in specs:
        _layer(g, spec, layers[spec["name"]], net.shapes)
    last_write = {}
    for k, spec in enumerate(specs):
        for top in spec["top"]:
            last_write[top] = k
    read_after = {b for k, spec in enumerate(specs) for b in spec["bottom"] if last_write.get(b, -1) < k}
    outputs = [
        blob for blob, k in last_write.items() if blob not in read_after and specs[k]["type"] != "Silence"
    ]
    outputs = [b for b in outputs if b in g.current]
    outputs += [b for b in extra_outputs if b not in outputs and b in g.current]
    float_type = onnx.TensorProto.FLOAT
    shapes = {b: ["N", *net.shapes[b][1:]] for b in outputs}
    if deploy.classifier and len(outputs) == 1 and specs[-1]["type"] != "Softmax":
        # the probabilities predict prints, after the logits (which keep their blob name)
        logits = outputs[0]
        g.node("Softmax", [g.current[logits]], ["prob"], "prob", axis=1)
        g.current["prob"] = "prob"
        outputs.append("prob")
        shapes["prob"] = shapes[logits]
    graph = helper.make_graph(
        g.nodes,
        deploy.name,
        [helper.make_tensor_value_info(deploy.input, float_type, ["N", *deploy.pixels_chw])],
        [helper.make_tensor_value_info(g.current[b], float_type, shapes[b]) for b in outputs],
        initializer=g.initializers,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="dataprep")
    model.ir_version = IR_VERSION
    preparation = {
        **deploy.preparation.metadata(),
        "input": deploy.input,
        "shape": list(deploy.pixels_chw),
        "channel_order": "BGR",
        "layout": "NCHW",
        "pixels": "0..255 as OpenCV decodes them (BGR), resized to `resize` where given: the graph "
        "reorders the channels to the model's order, crops, subtracts the mean and scales",
        "outputs": outputs,
    }
    helper.set_model_props(model, {"dataprep.preparation": json.dumps(preparation, default=str)})
    if check:  # export checks what it writes; the onnxruntime engine's graph was checked alike
        onnx.checker.check_model(model)
    return model
