"""The net (blob wiring, phases, backward through the whole graph) and Caffe's solvers."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from dataprep.errors import UsageError
from dataprep.train.layers import make_layer
from dataprep.train.net import Net
from dataprep.train.solver import Solver, SolverConfig, learning_rate

# The tutorial's RegressionExample (docs/formats.md), as the shipped recipe has it
TUTORIAL = yaml.safe_load((Path(__file__).parents[1] / "recipes/noise_regression.yaml").read_text())["net"]


def test_the_tutorial_net_wires_up_with_caffes_shapes():
    net = Net(TUTORIAL, {"data": (2, 1, 100, 100), "freq": (2, 2)}, target="freq")
    assert net.shapes["pool1"] == (2, 96, 24, 24) and net.shapes["pool2"] == (2, 96, 13, 13)
    assert net.shapes["pool3"] == (2, 128, 6, 6) and net.shapes["pred"] == (2, 2)
    assert net.layers[9].params[0].shape == (192, 128 * 6 * 6)
    assert len(net.params()) == 10 and all(
        p.dtype == np.float32 for layer in net.layers for p in layer.params
    )
    rng = np.random.default_rng(0)
    batch = {
        "data": rng.normal(0, 50, (2, 1, 100, 100)).astype(np.float32),
        "freq": rng.random((2, 2)).astype(np.float32),
    }
    outputs = net.forward(batch)
    pred = net.blobs["pred"]
    assert outputs["loss"] == pytest.approx(((pred - batch["freq"]) ** 2).sum() / 4, rel=1e-5)
    errors = np.abs(pred - batch["freq"]).mean(axis=0)
    assert net.absolute_errors() == pytest.approx({"loss_mae0": errors[0], "loss_mae1": errors[1]})
    net.backward()
    assert all(
        layer.grads[i] is not None and layer.grads[i].shape == layer.params[i].shape
        for layer, i in net.params()
    )


def small_net(dtype=np.float64):
    specs = [
        {
            "name": "conv",
            "type": "Convolution",
            "num_output": 3,
            "kernel_size": 3,
            "pad": 1,
            "weight_filler": {"type": "gaussian", "std": 0.3},
            "bias_filler": {"type": "constant", "value": 0.1},
        },
        {"name": "relu", "type": "ReLU"},
        {"name": "pool", "type": "Pooling", "kernel_size": 2, "stride": 2},
        {
            "name": "fc",
            "type": "InnerProduct",
            "num_output": 2,
            "weight_filler": {"type": "gaussian", "std": 0.3},
        },
        {"name": "loss", "type": "EuclideanLoss"},
        {"name": "acc", "type": "Accuracy", "phase": "TEST", "bottom": ["fc", "cls"]},
    ]
    inputs = {"data": (4, 2, 6, 6), "label": (4, 2), "cls": (4,)}
    return Net(specs, inputs, xp=np, rng=np.random.default_rng(1), dtype=dtype)


def test_backward_through_the_graph_matches_numerical_gradients():
    net = small_net()
    rng = np.random.default_rng(2)
    batch = {"data": rng.normal(size=(4, 2, 6, 6)), "label": rng.normal(size=(4, 2)), "cls": np.zeros(4)}
    net.forward(batch)
    net.backward()
    for layer, i in net.params():
        w = layer.params[i]
        analytic = layer.grads[i].copy()
        for index in list(np.ndindex(w.shape))[:: max(1, w.size // 6)]:
            old = w[index]
            w[index] = old + 1e-6
            plus = net.loss(net.forward(batch))
            w[index] = old - 1e-6
            minus = net.loss(net.forward(batch))
            w[index] = old
            assert analytic[index] == pytest.approx((plus - minus) / 2e-6, rel=1e-4, abs=1e-7), layer.name


def test_inference_relu_writes_over_its_bottom_but_never_over_an_input():
    """An in-place ReLU (top = bottom) reuses its bottom's memory in inference, as Caffe's;
    in training it keeps a new blob, and a ReLU on an input blob never writes over the
    caller's array."""
    specs = [
        {"name": "relu0", "type": "ReLU", "bottom": "data", "top": "data"},
        {"name": "ip", "type": "InnerProduct", "num_output": 3, "bottom": "data", "top": "ip"},
        {"name": "relu1", "type": "ReLU", "bottom": "ip", "top": "ip"},
    ]
    net = Net(specs, {"data": (2, 4)}, xp=np, rng=np.random.default_rng(1))
    data = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    before = data.copy()
    ip = net.layers[1]
    ip.params[0][...] = np.random.default_rng(3).normal(size=ip.params[0].shape)
    net.forward({"data": data}, train=False)
    want = np.maximum(np.maximum(before, 0) @ ip.params[0].T + ip.params[1], 0)
    assert np.array_equal(data, before)  # the caller's input untouched
    assert np.allclose(net.blobs["ip"], want)
    assert [layer.in_place for layer in net.layers] == [False, False, True]
    ip_forward = ip.forward
    outputs = []
    ip.forward = lambda bottoms, train=True: outputs.append(ip_forward(bottoms, train)[0]) or outputs[-1:]
    net.forward({"data": data}, train=False)
    assert net.blobs["ip"] is outputs[-1]  # written over in place
    net.forward({"data": data}, train=True)
    assert net.blobs["ip"] is not outputs[-1] and outputs[-1].min() < 0  # training keeps the bottom


def test_phases_and_defaults():
    net = small_net()
    assert [n.bottoms for n in net.nodes][:2] == [["data"], ["conv"]]  # the previous top by default
    assert net.nodes[4].bottoms == ["fc", "label"]  # a loss also takes the target
    batch = {"data": np.ones((4, 2, 6, 6)), "label": np.zeros((4, 2)), "cls": np.array([0, 1, 1, 0])}
    assert set(net.forward(batch, train=True)) == {"loss"}
    outputs = net.forward(batch, train=False)
    assert set(outputs) == {"loss", "acc"}
    assert outputs["acc"] == (net.blobs["fc"].argmax(axis=1) == batch["cls"]).mean()


@pytest.mark.parametrize(
    "specs, message",
    [
        ([{"name": "a", "type": "ReLU", "bottom": "nope"}], r"net\[0\] \(a\): bottom 'nope' is no input"),
        (
            [
                {"name": "a", "type": "InnerProduct", "num_output": 2},
                {"name": "a", "type": "InnerProduct", "num_output": 2},
            ],
            "layer name 'a' is used twice by layers with parameters",  # weights go by layer name
        ),
        ([{"name": "a", "type": "ReLU", "phase": "VAL"}], "phase 'VAL': choose TRAIN or TEST"),
    ],
)
def test_wiring_errors_name_the_layer(specs, message):
    with pytest.raises(UsageError, match=message):
        Net(specs, {"data": (1, 2)})


def test_learning_rate_policies_are_caffes():
    def lr(**kw):
        return lambda it: learning_rate(SolverConfig(base_lr=0.01, **kw), it)

    assert lr(lr_policy="step", gamma=0.707, stepsize=2000)(3999) == pytest.approx(0.00707)
    assert lr(lr_policy="multistep", gamma=0.1, stepvalue=(10, 20))(20) == pytest.approx(0.0001)
    assert lr(lr_policy="inv", gamma=1e-4, power=0.75)(100) == pytest.approx(0.01 * 1.01**-0.75)
    assert lr(lr_policy="poly", power=2, max_iter=100)(50) == pytest.approx(0.0025)
    assert lr(lr_policy="exp", gamma=0.5)(3) == pytest.approx(0.00125)
    with pytest.raises(UsageError, match="solver.lr_policy 'cosine'"):
        SolverConfig(lr_policy="cosine")


def one_param(value=1.0, lr_mult=1.0, decay_mult=1.0):
    layer = make_layer({"name": "s", "type": "ReLU"})
    layer.params, layer.grads = [np.array([value])], [np.array([0.5])]
    layer.lr_mult, layer.decay_mult = [lr_mult], [decay_mult]
    return layer


@pytest.mark.parametrize("kind", ["SGD", "Nesterov", "Adam"])
def test_update_rules_are_caffes(kind):
    cfg = SolverConfig(type=kind, base_lr=0.1, momentum=0.9, weight_decay=0.01)
    layer = one_param()
    solver = Solver(cfg)
    w, v, m2 = 1.0, 0.0, 0.0
    for t in range(1, 4):
        layer.grads = [np.array([0.5])]
        solver.step([(layer, 0)])
        g = 0.5 + 0.01 * w
        if kind == "SGD":
            v = 0.9 * v + 0.1 * g
            w -= v
        elif kind == "Nesterov":
            previous, v = v, 0.9 * v + 0.1 * g
            w -= 1.9 * v - 0.9 * previous
        else:
            v = 0.9 * v + 0.1 * g
            m2 = 0.999 * m2 + 0.001 * g * g
            w -= 0.1 * np.sqrt(1 - 0.999**t) / (1 - 0.9**t) * v / (np.sqrt(m2) + 1e-8)
        assert layer.params[0][0] == pytest.approx(w, rel=1e-12)


def test_multipliers_scale_rate_and_decay():
    frozen, undecayed = one_param(lr_mult=0), one_param(decay_mult=0)
    Solver(SolverConfig(type="SGD", base_lr=0.1, momentum=0.0, weight_decay=1.0)).step(
        [(frozen, 0), (undecayed, 0)]
    )
    assert frozen.params[0][0] == 1.0 and undecayed.params[0][0] == pytest.approx(1.0 - 0.05)


def test_a_small_net_learns():
    net = small_net(np.float32)
    solver = Solver(SolverConfig(type="Nesterov", base_lr=0.05, momentum=0.9))
    rng = np.random.default_rng(5)
    data = rng.normal(size=(4, 2, 6, 6)).astype(np.float32)
    target = np.stack([data.mean(axis=(1, 2, 3)), data[:, 0].std(axis=(1, 2))], 1)
    batch = {"data": data, "label": target, "cls": np.zeros(4)}
    first = net.loss(net.forward(batch))
    for _ in range(60):
        net.forward(batch)
        net.backward()
        solver.step(net.params())
    assert net.loss(net.forward(batch)) < first / 10
