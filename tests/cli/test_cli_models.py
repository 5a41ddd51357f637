"""Using trained nets: ``predict`` (raw images prepared as the training store was, store
records as stored, ground truth scored), ``visualize`` (kernel and activation grids) and
``extract`` (a layer's outputs as float Datums that info, verify and the read API accept);
and Caffe's own model files through the same commands."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
import yaml
from test_cli_train import SMALL_NET

from dataprep.stores import open_store

FIXTURES = Path(__file__).parents[1] / "fixtures" / "caffe"


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Noise images (16x16 PNG) with lists, HDF5 stores made as the tutorial makes them
    (pixel - 128, labels in freq), and a small regression net trained on them."""
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    folder = tmp_path_factory.mktemp("trained")

    def run(*args):
        r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
        assert r.exit_code == 0, r.stderr
        return r

    run("noise", "--n", 70, "--size", "16x16", "--out", folder / "samples", "--format", "png", "-j", 1)
    for split in ("train", "val", "test_labels"):
        run(
            "hdf5",
            folder / f"{split}.txt",
            "--mean",
            128,
            "--scale",
            0.0078125,
            "--label-names",
            "freq",
            "-j",
            1,
        )
    recipe = {
        "name": "small",
        "data": {
            "train": str(folder / "train_h5.txt"),
            "val": str(folder / "val_h5.txt"),
            "batch_size": 10,
            "target": "freq",
        },
        "net": SMALL_NET,
        "solver": {
            "type": "Nesterov",
            "base_lr": 0.05,
            "max_iter": 30,
            "display": 10,
            "snapshot_prefix": str(folder / "small"),
            "random_seed": 1,
        },
    }
    (folder / "small.yaml").write_text(yaml.safe_dump(recipe))
    run("train", folder / "small.yaml", "-q")
    return folder


def test_predict_on_raw_images_repeats_the_training_preparation(invoke, trained):
    model = trained / "small_iter_30.npz"
    r = invoke("predict", model, trained / "test.txt", "--labels", trained / "test_labels.txt", "--json")
    assert r.exit_code == 0, r.stderr
    from_images = json.loads(r.stdout)
    r = invoke("predict", model, trained / "test_labels_h5.txt", "--json")  # the store's records, as stored
    assert r.exit_code == 0, r.stderr
    from_store = json.loads(r.stdout)
    a = {p["key"]: p["values"] for p in from_images["predictions"]}
    b = {p["key"]: p["values"] for p in from_store["predictions"]}
    assert a.keys() == b.keys() and len(a) == 10
    assert all(np.allclose(a[k], b[k], atol=1e-6) for k in a)  # - 128 and gray, as hdf5 did
    truth = {
        line.split()[0]: [float(v) for v in line.split()[1:]]
        for line in (trained / "test_labels.txt").read_text().splitlines()
    }
    mae = np.mean([np.abs(np.subtract(a[k], truth[k])) for k in a])
    assert from_images["score"]["mae"] == pytest.approx(mae) and from_images["score"]["count"] == 10
    assert from_store["score"]["mae"] == pytest.approx(mae)  # the store's own labels
    r = invoke("predict", model, trained / "test.txt", "--labels", trained / "test_labels.txt")
    lines = r.stdout.splitlines()
    key, values = next(iter(a.items()))
    assert lines[0] == f"Predicted frequencies for {key} is {values[0]:.2f} and {values[1]:.2f}"
    assert lines[-1].startswith(f"Mean absolute error: {mae:.4f} (") and lines[-1].endswith("over 10 inputs")
    r = invoke("predict", model, trained / "test.txt", "--csv")
    assert r.stdout.splitlines()[0] == "key,value0,value1" and len(r.stdout.splitlines()) == 11
    r = invoke("predict", model, trained / "test.txt", "--mean", 0)  # applied once: never twice
    assert r.exit_code == 2 and "--mean 0:" in r.stderr and "has its own mean (128)" in r.stderr


def test_predict_needs_weights_for_a_recipe(invoke, trained):
    r = invoke("predict", trained / "small.yaml", trained / "test.txt")
    assert r.exit_code == 2 and "holds no weights: give --weights" in r.stderr
    r = invoke(
        "predict", trained / "small.yaml", "--weights", trained / "small_iter_30.npz", trained / "test.txt"
    )
    assert r.exit_code == 0, r.stderr


def test_visualize_kernels_and_activations(invoke, trained, tmp_path):
    model = trained / "small_iter_30.npz"
    r = invoke("visualize", model, "--layer", "conv1", "-o", tmp_path / "k.png")
    assert r.exit_code == 0, r.stderr
    grid = cv2.imread(str(tmp_path / "k.png"), cv2.IMREAD_UNCHANGED)
    # 8 kernels of 3x3, each tile 24 px (x8, readable), in a 3 x 3 grid with 1-pixel gaps
    # (74 px), enlarged 6 times to reach 512
    assert grid.shape == (444, 444) and len(np.unique(grid)) > 8
    weights = np.load(model)["param/conv1/0"]
    first = grid[:144:48, :144:48]  # kernel 0, one pixel per weight
    normalized = (weights[0, 0] - weights.min()) / (weights.max() - weights.min()) * 255
    assert np.abs(first.astype(float) - normalized).max() <= 1
    image = trained / next(iter((trained / "test.txt").read_text().split()))
    r = invoke("visualize", model, "--layer", "pool1", "--image", image, "-o", tmp_path / "a.png")
    assert r.exit_code == 0, r.stderr
    assert cv2.imread(str(tmp_path / "a.png"), cv2.IMREAD_UNCHANGED).shape == (444, 444)  # 4x4 maps: 24 px
    r = invoke("visualize", model, "--layer", "conv1", "--max", 4, "--cols", 4, "-o", tmp_path / "m.png")
    assert r.exit_code == 0 and "showing the first 4 of 8 kernels" in r.stderr
    assert cv2.imread(str(tmp_path / "m.png"), cv2.IMREAD_UNCHANGED).shape == (24 * 5, 99 * 5)  # one row
    r = invoke("visualize", model, "--layer", "conv1", "--channel", 1, "-o", tmp_path / "c.png")
    assert r.exit_code == 2 and "--channel 1: the kernels have 1 input channels" in r.stderr
    r = invoke("visualize", model, "--layer", "conv1", "-o", tmp_path / "k.png")
    assert r.exit_code == 1 and "exists" in r.stderr  # no silent overwrite
    r = invoke("visualize", model, "--layer", "fc2", "-o", tmp_path / "f.png")
    assert r.exit_code == 1 and "not convolution kernels" in r.stderr
    r = invoke("visualize", model, "--layer", "conv9", "-o", tmp_path / "f.png")
    assert r.exit_code == 2 and "--layer conv9: no such layer; the net has " in r.stderr
    assert "conv1, relu1, pool1" in r.stderr
    r = invoke("visualize", model, "--layer", "relu1", "-o", tmp_path / "f.png")
    assert r.exit_code == 1 and "layers with kernels: conv1" in r.stderr


def test_extract_writes_float_datums_the_stores_read(invoke, trained, tmp_path):
    model = trained / "small_iter_30.npz"
    r = invoke("extract", model, "--layer", "fc2", trained / "test.txt", tmp_path / "fc2_lmdb")
    assert r.exit_code == 0, r.stderr
    reader = open_store(tmp_path / "fc2_lmdb")
    records = list(reader.iter_range(0, len(reader)))
    reader.close()
    keys = [f"{i:08d}_{path}" for i, path in enumerate((trained / "test.txt").read_text().split())]
    assert [rec.key for rec in records] == keys and records[0].array.shape == (2, 1, 1)  # as lmdb keys
    assert f"extract: {len(records)} img in " in r.stderr  # the closing count: the records written
    r = invoke("predict", model, trained / "test.txt", "--json")
    predicted = [p["values"] for p in json.loads(r.stdout)["predictions"]]
    assert f"predict: {len(predicted)} img in " in r.stderr
    logits = np.array([rec.array.ravel() for rec in records])
    assert np.allclose(1 / (1 + np.exp(-logits)), predicted, atol=1e-6)  # fc2, then the Sigmoid
    for command in ("info", "verify"):
        r = invoke(command, tmp_path / "fc2_lmdb")
        assert r.exit_code == 0, r.stderr
    r = invoke("info", tmp_path / "fc2_lmdb")
    assert "float32 features" in r.stdout and "1x1 (HxW), 2 channels" in r.stdout
    r = invoke(
        "extract",
        model,
        "--layer",
        "pool1",
        trained / "test_labels_h5.txt",
        tmp_path / "p1",
        "--backend",
        "leveldb",
    )
    assert r.exit_code == 0, r.stderr
    reader = open_store(tmp_path / "p1")
    assert next(reader.iter_range(0, 1)).array.shape == (8, 4, 4)
    reader.close()
    r = invoke("info", tmp_path / "p1", "--grid", tmp_path / "p1.png", "--count", 4)  # 8 feature maps
    assert r.exit_code == 0, r.stderr
    picture = cv2.imread(str(tmp_path / "p1.png"))
    cell = picture[:64, :64].reshape(-1, 3)  # the first sample's first map as a heat map
    assert len(np.unique(cell, axis=0)) > 4 and (cell[:, 1] != cell[:, 0]).any()
    r = invoke("extract", model, "--layer", "fc2", trained / "test.txt", tmp_path / "fc2_lmdb")
    assert r.exit_code == 1 and "--overwrite" in r.stderr


def test_caffes_model_predicts_caffes_outputs(invoke, tmp_path):
    """A .caffemodel Caffe wrote, with its train_val prototxt, through predict: Caffe's
    predictions for the same inputs (float32 tolerance)."""
    inputs = np.load(FIXTURES / "inputs.npy")[:3]
    with h5py.File(tmp_path / "probe.h5", "w") as f:  # as Caffe's HDF5Data reads them
        f["data"] = inputs
        f["freq"] = np.load(FIXTURES / "input_labels.npy")[:3]
    (tmp_path / "probe_h5.txt").write_text(str(tmp_path / "probe.h5") + "\n")
    r = invoke(
        "predict",
        FIXTURES / "tutorial_train_val.prototxt",
        "--weights",
        FIXTURES / "tutorial_iter_20.caffemodel",
        tmp_path / "probe_h5.txt",
        "--json",
    )
    assert r.exit_code == 0, r.stderr
    got = np.array([p["values"] for p in json.loads(r.stdout)["predictions"]])
    want = np.load(FIXTURES / "tutorial_outputs.npz")["pred"].reshape(3, 2)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-6)
    shutil.rmtree(tmp_path)


def test_extract_with_caffes_model_gives_caffes_features(invoke, tmp_path):
    """extract_features' result for Caffe's zoo net: fc3 for the ten inputs, as Caffe
    computed them, in float_data Datums."""
    inputs = np.load(FIXTURES / "inputs.npy")
    with h5py.File(tmp_path / "probe.h5", "w") as f:
        f["data"] = inputs
        f["freq"] = np.load(FIXTURES / "input_labels.npy")
    (tmp_path / "probe_h5.txt").write_text(str(tmp_path / "probe.h5") + "\n")
    r = invoke(
        "extract",
        FIXTURES / "zoo_train_val.prototxt",
        "--weights",
        FIXTURES / "zoo_iter_30.caffemodel",
        "--layer",
        "fc3",
        tmp_path / "probe_h5.txt",
        tmp_path / "fc3_lmdb",
        "--batch-size",
        4,
    )
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "fc3_lmdb") as store:
        got = np.stack([rec.array for rec in store])
    want = np.load(FIXTURES / "zoo_outputs.npz")["fc3"]
    assert got.shape == want.shape == (10, 16, 1, 1)
    assert np.allclose(got, want, rtol=1e-4, atol=1e-5)


def test_predict_names_the_top_classes_of_a_classifier(invoke, tmp_path):
    r = invoke(
        "noise",
        "--n",
        80,
        "--size",
        "16x16",
        "--classes",
        3,
        "--to",
        "lmdb",
        "--out",
        tmp_path / "s",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    net = [
        {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3, "stride": 2},
        {"name": "fc", "type": "InnerProduct", "num_output": 3},
        {"name": "accuracy", "type": "Accuracy", "phase": "TEST"},
        {"name": "loss", "type": "SoftmaxWithLoss"},
    ]
    recipe = {
        "data": {
            "train": str(tmp_path / "s/train_lmdb"),
            "val": str(tmp_path / "s/val_lmdb"),
            "batch_size": 8,
            "transform": {"scale": 0.0039},
        },
        "net": net,
        "solver": {"max_iter": 10, "snapshot_prefix": str(tmp_path / "c")},
    }
    (tmp_path / "c.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("train", tmp_path / "c.yaml", "-q").exit_code == 0
    (tmp_path / "names.txt").write_text("low\nmid\nhigh\n")
    r = invoke(
        "predict",
        tmp_path / "c_iter_10.npz",
        tmp_path / "s/val_lmdb",
        "--class-names",
        tmp_path / "names.txt",
        "--top-k",
        2,
    )
    assert r.exit_code == 0, r.stderr
    lines = r.stdout.splitlines()
    first = lines[0]
    assert first.startswith("Predicted class for 00000000_") and "; then " in first
    assert any(name in first for name in ("low (", "mid (", "high ("))
    assert (
        lines[-1].startswith("Accuracy: ")
        and f"over {len(lines) - 1} inputs" in lines[-1]
        and "top2" in lines[-1]
    )
    r = invoke("predict", tmp_path / "c_iter_10.npz", tmp_path / "s/val_lmdb", "--json")
    rows = json.loads(r.stdout)["predictions"]
    assert all(len(p["classes"]) == 1 and 0 <= p["values"][0] <= 1 for p in rows)


def test_a_hand_written_regression_deploy_prototxt_predicts_values_not_a_label(invoke, trained, tmp_path):
    """Without dataprep's preparation note the output has no name: its lines say
    "Predicted values for", never "Predicted label for" (issue 33, point 12)."""
    model = trained / "small_iter_30.npz"
    assert invoke("export", model, "-o", tmp_path / "small.caffemodel").exit_code == 0
    deploy = (tmp_path / "small_deploy.prototxt").read_text().splitlines()
    plain = "\n".join(line for line in deploy if not line.startswith("#"))
    (tmp_path / "deploy.prototxt").write_text(plain)
    r = invoke(
        "predict",
        tmp_path / "deploy.prototxt",
        "--weights",
        tmp_path / "small.caffemodel",
        trained / "test.txt",
    )
    assert r.exit_code == 0, r.stderr
    first = r.stdout.splitlines()[0]
    assert first.startswith("Predicted values for ") and " is " in first and " and " in first


def test_a_larger_mean_file_is_cropped_or_reduced_per_channel(invoke, trained, tmp_path):
    """--mean FILE of another size than the input (issue 33, point 3): cut from its centre
    as Caffe's data layer does, or with --mean-per-channel reduced to one value per channel
    (pycaffe's mean.mean(1).mean(1)): then it equals --mean of that value."""
    model = trained / "small_iter_30.npz"
    assert invoke("export", model, "-o", tmp_path / "small.caffemodel").exit_code == 0
    lines = (tmp_path / "small_deploy.prototxt").read_text().splitlines()
    plain = [line for line in lines if not line.startswith("#") and "mean_value" not in line]
    (tmp_path / "deploy.prototxt").write_text("\n".join(plain))  # a scale, no mean
    mean = np.random.default_rng(0).uniform(100, 160, (1, 20, 20)).astype(np.float32)
    np.save(tmp_path / "mean.npy", mean)
    base = ["predict", tmp_path / "deploy.prototxt", "--weights", tmp_path / "small.caffemodel"]
    base += [trained / "test.txt", "--json"]

    def values(*extra):
        r = invoke(*base, *extra)
        assert r.exit_code == 0, r.stderr
        return np.array([p["values"] for p in json.loads(r.stdout)["predictions"]])

    per_channel = values("--mean", tmp_path / "mean.npy", "--mean-per-channel")
    assert np.allclose(per_channel, values("--mean", f"{float(mean.mean(dtype=np.float64)):.6f}"), atol=1e-4)
    np.save(tmp_path / "centre.npy", mean[:, 2:18, 2:18])
    assert np.allclose(values("--mean", tmp_path / "mean.npy"), values("--mean", tmp_path / "centre.npy"))
    r = invoke(*base, "--mean-per-channel")
    assert r.exit_code == 2 and "give --mean FILE too" in r.stderr


def test_oversample_needs_a_model_with_a_crop(invoke, trained):
    r = invoke("predict", trained / "small_iter_30.npz", trained / "test.txt", "--oversample")
    assert r.exit_code == 2 and "--oversample takes ten crops: the model has no crop" in r.stderr
