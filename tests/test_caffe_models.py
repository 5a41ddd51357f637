"""Caffe's own model files: nets and weights BVLC Caffe wrote (tests/fixtures/caffe) load and
reproduce Caffe's outputs layer by layer; the .caffemodel dataprep writes has Caffe's layer
names, blob counts, order and shapes, checked with the tests' own wire decoder; prototxt
that dataprep cannot run is refused with the layer, the field and the line."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml
from wire import LENGTH, fields, packed_floats

from dataprep.train.caffemodel import copy_weights, read_caffemodel
from dataprep.train.net import Net
from dataprep.train.prototxt import net_sections

FIXTURES = Path(__file__).parent / "fixtures" / "caffe"


def caffe_outputs(name: str) -> dict[str, np.ndarray]:
    saved = np.load(FIXTURES / f"{name}_outputs.npz")
    return {key: saved[key] for key in saved.files}


@pytest.mark.parametrize("name, weights", [("tutorial", "tutorial_iter_20"), ("zoo", "zoo_iter_30")])
def test_caffes_models_give_caffes_outputs(name, weights):
    want = caffe_outputs(name)
    count = len(next(iter(want.values())))
    x = np.load(FIXTURES / "inputs.npy")[:count]
    freq = np.load(FIXTURES / "input_labels.npy")[:count]
    sections = net_sections(FIXTURES / f"{name}_train_val.prototxt")
    net = Net(sections["net"], {"data": x.shape, "freq": freq.shape}, target="freq")
    copied = copy_weights(net, read_caffemodel(FIXTURES / f"{weights}.caffemodel"), weights)
    assert copied == [layer.name for layer in net.layers if layer.params]
    net.forward({"data": x, "freq": freq}, train=False)  # Caffe's TEST phase
    assert len(want) >= 9
    for blob, expected in want.items():  # in-place layers: the value after the last of them
        got = np.asarray(net.blobs[blob]).reshape(expected.shape)
        assert np.allclose(got, expected, rtol=1e-4, atol=1e-5 * np.abs(expected).max()), blob


def layers_of(model: bytes) -> list[tuple[str, list[tuple[tuple[int, ...], list[float]]]]]:
    """(name, [(shape, values)] per blob) of each layer of a NetParameter, decoded by field
    number: layer = 100, LayerParameter.name = 1, .blobs = 7, BlobProto.shape = 7 (dim = 1,
    packed varints), .data = 5 (packed floats)."""
    out = []
    for number, _, layer in fields(model):
        if number != 100:
            continue
        name, blobs = "", []
        for field, _, value in fields(layer):
            if field == 1:
                name = value.decode()
            elif field == 7:
                shape, data = (), []
                for blob_field, _, blob_value in fields(value):
                    if blob_field == 7:
                        (dims,) = [v for f, w, v in fields(blob_value) if f == 1 and w == LENGTH]
                        shape = tuple(_varints(dims))
                    elif blob_field == 5:
                        data = packed_floats(blob_value)
                blobs.append((shape, data))
        out.append((name, blobs))
    return out


def _varints(buf: bytes) -> list[int]:
    values, value, shift = [], 0, 0
    for byte in buf:
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            values.append(value)
            value = shift = 0
    return values


def noise_stores(invoke, folder: Path, n: int = 30) -> None:
    """The tutorial's data layout in ``folder``: HDF5 stores of noise (pixel - 128, freq)."""
    r = invoke(
        "noise", "--n", n, "--to", "hdf5", "--out", folder, "--mean", 128, "--label-names", "freq", "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    shutil.copy(folder / "val_h5.txt", folder / "probe_h5.txt")  # the zoo net's TEST source


@pytest.mark.parametrize("name, weights", [("tutorial", "tutorial_iter_20"), ("zoo", "zoo_iter_30")])
def test_the_caffemodel_written_here_has_caffes_layout(invoke, tmp_path, monkeypatch, name, weights):
    for path in FIXTURES.glob(f"{name}_*.prototxt"):
        shutil.copy(path, tmp_path)
    noise_stores(invoke, tmp_path)
    monkeypatch.chdir(tmp_path)  # Caffe resolves the solver's paths against the current folder
    r = invoke(
        "train",
        f"{name}_solver.prototxt",
        "--weights",
        FIXTURES / f"{weights}.caffemodel",
        "--set",
        "solver.max_iter=0",
        "--set",
        "solver.test_iter=1",
    )
    assert r.exit_code == 0, r.stderr
    assert "solver_mode CPU is not a device choice here and is ignored" in r.stderr
    ours = layers_of((tmp_path / f"{name}_iter_0.caffemodel").read_bytes())
    caffes = layers_of((FIXTURES / f"{weights}.caffemodel").read_bytes())
    assert [n for n, _ in ours] == [n for n, _ in caffes]  # names and order, the data layer first
    for (layer, mine), (_, theirs) in zip(ours, caffes):
        assert [s for s, _ in mine] == [s for s, _ in theirs], layer  # blob count, order, shapes
        for (_, a), (_, b) in zip(mine, theirs):  # no training: Caffe's values, copied exactly
            assert a == b, layer


def test_a_solver_prototxt_trains_and_snapshots_caffemodels(invoke, tmp_path, monkeypatch):
    shutil.copy(FIXTURES / "tutorial_train_val.prototxt", tmp_path)
    solver = (FIXTURES / "tutorial_solver.prototxt").read_text().replace("max_iter: 20", "max_iter: 3")
    (tmp_path / "solver.prototxt").write_text(solver.replace("display: 10", "display: 1"))
    noise_stores(invoke, tmp_path)
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "solver.prototxt", "--set", "data.batch_size=4", "--set", "solver.test_iter=1")
    assert r.exit_code == 0, r.stderr
    assert "Solving RegressionExample" in r.stderr and "Iteration 0, Testing net" not in r.stderr
    # test_initialization: false
    losses = [line for line in r.stderr.splitlines() if "Train net output #0: loss = " in line]
    assert len(losses) == 3
    weights = read_caffemodel(tmp_path / "tutorial_iter_3.caffemodel")
    saved = np.load(tmp_path / "tutorial_iter_3.npz")
    assert np.array_equal(weights["fc5"][0], saved["param/fc5/0"])  # the two snapshots agree
    r = invoke("train", "solver.prototxt", "--print-recipe")  # the recipe it maps to, as YAML
    assert r.exit_code == 0 and "type: Nesterov" in r.stdout and "kernel_size: 5" in r.stdout


@pytest.mark.parametrize(
    "change, message",
    [
        (('type: "ReLU"', 'type: "LSTM"'), ":5: layer 'relu1': type 'LSTM' is not supported"),
        (
            ("num_output: 192", "num_output: 192 transpose: true"),
            ":13: layer 'fc4': inner_product_param.transpose is not supported",
        ),
        (("kernel_size: 5", "kernel_sise: 5"), 'has no field named "kernel_sise"'),
        (("include { phase: TEST }", 'include { stage: "x" }'), "none of the net's data layers is in it"),
    ],
)
def test_prototxt_dataprep_cannot_run_is_refused_with_the_line(
    invoke, tmp_path, monkeypatch, change, message
):
    net = (FIXTURES / "tutorial_train_val.prototxt").read_text()
    assert change[0] in net
    (tmp_path / "tutorial_train_val.prototxt").write_text(net.replace(change[0], change[1], 1))
    shutil.copy(FIXTURES / "tutorial_solver.prototxt", tmp_path)
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "tutorial_solver.prototxt")
    assert r.exit_code == 2 and message in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 + ("solver_mode" in r.stderr)  # one line, no traceback


RECIPES = Path(__file__).parents[1] / "recipes"


@pytest.mark.parametrize("name", ["noise_regression", "noise_classes", "caffenet", "lenet", "cifar10_quick"])
def test_recipes_round_trip_through_caffe_prototxt(invoke, tmp_path, monkeypatch, name):
    from dataprep.train.recipe import load_recipe
    from dataprep.train.wiring import wire

    # the recipes leave test_iter out (one pass); the validation stores are not here to
    # count, so the count comes as the shipped twin has it
    shipped_solver = (RECIPES / "caffe" / f"{name}_solver.prototxt").read_text()
    count = re.search(r"^test_iter: (\d+)", shipped_solver, re.M).group(1)
    r = invoke(
        "recipe", "to-prototxt", RECIPES / f"{name}.yaml", tmp_path, "--set", f"solver.test_iter={count}"
    )
    assert r.exit_code == 0, r.stderr
    for kind in ("solver", "train_val"):  # the shipped copies are what the command writes
        shipped = (RECIPES / "caffe" / f"{name}_{kind}.prototxt").read_text()
        assert (tmp_path / f"{name}_{kind}.prototxt").read_text() == shipped
    monkeypatch.chdir(tmp_path)
    original, back = load_recipe(RECIPES / f"{name}.yaml"), load_recipe(f"{name}_solver.prototxt")
    assert back.solver == original.solver
    for key in ("max_iter", "test_interval", "snapshot", "snapshot_prefix", "random_seed", "display"):
        assert getattr(back.run, key) == getattr(original.run, key), key
    data = original.data
    mine = wire(original.raw["net"], data.input, data.target)
    theirs = back.raw["net"]
    assert [e["name"] for e in theirs] == [e["name"] for e in mine]
    for a, b in zip(mine, theirs):  # every key the recipe gave comes back with its value
        for key, value in a.items():
            assert b.get(key) == value or (key == "scale" and b["type"] == "Scale"), (a["name"], key)
    assert back.data.transform == data.transform and back.data.batch_size == data.batch_size
    assert back.data.shuffle == data.shuffle  # HDF5Data's shuffle, or a note for Data
    r = invoke("recipe", "to-yaml", f"{name}_solver.prototxt")
    assert r.exit_code == 0 and yaml.safe_load(r.stdout)["solver"]["type"] == original.solver.type


@pytest.mark.parametrize(
    "name, message",
    [
        ("noise_stream", "the noise generator has no Caffe data layer"),
        ("age_regression", "layer 'loss': SmoothL1Loss is not in BVLC Caffe"),
    ],
)
def test_to_prototxt_refuses_what_caffe_lacks(invoke, tmp_path, name, message):
    smooth = ["--set", "net[12].type=SmoothL1Loss"] if name == "age_regression" else []  # its variant
    r = invoke("recipe", "to-prototxt", RECIPES / f"{name}.yaml", tmp_path, *smooth)
    assert r.exit_code == 2 and message in r.stderr
    assert not list(tmp_path.iterdir())


def test_to_yaml_takes_a_folder_and_finds_the_net_beside_the_solver(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    counted = ("--set", "solver.test_iter=23")
    r = invoke("recipe", "to-prototxt", "noise_classes", "caffe", *counted)  # a shipped recipe by name
    assert r.exit_code == 0, r.stderr
    r = invoke("recipe", "to-yaml", "caffe/noise_classes_solver.prototxt", "back")
    assert r.exit_code == 0, r.stderr
    assert "using the one beside the solver, caffe/noise_classes_train_val.prototxt" in r.stderr
    back = yaml.safe_load((tmp_path / "back" / "noise_classes.yaml").read_text())
    assert back["data"]["shuffle"] is True and back["data"]["train"] == "noise_lmdb/train_lmdb"
    r = invoke("recipe", "to-yaml", "caffe/noise_classes_solver.prototxt", "-o", "one.yaml")
    assert r.exit_code == 0 and yaml.safe_load((tmp_path / "one.yaml").read_text()) == back
