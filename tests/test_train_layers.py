"""Training layers: Caffe's output sizes, forward results against plain loops, and every
backward pass against numerical gradients (float64), on NumPy and (with a GPU) CuPy."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

from dataprep.errors import UsageError
from dataprep.train.layers import LAYERS, conv_out, make_layer, pool_out

BACKENDS = [
    "numpy",
    pytest.param("cupy", marks=[pytest.mark.gpu]),
]


@pytest.fixture(params=BACKENDS)
def xp(request):
    if request.param == "numpy":
        return np
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("needs a CUDA device")
    return cupy


@pytest.fixture(params=["loops", "arrays", pytest.param("cupy", marks=[pytest.mark.gpu])])
def pool_xp(request, monkeypatch):
    """Pooling's three paths: NumPy through the compiled loops, NumPy through the array code
    (the code CuPy runs), and CuPy."""
    from dataprep.train.layers import threads

    monkeypatch.setattr(threads, "COMPILED", request.param == "loops")
    if request.param != "cupy":
        return np
    cupy = pytest.importorskip("cupy")
    if cupy.cuda.runtime.getDeviceCount() == 0:
        pytest.skip("needs a CUDA device")
    return cupy


def host(a):
    return a.get() if hasattr(a, "get") else np.asarray(a)


def build(spec: dict, shapes, xp, seed=0):
    layer = make_layer(spec)
    tops = layer.setup(shapes, xp, np.random.default_rng(seed), np.float64)
    for i, param in enumerate(layer.params):  # random parameters, not the fillers' zeros
        layer.params[i] = xp.asarray(np.random.default_rng(seed + i + 1).normal(0, 0.5, param.shape))
    return layer, tops


def numeric_grad(f, x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to every element of x (in place)."""
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        plus = f()
        flat[i] = old - eps
        minus = f()
        flat[i] = old
        gflat[i] = (plus - minus) / (2 * eps)
    return grad


def check_gradients(spec, inputs, xp, labels=None, train=True, atol=1e-6):
    """Backward of ``sum(top * R)`` (R random) against numerical gradients of the input and
    of every parameter."""
    shapes = [x.shape for x in inputs] + ([labels.shape] if labels is not None else [])
    layer, tops = build(spec, shapes, xp)
    host_inputs = [np.array(x, dtype=np.float64) for x in inputs]
    weights = np.random.default_rng(7).normal(size=tops[0]) if tops[0] else np.array(1.0)

    def loss():
        bottoms = [xp.asarray(x) for x in host_inputs] + ([xp.asarray(labels)] if labels is not None else [])
        return float((host(layer.forward(bottoms, train)[0]) * weights).sum())

    loss()
    diffs = layer.backward([xp.asarray(weights)])
    analytic = [host(d) for d in diffs[: len(inputs)]]
    param_grads = [None if g is None else host(g) for g in layer.grads]
    for x, got in zip(host_inputs, analytic):
        want = numeric_grad(loss, x)
        assert np.allclose(got, want, atol=atol, rtol=1e-4), (
            f"{spec['type']} input: {np.abs(got - want).max()}"
        )
    check_param_gradients(layer, loss, xp, param_grads, atol, spec["type"])


def check_param_gradients(layer, loss, xp, grads, atol: float = 1e-6, what: str = "") -> None:
    """Each parameter's gradient ``grads[i]`` against numerical gradients of ``loss()``;
    a None gradient only for statistics that are not learned (BatchNorm's)."""
    for i, param in enumerate(layer.params):
        if grads[i] is None:
            assert layer.lr_mult[i] == 0
            continue
        host_param = host(param).copy()

        def param_loss(i=i, host_param=host_param):
            layer.params[i] = xp.asarray(host_param)
            return loss()

        want = numeric_grad(param_loss, host_param)
        layer.params[i] = xp.asarray(host_param)
        assert np.allclose(grads[i], want, atol=atol, rtol=1e-4), f"{what} param {i}"


rng = np.random.default_rng(3)


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"type": "Convolution", "num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1}, (2, 3, 7, 6)),
        ({"type": "Convolution", "num_output": 4, "kernel_size": 2, "group": 2}, (2, 4, 5, 5)),
        # stride 1 with padding: the flat-row im2col and col2im, over more images than a chunk
        ({"type": "Convolution", "num_output": 3, "kernel_size": 3, "pad": 1}, (10, 2, 5, 4)),
        ({"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2}, (2, 2, 8, 7)),
        ({"type": "Pooling", "pool": "MAX", "kernel_size": 3, "stride": 2, "pad": 1}, (1, 2, 6, 6)),
        ({"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}, (2, 2, 7, 6)),
        ({"type": "InnerProduct", "num_output": 3}, (4, 2, 3, 2)),
        ({"type": "Sigmoid"}, (3, 5)),
        ({"type": "TanH"}, (3, 5)),
        ({"type": "LRN", "local_size": 5, "alpha": 0.5, "beta": 0.75}, (2, 7, 3, 3)),
        ({"type": "LRN", "local_size": 4, "alpha": 0.5, "beta": 0.75, "k": 2.0}, (2, 6, 2, 3)),
        ({"type": "LRN", "local_size": 5, "alpha": 0.5, "beta": 0.75}, (2, 2, 3, 3)),  # fewer channels
        (
            {"type": "LRN", "local_size": 3, "alpha": 0.5, "beta": 0.75, "norm_region": "WITHIN_CHANNEL"},
            (2, 3, 5, 4),
        ),
        ({"type": "BatchNorm"}, (5, 3, 2, 2)),
        ({"type": "Flatten"}, (2, 3, 2, 2)),
        ({"type": "Scale", "scale": 99.0}, (4, 1)),
        ({"type": "Scale", "bias_term": True}, (3, 4, 2, 2)),  # Caffe's learned gamma and beta
        ({"type": "Scale"}, (3, 4)),
        ({"type": "Softmax"}, (4, 5)),
    ],
)
def test_backward_matches_numerical_gradients(xp, spec, shape):
    check_gradients(spec, [rng.normal(size=shape)], xp)


def test_relu_gradient_away_from_the_kink(xp):
    x = rng.normal(size=(3, 4, 2))
    x[np.abs(x) < 0.1] = 0.5
    check_gradients({"type": "ReLU"}, [x], xp)


@pytest.mark.parametrize("kind", ["EuclideanLoss", "SmoothL1Loss"])
def test_regression_losses(xp, kind):
    pred = rng.normal(size=(6, 2))
    target = pred + rng.choice([-2.0, -0.3, 0.4, 1.7], size=(6, 2))  # away from SmoothL1's kink
    check_gradients({"type": kind}, [pred], xp, labels=target)
    layer, _ = build({"type": kind}, [pred.shape, target.shape], xp)
    value = float(host(layer.forward([xp.asarray(pred), xp.asarray(target)])[0]))
    d = pred - target
    want = (
        (d**2).sum() / 12
        if kind == "EuclideanLoss"
        else np.where(np.abs(d) < 1, 0.5 * d**2, np.abs(d) - 0.5).sum() / 6
    )
    assert value == pytest.approx(want)


def test_softmax_loss_and_accuracy(xp):
    logits = rng.normal(size=(5, 4))
    labels = np.array([0, 3, 1, 1, 2], np.float64)
    check_gradients({"type": "SoftmaxWithLoss"}, [logits], xp, labels=labels)
    layer, _ = build({"type": "SoftmaxWithLoss"}, [logits.shape, labels.shape], xp)
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    want = -np.log(p[np.arange(5), labels.astype(int)]).mean()
    assert float(host(layer.forward([xp.asarray(logits), xp.asarray(labels)])[0])) == pytest.approx(want)
    accuracy, _ = build({"type": "Accuracy"}, [logits.shape, labels.shape], xp)
    got = float(host(accuracy.forward([xp.asarray(logits), xp.asarray(labels)])[0]))
    assert got == pytest.approx((logits.argmax(axis=1) == labels).mean())


def test_convolution_forward_matches_a_plain_loop(xp):
    x = rng.normal(size=(2, 4, 6, 5))
    layer, (top,) = build(
        {"type": "Convolution", "num_output": 6, "kernel_size": 3, "stride": 2, "pad": 1, "group": 2},
        [x.shape],
        xp,
    )
    y = host(layer.forward([xp.asarray(x)])[0])
    w, b = host(layer.params[0]), host(layer.params[1])
    xpad = np.pad(x, ((0, 0), (0, 0), (1, 1), (1, 1)))
    want = np.zeros(top)
    for n in range(2):
        for o in range(6):
            g = o // 3
            for i in range(top[2]):
                for j in range(top[3]):
                    patch = xpad[n, 2 * g : 2 * g + 2, 2 * i : 2 * i + 3, 2 * j : 2 * j + 3]
                    want[n, o, i, j] = (patch * w[o]).sum() + b[o]
    assert np.allclose(y, want)


@pytest.mark.parametrize(
    "k, stride, pad, shape",
    [
        (3, 2, 0, (2, 3, 32, 32)),  # CIFAR-10's: the last window clipped
        (3, 2, 0, (1, 2, 113, 113)),  # SqueezeNet's pool1: no clipping
        (3, 2, 1, (2, 3, 7, 6)),
        (2, 2, 0, (3, 2, 7, 9)),
        (3, 1, 1, (1, 2, 5, 5)),
        (5, 3, 2, (2, 2, 11, 13)),
        (2, 1, 0, (1, 1, 2, 3)),
    ],
)
def test_inference_max_pooling_is_trainings(xp, k, stride, pad, shape):
    """Inference's separable MAX (rows, then columns) gives the training path's values."""
    layer, _ = build({"type": "Pooling", "kernel_size": k, "stride": stride, "pad": pad}, [shape], xp)
    x = xp.asarray(rng.normal(size=shape))
    assert np.array_equal(host(layer.forward([x], False)[0]), host(layer.forward([x], True)[0]))


def test_pooling_forward_matches_caffes_rules(xp):
    x = rng.normal(size=(1, 1, 7, 7))
    layer, (top,) = build({"type": "Pooling", "kernel_size": 3, "stride": 2}, [x.shape], xp)
    y = host(layer.forward([xp.asarray(x)])[0])
    assert top == (1, 1, 3, 3)
    assert y[0, 0, 1, 2] == x[0, 0, 2:5, 4:7].max()
    ave, (top,) = build(
        {"type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1}, [x.shape], xp
    )
    y = host(ave.forward([xp.asarray(x)])[0])
    assert top == (1, 1, 4, 4)
    assert y[0, 0, 0, 0] == pytest.approx(x[0, 0, :2, :2].sum() / 9)  # padding counts in AVE's divisor
    assert y[0, 0, 3, 3] == pytest.approx(x[0, 0, 5:7, 5:7].sum() / 9)


def caffe_pooling(x, method, k, s, p):
    """Caffe's pooling loops (pooling_layer.cpp), written plainly: outputs and, for MAX,
    the flat input index each output's gradient goes to."""
    n, c, h, w = x.shape
    oh, ow = pool_out(h, k, s, p), pool_out(w, k, s, p)
    y = np.zeros((n, c, oh, ow))
    where = np.zeros((n, c, oh, ow), int)
    for i in range(oh):
        for j in range(ow):
            hs, ws = i * s - p, j * s - p
            he, we = min(hs + k, h + p), min(ws + k, w + p)
            area = (he - hs) * (we - ws)
            hs, ws, he, we = max(hs, 0), max(ws, 0), min(he, h), min(we, w)
            window = x[:, :, hs:he, ws:we].reshape(n, c, -1)
            if method == "AVE":
                y[:, :, i, j] = window.sum(axis=2) / area
                continue
            first = window.argmax(axis=2)  # numpy's argmax: the first maximum in scan order
            y[:, :, i, j] = window.max(axis=2)
            where[:, :, i, j] = (hs + first // (we - ws)) * w + ws + first % (we - ws)
    return y, where


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize(
    "k, s, p, h, w",
    [(3, 2, 0, 48, 48), (3, 2, 0, 13, 13), (3, 2, 1, 7, 6), (2, 3, 0, 8, 11), (3, 1, 1, 5, 4)],
)
def test_pooling_matches_caffes_loops_forward_and_backward(pool_xp, method, k, s, p, h, w):
    xp = pool_xp
    # a batch larger than the core count, so the threaded parts meet; ReLU-like ties
    x = np.maximum(np.round(rng.normal(size=(5, 3, h, w)), 1), 0)
    layer, (top,) = build(
        {"type": "Pooling", "pool": method, "kernel_size": k, "stride": s, "pad": p}, [x.shape], xp
    )
    want, where = caffe_pooling(x, method, k, s, p)
    y = host(layer.forward([xp.asarray(x)])[0])
    assert y.shape == top and np.allclose(y, want)
    dy = rng.normal(size=top)
    dx = host(layer.backward([xp.asarray(dy)])[0])
    if method == "MAX":
        expected = np.zeros((5 * 3, h * w))
        for plane in range(5 * 3):
            np.add.at(expected[plane], where.reshape(5 * 3, -1)[plane], dy.reshape(5 * 3, -1)[plane])
        assert np.allclose(dx, expected.reshape(x.shape))
    else:
        assert np.isclose((dx * x).sum(), (dy * want).sum())  # AVE is linear: <dx, x> = <dy, y>


def test_output_sizes_follow_caffe_for_the_tutorial_net():
    # RegressionExample: 100 -> conv 5/2 -> 48 -> pool 3/2 -> 24 -> conv 3 pad 2 -> 26 -> pool -> 13
    # -> conv 3 pad 1 -> 13 -> pool -> 6 (pooling rounds up)
    assert conv_out(100, 5, 2, 0) == 48 and pool_out(48, 3, 2, 0) == 24
    assert conv_out(24, 3, 1, 2) == 26 and pool_out(26, 3, 2, 0) == 13
    assert conv_out(13, 3, 1, 1) == 13 and pool_out(13, 3, 2, 0) == 6
    assert pool_out(6, 3, 2, 1) == 4 and pool_out(5, 2, 2, 1) == 3  # last window starts inside


@pytest.mark.parametrize("size, channels", [(5, 7), (4, 6), (5, 2), (1, 3)])
def test_lrn_across_channels_is_caffes_formula(xp, size, channels):
    """y = x / (k + alpha / n * sum of x^2 over the channels c - (n-1)/2 .. c + n/2) ^ beta,
    written plainly, for odd and even windows and for fewer channels than the window."""
    x = rng.normal(size=(3, channels, 2, 3))
    spec = {"type": "LRN", "local_size": size, "alpha": 0.7, "beta": 0.75, "k": 1.5}
    layer, _ = build(spec, [x.shape], xp)
    lo = (size - 1) // 2
    sums = np.stack([(x[:, max(0, c - lo) : c - lo + size] ** 2).sum(axis=1) for c in range(channels)], 1)
    want = x / (1.5 + 0.7 / size * sums) ** 0.75
    assert np.allclose(host(layer.forward([xp.asarray(x)])[0]), want, rtol=1e-12)


def test_dropout_scales_in_training_and_passes_through_in_testing(xp):
    layer, _ = build({"type": "Dropout", "dropout_ratio": 0.35}, [(200, 50)], xp)
    x = xp.ones((200, 50))
    y = host(layer.forward([x], train=True)[0])
    kept = y != 0
    assert np.allclose(y[kept], 1 / 0.65) and 0.6 < kept.mean() < 0.7
    assert np.array_equal(host(layer.backward([xp.ones((200, 50))])[0]), y)  # the same mask
    assert np.array_equal(host(layer.forward([x], train=False)[0]), host(x))


def test_batchnorm_uses_moving_averages_in_testing(xp):
    x = rng.normal(3.0, 2.0, size=(64, 2, 3, 3))
    layer, _ = build({"type": "BatchNorm", "moving_average_fraction": 0.0}, [x.shape], xp)
    for i, p in enumerate(layer.params):
        layer.params[i] = xp.zeros_like(p)
    train = host(layer.forward([xp.asarray(x)], train=True)[0])
    assert np.allclose(train.mean(axis=(0, 2, 3)), 0, atol=1e-9)
    test = host(layer.forward([xp.asarray(x)], train=False)[0])
    m = 64 * 9
    assert np.allclose(
        test,
        train
        * np.sqrt((x.var(axis=(0, 2, 3)) + 1e-5) / (x.var(axis=(0, 2, 3)) * m / (m - 1) + 1e-5)).reshape(
            1, -1, 1, 1
        ),
    )


def test_fillers_and_parameter_shapes_are_caffes():
    conv = make_layer(
        {
            "name": "conv1",
            "type": "Convolution",
            "num_output": 96,
            "kernel_size": 5,
            "stride": 2,
            "weight_filler": {"type": "gaussian", "std": 0.01},
            "param": [{"lr_mult": 1}, {"decay_mult": 0}],
        }
    )
    assert conv.setup([(50, 1, 100, 100)]) == [(50, 96, 48, 48)]
    w, b = conv.params
    assert w.shape == (96, 1, 5, 5) and w.dtype == np.float32 and 0.008 < float(w.std()) < 0.012
    assert b.shape == (96,) and not b.any() and conv.decay_mult == [1.0, 0.0]
    fc = make_layer({"type": "InnerProduct", "num_output": 2, "weight_filler": {"type": "xavier"}})
    assert fc.setup([(5, 192)]) == [(5, 2)] and fc.params[0].shape == (2, 192)
    assert np.abs(fc.params[0]).max() <= np.sqrt(3 / 192)


def test_unknown_types_and_wrong_bottoms_are_clear_errors():
    with pytest.raises(UsageError, match="type 'Conv': choose from AbsVal, Accuracy"):
        make_layer({"name": "c", "type": "Conv"})
    with pytest.raises(UsageError, match="takes 2 bottom"):
        make_layer({"name": "loss", "type": "EuclideanLoss"}).setup([(4, 2)])
    assert sorted(LAYERS) == sorted(
        [
            "ContrastiveLoss",
            "Convolution",
            "Pooling",
            "InnerProduct",
            "ReLU",
            "Sigmoid",
            "TanH",
            "Dropout",
            "LRN",
            "BatchNorm",
            "Flatten",
            "Scale",
            "Softmax",
            "SoftmaxWithLoss",
            "EuclideanLoss",
            "SmoothL1Loss",
            "Accuracy",
            # issue 22: the model zoo's layers
            "Concat",
            "Eltwise",
            "Slice",
            "Reshape",
            "Crop",
            "Deconvolution",
            "PReLU",
            "ELU",
            "AbsVal",
            "Bias",
            "Exp",
            "Log",
            "Power",
            "ArgMax",
            "Silence",
            "SigmoidCrossEntropyLoss",
            # issue 30: Caffe's examples and the remaining layers
            "Clip",
            "Swish",
            "Threshold",
            "Tile",
            "Split",
            "Reduction",
            "MVN",
            "Embed",
            "Parameter",
            "MultinomialLogisticLoss",
            "HingeLoss",
            "Filter",
            "InfogainLoss",
            "SPP",
            "DummyData",
        ]
    )


def test_max_pooling_ties_go_to_the_first_in_scan_order(pool_xp):
    xp = pool_xp
    layer, _ = build({"type": "Pooling", "kernel_size": 3, "stride": 1}, [(1, 1, 3, 3)], xp)
    layer.forward([xp.zeros((1, 1, 3, 3))])  # all equal, as after a ReLU
    dx = host(layer.backward([xp.ones((1, 1, 1, 1))])[0])
    assert dx[0, 0, 0, 0] == 1 and dx.sum() == 1


@pytest.mark.parametrize("method", ["MAX", "AVE"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "k, s, p, shape",
    [
        (3, 2, 0, (4, 3, 32, 32)),  # CIFAR-10 quick's pool1: the last window clipped
        (3, 2, 0, (3, 2, 27, 27)),  # CaffeNet's pool2
        (3, 2, 1, (2, 3, 7, 6)),
        (2, 2, 0, (3, 2, 7, 9)),
        (2, 2, 0, (2, 20, 24, 24)),  # LeNet's pool1: windows that tile the input (``pool_windows``)
        (3, 3, 0, (2, 2, 9, 12)),
        (3, 1, 1, (2, 2, 5, 5)),
        (5, 3, 2, (2, 2, 11, 13)),
        (17, 1, 0, (1, 2, 18, 19)),  # 289 offsets: two bytes each
    ],
)
def test_pooling_loops_give_the_array_codes_bytes(monkeypatch, method, dtype, k, s, p, shape):
    """Training's pooling through the compiled loops and through the array code (what CuPy
    runs): the same top and data gradient, byte for byte (MAX's ties after a ReLU, AVE's
    sums in the same order)."""
    from dataprep.train.layers import threads

    x = np.maximum(np.round(rng.normal(size=shape), 1), 0).astype(dtype)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = make_layer({"type": "Pooling", "pool": method, "kernel_size": k, "stride": s, "pad": p})
        (top,) = layer.setup([shape], np, None, dtype)
        y = layer.forward([x])[0]
        assert (layer._saved[2] is not None) == enabled  # the loops ran
        dy = np.random.default_rng(4).normal(size=top).astype(dtype)
        results.append((y.tobytes(), layer.backward([dy])[0].tobytes()))
    assert results[0] == results[1]


@pytest.mark.parametrize("k, s, p", [(3, 2, 0), (2, 2, 0), (3, 2, 1)])
def test_max_pooling_loops_spread_nan_and_keep_infinities_as_the_array_code(monkeypatch, k, s, p):
    """NaN, +inf and -inf in MAX pooling's input: the compiled loops' tops and maxima's
    gradients are the array code's bytes (NaN spreads as np.maximum's does)."""
    from dataprep.train.layers import threads

    x = np.random.default_rng(3).normal(size=(2, 3, 11, 12)).astype(np.float32)
    x.flat[::7] = np.nan
    x.flat[3::11] = np.inf
    x.flat[5::13] = -np.inf
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = make_layer({"type": "Pooling", "pool": "MAX", "kernel_size": k, "stride": s, "pad": p})
        (top,) = layer.setup([x.shape], np, None, np.float32)
        y = layer.forward([x])[0]
        dy = np.random.default_rng(4).normal(size=top).astype(np.float32)
        results.append((y.tobytes(), layer.backward([dy])[0].tobytes()))
        assert np.isnan(y).any() and np.isinf(y).any()
    assert results[0] == results[1]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"local_size": 5, "alpha": 0.0001, "beta": 0.75}, (8, 96, 13, 13)),  # CaffeNet's norm1's kind
        ({"local_size": 4, "alpha": 0.5, "beta": 0.75, "k": 2.0}, (2, 6, 2, 3)),  # even: lopsided
        ({"local_size": 5, "alpha": 0.5, "beta": 0.75}, (2, 2, 3, 3)),  # fewer channels than the window
    ],
)
def test_lrn_loops_give_the_array_codes_bytes(monkeypatch, dtype, spec, shape):
    """LRN across channels through the compiled loops (the scale, the data gradient) and
    through the array code (what CuPy runs): the same top and data gradient, byte for byte."""
    from dataprep.train.layers import compiled, threads

    x = np.random.default_rng(7).normal(size=shape).astype(dtype)
    dy = np.random.default_rng(8).normal(size=shape).astype(dtype)
    calls = []
    monkeypatch.setattr(
        compiled, "lrn_backward", lambda *a, f=compiled.lrn_backward: calls.append(1) or f(*a)
    )
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = make_layer({"type": "LRN", **spec})
        layer.setup([shape], np, None, dtype)
        y = layer.forward([x])[0]
        results.append((y.tobytes(), layer.backward([dy])[0].tobytes()))
    assert calls and results[0] == results[1]


def test_loops_compile_where_no_cache_can_be_written(monkeypatch):
    """Where Numba finds no folder to keep compiled code (a read-only install and home),
    it refuses ``cache=True``; the loops are then compiled in the process instead."""
    from numba.core import caching

    from dataprep.train.layers import compiled

    monkeypatch.setattr(caching.CacheImpl, "_locator_classes", [])

    def twice(x):
        return x * 2

    with pytest.raises(RuntimeError, match="no locator"):  # what the fallback is for
        compiled.njit(cache=True)(twice)
    loop = compiled._loop(nogil=True)(twice)
    assert loop(np.arange(3.0)).tolist() == [0.0, 2.0, 4.0]


@pytest.mark.parametrize("shape", [(2, 3, 4, 5), (64, 32, 24, 24)])
def test_relu_backward_loop_gives_the_array_codes_bytes(monkeypatch, shape):
    """ReLU's backward through the compiled loop and the array code: the same bytes, the
    signed zeros of masked negative gradients and the NaN of a masked infinite one too."""
    from dataprep.train.layers import threads

    x = np.random.default_rng(7).normal(size=shape).astype(np.float32)
    dy = np.random.default_rng(8).normal(size=shape).astype(np.float32)
    dy.flat[:3] = [np.inf, -np.inf, np.nan]
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = make_layer({"type": "ReLU"})
        layer.setup([shape], np, None, np.float32)
        layer.forward([x])
        dx = layer.backward([dy])[0]
        results.append(dx.tobytes())
    assert results[0] == results[1]
    assert np.signbit(dx[(x <= 0) & (dy < 0)]).all() and (dx[x > 0] == dy[x > 0]).all()


@pytest.mark.parametrize("method", ["MAX", "AVE"])
def test_pooling_loops_bytes_do_not_depend_on_the_thread_count(monkeypatch, method):
    from dataprep.train.layers import threads

    x = np.maximum(np.random.default_rng(5).normal(size=(24, 16, 48, 48)), 0).astype(np.float32)
    results = []
    for cores in (1, 2, 3):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()
        layer = make_layer({"type": "Pooling", "pool": method, "kernel_size": 3, "stride": 2})
        (top,) = layer.setup([x.shape], np, None, np.float32)
        y = layer.forward([x])[0]
        dy = np.random.default_rng(6).normal(size=top).astype(np.float32)
        results.append((y.tobytes(), layer.backward([dy])[0].tobytes()))
    threads._POOL.clear()
    assert results[0] == results[1] == results[2]


# Convolution strategies: each has its own gradient check and gives the same bytes for any
# number of threads. COLUMNS is lowered so small shapes take the large-image path too.
STRATEGIES = [
    # (spec, shape, COLUMNS, expected strategy)
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (5, 2, 5, 4), 8, "image"),
    ({"num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1}, (3, 2, 7, 6), 4, "image"),
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (10, 2, 5, 4), 64, "batch of 3"),
    ({"num_output": 4, "kernel_size": 2, "stride": 2, "group": 2}, (9, 4, 6, 6), 40, "batch of 5"),
    ({"num_output": 4, "kernel_size": 1}, (3, 6, 3, 4), 2048, "pointwise"),
    ({"num_output": 4, "kernel_size": 1, "group": 2}, (11, 6, 2, 3), 4, "pointwise"),
    # stride 1: the data gradient as a full convolution, grouped and without padding too
    ({"num_output": 4, "kernel_size": 3, "pad": 1, "group": 2}, (4, 4, 5, 5), 64, "batch of 2"),
    ({"num_output": 3, "kernel_size": 3, "pad": 2}, (2, 2, 6, 6), 8, "image"),  # output larger
    # smaller output: col2im, over whole padded rows where the outputs are narrow (16 or less)
    ({"num_output": 3, "kernel_size": 3}, (2, 2, 6, 6), 8, "image"),
    ({"num_output": 2, "kernel_size": 3}, (1, 1, 20, 19), 8, "image"),  # 17 wide: rows of 17
    ({"num_output": 4, "kernel_size": 3, "group": 2}, (5, 2, 7, 5), 24, "batch of 2"),
    ({"num_output": 2, "kernel_size": 3, "pad": 2}, (2, 3, 6, 6), 8, "image"),
    ({"num_output": 2, "kernel_size": 5, "pad": 2}, (3, 3, 6, 5), 64, "batch of 2"),
    # more than twice as many outputs as channels: col2im
    ({"num_output": 5, "kernel_size": 3, "pad": 1}, (2, 2, 5, 5), 8, "image"),
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (1, 1, 17, 18), 8, "image"),  # 18 wide
    # channels-last columns (runs of k C floats) with the top gradient's columns; not with
    # col2im (stride 2, unpadded, more than twice the outputs)
    ({"num_output": 3, "kernel_size": 5, "pad": 2}, (3, 4, 4, 4), 8, "image, channels last"),
    ({"num_output": 3, "kernel_size": 5, "pad": 2}, (6, 4, 3, 3), 27, "batch of 3, channels last"),
    ({"num_output": 3, "kernel_size": 5, "stride": 2, "pad": 2}, (3, 4, 6, 6), 8, "image"),
    ({"num_output": 3, "kernel_size": 5}, (2, 4, 7, 7), 64, "image"),
    ({"num_output": 9, "kernel_size": 5, "pad": 2}, (2, 4, 4, 4), 8, "image"),
]


@pytest.mark.parametrize("spec, shape, columns, strategy", STRATEGIES)
def test_each_convolution_strategy_matches_numerical_gradients(
    xp, monkeypatch, spec, shape, columns, strategy
):
    from dataprep.train.layers import convolution

    monkeypatch.setattr(convolution, "COLUMNS", columns)
    monkeypatch.setattr(convolution, "DIRECT_DEPTH", 0)  # im2col's strategies (direct: below)
    spec = {"type": "Convolution", **spec}
    layer, _ = build(spec, [shape], np)
    assert layer.strategy == strategy
    k, pad = spec["kernel_size"], spec.get("pad", 0)
    same = spec.get("stride", 1) == 1 and k > 1 and 2 * pad >= k - 1  # the output as large as the input
    outputs = spec["num_output"]
    # both gradients from the top gradient's columns: the data gradient as a full convolution
    assert layer.full == (same and outputs <= 2 * shape[1])
    check_gradients(spec, [rng.normal(size=shape)], xp)


def thread_count_bytes(monkeypatch, spec: dict, shape: tuple[int, ...]) -> list[list[bytes]]:
    """A convolution's top, data gradient and parameter gradients with 1, 2 and 3 cores."""
    from dataprep.train.layers import threads

    data = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    results = []
    for cores in (1, 2, 3):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()  # a pool of this many threads
        layer = make_layer({"type": "Convolution", **spec})
        tops = layer.setup([shape], np, np.random.default_rng(0), np.float32)
        layer.params[0] = np.random.default_rng(1).normal(size=layer.params[0].shape).astype(np.float32)
        y = layer.forward([data])[0]
        (dx,) = layer.backward([np.random.default_rng(2).normal(size=tops[0]).astype(np.float32)])
        results.append([y.tobytes(), dx.tobytes()] + [g.tobytes() for g in layer.grads])
    threads._POOL.clear()
    return results


@pytest.mark.parametrize("spec, shape, columns, strategy", STRATEGIES)
def test_convolution_bytes_do_not_depend_on_the_thread_count(monkeypatch, spec, shape, columns, strategy):
    from dataprep.train.layers import convolution

    monkeypatch.setattr(convolution, "COLUMNS", columns)
    monkeypatch.setattr(convolution, "DIRECT_DEPTH", 0)  # im2col's strategies (direct: below)
    results = thread_count_bytes(monkeypatch, spec, shape)
    assert results[0] == results[1] == results[2]


def test_a_first_layers_weight_gradient_in_larger_products_matches(monkeypatch):
    """A first layer (no data gradient) whose columns were not kept makes its weight
    gradient in products of ``m_weights`` images (more columns than the forward's): the
    gradient of the layer with a data gradient to rounding, the same bytes on any core count."""
    from dataprep.train.layers import convolution, threads

    monkeypatch.setattr(convolution, "COLUMNS", 64)
    monkeypatch.setattr(convolution, "WEIGHT_COLUMNS", 192)
    monkeypatch.setattr(convolution, "KEEP_BYTES", 0)  # the columns made again in the backward
    asked = []  # the images per product each backward's parts were made for
    parts = convolution.Convolution._parts
    monkeypatch.setattr(
        convolution.Convolution, "_parts", lambda self, n, per=None: asked.append(per) or parts(self, n, per)
    )
    shape = (12, 3, 8, 8)  # C k k = 27: not direct
    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    runs = []
    for cores, propagate in ((2, True), (1, False), (2, False), (3, False)):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()
        layer = make_layer({"type": "Convolution", "num_output": 4, "kernel_size": 3, "pad": 1})
        (top,) = layer.setup([shape], np, np.random.default_rng(0), np.float32)
        layer.propagate = propagate
        assert (layer.m, layer.m_weights) == (1, 3) and layer.strategy == "image"
        layer.forward([x])
        layer.backward([np.random.default_rng(2).normal(size=top).astype(np.float32)])
        runs.append(layer.grads)
    threads._POOL.clear()
    assert asked == [None, None] + [None, 3] * 3  # forward, backward: with a data gradient, then without
    plain, *first = runs
    for got, want in zip(first[0], plain):
        assert np.allclose(got, want, rtol=0, atol=1e-5 * np.abs(want).max())
    assert len({tuple(g.tobytes() for g in grads) for grads in first}) == 1  # any core count


# stride 1, one group, C k k of 25 or less: direct on the CPU (LeNet's conv1 first)
DIRECT = [
    ({"num_output": 20, "kernel_size": 5}, (6, 1, 28, 28)),  # LeNet's conv1
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (3, 1, 9, 11)),
    ({"num_output": 2, "kernel_size": 3, "pad": 2}, (2, 2, 6, 7)),  # output larger than input
    ({"num_output": 4, "kernel_size": 5, "pad": 1, "bias_term": False}, (5, 1, 8, 6)),
    ({"num_output": 2, "kernel_size": 2}, (3, 6, 5, 5)),  # C k k = 24
]


def direct_layer(spec: dict, shape: tuple[int, ...], dtype, propagate: bool):
    """A convolution set up as ``spec`` with random weights and bias, and its data gradient
    on or off (off: a first layer)."""
    layer = make_layer({"type": "Convolution", **spec})
    layer.setup([shape], np, np.random.default_rng(0), dtype)
    for i, param in enumerate(layer.params):
        layer.params[i] = np.random.default_rng(i + 1).normal(0, 0.5, param.shape).astype(dtype)
    layer.propagate = propagate
    return layer


@pytest.mark.parametrize("spec, shape", DIRECT)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("propagate", [False, True])
def test_direct_convolution_matches_im2cols(monkeypatch, spec, shape, dtype, propagate):
    """The direct strategy (``compiled.convolve_direct``, and ``convolve_weights`` for a first
    layer) against im2col's (the compiled loops off): the same top and gradients to
    rounding; with a data gradient the backward is im2col's."""
    from dataprep.train.layers import compiled, threads

    calls = []
    for name in ("convolve_direct", "convolve_weights"):
        monkeypatch.setattr(
            compiled, name, lambda *a, f=getattr(compiled, name), n=name: calls.append(n) or f(*a)
        )
    x = np.random.default_rng(5).normal(size=shape).astype(dtype)
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = direct_layer(spec, shape, dtype, propagate)
        assert (layer.strategy == "direct") == enabled
        y = layer.forward([x])[0]
        dy = np.random.default_rng(2).normal(size=y.shape).astype(dtype)
        (dx,) = layer.backward([dy])
        assert (dx is None) == (not propagate)
        results.append([y, dx, *layer.grads])
        if enabled:  # inference keeps im2col's (`predict` loads no Numba), to rounding
            before = len(calls)
            assert np.allclose(layer.forward([x], train=False)[0], y, rtol=0, atol=1e-5 * np.abs(y).max())
            assert len(calls) == before
    assert "convolve_direct" in calls and ("convolve_weights" in calls) == (not propagate)
    tolerance = 1e-5 if dtype == np.float32 else 1e-12
    for got, want in zip(*results):
        if want is not None:
            scale = np.abs(want).max()  # sums of thousands of terms: to rounding of the largest
            assert got.dtype == want.dtype and np.allclose(got, want, rtol=0, atol=tolerance * scale)


@pytest.mark.parametrize("spec, shape", DIRECT[1:4])
def test_direct_weight_gradient_matches_numerical_gradients(spec, shape):
    layer = direct_layer(spec, shape, np.float64, propagate=False)
    assert layer.strategy == "direct"
    x = np.random.default_rng(5).normal(size=shape)
    weights = np.random.default_rng(7).normal(size=layer.shapes([shape])[0])

    def loss():
        return float((layer.forward([x])[0] * weights).sum())

    loss()
    assert layer.backward([weights]) == [None]
    check_param_gradients(layer, loss, np, list(layer.grads), 1e-6, "direct convolution")


@pytest.mark.parametrize("spec, shape", DIRECT[:2])
@pytest.mark.parametrize("propagate", [False, True])
def test_direct_bytes_do_not_depend_on_the_thread_count(monkeypatch, spec, shape, propagate):
    from dataprep.train.layers import threads

    x = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    results = []
    for cores in (1, 2, 3):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()
        layer = direct_layer(spec, shape, np.float32, propagate)
        y = layer.forward([x])[0]
        (dx,) = layer.backward([np.random.default_rng(2).normal(size=y.shape).astype(np.float32)])
        results.append(
            [y.tobytes(), None if dx is None else dx.tobytes()] + [g.tobytes() for g in layer.grads]
        )
    threads._POOL.clear()
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    "spec, shape, want",
    [
        ({"num_output": 20, "kernel_size": 5}, (64, 1, 28, 28), True),  # LeNet's conv1
        ({"num_output": 8, "kernel_size": 5, "stride": 2}, (4, 1, 28, 28), False),  # stride 2
        ({"num_output": 32, "kernel_size": 5, "pad": 2}, (4, 3, 32, 32), False),  # C k k = 75
        ({"num_output": 8, "kernel_size": 3, "pad": 1}, (4, 3, 16, 16), False),  # C k k = 27
        ({"num_output": 4, "kernel_size": 3, "group": 2}, (4, 2, 9, 9), False),  # groups
        ({"num_output": 4, "kernel_size": 1}, (4, 3, 9, 9), False),  # pointwise: a product
    ],
)
def test_direct_is_chosen_for_shallow_stride_1_layers_only(monkeypatch, spec, shape, want):
    from dataprep.train.layers import threads

    taken(spec, shape, "direct", "direct", want)
    monkeypatch.setattr(threads, "COMPILED", False)  # the compiled loops off: im2col's
    taken(spec, shape, "direct", "direct", False)


def taken(spec: dict, shape: tuple[int, ...], attr: str, suffix: str, want: bool) -> bool:
    """Whether a convolution of ``shape`` takes the strategy its ``attr`` names (its name then
    ends in ``suffix``), checked against ``want``."""
    layer = make_layer({"type": "Convolution", **spec})
    layer.setup([shape], np, np.random.default_rng(0), np.float32)
    assert getattr(layer, attr) == want and layer.strategy.endswith(suffix) == want
    return want


# k >= 5, each group's outputs in whole vectors: blocked on the CPU (CIFAR-10 quick's
# layers, CaffeNet's conv1 and conv2): three channels (the data gradient's lanes padded),
# widths that split into uneven blocks, 48 and 64 outputs (a block of one vector, two
# blocks of two), no padding, the largest padding (k - 1), a 7 x 7 kernel over 20
# channels, groups, strides (the forward only: their backward is im2col's)
BLOCKED = [
    ({"num_output": 32, "kernel_size": 5, "pad": 2}, (3, 3, 12, 11)),  # CIFAR-10 quick's conv1
    ({"num_output": 32, "kernel_size": 5, "pad": 2}, (5, 16, 7, 9)),
    ({"num_output": 64, "kernel_size": 5, "pad": 2}, (3, 8, 5, 5)),
    ({"num_output": 48, "kernel_size": 5, "bias_term": False}, (2, 6, 9, 10)),
    ({"num_output": 16, "kernel_size": 5, "pad": 4}, (2, 5, 6, 7)),
    ({"num_output": 16, "kernel_size": 7, "pad": 3}, (2, 20, 8, 8)),
    ({"num_output": 32, "kernel_size": 5, "pad": 2, "group": 2}, (3, 6, 7, 9)),  # CaffeNet's conv2's kind
    ({"num_output": 96, "kernel_size": 5, "pad": 1, "group": 3}, (2, 9, 6, 6)),
    ({"num_output": 32, "kernel_size": 5, "stride": 2, "pad": 1}, (2, 3, 13, 12)),
    ({"num_output": 16, "kernel_size": 11, "stride": 4}, (2, 3, 27, 27)),  # CaffeNet's conv1's kind
]


def blocked_run(layer, x, dy) -> list:
    """A layer's top, data gradient (None for a first layer) and parameter gradients."""
    y = layer.forward([x])[0]
    (dx,) = layer.backward([dy])
    return [y, dx, *layer.grads]


@pytest.mark.parametrize("spec, shape", BLOCKED)
@pytest.mark.parametrize("propagate", [True, False])
def test_blocked_convolution_matches_the_float64_layer(monkeypatch, spec, shape, propagate):
    """The blocked strategy (``blocked.py``) against the float64 layer (im2col's, checked
    against numerical gradients above): the top, the data gradient and the parameter
    gradients to float32 rounding; inference keeps im2col's (`predict` loads no Numba)."""
    from dataprep.train.layers import blocked

    calls = []
    for name in ("forward", "backward"):
        monkeypatch.setattr(
            blocked, name, lambda *a, f=getattr(blocked, name), n=name: calls.append(n) or f(*a)
        )
    x = np.random.default_rng(5).normal(size=shape)
    runs = {}
    for dtype in (np.float64, np.float32):
        layer = direct_layer(spec, shape, np.float64, propagate)
        params = [p.astype(dtype) for p in layer.params]
        layer = direct_layer(spec, shape, dtype, propagate)
        layer.params[:] = params
        assert (layer.strategy == "blocked") == (dtype == np.float32)
        dy = np.random.default_rng(2).normal(size=layer.shapes([shape])[0])
        runs[dtype] = blocked_run(layer, x.astype(dtype), dy.astype(dtype))
    assert set(calls) == {"forward", "backward"} - ({"backward"} if spec.get("stride", 1) > 1 else set())
    before = len(calls)
    got, want = runs[np.float32], runs[np.float64]
    assert (got[1] is None) == (not propagate)
    for a, b in zip(got, want):
        if b is not None:
            assert a.dtype == np.float32 and a.shape == b.shape
            assert np.allclose(a, b, rtol=0, atol=2e-6 * np.abs(b).max())
    inferred = layer.forward([x.astype(np.float32)], train=False)[0]
    assert len(calls) == before and np.allclose(inferred, got[0], rtol=0, atol=1e-5 * np.abs(got[0]).max())


def test_blocked_convolution_reads_views_of_other_blobs():
    """A bottom and a top gradient that are views (a Slice's channels, every other channel
    of a larger gradient): the blocked layer gives the float64 layer's values."""
    rng = np.random.default_rng(0)
    x, dy = rng.normal(size=(3, 12, 9, 9)), rng.normal(size=(3, 32, 9, 9))
    spec = {"num_output": 16, "kernel_size": 5, "pad": 2}
    runs = []
    for dtype in (np.float64, np.float32):
        layer = direct_layer(spec, (3, 8, 9, 9), dtype, propagate=True)
        if runs:
            layer.params[:] = [p.astype(dtype) for p in runs[0][0]]
        assert (layer.strategy == "blocked") == (dtype == np.float32)
        view, gradient = x.astype(dtype)[:, 2:10], dy.astype(dtype)[:, ::2]
        assert not view.flags.c_contiguous and not gradient.flags.c_contiguous
        top = layer.forward([view])[0]
        (dx,) = layer.backward([gradient])
        runs.append(([p.copy() for p in layer.params], top, dx, *layer.grads))
    for want, got in zip(runs[0][1:], runs[1][1:]):
        assert np.allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())


@pytest.mark.parametrize("spec, shape", BLOCKED[:2])
@pytest.mark.parametrize("propagate", [False, True])
def test_blocked_bytes_do_not_depend_on_the_thread_count(monkeypatch, spec, shape, propagate):
    from dataprep.train.layers import threads

    x = np.random.default_rng(5).normal(size=(19, *shape[1:])).astype(np.float32)  # three parts
    results = []
    for cores in (1, 2, 3):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()
        layer = direct_layer(spec, x.shape, np.float32, propagate)
        assert layer.strategy == "blocked"
        dy = np.random.default_rng(2).normal(size=layer.shapes([x.shape])[0]).astype(np.float32)
        results.append([None if r is None else r.tobytes() for r in blocked_run(layer, x, dy)])
    threads._POOL.clear()
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    "spec, shape, want",
    [
        ({"num_output": 32, "kernel_size": 5, "pad": 2}, (100, 3, 32, 32), True),  # CIFAR-10 quick's conv1
        ({"num_output": 32, "kernel_size": 5, "pad": 2}, (100, 32, 16, 16), True),  # conv2
        ({"num_output": 64, "kernel_size": 5, "pad": 2}, (100, 32, 8, 8), True),  # conv3
        ({"num_output": 50, "kernel_size": 5}, (64, 20, 12, 12), False),  # LeNet's conv2: 50 outputs
        ({"num_output": 20, "kernel_size": 5}, (64, 1, 28, 28), False),  # LeNet's conv1: direct
        ({"num_output": 32, "kernel_size": 5, "stride": 2, "pad": 2}, (4, 8, 16, 16), True),
        ({"num_output": 32, "kernel_size": 5, "pad": 2, "group": 2}, (4, 8, 16, 16), True),
        ({"num_output": 48, "kernel_size": 5, "pad": 2, "group": 2}, (4, 8, 16, 16), False),  # 24 a group
        ({"num_output": 96, "kernel_size": 11, "stride": 4}, (10, 3, 227, 227), True),  # CaffeNet's conv1
        ({"num_output": 256, "kernel_size": 5, "pad": 2, "group": 2}, (10, 96, 27, 27), True),  # its conv2
        ({"num_output": 32, "kernel_size": 5, "pad": 5}, (4, 8, 16, 16), False),  # pad >= k
        ({"num_output": 256, "kernel_size": 3, "pad": 1}, (10, 64, 13, 13), False),  # 3 x 3
    ],
)
def test_blocked_is_chosen_for_wide_kernels_in_whole_vectors(monkeypatch, spec, shape, want):
    from dataprep.train.layers import threads

    taken(spec, shape, "blocked", "blocked", want)
    layer = make_layer({"type": "Convolution", **spec})
    layer.setup([shape], np, np.random.default_rng(0), np.float64)
    assert not layer.blocked  # float32 only
    monkeypatch.setattr(threads, "COMPILED", False)  # the compiled loops off: im2col's
    taken(spec, shape, "blocked", "blocked", False)


def test_blocked_convolution_without_avx512(tmp_path):
    """Where the CPU has no AVX-512 (16 vector registers: blocks of 2 pixels), the same
    kernels give the float64 layer's values: Numba built for Haswell in a subprocess."""
    code = """
import numpy as np
from dataprep.train.layers import blocked, make_layer, microkernel
assert microkernel.PIXELS == 2, microkernel.PIXELS
rng = np.random.default_rng(0)
x, dy = rng.normal(size=(3, 16, 7, 9)), rng.normal(size=(3, 48, 7, 9))
layers = []
for dtype in (np.float64, np.float32):
    layer = make_layer({"type": "Convolution", "num_output": 48, "kernel_size": 5, "pad": 2})
    layer.setup([x.shape], np, np.random.default_rng(1), dtype)
    layer.params[1][:] = rng.normal(size=48)
    layers.append(layer)
layers[1].params[:] = [p.astype(np.float32) for p in layers[0].params]
assert layers[1].strategy == "blocked"
runs = []
for layer in layers:
    dtype = layer.params[0].dtype
    runs.append([layer.forward([x.astype(dtype)])[0], *layer.backward([dy.astype(dtype)]), *layer.grads])
for want, got in zip(*runs):
    assert np.allclose(got, want, rtol=0, atol=2e-6 * np.abs(want).max())
print("ok")
"""
    haswell = ",".join(
        "+" + f
        for f in "64bit avx avx2 bmi bmi2 cmov cx16 f16c fma fxsr lzcnt mmx movbe popcnt sse sse2 sse3 "
        "sse4.1 sse4.2 ssse3 xsave".split()
    )
    env = {
        **os.environ,
        "NUMBA_CPU_NAME": "haswell",
        "NUMBA_CPU_FEATURES": haswell,
        "NUMBA_CACHE_DIR": str(tmp_path),
    }
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"num_output": 50, "kernel_size": 5}, (6, 20, 12, 12)),  # LeNet's conv2
        ({"num_output": 12, "kernel_size": 5, "pad": 2, "group": 2}, (3, 4, 9, 9)),  # CaffeNet's conv2's kind
        ({"num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1}, (3, 3, 9, 8)),  # stride 2
        ({"num_output": 5, "kernel_size": 11, "stride": 4}, (2, 3, 27, 27)),  # CaffeNet's conv1's kind
    ],
)
def test_col2im_loop_gives_the_array_codes_bytes(monkeypatch, spec, shape):
    """A layer that keeps col2im adds its data gradient back through the compiled loop
    (``compiled.col2im``) or the array code's k * k strided adds (what CuPy runs): the same
    bytes, for the data gradient and every parameter's."""
    from dataprep.train.layers import compiled, threads

    data = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    calls = []
    monkeypatch.setattr(compiled, "col2im", lambda *a, f=compiled.col2im: calls.append(1) or f(*a))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        layer = make_layer({"type": "Convolution", **spec})
        (top,) = layer.setup([shape], np, np.random.default_rng(0), np.float32)
        assert not layer.full
        layer.params[0] = np.random.default_rng(1).normal(size=layer.params[0].shape).astype(np.float32)
        layer.forward([data])
        dx = layer.backward([np.random.default_rng(2).normal(size=top).astype(np.float32)])[0]
        results.append([dx.tobytes()] + [g.tobytes() for g in layer.grads])
    assert calls and results[0] == results[1]


@pytest.mark.parametrize(
    "spec, shape, last",
    [
        ({"num_output": 32, "kernel_size": 5, "pad": 2}, (100, 32, 16, 16), True),  # CIFAR-10 quick conv2
        ({"num_output": 64, "kernel_size": 5, "pad": 2}, (100, 32, 8, 8), True),  # its conv3
        ({"num_output": 50, "kernel_size": 5}, (64, 20, 12, 12), False),  # LeNet's conv2: col2im
        ({"num_output": 32, "kernel_size": 5, "pad": 2}, (100, 3, 32, 32), False),  # three channels
        ({"num_output": 128, "kernel_size": 5, "pad": 2}, (10, 48, 27, 27), False),  # wide maps
        ({"num_output": 256, "kernel_size": 3, "pad": 1}, (10, 64, 13, 13), False),  # 3 x 3
        ({"num_output": 64, "kernel_size": 5, "pad": 2, "group": 2}, (10, 64, 8, 8), False),
    ],
)
def test_channels_last_columns_where_they_pay_and_the_same_values(monkeypatch, spec, shape, last):
    """Channels-last columns are chosen from the shapes (``convolution.channels_last``) and
    give what the channel-major ones give, to float32 rounding (the products are oriented,
    and so blocked by BLAS, another way)."""
    from dataprep.train.layers import convolution

    monkeypatch.setattr(convolution, "BLOCKED_KERNEL", 99)  # im2col's in training too (blocked: below)
    if not taken(spec, shape, "last", "channels last", last):
        return
    small = (4, *shape[1:])
    data = np.random.default_rng(5).normal(size=small).astype(np.float32)
    results = {}
    for chosen in (False, True):
        for propagate in (True, False):  # a first layer computes no data gradient
            monkeypatch.setattr(convolution, "channels_last", lambda *_, chosen=chosen: chosen)
            layer = make_layer({"type": "Convolution", **spec})
            tops = layer.setup([small], np, np.random.default_rng(0), np.float32)
            layer.propagate = propagate
            assert layer.last == chosen
            y = layer.forward([data])[0]
            (dx,) = layer.backward([np.random.default_rng(2).normal(size=tops[0]).astype(np.float32)])
            assert (dx is None) == (not propagate)
            results[chosen, propagate] = [y, *([dx] if propagate else []), *layer.grads]
    for propagate in (True, False):
        for planar, last_ in zip(results[False, propagate], results[True, propagate]):
            assert last_.dtype == np.float32 and last_.shape == planar.shape
            assert np.allclose(last_, planar, rtol=1e-5, atol=1e-5 * np.abs(planar).max())


# Winograd's F(2x2, 3x3), ``winograd.pays`` made true for small shapes: an odd output (a
# half tile), no padding with groups, padding 2 without a bias, more images than a product
WINOGRAD = [
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (3, 2, 5, 7)),
    ({"num_output": 4, "kernel_size": 3, "group": 2}, (2, 4, 6, 6)),
    ({"num_output": 2, "kernel_size": 3, "pad": 2, "bias_term": False}, (2, 3, 4, 5)),
    ({"num_output": 3, "kernel_size": 3, "pad": 1}, (40, 2, 4, 4)),
]


@pytest.fixture(params=["tiled backward", "im2col backward"])
def tiled(monkeypatch, request):
    """Winograd's forward, with its own backward or im2col's (``transformed_backward``), on
    layers shallow enough to be direct otherwise."""
    from dataprep.train.layers import convolution, winograd

    monkeypatch.setattr(convolution, "DIRECT_DEPTH", 0)
    monkeypatch.setattr(winograd, "pays", lambda *_: True)
    monkeypatch.setattr(winograd, "transformed_backward", lambda: request.param == "tiled backward")
    return request.param == "tiled backward"


@pytest.mark.parametrize("spec, shape", WINOGRAD)
def test_winograd_matches_numerical_gradients(xp, tiled, spec, shape):
    spec = {"type": "Convolution", **spec}
    layer = build(spec, [shape], np)[0]
    assert layer.strategy.startswith("winograd") and ("; backward" in layer.strategy) != tiled
    check_gradients(spec, [rng.normal(size=shape)], xp)


@pytest.mark.parametrize("spec, shape", WINOGRAD)
@pytest.mark.parametrize("transformed", [True, False])
@pytest.mark.parametrize("propagate", [True, False])  # False: a first layer, no data gradient
def test_winograd_agrees_with_im2col_in_float32(monkeypatch, spec, shape, transformed, propagate):
    from dataprep.train.layers import convolution, winograd

    monkeypatch.setattr(convolution, "DIRECT_DEPTH", 0)  # im2col's and Winograd's, not direct
    monkeypatch.setattr(winograd, "transformed_backward", lambda: transformed)
    data = np.random.default_rng(5).normal(size=shape).astype(np.float32)
    results = {}
    for chosen in (False, True):
        monkeypatch.setattr(winograd, "pays", lambda *_, chosen=chosen: chosen)
        layer = make_layer({"type": "Convolution", **spec})
        layer.propagate = propagate
        tops = layer.setup([shape], np, np.random.default_rng(0), np.float32)
        assert layer.strategy.startswith("winograd") == chosen
        layer.params[0] = np.random.default_rng(1).normal(size=layer.params[0].shape).astype(np.float32)
        y = layer.forward([data])[0]
        (dx,) = layer.backward([np.random.default_rng(2).normal(size=tops[0]).astype(np.float32)])
        assert (dx is None) != propagate
        results[chosen] = [y, *([dx] if propagate else []), *layer.grads]
    for im2col, tiles in zip(results[False], results[True]):
        assert tiles.dtype == np.float32
        assert np.allclose(tiles, im2col, rtol=1e-5, atol=1e-5 * np.abs(im2col).max())


@pytest.mark.parametrize("spec, shape", WINOGRAD)
def test_winograd_bytes_do_not_depend_on_the_thread_count(monkeypatch, tiled, spec, shape):
    results = thread_count_bytes(monkeypatch, spec, shape)
    assert results[0] == results[1] == results[2]


@pytest.mark.parametrize(
    "shape, outputs, group, strategy",
    [
        ((32, 256, 13, 13), 384, 1, "winograd, batch of 8"),  # CaffeNet's conv3 in training
        ((32, 384, 13, 13), 256, 2, "winograd, batch of 8"),  # its conv5: 192 and 128 per group
        ((10, 64, 56, 56), 64, 1, "winograd, batch of 1"),  # ResNet-50's first 3 x 3, in predict
        ((10, 512, 7, 7), 512, 1, "batch of 3"),  # 7 x 7: a third of the tiles wasted
        ((10, 64, 13, 13), 256, 1, "batch of 5"),  # SqueezeNet's fire9: few channels
        ((1, 256, 13, 13), 384, 1, "image"),  # one image: 49 tiles, too few for a product
    ],
)
def test_winograd_is_chosen_where_it_pays(monkeypatch, shape, outputs, group, strategy):
    from dataprep.train.layers import winograd

    monkeypatch.setattr(winograd, "transformed_backward", lambda: True)
    layer = make_layer(
        {"type": "Convolution", "num_output": outputs, "kernel_size": 3, "pad": 1, "group": group}
    )
    layer.setup([shape], np, np.random.default_rng(0), np.float32)
    assert layer.strategy == strategy


@pytest.mark.parametrize(
    "blas, transformed",
    [
        ([{"internal_api": "openblas", "architecture": "SkylakeX"}], False),  # Intel's AVX-512
        ([{"internal_api": "openblas", "architecture": "SapphireRapids"}], False),
        ([{"internal_api": "openblas", "architecture": "Zen"}], True),  # AMD, dataprep's choice there
        ([{"internal_api": "openblas", "architecture": "Haswell"}], True),
        ([{"internal_api": "mkl"}], True),
    ],
)
def test_winograds_backward_follows_the_blas_kernels(monkeypatch, blas, transformed):
    """Where OpenBLAS runs full-width AVX-512 kernels the backward is im2col's (the strategy
    names it, and the layer still matches im2col's results); elsewhere Winograd's."""
    import threadpoolctl

    from dataprep.train.layers import winograd

    monkeypatch.setattr(threadpoolctl, "threadpool_info", lambda: blas)
    winograd.transformed_backward.cache_clear()
    try:
        assert winograd.transformed_backward() == transformed
        layer = make_layer({"type": "Convolution", "num_output": 384, "kernel_size": 3, "pad": 1})
        layer.setup([(32, 256, 13, 13)], np, np.random.default_rng(0), np.float32)
        assert layer.strategy == "winograd, batch of 8" + ("" if transformed else "; backward batch of 2")
    finally:
        winograd.transformed_backward.cache_clear()


def test_inner_product_bytes_do_not_depend_on_the_thread_count(monkeypatch):
    from dataprep.train.layers import threads
    from dataprep.train.layers.inner_product import _halves, _parts

    data = np.random.default_rng(5).normal(size=(70, 3, 8, 10)).astype(np.float32)
    work = 70 * 240 * 90
    assert len(_halves(np, 90, work)) == 2 and len(_parts(np, 90, work)) == 4  # the parts meet
    results = []
    for cores in (1, 2):
        monkeypatch.setattr(threads, "CORES", cores)
        threads._POOL.clear()
        layer = make_layer({"type": "InnerProduct", "num_output": 90})
        layer.setup([data.shape], np, np.random.default_rng(0), np.float32)
        y = layer.forward([data])[0]
        dy = np.random.default_rng(2).normal(size=y.shape).astype(np.float32)
        (dx,) = layer.backward([dy])
        w, flat = layer.params[0], data.reshape(70, -1)
        assert np.allclose(y, flat @ w.T + layer.params[1], atol=1e-4)
        assert np.allclose(dx.reshape(70, -1), dy @ w, atol=1e-4)
        assert np.allclose(layer.grads[0], dy.T @ flat, atol=1e-3)
        results.append([y.tobytes(), dx.tobytes()] + [g.tobytes() for g in layer.grads])
    threads._POOL.clear()
    assert results[0] == results[1]


def test_small_images_are_batched_and_large_ones_go_image_by_image():
    from dataprep.train.layers.convolution import images_per_product

    assert images_per_product(64, 96, 192_000) == 16  # LeNet's conv2: 4 equal products
    assert images_per_product(64, 672, 67_200) == 4  # LeNet's conv1
    assert images_per_product(50, 2304, 230_400) == 1  # the tutorial's conv1: enough columns
    assert images_per_product(32, 837, 8_035_200) == 1  # CaffeNet's conv2: too many bytes
    assert images_per_product(7, 10, 100) == 4  # a whole batch as two products: two cores
    assert images_per_product(32, 49, 19_600) == 16  # ResNet-50's 7 x 7 maps at batch 32
    assert images_per_product(1, 10, 100) == 1  # never more images than the batch
    assert images_per_product(13, 700, 100) == 3  # 5 groups of 3 made 6: two cores share them evenly
    assert images_per_product(64, 96, 192_000, cpu=False) == 64  # a GPU takes the batch


def test_convolution_parts_share_the_batch_evenly():
    """Parts of about CHUNK images, an even number of about equal size: a batch of 10 in
    parts of 8 and 2 left one core idle for most of a layer."""
    sizes = {}
    for name, shape in (("image", (10, 3, 60, 60)), ("batched", (10, 8, 7, 7)), ("many", (100, 3, 32, 32))):
        layer = make_layer({"name": name, "type": "Convolution", "num_output": 4, "kernel_size": 3, "pad": 1})
        layer.setup([shape], np, np.random.default_rng(0), np.float32)
        parts, m = layer._parts(shape[0])
        assert all(p.start % m == 0 for p in parts) and parts[-1].stop == shape[0]
        sizes[name] = [p.stop - p.start for p in parts]
    assert sizes == {"image": [5, 5], "batched": [5, 5], "many": [8] * 12 + [4]}


def test_lrn_within_channel_is_caffes_composition(xp):
    """Caffe's WithinChannelForward, from its definition: x * (1 + alpha * P) ^ -beta with P
    the AVE pooling of x^2 (size x size, stride 1, pad (size - 1) / 2, the divisor the
    window's extent clipped to the padded map)."""
    size, alpha, beta = 3, 0.5, 0.75
    x = rng.normal(size=(1, 2, 4, 5))
    layer, _ = build(
        {"type": "LRN", "local_size": size, "alpha": alpha, "beta": beta, "norm_region": "WITHIN_CHANNEL"},
        [x.shape],
        xp,
    )
    got = host(layer.forward([xp.asarray(x, dtype=xp.float32)])[0])
    pad = (size - 1) // 2
    want = np.empty_like(x)
    h, w = x.shape[2:]
    for c in range(2):
        for i in range(h):
            for j in range(w):
                top, left = i - pad, j - pad
                bottom, right = min(top + size, h + pad), min(left + size, w + pad)
                area = (bottom - top) * (right - left)
                window = x[0, c, max(top, 0) : min(bottom, h), max(left, 0) : min(right, w)]
                want[0, c, i, j] = x[0, c, i, j] * (1 + alpha * (window**2).sum() / area) ** -beta
    assert np.allclose(got, want, rtol=1e-5, atol=1e-6)


def test_contrastive_loss_is_caffes_and_its_gradient_checks(xp):
    """Caffe's ContrastiveLoss from its definition: similar pairs pull by d^2, dissimilar
    pairs push to the margin (legacy_version: by d^2 against the margin)."""
    a, b = rng.normal(size=(6, 3)) * 0.4, rng.normal(size=(6, 3)) * 0.4
    y = np.array([1, 0, 1, 0, 0, 1], np.float64)
    d = np.sqrt(((a - b) ** 2).sum(axis=1))
    for legacy, margin in ((False, 1.0), (True, 0.5)):
        spec = {
            "type": "ContrastiveLoss",
            "margin": margin,
            "legacy_version": legacy,
            "bottom": ["a", "b", "y"],
        }
        layer, _ = build(spec, [a.shape, b.shape, y.shape], xp)
        got = float(host(layer.forward([xp.asarray(a), xp.asarray(b), xp.asarray(y)])[0]))
        far = np.maximum(margin - d**2, 0) if legacy else np.maximum(margin - d, 0) ** 2
        assert got == pytest.approx((y * d**2 + (1 - y) * far).sum() / 12, rel=1e-6)
        if legacy:  # exact: the numerical gradient
            check_gradients(spec, [a, b], xp, labels=y)
            continue
        # Caffe's backward keeps its 1e-4 guard: -alpha * mdist / (dist + 1e-4) * (a - b)
        da = host(layer.backward([xp.asarray(1.0)])[0])
        pull = -np.maximum(margin - d, 0) / (d + 1e-4)
        want = (y + (1 - y) * pull)[:, None] * (a - b) / 6
        assert np.allclose(da, want, rtol=1e-5, atol=1e-7)
