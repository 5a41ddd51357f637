"""``dataprep export`` (issue 22): models out as ONNX (checked by onnx.checker, run by
onnxruntime and OpenCV against dataprep's and real Caffe's outputs), as .caffemodel with
Caffe's blob layouts, and as .npz for dataprep's own commands."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from dataprep.train.export import load_deploy

ROOT = Path(__file__).parents[1]
ZOO = ROOT / "tests" / "fixtures" / "zoo"
CAFFE = ROOT / "tests" / "fixtures" / "caffe"
RECIPES = ROOT / "recipes"


def run_onnx(path: Path, name: str, x: np.ndarray) -> dict[str, np.ndarray]:
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]
    return dict(zip(outputs, session.run(None, {name: x})))


def close(got: np.ndarray, want: np.ndarray, tol: float = 1e-4) -> bool:
    """Equal within ``tol`` relative to the blob's range."""
    want = np.asarray(want, np.float64).reshape(got.shape)
    return float(np.abs(got - want).max()) <= tol * max(float(want.max() - want.min()), 1e-12)


MODELS = [
    (ZOO / "bvlc_reference_caffenet_deploy.prototxt", None),
    (ZOO / "bvlc_alexnet_deploy.prototxt", None),
    (ZOO / "bvlc_googlenet_deploy.prototxt", None),
    (ZOO / "resnet50_deploy.prototxt", None),
    (ZOO / "squeezenet_v1.1_deploy.prototxt", None),
    (ZOO / "fcn_small_deploy.prototxt", None),
    (RECIPES / "noise_regression.yaml", "1x100x100"),
    (RECIPES / "lenet.yaml", "1x28x28"),
    (RECIPES / "cifar10_quick.yaml", "3x32x32"),
]


@pytest.mark.parametrize("model, shape", MODELS, ids=lambda v: Path(v).stem if isinstance(v, Path) else None)
def test_onnx_export_runs_in_onnxruntime_as_in_dataprep(invoke, tmp_path, monkeypatch, model, shape):
    """On pixels as decoded: the graph first does what the model's preparation and
    transform do (LeNet's scale, CIFAR-10 quick's mean image)."""
    from dataprep.stores.caffe_pb import blob_bytes

    monkeypatch.chdir(tmp_path)
    mean = np.random.default_rng(5).uniform(0, 255, (3, 32, 32)).astype(np.float32)
    (tmp_path / "mean.binaryproto").write_bytes(blob_bytes(mean))  # cifar10_quick's mean_file
    out = tmp_path / "model.onnx"
    args = ["--shape", shape] if shape else []
    r = invoke("export", model, "--random-init", 3, "-o", out, *args)
    assert r.exit_code == 0, r.stderr
    chw = tuple(int(v) for v in shape.split("x")) if shape else None
    deploy = load_deploy(model, random_init=3, shape=chw)  # the same weights, from the seed
    x = np.random.default_rng(0).uniform(0, 255, size=(2, *deploy.chw)).astype(np.float32)  # batch 2: free
    expected = x * np.float32(0.00390625) if model.stem == "lenet" else x
    if model.stem == "cifar10_quick":
        expected = x - mean
    assert np.allclose(deploy.prepared(x), expected)
    deploy.net.forward({deploy.input: expected}, train=False)
    outputs = run_onnx(out, deploy.input, x)
    assert outputs
    blobs = dict(deploy.net.blobs)
    if deploy.classifier and "prob" not in blobs:  # a SoftmaxWithLoss net: prob after the logits
        logits = blobs[list(outputs)[0]].astype(np.float64)
        e = np.exp(logits - logits.max(axis=1, keepdims=True))
        blobs["prob"] = e / e.sum(axis=1, keepdims=True)
        assert list(outputs)[-1] == "prob"
    for name, got in outputs.items():
        assert close(got, blobs[name]), name


@pytest.mark.parametrize("net, outputs", [("tutorial", ["pred"]), ("zoo", ["pred"])])
def test_onnx_of_caffes_model_gives_caffes_outputs(invoke, tmp_path, net, outputs):
    weights = next(CAFFE.glob(f"{net}_iter_*.caffemodel"))
    out = tmp_path / f"{net}.onnx"
    r = invoke(
        "export", CAFFE / f"{net}_train_val.prototxt", "--weights", weights, "-o", out, "--shape", "1x100x100"
    )
    assert r.exit_code == 0, r.stderr
    want = np.load(CAFFE / f"{net}_outputs.npz")
    x = np.load(CAFFE / "inputs.npy")[: len(want["pred"])]
    got = run_onnx(out, "data", x)
    assert sorted(got) == outputs
    for name in outputs:
        assert close(got[name], want[name]), name


@pytest.mark.parametrize(
    "model, shape",
    [(CAFFE / "tutorial_train_val.prototxt", (1, 100, 100)), (ZOO / "squeezenet_v1.1_deploy.prototxt", None)],
)
def test_opencv_reads_the_onnx_and_agrees(tmp_path, model, shape):
    import cv2

    from dataprep.train.export import export

    weights = CAFFE / "tutorial_iter_20.caffemodel" if "tutorial" in model.name else None
    (out,) = export(model, tmp_path / "m.onnx", weights, None if weights else 1, shape)
    deploy = load_deploy(model, weights, None if weights else 1, shape)
    x = np.random.default_rng(0).normal(0, 50, size=(1, *deploy.chw)).astype(np.float32)
    deploy.net.forward({deploy.input: x}, train=False)
    net = cv2.dnn.readNetFromONNX(str(out))
    net.setInput(x)
    name = "pred" if weights else "prob"
    assert close(net.forward(), deploy.net.blobs[name], 1e-3)


def test_random_init_caffemodel_has_caffes_blob_layouts(invoke, tmp_path):
    """Checked at the wire level: each layer's blobs with Caffe's shapes (BlobShape dims),
    BatchNorm's statistics 0, 1 and factor 1, filled convolutions."""
    from test_caffe_models import layers_of

    out = tmp_path / "resnet.caffemodel"
    r = invoke("export", ZOO / "resnet50_deploy.prototxt", "--random-init", 0, "-o", out)
    assert r.exit_code == 0, r.stderr
    layers = dict(layers_of(out.read_bytes()))
    assert [shape for shape, _ in layers["conv1"]] == [(64, 3, 7, 7), (64,)]
    assert [shape for shape, _ in layers["res2a_branch1"]] == [(256, 64, 1, 1)]  # bias_term: false
    (mean, _), (var, _), (factor, _) = [(s, np.array(v)) for s, v in layers["bn_conv1"]]
    assert [s for s, _ in layers["bn_conv1"]] == [(64,), (64,), (1,)]
    stats = [np.array(v) for _, v in layers["bn_conv1"]]
    assert (stats[0] == 0).all() and (stats[1] == 1).all() and stats[2].tolist() == [1.0]
    assert [s for s, _ in layers["scale_conv1"]] == [(64,), (64,)]
    assert [s for s, _ in layers["fc1000"]] == [(1000, 2048), (1000,)]
    assert np.std(layers["conv1"][0][1]) > 0.01  # filled, not zeros
    r = invoke("export", ZOO / "resnet50_deploy.prototxt", "-o", tmp_path / "x.onnx")
    assert r.exit_code == 2 and "holds no weights: give --weights, or --random-init SEED" in r.stderr


def test_caffemodel_to_npz_and_back_keeps_every_blob(invoke, tmp_path):
    from dataprep.train.caffemodel import read_caffemodel, read_weights

    net, weights = CAFFE / "zoo_train_val.prototxt", CAFFE / "zoo_iter_30.caffemodel"
    shape = ["--shape", "1x100x100"]
    assert invoke("export", net, "--weights", weights, "-o", tmp_path / "z.npz", *shape).exit_code == 0
    assert invoke("export", tmp_path / "z.npz", "-o", tmp_path / "z.caffemodel").exit_code == 0
    original, back = read_caffemodel(weights), read_caffemodel(tmp_path / "z.caffemodel")
    assert sorted(back) == sorted(original)
    for layer, blobs in original.items():
        assert all(np.array_equal(a.ravel(), b.ravel()) for a, b in zip(blobs, back[layer])), layer
    assert sorted(read_weights(tmp_path / "z.npz")) == sorted(original)
    # the .npz is what predict, visualize and train --weights take
    x = np.load(CAFFE / "inputs.npy")[:2]
    import h5py

    with h5py.File(tmp_path / "probe.h5", "w") as f:
        f["data"] = x
    (tmp_path / "probe_h5.txt").write_text(str(tmp_path / "probe.h5") + "\n")
    r = invoke("predict", tmp_path / "z.npz", tmp_path / "probe_h5.txt", "--json")
    assert r.exit_code == 0, r.stderr
    got = np.array([p["values"] for p in json.loads(r.stdout)["predictions"]])
    assert close(got, np.load(CAFFE / "zoo_outputs.npz")["pred"][:2])
    assert (
        invoke("visualize", tmp_path / "z.npz", "--layer", "conv1", "-o", tmp_path / "k.png").exit_code == 0
    )


def test_refusals_are_one_line(invoke, tmp_path):
    (tmp_path / "argmax.prototxt").write_text(
        'layer { name: "data" type: "Input" top: "data"\n'
        "  input_param { shape { dim: 1 dim: 3 dim: 4 dim: 4 } } }\n"
        'layer { name: "top" type: "ArgMax" bottom: "data" top: "top" argmax_param { out_max_val: true } }\n'
    )
    r = invoke("export", tmp_path / "argmax.prototxt", "--random-init", 0, "-o", tmp_path / "a.onnx")
    assert r.exit_code == 2 and "layer top (ArgMax): " in r.stderr and "no faithful ONNX form" in r.stderr
    assert not (tmp_path / "a.onnx").exists()
    r = invoke("export", ZOO / "fcn_small_deploy.prototxt", "--random-init", 0, "-o", tmp_path / "a.pb")
    assert r.exit_code == 2 and "the suffix chooses the format: .onnx, .caffemodel, .npz" in r.stderr
    code = "import sys; sys.modules['onnx'] = None; from dataprep.cli.main import cli; cli()"
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            code,
            "export",
            str(ZOO / "fcn_small_deploy.prototxt"),
            "--random-init",
            "0",
            "-o",
            str(tmp_path / "b.onnx"),
        ],
        capture_output=True,
        text=True,
    )
    assert done.returncode == 1 and "needs the onnx package: pip install -e '" in done.stderr


def test_the_onnx_carries_the_preparation_and_a_free_batch(invoke, tmp_path):
    import onnx

    out = tmp_path / "m.onnx"
    assert invoke("export", ZOO / "fcn_small_deploy.prototxt", "--random-init", 0, "-o", out).exit_code == 0
    model = onnx.load(str(out))
    assert model.opset_import[0].version == 17
    (graph_input,) = model.graph.input
    assert graph_input.name == "data" and graph_input.type.tensor_type.shape.dim[0].dim_param == "N"
    assert [o.name for o in model.graph.output] == ["prob"]
    props = {p.key: p.value for p in model.metadata_props}
    assert json.loads(props["dataprep.preparation"])["channel_order"] == "BGR"


def docs_example() -> str:
    text = (ROOT / "docs" / "caffe.md").read_text()
    block = text.split("<!-- onnx-example -->", 1)[1].split("<!-- /onnx-example -->", 1)[0]
    return block.split("```python\n", 1)[1].rsplit("```", 1)[0]


def test_the_docs_example_runs_an_exported_snapshot_as_predict_does(invoke, tmp_path, monkeypatch):
    """A model trained on an HDF5 store made with --mean 128: the exported graph subtracts
    the mean itself, and the docs' lines give predict's values for an image file."""
    import yaml

    monkeypatch.chdir(tmp_path)
    assert invoke("noise", "--n", 40, "--size", "16x16", "--format", "png").exit_code == 0
    assert invoke("hdf5", "train.txt", "--mean", 128, "--label-names", "freq").exit_code == 0
    recipe = {
        "data": {"train": "train_h5.txt", "batch_size": 8, "target": "freq"},
        "net": [
            {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3},
            {"name": "pool1", "type": "Pooling", "pool": "AVE", "kernel_size": 3, "stride": 2, "pad": 1},
            {"name": "fc", "type": "InnerProduct", "num_output": 2},
            {"name": "pred", "type": "Sigmoid"},
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["pred", "freq"]},
        ],
        "solver": {"max_iter": 3, "snapshot_prefix": "run", "base_lr": 0.01},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("train", "r.yaml").exit_code == 0
    assert invoke("export", "run_iter_3.npz", "-o", "model.onnx").exit_code == 0
    image = (tmp_path / "test.txt").read_text().split()[0]
    (tmp_path / "image.png").write_bytes((tmp_path / image).read_bytes())
    (tmp_path / "one.txt").write_text("image.png\n")
    r = invoke("predict", "run_iter_3.npz", "one.txt", "--json")
    assert r.exit_code == 0, r.stderr
    want = json.loads(r.stdout)["predictions"][0]["values"]
    scope: dict = {}
    exec(compile(docs_example(), "docs/caffe.md", "exec"), scope)
    assert np.allclose(scope["outputs"][0].ravel(), want, atol=1e-5)


def test_a_fixed_filler_goes_into_the_caffemodel_as_its_blob(invoke, tmp_path):
    """Caffe has no range filler: the layer is written without it, its kernel as the blob."""
    from dataprep.train.caffemodel import read_caffemodel

    out = tmp_path / "age.caffemodel"
    r = invoke("export", "age_expectation", "--random-init", 0, "--shape", "1x64x64", "-o", out)
    assert r.exit_code == 0, r.stderr
    assert read_caffemodel(out)["age"][0].ravel().tolist() == list(range(100))
