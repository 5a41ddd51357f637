"""The model zoo's layers (issue 22): forward results on small cases whose expected values
follow Caffe's source (``src/caffe/layers/*.cpp``), and every backward pass against
numerical gradients (float64), for any number of bottoms and tops."""

from __future__ import annotations

import numpy as np
import pytest
from test_train_layers import build, check_param_gradients, host, numeric_grad, xp  # noqa: F401  (xp: the NumPy/CuPy fixture)

from dataprep.errors import UsageError

rng = np.random.default_rng(11)


def run(spec: dict, inputs: list[np.ndarray], xp, tops: int = 1, seed: int = 0) -> list[np.ndarray]:
    layer, _ = build(
        {**spec, "name": spec.get("name", "l"), "top": [f"t{k}" for k in range(tops)]},
        [x.shape for x in inputs],
        xp,
        seed,
    )
    return [host(y) for y in layer.forward([xp.asarray(x) for x in inputs], False)]


def check(spec: dict, inputs: list[np.ndarray], xp, tops: int = 1, grads: tuple[int, ...] | None = None):
    """Backward of sum_k(top_k * R_k) against numerical gradients of the inputs ``grads``
    (default all) and of every parameter."""
    from dataprep.train.layers import make_layer

    full = {**spec, "name": "l", "top": [f"t{k}" for k in range(tops)]}
    layer = make_layer(full)
    shapes = layer.setup([x.shape for x in inputs], xp, np.random.default_rng(0), np.float64)
    for i, param in enumerate(layer.params):
        layer.params[i] = xp.asarray(np.random.default_rng(i + 1).normal(0.3, 0.5, param.shape))
    values = [np.array(x, dtype=np.float64) for x in inputs]
    weights = [np.random.default_rng(7 + k).normal(size=s) for k, s in enumerate(shapes)]

    def loss():
        outs = layer.forward([xp.asarray(v) for v in values], True)
        return float(sum((host(y) * w).sum() for y, w in zip(outs, weights)))

    loss()
    diffs = layer.backward([xp.asarray(w) for w in weights])
    for k in grads if grads is not None else range(len(inputs)):
        want = numeric_grad(loss, values[k])
        got = host(diffs[k])
        assert np.allclose(got, want, atol=1e-6, rtol=1e-4), (spec["type"], k, np.abs(got - want).max())
    check_param_gradients(
        layer, loss, xp, [None if g is None else host(g) for g in layer.grads], what=spec["type"]
    )


A, B, C = rng.normal(size=(2, 3, 4, 5)), rng.normal(size=(2, 2, 4, 5)), rng.normal(size=(2, 3, 4, 5))


@pytest.mark.parametrize(
    "spec, inputs, tops, grads",
    [
        ({"type": "Concat"}, [A, B], 1, None),
        ({"type": "Concat", "axis": 3}, [A, rng.normal(size=(2, 3, 4, 2))], 1, None),
        ({"type": "Slice", "slice_point": [1, 3]}, [rng.normal(size=(2, 5, 3, 2))], 3, None),
        ({"type": "Slice", "axis": 2}, [rng.normal(size=(2, 3, 4, 2))], 2, None),
        ({"type": "Eltwise", "coeff": [0.5, -2.0]}, [A, C], 1, None),
        ({"type": "Eltwise", "operation": "PROD"}, [A, C, rng.normal(size=A.shape)], 1, None),
        ({"type": "Eltwise", "operation": "MAX"}, [A, C, rng.normal(size=A.shape)], 1, None),
        ({"type": "Reshape", "shape": {"dim": [0, -1, 5]}}, [A], 1, None),
        ({"type": "Crop", "offset": [1, 2]}, [A, rng.normal(size=(2, 1, 2, 3))], 1, (0,)),
        ({"type": "Crop", "axis": 1, "offset": [1]}, [A, rng.normal(size=(2, 2, 3, 4))], 1, (0,)),
        (
            {"type": "Deconvolution", "num_output": 4, "kernel_size": 3, "stride": 2, "pad": 1},
            [A[:, :, :3, :3]],
            1,
            None,
        ),
        (
            {"type": "Deconvolution", "num_output": 4, "kernel_size": 2, "group": 2, "bias_term": False},
            [rng.normal(size=(1, 2, 3, 2))],
            1,
            None,
        ),
        ({"type": "PReLU"}, [A], 1, None),
        ({"type": "PReLU", "channel_shared": True}, [A], 1, None),
        ({"type": "ELU", "alpha": 0.7}, [A], 1, None),
        ({"type": "ReLU", "negative_slope": 0.1}, [A], 1, None),
        ({"type": "AbsVal"}, [A], 1, None),
        ({"type": "Exp", "base": 2.0, "scale": 0.5, "shift": 0.1}, [A], 1, None),
        ({"type": "Log", "scale": 0.5, "shift": 3.0}, [A], 1, None),
        ({"type": "Power", "power": 2.0, "scale": 0.5, "shift": 3.0}, [A], 1, None),
        ({"type": "Power", "power": 0.5, "scale": 0.2, "shift": 1.0}, [A], 1, None),
        ({"type": "Bias"}, [A], 1, None),
        ({"type": "Bias", "axis": 1, "num_axes": 2}, [A, rng.normal(size=(3, 4))], 1, None),
        ({"type": "Pooling", "pool": "MAX", "global_pooling": True}, [A], 1, None),
        ({"type": "Pooling", "pool": "AVE", "global_pooling": True}, [A], 1, None),
        ({"type": "Softmax", "axis": 2}, [A], 1, None),
        ({"type": "InnerProduct", "num_output": 3, "axis": 2}, [A], 1, None),
        ({"type": "Flatten", "axis": 1, "end_axis": 2}, [A], 1, None),
    ],
    ids=lambda v: v["type"] if isinstance(v, dict) else None,
)
def test_backward_matches_numerical_gradients(xp, spec, inputs, tops, grads):
    check(spec, inputs, xp, tops, grads)


def test_sigmoid_cross_entropy_is_caffes_stable_sum_over_the_batch(xp):
    x, t = rng.normal(0, 3, size=(4, 3)), rng.integers(0, 2, size=(4, 3)).astype(float)
    (loss,) = run({"type": "SigmoidCrossEntropyLoss"}, [x, t], xp)
    p = 1 / (1 + np.exp(-x))
    assert np.isclose(loss, -(t * np.log(p) + (1 - t) * np.log(1 - p)).sum() / 4)
    check({"type": "SigmoidCrossEntropyLoss"}, [x, t], xp, grads=(0,))


@pytest.mark.parametrize("axis", [0, 1, 2, 3])
def test_concat_and_slice_along_each_axis_are_inverse(xp, axis):
    x = rng.normal(size=(4, 6, 4, 6))
    parts = run({"type": "Slice", "axis": axis, "slice_point": [1, 3]}, [x], xp, tops=3)
    assert [p.shape[axis] for p in parts] == [1, 2, x.shape[axis] - 3]
    assert np.array_equal(parts[1], np.take(x, [1, 2], axis=axis))
    (joined,) = run({"type": "Concat", "axis": axis}, parts, xp)
    assert np.array_equal(joined, x)


def test_eltwise_with_coefficients_and_caffes_max_mask(xp):
    a, b = rng.normal(size=(2, 3)), rng.normal(size=(2, 3))
    (y,) = run({"type": "Eltwise", "coeff": [1, -1]}, [a, b], xp)
    assert np.allclose(y, a - b)
    (y,) = run({"type": "Eltwise", "operation": "PROD"}, [a, b], xp)
    assert np.allclose(y, a * b)
    from dataprep.train.layers import make_layer

    layer = make_layer({"name": "m", "type": "Eltwise", "operation": "MAX"})
    layer.setup([(1, 2)] * 3, xp)
    tied = [np.array([[1.0, 2.0]]), np.array([[1.0, 0.0]]), np.array([[1.0, 2.0]])]
    assert np.array_equal(host(layer.forward([xp.asarray(t) for t in tied])[0]), [[1.0, 2.0]])
    diffs = [host(d) for d in layer.backward([xp.asarray(np.array([[5.0, 7.0]]))])]
    # Caffe: of the first two, the second on a tie (a > b picks a); later ones only when greater
    assert [d.tolist() for d in diffs] == [[[0.0, 7.0]], [[5.0, 0.0]], [[0.0, 0.0]]]


def caffe_deconvolution(x, w, b, stride, pad, group):
    """Caffe's deconvolution as its definition: every input pixel adds its weighted k x k
    kernel into the output at stride * position - pad."""
    n, c, h, wd = x.shape
    per_in, per_out = c // group, w.shape[1]
    k = w.shape[2]
    oh, ow = stride * (h - 1) + k - 2 * pad, stride * (wd - 1) + k - 2 * pad
    y = np.zeros((n, per_out * group, oh, ow))
    for i in range(n):
        for ci in range(c):
            g = ci // per_in
            for yy in range(h):
                for xx in range(wd):
                    for o in range(per_out):
                        for ky in range(k):
                            for kx in range(k):
                                r, s = yy * stride - pad + ky, xx * stride - pad + kx
                                if 0 <= r < oh and 0 <= s < ow:
                                    y[i, g * per_out + o, r, s] += x[i, ci, yy, xx] * w[ci, o, ky, kx]
    return y + b.reshape(1, -1, 1, 1)


@pytest.mark.parametrize("stride, pad, group", [(1, 0, 1), (2, 1, 1), (3, 2, 2), (2, 0, 2)])
def test_deconvolution_is_caffes_convolution_transpose(xp, stride, pad, group):
    from dataprep.train.layers import make_layer

    x = rng.normal(size=(2, 4, 3, 4))
    spec = {
        "name": "d",
        "type": "Deconvolution",
        "num_output": 6,
        "kernel_size": 3,
        "stride": stride,
        "pad": pad,
        "group": group,
    }
    layer = make_layer(spec)
    (shape,) = layer.setup([x.shape], xp, np.random.default_rng(0), np.float64)
    w, b = rng.normal(size=(4, 6 // group, 3, 3)), rng.normal(size=6)
    layer.params = [xp.asarray(w), xp.asarray(b)]
    (y,) = layer.forward([xp.asarray(x)])
    assert shape == y.shape == (2, 6, stride * 2 + 3 - 2 * pad, stride * 3 + 3 - 2 * pad)
    assert np.allclose(host(y), caffe_deconvolution(x, w, b, stride, pad, group))
    # and the adjoint of Caffe's convolution with the same weights: <deconv x, z> = <x, conv z>
    conv = make_layer({**spec, "type": "Convolution", "num_output": 4, "bias_term": False})
    conv.setup([y.shape], xp, np.random.default_rng(0), np.float64)
    conv.params = [xp.asarray(w)]
    z = rng.normal(size=y.shape)
    (cz,) = conv.forward([xp.asarray(z)])
    assert np.isclose(((host(y) - b.reshape(1, -1, 1, 1)) * z).sum(), (x * host(cz)).sum())


def test_crop_offsets_prelu_reshape_argmax_and_bias(xp):
    x = rng.normal(size=(2, 3, 6, 7))
    (y,) = run({"type": "Crop", "offset": [1, 2]}, [x, np.zeros((1, 1, 3, 4))], xp)
    assert np.array_equal(y, x[:, :, 1:4, 2:6])
    (y,) = run({"type": "Crop", "offset": [2]}, [x, np.zeros((1, 1, 3, 4))], xp)
    assert np.array_equal(y, x[:, :, 2:5, 2:6])
    from dataprep.train.layers import make_layer

    for shared, slopes in ((False, np.array([0.1, 0.2, 0.3])), (True, np.array([0.25]))):
        layer = make_layer({"name": "p", "type": "PReLU", "channel_shared": shared})
        layer.setup([x.shape], xp)
        assert layer.params[0].shape == slopes.shape and np.allclose(host(layer.params[0]), 0.25)
        layer.params[0] = xp.asarray(slopes)
        want = np.where(x > 0, x, x * slopes.reshape(1, -1, 1, 1) if not shared else x * slopes[0])
        assert np.allclose(host(layer.forward([xp.asarray(x)])[0]), want)
    (y,) = run({"type": "Reshape", "shape": {"dim": [-1]}, "axis": 1, "num_axes": 2}, [x], xp)
    assert y.shape == (2, 18, 7) and np.array_equal(y, x.reshape(2, 18, 7))
    (y,) = run({"type": "Reshape", "shape": {"dim": [0, 0, 2, -1]}}, [x], xp)  # 0 copies, -1 infers
    assert y.shape == (2, 3, 2, 21)
    scores = np.array([[0.1, 0.7, 0.2, 0.9], [0.5, 0.1, 0.3, 0.2]])
    (top,) = run({"type": "ArgMax", "top_k": 2, "out_max_val": True}, [scores], xp)
    assert top.tolist() == [[[3, 1], [0.9, 0.7]], [[0, 2], [0.5, 0.3]]]
    (top,) = run({"type": "ArgMax", "axis": 1}, [scores], xp)
    assert top.ravel().tolist() == [3, 0]
    (y,) = run({"type": "Bias"}, [x], xp)  # learned, its filler 0 replaced by test values
    assert y.shape == x.shape


def test_global_pooling_takes_the_whole_map(xp):
    x = rng.normal(size=(2, 3, 5, 4))
    (mx,) = run({"type": "Pooling", "pool": "MAX", "global_pooling": True}, [x], xp)
    (av,) = run({"type": "Pooling", "pool": "AVE", "global_pooling": True}, [x], xp)
    assert np.allclose(mx[:, :, 0, 0], x.max(axis=(2, 3))) and np.allclose(
        av[:, :, 0, 0], x.mean(axis=(2, 3))
    )
    with pytest.raises(UsageError, match="global_pooling takes no kernel_size"):
        run({"type": "Pooling", "global_pooling": True, "kernel_size": 2}, [x], xp)


def test_bad_routing_is_a_clear_error():
    from dataprep.train.layers import make_layer

    with pytest.raises(UsageError, match="differ off axis 1"):
        make_layer({"name": "c", "type": "Concat"}).setup([(1, 2, 3, 3), (1, 2, 4, 3)])
    with pytest.raises(UsageError, match="does not split into 2 tops"):
        make_layer({"name": "s", "type": "Slice", "top": ["a", "b"]}).setup([(1, 3, 2, 2)])
    with pytest.raises(UsageError, match="beyond"):
        make_layer({"name": "c", "type": "Crop", "offset": [3]}).setup([(1, 1, 4, 4), (1, 1, 2, 2)])


RECT = {"kernel_h": 3, "kernel_w": 2, "stride_h": 2, "stride_w": 1, "pad_h": 1, "pad_w": 0}


@pytest.mark.parametrize(
    "spec, shape",
    [
        ({"type": "Convolution", "num_output": 4, "group": 2, **RECT}, (2, 4, 7, 5)),
        ({"type": "Pooling", "pool": "MAX", **RECT}, (2, 3, 7, 5)),
        ({"type": "Pooling", "pool": "AVE", **RECT}, (2, 3, 8, 5)),
    ],
    ids=["conv", "max", "ave"],
)
def test_rectangular_windows_match_numerical_gradients(xp, spec, shape):
    check(spec, [rng.normal(size=shape)], xp)


def caffe_window_loop(x, method, k, s, p, weights=None):
    """Caffe's convolution (``weights``) or pooling as its definition, per axis: a window
    from ``o * s - p``; pooling's size rounds up and its average divides by the area
    inside the padded input."""
    from dataprep.train.layers import conv_out, pool_out

    n, c, h, w = x.shape
    size = conv_out if weights is not None else pool_out
    oh, ow = size(h, k[0], s[0], p[0]), size(w, k[1], s[1], p[1])
    out = np.zeros((n, weights.shape[0] if weights is not None else c, oh, ow))
    for i in range(oh):
        for j in range(ow):
            y0, x0 = i * s[0] - p[0], j * s[1] - p[1]
            y1, x1 = min(y0 + k[0], h + p[0]), min(x0 + k[1], w + p[1])
            area = (y1 - y0) * (x1 - x0)
            win = x[:, :, max(y0, 0) : min(y1, h), max(x0, 0) : min(x1, w)]
            if weights is not None:  # zero padding: the window's cells outside the input are 0
                full = np.zeros((n, c, k[0], k[1]))
                full[:, :, max(y0, 0) - y0 : min(y1, h) - y0, max(x0, 0) - x0 : min(x1, w) - x0] = win
                out[:, :, i, j] = np.einsum("nchw,ochw->no", full, weights)
            elif method == "MAX":
                out[:, :, i, j] = win.max(axis=(2, 3))
            else:
                out[:, :, i, j] = win.sum(axis=(2, 3)) / area
    return out


def test_rectangular_windows_follow_caffes_definitions(xp):
    from dataprep.train.layers import make_layer

    x = rng.normal(size=(2, 3, 9, 6))
    k, s, p = (3, 2), (2, 1), (1, 0)
    for method in ("MAX", "AVE"):
        (y,) = run({"type": "Pooling", "pool": method, **RECT}, [x], xp)
        assert np.allclose(y, caffe_window_loop(x, method, k, s, p))
    conv = make_layer({"name": "c", "type": "Convolution", "num_output": 4, "bias_term": False, **RECT})
    conv.setup([x.shape], xp, np.random.default_rng(0), np.float64)
    weights = rng.normal(size=(4, 3, 3, 2))
    conv.params = [xp.asarray(weights)]
    assert np.allclose(host(conv.forward([xp.asarray(x)])[0]), caffe_window_loop(x, "conv", k, s, p, weights))


def test_rectangular_windows_read_from_prototxt_and_export_to_onnx(tmp_path):
    import onnxruntime as ort

    from dataprep.train.export import export, load_deploy

    (tmp_path / "rect.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 1 dim: 3 dim: 12 dim: 9 } } }\n"
        'layer { name: "conv" type: "Convolution" bottom: "data" top: "conv"\n'
        "  convolution_param { num_output: 4 kernel_h: 1 kernel_w: 3 pad_h: 0 pad_w: 1 } }\n"
        'layer { name: "pool" type: "Pooling" bottom: "conv" top: "pool"\n'
        "  pooling_param { pool: AVE kernel_h: 3 kernel_w: 2 stride_h: 2 stride_w: 2 pad_h: 1 } }\n"
    )
    (out,) = export(tmp_path / "rect.prototxt", tmp_path / "rect.onnx", random_init=1)
    deploy = load_deploy(tmp_path / "rect.prototxt", random_init=1)
    assert deploy.net.shapes["conv"] == (1, 4, 12, 9) and deploy.net.shapes["pool"] == (1, 4, 7, 5)
    x = rng.normal(size=(2, 3, 12, 9)).astype(np.float32)
    deploy.net.forward({"data": x}, train=False)
    (got,) = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"]).run(None, {"data": x})
    assert np.allclose(got, deploy.net.blobs["pool"], atol=1e-5)
