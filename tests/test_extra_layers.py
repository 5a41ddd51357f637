"""Caffe's remaining everyday layers (issue 30): each against numerical gradients and
against Caffe's definition computed here in plain NumPy; and in the one field table,
prototxt in and out."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from helpers import train_losses
from test_train_layers import build, check_gradients, check_param_gradients, host, numeric_grad

rng = np.random.default_rng(11)


@pytest.fixture(params=["numpy"])
def xp(request):
    return np


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"type": "Clip", "min": -0.5, "max": 0.7}, (2, 3, 4)),
        ({"type": "Swish", "beta": 1.5}, (2, 5)),
        ({"type": "Tile", "axis": 1, "tiles": 3}, (2, 2, 3)),
        ({"type": "Reduction", "operation": "SUM", "axis": 1}, (3, 2, 2)),
        ({"type": "Reduction", "operation": "ASUM", "axis": 1, "coeff": 0.5}, (3, 4)),
        ({"type": "Reduction", "operation": "SUMSQ", "axis": 0}, (3, 4)),
        ({"type": "Reduction", "operation": "MEAN", "axis": 2}, (2, 3, 4)),
        ({"type": "MVN"}, (2, 3, 4, 4)),
        ({"type": "MVN", "across_channels": True}, (2, 3, 2, 2)),
        ({"type": "MVN", "normalize_variance": False}, (2, 2, 3, 3)),
    ],
    ids=lambda v: (
        v.get("type") + "-" + "-".join(f"{k}{w}" for k, w in v.items() if k != "type")
        if isinstance(v, dict)
        else None
    ),
)
def test_each_layer_matches_numerical_gradients(xp, spec, shape):
    x = rng.normal(size=shape)
    if spec["type"] == "Clip":  # keep clear of the kinks, where the gradient is one-sided
        x = np.where(np.abs(x + 0.5) < 0.05, x + 0.2, x)
        x = np.where(np.abs(x - 0.7) < 0.05, x + 0.2, x)
    if spec.get("operation") == "ASUM":
        x = np.where(np.abs(x) < 0.05, 0.3, x)
    check_gradients(spec, [x], xp)


def _forward(spec, *bottoms):
    layer, _ = build(spec, [b.shape for b in bottoms], np)
    return layer, [host(t) for t in layer.forward([np.asarray(b) for b in bottoms])]


def test_the_value_layers_are_caffes():
    x = rng.normal(size=(3, 4))
    _, (y,) = _forward({"type": "Clip", "min": -0.2, "max": 0.3}, x)
    assert np.array_equal(y, np.minimum(np.maximum(x, -0.2), 0.3))
    _, (y,) = _forward({"type": "Swish", "beta": 2.0}, x)
    assert np.allclose(y, x / (1 + np.exp(-2 * x)))
    layer, (y,) = _forward({"type": "Threshold", "threshold": 0.1}, x)
    assert np.array_equal(y, (x > 0.1).astype(y.dtype)) and layer.backward([np.ones_like(x)]) == [None]
    _, (y,) = _forward({"type": "Tile", "axis": 0, "tiles": 2}, x)
    assert np.array_equal(y, np.tile(x, (2, 1)))


def test_reduction_and_mvn_are_caffes():
    x = rng.normal(size=(2, 3, 4))
    for op, want in (
        ("SUM", x.reshape(2, -1).sum(1)),
        ("ASUM", np.abs(x).reshape(2, -1).sum(1)),
        ("SUMSQ", (x**2).reshape(2, -1).sum(1)),
        ("MEAN", x.reshape(2, -1).mean(1)),
    ):
        _, (y,) = _forward({"type": "Reduction", "operation": op, "axis": 1, "coeff": 2.0}, x)
        assert y.shape == (2,) and np.allclose(y, 2 * want)
    x = rng.normal(size=(2, 3, 4, 5))
    _, (y,) = _forward({"type": "MVN", "eps": 1e-9}, x)
    mean, std = x.mean(axis=(2, 3), keepdims=True), x.std(axis=(2, 3), keepdims=True)
    assert np.allclose(y, (x - mean) / (std + 1e-9))


def test_split_gives_the_bottom_to_each_top_and_sums_their_gradients():
    from dataprep.train.layers import make_layer

    layer = make_layer({"name": "s", "type": "Split", "top": ["a", "b", "c"]})
    x = rng.normal(size=(2, 3))
    assert len(layer.setup([x.shape], np, None, np.float64)) == 3
    assert all(t is x for t in layer.forward([x]))
    d = [rng.normal(size=x.shape) for _ in range(3)]
    assert np.allclose(layer.backward(d)[0], d[0] + d[1] + d[2])


def test_embed_is_a_lookup_with_its_gradient_into_the_rows_picked():
    index = np.array([[0, 3], [3, 1]], np.float64)
    spec = {"type": "Embed", "num_output": 4, "input_dim": 5}
    layer, (y,) = _forward(spec, index)
    w, b = host(layer.params[0]), host(layer.params[1])
    assert np.allclose(y, w[index.astype(int)] + b)
    weights = rng.normal(size=y.shape)

    def loss():
        return float((host(layer.forward([index])[0]) * weights).sum())

    loss()
    layer.backward([weights])
    check_param_gradients(layer, loss, np, [host(g) for g in layer.grads], what="Embed")


def test_parameter_is_a_learned_top():
    from dataprep.train.net import Net

    net = Net(
        [
            {"name": "p", "type": "Parameter", "shape": {"dim": [2, 3]}},
            {"name": "r", "type": "Reduction", "bottom": "p"},
        ],
        {"data": (1, 1)},
    )
    assert net.shapes["p"] == (2, 3) and net.nodes[0].bottoms == []


@pytest.mark.parametrize("norm", ["L1", "L2"])
def test_the_hinge_loss_is_caffes(xp, norm):
    x = rng.normal(size=(4, 3))
    labels = np.array([0, 2, 1, 2], np.float64)
    spec = {"type": "HingeLoss", "norm": norm}
    _, (loss,) = _forward(spec, x, labels)
    sign = -np.ones_like(x)
    sign[np.arange(4), labels.astype(int)] = 1
    margin = np.maximum(0, 1 - sign * x)
    assert float(loss) == pytest.approx((margin if norm == "L1" else margin**2).sum() / 4)
    check_gradients(spec, [x], xp, labels=labels)


def test_the_multinomial_logistic_loss_is_caffes(xp):
    p = rng.uniform(0.1, 1, size=(4, 3))
    p /= p.sum(axis=1, keepdims=True)
    labels = np.array([0, 2, 1, 1], np.float64)
    spec = {"type": "MultinomialLogisticLoss"}
    _, (loss,) = _forward(spec, p, labels)
    assert float(loss) == pytest.approx(-np.log(p[np.arange(4), labels.astype(int)]).sum() / 4)
    check_gradients(spec, [p], xp, labels=labels)


def test_the_new_layers_go_through_prototxt_and_back(tmp_path):
    """Each in the one field table: a prototxt of them reads as recipe layers and writes
    back as the same LayerParameters."""
    from google.protobuf import text_format

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.prototxt import layer_message, net_sections

    text = """
    name: "n"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 4 } } }
    layer { name: "c" type: "Clip" bottom: "data" top: "c" clip_param { min: -1 max: 1 } }
    layer { name: "s" type: "Swish" bottom: "c" top: "s" swish_param { beta: 2 } }
    layer { name: "t" type: "Tile" bottom: "s" top: "t" tile_param { axis: 1 tiles: 2 } }
    layer { name: "m" type: "MVN" bottom: "t" top: "m" mvn_param { across_channels: true } }
    layer { name: "r" type: "Reduction" bottom: "m" top: "r" reduction_param { operation: SUMSQ axis: 1 } }
    layer { name: "h" type: "Threshold" bottom: "r" top: "h" threshold_param { threshold: 0.5 } }
    """
    (tmp_path / "n.prototxt").write_text(text)
    layers = net_sections(tmp_path / "n.prototxt")["net"]
    assert [layer["type"] for layer in layers] == ["Clip", "Swish", "Tile", "MVN", "Reduction", "Threshold"]
    assert layers[4]["operation"] == "SUMSQ" and layers[0]["min"] == -1
    written = NetParameter()
    written.layer.extend(layer_message(layer, layer["bottom"], layer["top"]) for layer in layers)
    original = text_format.Parse(text, NetParameter())
    assert [str(a) for a in written.layer] == [str(b) for b in original.layer[1:]]


def test_the_value_and_axis_layers_export_to_onnx_as_they_compute(tmp_path):
    """Clip, Swish, Threshold, Tile and each Reduction in onnxruntime equal dataprep's."""
    pytest.importorskip("onnxruntime")
    from test_export import close, run_onnx

    from dataprep.train.export import export, load_deploy

    text = """
    name: "n"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 3 dim: 4 } } }
    layer { name: "c" type: "Clip" bottom: "data" top: "c" clip_param { min: -1 max: 1 } }
    layer { name: "s" type: "Swish" bottom: "c" top: "s" swish_param { beta: 2 } }
    layer { name: "t" type: "Tile" bottom: "s" top: "t" tile_param { axis: 1 tiles: 2 } }
    layer { name: "h" type: "Threshold" bottom: "t" top: "h" threshold_param { threshold: 0.1 } }
    layer { name: "r1" type: "Reduction" bottom: "t" top: "r1" reduction_param { operation: SUM axis: 2 } }
    layer { name: "r2" type: "Reduction" bottom: "t" top: "r2"
            reduction_param { operation: ASUM axis: 1 coeff: 2 } }
    layer { name: "r3" type: "Reduction" bottom: "t" top: "r3" reduction_param { operation: SUMSQ axis: 3 } }
    layer { name: "r4" type: "Reduction" bottom: "t" top: "r4" reduction_param { operation: MEAN axis: 1 } }
    """
    (tmp_path / "n.prototxt").write_text(text)
    (out,) = export(tmp_path / "n.prototxt", tmp_path / "n.onnx", random_init=0)
    deploy = load_deploy(tmp_path / "n.prototxt", random_init=0)
    x = rng.normal(size=(2, 2, 3, 4)).astype(np.float32)
    deploy.net.forward({"data": x}, train=False)
    got = run_onnx(out, "data", x)
    assert sorted(got) == ["h", "r1", "r2", "r3", "r4"]
    for name, value in got.items():
        assert close(value, host(deploy.net.blobs[name])), name


@pytest.mark.parametrize(
    "pool, height, shape", [("MAX", 3, (2, 2, 7, 6)), ("AVE", 2, (2, 3, 5, 5)), ("MAX", 1, (1, 2, 4, 3))]
)
def test_spp_is_caffes_pyramid(xp, pool, height, shape):
    """Level i: 2^i x 2^i bins, kernel ceil(H / bins), padding half the remainder rounded
    up; levels flattened and concatenated (one level: the pooling as it is)."""
    x = rng.normal(size=shape)
    spec = {"type": "SPP", "pyramid_height": height, "pool": pool}
    _, (y,) = _forward(spec, x)
    n, c, h, w = shape
    parts = []
    for level in range(height):
        bins = 2**level
        kh, kw = -(-h // bins), -(-w // bins)
        ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
        out = np.empty((n, c, bins, bins))
        for i in range(bins):
            for j in range(bins):
                r0, c0 = i * kh - ph, j * kw - pw
                window = x[:, :, max(r0, 0) : min(r0 + kh, h), max(c0, 0) : min(c0 + kw, w)]
                if pool == "MAX":
                    out[:, :, i, j] = window.max(axis=(2, 3))
                else:  # Caffe's divisor: the window's area inside the padded map
                    area = (min(r0 + kh, h + ph) - r0) * (min(c0 + kw, w + pw) - c0)
                    out[:, :, i, j] = window.sum(axis=(2, 3)) / area
        parts.append(out)
    want = parts[0] if height == 1 else np.concatenate([p.reshape(n, -1) for p in parts], axis=1)
    assert y.shape == want.shape and np.allclose(y, want)
    check_gradients(spec, [x], xp)


def test_spp_refuses_a_map_too_small_for_its_pyramid_as_caffe_does():
    with pytest.raises(Exception, match="too small for pyramid_height 3"):
        build({"type": "SPP", "name": "spp", "pyramid_height": 3}, [(1, 1, 5, 5)], np)


def _infogain_want(x, labels, matrix):
    p = np.exp(x - x.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    rows = matrix[labels.astype(int)]
    return -(rows * np.log(p)).sum() / len(x)


def test_infogain_loss_is_caffes_with_its_matrix_as_a_bottom_or_a_file(xp, tmp_path):
    from dataprep.stores.caffe_pb import blob_bytes

    x = rng.normal(size=(5, 3))
    labels = np.array([0, 2, 1, 1, 0], np.float64)
    matrix = rng.uniform(0, 1, size=(3, 3))
    spec = {"type": "InfogainLoss"}
    _, (loss,) = _forward(spec, x, labels, matrix)
    assert float(loss) == pytest.approx(_infogain_want(x, labels, matrix))
    identity = _forward(spec, x, labels, np.eye(3))[1][0]  # H = I: the softmax log-loss
    assert float(identity) == pytest.approx(float(_forward({"type": "SoftmaxWithLoss"}, x, labels)[1][0]))
    (tmp_path / "H.binaryproto").write_bytes(blob_bytes(matrix.reshape(1, 1, 3, 3)))
    from_file = {"type": "InfogainLoss", "source": str(tmp_path / "H.binaryproto")}
    assert float(_forward(from_file, x, labels)[1][0]) == pytest.approx(float(loss), rel=1e-6)
    check_gradients(from_file, [x], xp, labels=labels)


def test_infogain_loss_names_a_matrix_of_the_wrong_size():
    with pytest.raises(Exception, match="holds 4 values; 3 classes need 3 x 3"):
        build({"type": "InfogainLoss", "name": "info"}, [(2, 3), (2,), (2, 2)], np)


def test_spp_and_infogain_go_through_prototxt_and_spp_exports_to_onnx(tmp_path):
    pytest.importorskip("onnxruntime")
    from test_export import close, run_onnx

    from dataprep.train.export import export, load_deploy
    from dataprep.train.prototxt import net_sections

    text = """
    name: "n"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 2 dim: 8 dim: 6 } } }
    layer { name: "spp" type: "SPP" bottom: "data" top: "spp" spp_param { pyramid_height: 3 pool: MAX } }
    layer { name: "avg" type: "SPP" bottom: "data" top: "avg" spp_param { pyramid_height: 2 pool: AVE } }
    """
    (tmp_path / "n.prototxt").write_text(text)
    layers = net_sections(tmp_path / "n.prototxt")["net"]
    assert [(layer["type"], layer["pyramid_height"]) for layer in layers] == [("SPP", 3), ("SPP", 2)]
    (out,) = export(tmp_path / "n.prototxt", tmp_path / "n.onnx", random_init=0)
    deploy = load_deploy(tmp_path / "n.prototxt", random_init=0)
    x = rng.normal(size=(2, 2, 8, 6)).astype(np.float32)
    deploy.net.forward({"data": x}, train=False)
    got = run_onnx(out, "data", x)
    for name in ("spp", "avg"):
        assert close(got[name], host(deploy.net.blobs[name])), name
    (tmp_path / "n.prototxt").write_text(text.replace("dim: 8", "dim: 7"))  # ONNX cannot average that
    with pytest.raises(
        Exception, match=r"layer avg/level1 \(SPP\): the last window of a 7 input ends inside"
    ):
        export(tmp_path / "n.prototxt", tmp_path / "m.onnx", random_init=0)
    info = tmp_path / "i.prototxt"
    info.write_text(
        'layer { name: "loss" type: "InfogainLoss" bottom: "s" bottom: "l" top: "loss" '
        'infogain_loss_param { source: "H.binaryproto" axis: 1 } }'
    )
    (layer,) = net_sections(info)["net"]
    assert layer["source"] == "H.binaryproto" and layer["axis"] == 1


DUMMY = """
name: "dummy"
layer { name: "data" type: "DummyData" top: "data" top: "label"
  dummy_data_param { shape { dim: 4 dim: 3 dim: 5 dim: 5 } shape { dim: 4 dim: 1 }
    data_filler { type: "gaussian" std: 2 } data_filler { type: "constant" value: 1.5 } } }
layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 1 } }
layer { name: "loss" type: "EuclideanLoss" bottom: "ip" bottom: "label" top: "loss" }
"""


def test_dummy_data_fills_its_tops_constants_once_and_random_ones_at_every_forward():
    spec = {
        "type": "DummyData",
        "shape": [{"dim": [4, 3, 2, 2]}, {"dim": [4]}],
        "data_filler": [{"type": "uniform", "min": 2, "max": 3}, {"type": "constant", "value": 7}],
    }
    layer, shapes = build({**spec, "top": ["a", "b"]}, [], np)
    assert shapes == [(4, 3, 2, 2), (4,)]
    first = [host(t).copy() for t in layer.forward([])]
    second = [host(t) for t in layer.forward([])]
    assert np.all((first[0] >= 2) & (first[0] <= 3)) and not np.array_equal(first[0], second[0])
    assert np.array_equal(first[1], np.full(4, 7.0)) and np.array_equal(second[1], first[1])
    # the legacy form, one filler (none: zeros) for every top
    layer, shapes = build(
        {"type": "DummyData", "num": [2], "channels": [3], "height": [4], "width": [5]}, [], np
    )
    assert shapes == [(2, 3, 4, 5)] and not host(layer.forward([])[0]).any()
    with pytest.raises(Exception, match="2 data_filler for 1 tops"):
        build({"type": "DummyData", "shape": {"dim": [2]}, "data_filler": [{}, {}]}, [], np)


def test_dummy_data_goes_through_prototxt_and_back_and_caffe_time_runs_on_it(tmp_path, invoke):
    from google.protobuf import text_format

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.prototxt import layer_message, net_sections

    (tmp_path / "dummy.prototxt").write_text(DUMMY)
    data = net_sections(tmp_path / "dummy.prototxt")["net"][0]
    assert data["shape"] == [{"dim": [4, 3, 5, 5]}, {"dim": [4, 1]}]
    assert [f["type"] for f in data["data_filler"]] == ["gaussian", "constant"]
    original = text_format.Parse(DUMMY, NetParameter()).layer[0]
    assert str(layer_message(data, data["bottom"], data["top"])) == str(original)
    r = invoke("time", tmp_path / "dummy.prototxt", "--iterations", "2")  # caffe time's usual net
    assert r.exit_code == 0, r.stderr
    assert "data\tforward" in r.stderr and "loss\tbackward" in r.stderr and "Total Time" in r.stderr


def test_a_convolution_over_a_bottom_without_spatial_axes_is_caffes_product(xp):
    """Caffe's BaseConvolutionLayer over N x C (the age Q&A's design 2, a Convolution on
    `prob`): an empty kernel, weights (num_output, C), y = x W^T + b (issue 33, point 4)."""
    x = rng.normal(size=(4, 6))
    spec = {"type": "Convolution", "num_output": 3, "kernel_size": 1}
    layer, (y,) = _forward(spec, x)
    w, b = (host(p) for p in layer.params)
    assert w.shape == (3, 6) and b.shape == (3,) and y.shape == (4, 3)
    assert np.allclose(y, x @ w.T + b)
    check_gradients(spec, [x], xp)
    check_gradients({**spec, "bias_term": False}, [x], xp)
    check_gradients({**spec, "num_output": 4, "group": 2}, [x], xp)


def _reference_convolution(x, w, b, axis, stride, pad, dilation, group):
    """Caffe's convolution written out from its definition: per image (the axes before
    ``axis``), output channel and output position, the sum over the group's input channels
    and the kernel's taps of the zero-padded input."""
    lead, (c, *sizes) = x.shape[:axis], x.shape[axis:]
    o, per, *kernel = w.shape
    xs = x.reshape(-1, c, *sizes)
    padded = np.pad(xs, [(0, 0), (0, 0), *((q, q) for q in pad)])
    out = [
        (n + 2 * q - d * (k - 1) - 1) // s + 1 for n, q, d, k, s in zip(sizes, pad, dilation, kernel, stride)
    ]
    y = np.zeros((len(xs), o, *out))
    for at in itertools.product(*(range(m) for m in out)):
        for taps in itertools.product(*(range(k) for k in kernel)):
            src = tuple(a * s + t * d for a, s, t, d in zip(at, stride, taps, dilation))
            for g in range(group):
                inputs = padded[(slice(None), slice(g * per, (g + 1) * per), *src)]  # (images, per)
                outs = slice(g * (o // group), (g + 1) * (o // group))
                y[(slice(None), outs, *at)] += inputs @ w[(outs, slice(None), *taps)].T
    y += b.reshape(1, -1, *(1,) * len(out))
    return y.reshape(*lead, o, *out)


ND_CASES = [  # (bottom shape, convolution_param), each a form of Caffe's BaseConvolutionLayer
    ((2, 3, 9), {"kernel_size": 3, "stride": 2, "pad": 1}),  # one spatial axis
    ((2, 2, 5, 4, 6), {"kernel_size": [3, 2, 3], "stride": [1, 2, 1], "pad": [1, 0, 1]}),  # three
    ((2, 4, 7, 7), {"kernel_size": 3, "dilation": 2, "pad": 2, "group": 2}),  # dilated, grouped
    ((2, 3, 2, 6, 5), {"kernel_size": 3, "axis": 2, "pad": 1}),  # the images before axis 2
    ((2, 3, 6, 5), {"kernel_h": 3, "kernel_w": 1, "stride_h": 2}),  # rectangular
    ((3, 2, 4), {"kernel_size": 1, "axis": 2}),  # N x T x C: no spatial axes after axis 2
]


@pytest.mark.parametrize(
    "shape, param", ND_CASES, ids=lambda v: None if isinstance(v, dict) else "x".join(map(str, v))
)
def test_the_convolution_is_caffes_over_any_spatial_axes_dilation_and_axis(xp, shape, param):
    """Issue 33, point 4: Convolution over N-D blobs with Caffe's ``axis``, against Caffe's
    definition written out and numerical gradients."""
    x = rng.normal(size=shape)
    spec = {"type": "Convolution", "num_output": 4, **param}
    layer, (y,) = _forward(spec, x)
    w, b = (host(p) for p in layer.params)
    axis = param.get("axis", 1)
    d = len(shape) - axis - 1

    def per_axis(key, default):
        value = param.get(key, param.get(f"{key}_h", default) if d == 2 else default)
        if f"{key}_h" in param:
            return [param[f"{key}_h"], param.get(f"{key}_w", default)]
        return value if isinstance(value, list) else [value] * d

    want = _reference_convolution(
        x,
        w,
        b,
        axis,
        per_axis("stride", 1),
        per_axis("pad", 0),
        per_axis("dilation", 1),
        param.get("group", 1),
    )
    assert w.shape == (4, shape[axis] // param.get("group", 1), *w.shape[2:]) and len(w.shape) == 2 + d
    assert y.shape == want.shape and np.allclose(y, want)
    check_gradients(spec, [x], xp)


@pytest.mark.parametrize("shape, param", ND_CASES[:4], ids=["1d", "3d", "dilated", "axis2"])
def test_the_deconvolution_is_the_convolutions_transpose_over_any_axes(xp, shape, param):
    """<conv(x), y> = <x, deconv(y)> with the same weights and no bias, as Caffe defines
    Deconvolution; and its numerical gradients."""
    x = rng.normal(size=shape)
    conv, (cx,) = _forward({"type": "Convolution", "num_output": 4, "bias_term": False, **param}, x)
    y = rng.normal(size=cx.shape)
    deconv, _ = build(
        {"type": "Deconvolution", "num_output": shape[param.get("axis", 1)], "bias_term": False, **param},
        [y.shape],
        np,
    )
    deconv.params[0] = conv.params[0]
    (dy,) = deconv.forward([y])
    cut = tuple(slice(0, n) for n in dy.shape)  # a strided deconvolution may stop short of x's last row
    assert np.isclose((cx * y).sum(), (x[cut] * host(dy)).sum())
    check_gradients({"type": "Deconvolution", "num_output": 2, **param}, [y], xp)


def test_convolution_geometry_is_refused_where_caffe_stops():
    for shape, param, message in [
        ((2, 3, 5), {"kernel_h": 3, "kernel_w": 3}, "kernel_h and kernel_w are for 2-D"),
        ((2, 3, 5, 5, 5), {"kernel_size": [3, 3]}, "kernel given 2 times for 3 spatial axes"),
        ((2, 3, 5), {"kernel_size": 7}, "kernel 7 larger than its 5 input"),
        ((2, 3, 5), {"kernel_size": 3, "dilation": 0}, "give kernel, stride and dilation 1 or more"),
        ((2, 3), {"kernel_size": 1, "axis": 2}, "axis 2 of a 2-axis bottom"),
    ]:
        with pytest.raises(Exception, match=message):
            build({"type": "Convolution", "name": "c", "num_output": 2, **param}, [shape], np)


def test_the_age_qa_design_two_trains_as_written(tmp_path, invoke, monkeypatch):
    """The expected age as a fixed Convolution (lr_mult 0, weights 0..K-1) over the
    softmax's N x K probabilities, in prototxt: it trains and the fixed weights stay."""
    monkeypatch.chdir(tmp_path)
    assert (
        invoke("noise", "--n", 60, "--size", "16x16", "--split", "50,10", "--seed", 3, "-j", 1).exit_code == 0
    )
    for split in ("train", "val"):
        r = invoke(
            "hdf5", f"{split}.txt", "--mean", 128, "--scale", 0.0078125, "--label-names", "freq", "-j", 1
        )
        assert r.exit_code == 0, r.stderr
    net = """
    name: "design2"
    layer { name: "data" type: "HDF5Data" top: "data" top: "freq" include { phase: TRAIN }
      hdf5_data_param { source: "train_h5.txt" batch_size: 10 } }
    layer { name: "data" type: "HDF5Data" top: "data" top: "freq" include { phase: TEST }
      hdf5_data_param { source: "val_h5.txt" batch_size: 10 } }
    layer { name: "slice" type: "Slice" bottom: "freq" top: "f0" top: "f1" slice_param { axis: 1 } }
    layer { name: "silence" type: "Silence" bottom: "f1" }
    layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
      inner_product_param { num_output: 10 weight_filler { type: "xavier" } } }
    layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
    layer { name: "age" type: "Convolution" bottom: "prob" top: "age" param { lr_mult: 0 }
      convolution_param { num_output: 1 kernel_size: 1 bias_term: false
        weight_filler { type: "constant" value: 0.1 } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "age" bottom: "f0" top: "loss" }
    """
    Path = type(tmp_path)
    Path("net.prototxt").write_text(net)
    Path("solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.1\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 20\n'
        'display: 5\ntest_iter: 1\ntest_interval: 20\nsnapshot_prefix: "design2"\n'
    )
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 0, r.stderr
    saved = np.load("design2_iter_20.npz")
    assert saved["param/age/0"].shape == (1, 10) and np.all(saved["param/age/0"] == np.float32(0.1))


def test_a_one_d_convolution_net_trains_from_hdf5_and_exports(tmp_path, invoke, monkeypatch):
    """N x 2 x 32 signals in HDF5 (Caffe's N-D HDF5Data), a 1-D and a dilated 1-D
    convolution, through `train` with a prototxt solver: the loss falls, and the saved
    model's kernels are 1-D (num_output x channels x k)."""
    import h5py

    monkeypatch.chdir(tmp_path)
    signals = np.random.default_rng(0).normal(size=(64, 2, 32)).astype(np.float32)
    target = signals[:, :1, 3:29].mean(axis=2) - signals[:, 1:, :8].mean(axis=2)
    with h5py.File("train.h5", "w") as f:
        f["data"], f["target"] = signals, target.astype(np.float32)
    Path = type(tmp_path)
    Path("train_h5.txt").write_text("train.h5\n")
    Path("net.prototxt").write_text(
        """
    layer { name: "data" type: "HDF5Data" top: "data" top: "target"
      hdf5_data_param { source: "train_h5.txt" batch_size: 16 } }
    layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
      convolution_param { num_output: 4 kernel_size: 5 pad: 2 weight_filler { type: "xavier" } } }
    layer { name: "conv2" type: "Convolution" bottom: "conv1" top: "conv2"
      convolution_param { num_output: 4 kernel_size: 3 dilation: 4 stride: 2
        weight_filler { type: "xavier" } } }
    layer { name: "fc" type: "InnerProduct" bottom: "conv2" top: "fc"
      inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
    layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "target" top: "loss" }
    """
    )
    Path("solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.02\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 60\n'
        'display: 10\nsnapshot_prefix: "signal"\nrandom_seed: 1\n'
    )
    r = invoke("train", "solver.prototxt")
    assert r.exit_code == 0, r.stderr
    losses = train_losses(r.stderr)
    assert len(losses) >= 5 and losses[-1] < 0.5 * losses[0]
    saved = np.load("signal_iter_60.npz")
    assert saved["param/conv1/0"].shape == (4, 2, 5) and saved["param/conv2/0"].shape == (4, 4, 3)


@pytest.mark.parametrize(
    "dims, param, kind",
    [
        ((1, 6), "kernel_size: 1", "Convolution"),  # no spatial axes: Gemm
        ((1, 3, 2, 4), "kernel_size: 1 axis: 3", "Convolution"),  # N x T x S x C
        ((1, 3, 9), "kernel_size: 3 stride: 2 pad: 1", "Convolution"),
        ((1, 2, 5, 4, 6), "kernel_size: 3 kernel_size: 2 kernel_size: 3 pad: 1 pad: 0 pad: 1", "Convolution"),
        ((1, 4, 7, 7), "kernel_size: 3 dilation: 2 pad: 2 group: 2", "Convolution"),
        ((1, 3, 2, 6, 5), "kernel_size: 3 axis: 2 pad: 1", "Convolution"),
        ((1, 2, 4, 3, 5), "kernel_size: 3 stride: 2 pad: 1", "Deconvolution"),
        ((1, 4, 5, 5), "kernel_size: 3 dilation: 2 stride: 2 group: 2", "Deconvolution"),
    ],
    ids=["gemm", "gemm-axis3", "1d", "3d", "dilated", "axis2", "deconv-3d", "deconv-dilated"],
)
def test_convolutions_of_any_geometry_go_through_prototxt_and_export_to_onnx(tmp_path, dims, param, kind):
    """Repeated kernel_size/pad (one per axis), dilation and axis read from prototxt,
    written back the same, and computed by onnxruntime as by the native engine."""
    pytest.importorskip("onnxruntime")
    from google.protobuf import text_format
    from test_export import close, run_onnx

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.export import export, load_deploy
    from dataprep.train.prototxt import layer_message, net_sections

    shape = " ".join(f"dim: {d}" for d in dims)
    data = f'layer {{ name: "data" type: "Input" top: "data" input_param {{ shape {{ {shape} }} }} }}'
    conv = f'layer {{ name: "c" type: "{kind}" bottom: "data" top: "c" '
    conv += f"convolution_param {{ num_output: 4 {param} }} }}"
    text = f'name: "n"\n{data}\n{conv}\n'
    (tmp_path / "n.prototxt").write_text(text)
    entry = net_sections(tmp_path / "n.prototxt")["net"][-1]
    original = text_format.Parse(text, NetParameter()).layer[1]
    assert str(layer_message(entry, entry["bottom"], entry["top"])) == str(original)
    (out,) = export(tmp_path / "n.prototxt", tmp_path / "n.onnx", random_init=0)
    deploy = load_deploy(tmp_path / "n.prototxt", random_init=0)
    x = rng.normal(size=(2, *dims[1:])).astype(np.float32)
    deploy.net.forward({"data": x}, train=False)
    got = run_onnx(out, "data", x)["c"]
    assert got.shape == host(deploy.net.blobs["c"]).shape and close(got, host(deploy.net.blobs["c"]))


def test_filter_keeps_the_selected_items_and_sends_gradients_back_to_them(xp):
    """Caffe's Filter: items where the selector (N x 1) is non-zero, in order, from each
    bottom but the last; the backward puts each kept item's diff back at its place and zeros
    elsewhere, and gives the selector none."""
    x, labels = rng.normal(size=(5, 3, 2)), np.arange(5.0)
    selector = np.array([[0.0], [2.0], [0.0], [-1.0], [1.0]])
    spec = {"type": "Filter", "name": "f", "top": ["fx", "fl"]}
    layer, shapes = build(spec, [x.shape, labels.shape, selector.shape], xp)
    assert shapes == [(5, 3, 2), (5,)]  # as Caffe's first reshape
    fx, fl = layer.forward([xp.asarray(x), xp.asarray(labels), xp.asarray(selector)])
    assert np.array_equal(host(fx), x[[1, 3, 4]]) and np.array_equal(host(fl), [1.0, 3.0, 4.0])
    dx, dl, ds = layer.backward([xp.ones_like(fx) * 2, xp.ones_like(fl)])
    assert ds is None and np.array_equal(host(dl), [0, 1, 0, 1, 1])
    weights = np.random.default_rng(3).normal(size=(3, 3, 2))  # the numerical gradient of sum(fx * R)

    def loss():
        return float(
            (
                host(layer.forward([xp.asarray(x), xp.asarray(labels), xp.asarray(selector)])[0]) * weights
            ).sum()
        )

    loss()
    got = host(layer.backward([xp.asarray(weights), xp.zeros(3)])[0])
    assert np.allclose(got, numeric_grad(loss, x), atol=1e-6)
    assert np.array_equal(host(dx)[[1, 3, 4]], np.full((3, 3, 2), 2.0)) and not host(dx)[[0, 2]].any()
    # a batch with nothing selected: SoftmaxWithLoss's loss is 0, as Caffe's normalizer is at least 1
    loss, _ = build({"type": "SoftmaxWithLoss", "name": "l"}, [(5, 2), (5,)], xp)
    empty = layer.forward([xp.asarray(x.reshape(5, -1)[:, :2]), xp.asarray(labels), xp.zeros((5, 1))])
    assert host(empty[0]).shape == (0, 2) and float(loss.forward(empty)[0]) == 0.0
    assert host(loss.backward([xp.asarray(1.0)])[0]).shape == (0, 2)
    for shapes, message in [
        ([(5, 3), (5, 2)], "its axes past the first must be 1"),
        ([(5, 3), (4,)], "each bottom's first axis must be the selector's 4"),
        ([(5,)], "Filter takes the bottoms to filter, then the selector"),
    ]:
        with pytest.raises(Exception, match=message):
            build({"type": "Filter", "name": "f", "top": ["a"] * max(1, len(shapes) - 1)}, shapes, np)


FILTER_NET = """
layer { name: "data" type: "HDF5Data" top: "data" top: "both"
  hdf5_data_param { source: "train_h5.txt" batch_size: 20 } }
layer { name: "cut" type: "Slice" bottom: "both" top: "label" top: "keep" slice_param { axis: 1 } }
layer { name: "filter" type: "Filter" bottom: "data" bottom: "label" bottom: "keep"
  top: "kept" top: "kept_label" }
layer { name: "fc" type: "InnerProduct" bottom: "kept" top: "fc"
  inner_product_param { num_output: 2 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "SoftmaxWithLoss" bottom: "fc" bottom: "kept_label" top: "loss" }
"""


def test_a_filtered_net_trains_on_the_selected_items_only(tmp_path, invoke, monkeypatch):
    """A multi-task net's habit: the loss sees only the items a selector keeps. Here the
    items not kept carry labels that contradict the kept ones; trained through `train`, the
    model learns the kept items' rule."""
    import h5py

    monkeypatch.chdir(tmp_path)
    r = np.random.default_rng(2)
    data = r.normal(size=(200, 4)).astype(np.float32)
    keep = (r.random(200) < 0.3).astype(np.float32)  # the majority contradicts the kept items
    label = np.where(keep > 0, data[:, 0] > 0, data[:, 0] <= 0).astype(np.float32)  # the rest: the opposite
    with h5py.File("train.h5", "w") as f:
        f["data"], f["label"] = data, np.stack([label, keep], axis=1)
    Path = type(tmp_path)
    Path("train_h5.txt").write_text("train.h5\n")
    Path("solver.prototxt").write_text(
        'net: "net.prototxt"\nbase_lr: 0.5\nlr_policy: "fixed"\nmax_iter: 100\ndisplay: 50\n'
        'snapshot_prefix: "filtered"\nrandom_seed: 1\n'
    )
    Path("net.prototxt").write_text(FILTER_NET.replace('top: "both"', 'top: "label" top: "keep"'))
    refused = invoke("train", "solver.prototxt")  # Caffe would read one dataset per top
    assert (
        refused.exit_code == 2
        and "3 tops: dataprep's data layers give the data and one label" in refused.stderr
    )
    Path("net.prototxt").write_text(FILTER_NET)
    result = invoke("train", "solver.prototxt")
    assert result.exit_code == 0, result.stderr
    saved = np.load("filtered_iter_100.npz")
    w, b = saved["param/fc/0"], saved["param/fc/1"]
    predicted = (data @ w.T + b).argmax(axis=1)
    kept = keep > 0
    assert (predicted[kept] == label[kept]).mean() > 0.9  # unfiltered, the majority rule would win


def test_filter_goes_through_prototxt_and_exports_to_onnx_as_compress(tmp_path):
    pytest.importorskip("onnxruntime")
    from google.protobuf import text_format
    from test_export import run_onnx

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.export import export, load_deploy
    from dataprep.train.prototxt import layer_message, net_sections

    text = """
    name: "n"
    layer { name: "data" type: "Input" top: "data" input_param { shape { dim: 1 dim: 3 } } }
    layer { name: "cut" type: "Slice" bottom: "data" top: "first" top: "rest" slice_param { slice_point: 1 } }
    layer { name: "on" type: "Threshold" bottom: "first" top: "on" threshold_param { threshold: 0 } }
    layer { name: "f" type: "Filter" bottom: "rest" bottom: "on" top: "kept" }
    """
    (tmp_path / "n.prototxt").write_text(text)
    entry = net_sections(tmp_path / "n.prototxt")["net"][-1]
    original = text_format.Parse(text, NetParameter()).layer[-1]
    assert str(layer_message(entry, entry["bottom"], entry["top"])) == str(original)
    (out,) = export(tmp_path / "n.prototxt", tmp_path / "n.onnx", random_init=0)
    x = np.array([[1, 2, 3], [-1, 4, 5], [0.5, 6, 7]], np.float32)
    deploy = load_deploy(tmp_path / "n.prototxt", random_init=0)
    deploy.net.forward({"data": x}, train=False)
    assert np.array_equal(host(deploy.net.blobs["kept"]), [[2, 3], [6, 7]])
    assert np.array_equal(run_onnx(out, "data", x)["kept"], [[2, 3], [6, 7]])


SELF_FED = """
name: "fed"
layer { name: "data" type: "DummyData" top: "data" top: "target"
  dummy_data_param { shape { dim: 8 dim: 4 } shape { dim: 8 dim: 1 }
    data_filler { type: "gaussian" std: 1 } data_filler { type: "constant" value: 2 } } }
layer { name: "drop" type: "Dropout" bottom: "data" top: "data" dropout_param { dropout_ratio: 0.3 } }
layer { name: "fc" type: "InnerProduct" bottom: "data" top: "fc"
  inner_product_param { num_output: 1 weight_filler { type: "xavier" } } }
layer { name: "loss" type: "EuclideanLoss" bottom: "fc" bottom: "target" top: "loss" }
"""


def test_a_net_that_makes_its_inputs_with_dummydata_trains_tests_and_resumes_exactly(
    tmp_path, invoke, monkeypatch
):
    """Caffe trains a net whose DummyData layer is its only source (no data layer, no
    store): the loss falls, the test net (test_iter given) is tested, and a resume from a
    mid-run snapshot draws the same random tops as the uninterrupted run: the same weights."""
    monkeypatch.chdir(tmp_path)
    Path = type(tmp_path)
    Path("net.prototxt").write_text(SELF_FED)
    for prefix in ("whole", "split"):
        Path(f"{prefix}.prototxt").write_text(
            'net: "net.prototxt"\nbase_lr: 0.05\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 40\n'
            f'display: 10\ntest_iter: 2\ntest_interval: 20\nsnapshot: 20\nsnapshot_prefix: "{prefix}"\n'
            "random_seed: 5\n"
        )
    r = invoke("train", "whole.prototxt")
    assert r.exit_code == 0, r.stderr
    losses = train_losses(r.stderr)
    assert losses[-1] < 0.2 * losses[0]
    assert "Iteration 20, Testing net (#0)" in r.stderr and "Test net output #0: loss = " in r.stderr
    r = invoke("train", "split.prototxt", "--set", "solver.max_iter=20")
    assert r.exit_code == 0, r.stderr
    r = invoke("train", "split.prototxt", "--resume", "split_iter_20.npz")
    assert r.exit_code == 0, r.stderr
    whole, split = np.load("whole_iter_40.npz"), np.load("split_iter_40.npz")
    assert np.array_equal(whole["param/fc/0"], split["param/fc/0"])
    assert np.array_equal(whole["param/fc/1"], split["param/fc/1"])
    # the same net as a YAML recipe: no data section needed beyond the net's own inputs
    recipe = invoke("train", "whole.prototxt", "--print-recipe")
    assert recipe.exit_code == 0 and "DummyData" in recipe.stdout
