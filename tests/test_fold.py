"""Inference folding (fold.py) and the two engines (engines.py): a Convolution -> BatchNorm
-> Scale chain folded into the Convolution gives the unfolded outputs; predict and
extract on onnxruntime give the native engine's within the export tests' tolerance."""

from __future__ import annotations

import json

import numpy as np
import pytest

from dataprep.train.fold import fold_batchnorm
from dataprep.train.net import Net
from dataprep.train.wiring import wire

CHAIN = [
    {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3, "bias_term": False},
    {"name": "bn1", "type": "BatchNorm", "bottom": ["conv1"], "top": ["conv1"]},
    {"name": "scale1", "type": "Scale", "bias_term": True, "bottom": ["conv1"], "top": ["conv1"]},
    {"name": "relu1", "type": "ReLU", "bottom": ["conv1"], "top": ["conv1"]},
    {"name": "conv2", "type": "Convolution", "num_output": 3, "kernel_size": 3},
    {"name": "bn2", "type": "BatchNorm", "top": ["bn2"]},  # not in place: the only reader
    {"name": "fc", "type": "InnerProduct", "num_output": 2},
]


def _weights(net: Net, rng) -> dict:
    weights = {}
    for layer in net.layers:
        if layer.type == "BatchNorm":
            c = layer.params[0].shape[0]
            weights[layer.name] = [rng.normal(size=c), rng.uniform(0.5, 2, c), np.array([2.0])]
        elif layer.params:
            weights[layer.name] = [rng.normal(size=p.shape) for p in layer.params]
    return {k: [np.asarray(v, np.float32) for v in vs] for k, vs in weights.items()}


def test_a_conv_batchnorm_scale_chain_folds_into_the_convolution():
    from dataprep.train.caffemodel import copy_weights

    rng = np.random.default_rng(0)
    specs = wire(CHAIN, "data", "label")
    net = Net(specs, {"data": (2, 3, 9, 9)}, train=False)
    weights = _weights(net, rng)
    copy_weights(net, weights, "w")
    x = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    net.forward({"data": x}, train=False)
    want = net.blobs["fc"].copy()
    folded_specs, folded = fold_batchnorm(specs, weights)
    assert [s["type"] for s in folded_specs] == ["Convolution", "ReLU", "Convolution", "InnerProduct"]
    assert folded_specs[2]["top"] == ["bn2"] and len(folded["conv1"]) == 2  # a bias now
    other = Net(folded_specs, {"data": (2, 3, 9, 9)}, train=False)
    copy_weights(other, folded, "w")
    other.forward({"data": x}, train=False)
    assert np.allclose(other.blobs["fc"], want, rtol=1e-4, atol=1e-4)


def test_the_onnxruntime_engine_gives_the_native_outputs(invoke, tmp_path):
    pytest.importorskip("onnxruntime")
    from helpers import write_images

    list_path, _ = write_images(tmp_path, 12, shape=(12, 12, 3))
    assert invoke("lmdb", list_path, tmp_path / "db").exit_code == 0
    import yaml

    recipe = {
        "data": {"train": str(tmp_path / "db"), "batch_size": 4, "transform": {"scale": 0.004}},
        "net": [
            {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3},
            {"name": "pool1", "type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2},
            {"name": "fc", "type": "InnerProduct", "num_output": 5},
            {"name": "loss", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 2, "snapshot_prefix": str(tmp_path / "m")},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("train", tmp_path / "r.yaml", "-q").exit_code == 0
    model = tmp_path / "m_iter_2.npz"
    runs = {}
    for engine in ("native", "onnxruntime"):
        r = invoke("predict", model, list_path, "--json", "--engine", engine, "--top-k", 5)
        assert r.exit_code == 0, r.stderr
        runs[engine] = json.loads(r.stdout)["predictions"]
        r = invoke(
            "extract", model, "--layer", "pool1", list_path, tmp_path / f"f_{engine}", "--engine", engine
        )
        assert r.exit_code == 0, r.stderr
    for a, b in zip(runs["native"], runs["onnxruntime"]):
        assert a["classes"] == b["classes"] and np.allclose(a["values"], b["values"], atol=1e-5)
    from dataprep.stores import open_store

    with open_store(tmp_path / "f_native") as a, open_store(tmp_path / "f_onnxruntime") as b:
        assert (
            a.manifest["features"]["engine"] == "native" and b.manifest["features"]["engine"] == "onnxruntime"
        )
        for x, y in zip(a, b):
            assert np.allclose(x.array, y.array, atol=1e-4)


def test_a_forward_only_pass_drops_what_no_later_layer_reads():
    """``keep``: the outputs of an ordinary pass, the kept blobs only, and no layer holding
    a blob for a backward pass (so a pass reuses its own freed memory)."""
    from dataprep.train.caffemodel import copy_weights

    rng = np.random.default_rng(0)
    specs = wire(CHAIN, "data", "label")
    net = Net(specs, {"data": (2, 3, 9, 9)}, train=False)
    copy_weights(net, _weights(net, rng), "w")
    x = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    net.forward({"data": x}, train=False)
    want = {name: blob.copy() for name, blob in net.blobs.items()}
    assert net.layers[0]._saved is not None  # kept for a backward pass
    net.forward({"data": x}, train=False, keep=["bn2", "fc"])
    assert set(net.blobs) == {"bn2", "fc"}
    assert all(np.array_equal(net.blobs[name], want[name]) for name in ("bn2", "fc"))
    assert all(getattr(layer, "_saved", None) is None for layer in net.layers)


def test_the_native_engine_runs_a_large_batch_in_steps(monkeypatch):
    """Passes of a power of two images whose blobs fit STEP_BYTES, the last one padded:
    the outputs of one whole pass."""
    from dataprep.train import engines
    from dataprep.train.caffemodel import copy_weights
    from dataprep.train.inference import Model
    from dataprep.train.preparation import Preparation

    rng = np.random.default_rng(1)
    specs = wire([s for s in CHAIN if s["type"] not in ("BatchNorm", "Scale")], "data", "label")
    specs[0]["bias_term"] = True
    net = Net(specs, {"data": (1, 3, 9, 9)}, train=False)
    weights = _weights(net, rng)
    model = Model("m", specs, "data", "label", Preparation(), weights, input_shape=(3, 9, 9))
    x = rng.normal(size=(7, 3, 9, 9)).astype(np.float32)
    whole = engines.NativeEngine(model).run(x, ["fc", "conv1"])
    per_image = sum(int(np.prod(s)) * 4 for s in net.shapes.values())
    monkeypatch.setattr(engines, "STEP_BYTES", 3 * per_image)  # 3 images fit: steps of 2
    engine = engines.NativeEngine(model)
    parts = engine.run(x, ["fc", "conv1"])
    assert engine.step((3, 9, 9)) == 2 and list(engine.nets) == [(2, 3, 9, 9)]
    for blob in ("fc", "conv1"):
        assert parts[blob].shape == whole[blob].shape == (7, *net.shapes[blob][1:])
        assert np.allclose(parts[blob], whole[blob], rtol=1e-5, atol=1e-5)
    copy_weights(net, weights, "w")
    net.forward({"data": x[6:]}, train=False)
    assert np.allclose(parts["fc"][6], net.blobs["fc"][0], rtol=1e-5, atol=1e-5)  # the padded step


def test_a_forward_only_pass_runs_only_the_layers_its_blobs_need():
    """Features of conv1 (after its in-place ReLU, as Caffe's blob holds them) run conv1
    and relu1 alone: the layers after them never run."""
    from dataprep.train.caffemodel import copy_weights

    rng = np.random.default_rng(2)
    specs = wire([s for s in CHAIN if s["type"] not in ("BatchNorm", "Scale")], "data", "label")
    net = Net(specs, {"data": (2, 3, 9, 9)}, train=False)
    copy_weights(net, {k: v for k, v in _weights(net, rng).items()}, "w")
    x = rng.normal(size=(2, 3, 9, 9)).astype(np.float32)
    net.forward({"data": x}, train=False)
    want = net.blobs["conv1"].copy()
    ran = []
    for layer in net.layers:
        layer.forward = (lambda f, name: lambda *a, **k: ran.append(name) or f(*a, **k))(
            layer.forward, layer.name
        )
    net.forward({"data": x}, train=False, keep=["conv1"])
    assert ran == ["conv1", "relu1"]
    assert want.min() >= 0 and np.array_equal(net.blobs["conv1"], want)


def test_a_forward_only_pass_takes_a_blob_read_twice_by_one_layer():
    """Eltwise PROD of a blob with itself: the blob is its last reader's twice, dropped once."""
    specs = [
        {"name": "ip", "type": "InnerProduct", "num_output": 3, "bottom": "data", "top": "ip"},
        {"name": "sq", "type": "Eltwise", "operation": "PROD", "bottom": ["ip", "ip"], "top": "sq"},
    ]
    net = Net(specs, {"data": (2, 4)}, rng=np.random.default_rng(1))
    x = np.random.default_rng(2).normal(size=(2, 4)).astype(np.float32)
    net.forward({"data": x}, train=False)
    want = net.blobs["sq"].copy()
    assert np.allclose(want, net.blobs["ip"] ** 2)
    net.forward({"data": x}, train=False, keep=["sq"])
    assert set(net.blobs) == {"sq"} and np.array_equal(net.blobs["sq"], want)
