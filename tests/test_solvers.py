"""Caffe's six solvers (issue 30), each against a hand computation of Caffe's update rule
over two steps (written from sgd_solver.cpp, adagrad_, rmsprop_, adadelta_ and
adam_solver.cpp), with L2 and L1 regularization, iter_size's normalization, gradient
clipping and the sigmoid lr policy; and Caffe's own MNIST example solvers through the CLI."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from dataprep.train.layers.base import Layer
from dataprep.train.solver import Solver, SolverConfig, learning_rate

EXAMPLES = Path(__file__).parent / "fixtures" / "caffe_examples"  # as BVLC ships them (its README)


def _examples() -> Path:
    return EXAMPLES


def _layer(w: np.ndarray, lr_mult: float = 1.0, decay_mult: float = 1.0) -> Layer:
    layer = Layer("w")
    layer.params, layer.grads = [w.copy()], [None]
    layer.lr_mult, layer.decay_mult = [lr_mult], [decay_mult]
    return layer


W0 = np.array([0.5, -1.0, 2.0, 0.0], np.float64)
GRADS = [np.array([0.1, -0.2, 0.3, 0.4]), np.array([-0.3, 0.1, 0.2, -0.1])]


def caffe_rule(kind: str, cfg: dict) -> np.ndarray:
    """Caffe's ApplyUpdate for one parameter over two steps, in float64."""
    w, h, h2 = W0.copy(), np.zeros(4), np.zeros(4)
    for t, g in enumerate(GRADS):
        rate = cfg.get("base_lr", 0.01)
        g = g / cfg.get("iter_size", 1)  # Normalize
        decay = cfg.get("weight_decay", 0.0)
        g = g + decay * (np.sign(w) if cfg.get("regularization_type") == "L1" else w)  # Regularize
        m, delta = cfg.get("momentum", 0.9), cfg.get("delta", 1e-8)
        if kind == "SGD":
            h = m * h + rate * g
            w = w - h
        elif kind == "Nesterov":
            previous = h.copy()
            h = m * h + rate * g
            w = w - ((1 + m) * h - m * previous)
        elif kind == "AdaGrad":
            h = h + g * g
            w = w - rate * g / (np.sqrt(h) + delta)
        elif kind == "RMSProp":
            decay_rms = cfg.get("rms_decay", 0.99)
            h = decay_rms * h + (1 - decay_rms) * g * g
            w = w - rate * g / (np.sqrt(h) + delta)
        elif kind == "AdaDelta":
            h = m * h + (1 - m) * g * g
            update = g * np.sqrt((h2 + delta) / (h + delta))
            h2 = m * h2 + (1 - m) * update * update
            w = w - rate * update
        else:  # Adam
            m2 = cfg.get("momentum2", 0.999)
            h = m * h + (1 - m) * g
            h2 = m2 * h2 + (1 - m2) * g * g
            correction = math.sqrt(1 - m2 ** (t + 1)) / (1 - m ** (t + 1))
            w = w - rate * correction * h / (np.sqrt(h2) + delta)
    return w


CASES = [
    ("SGD", {"weight_decay": 0.01}),
    ("Nesterov", {"weight_decay": 0.01}),
    ("AdaGrad", {"base_lr": 0.1, "momentum": 0.0}),
    ("RMSProp", {"rms_decay": 0.98, "momentum": 0.0, "weight_decay": 0.0005}),
    ("AdaDelta", {"base_lr": 1.0, "momentum": 0.95, "delta": 1e-6, "weight_decay": 0.0005}),
    ("Adam", {"base_lr": 0.001, "momentum": 0.9}),
    ("SGD", {"weight_decay": 0.1, "regularization_type": "L1"}),
    ("Nesterov", {"iter_size": 2, "weight_decay": 0.01}),
]


@pytest.mark.parametrize("kind, cfg", CASES, ids=[f"{k}-{'-'.join(c)}" for k, c in CASES])
def test_each_solver_follows_caffes_rule_over_two_steps(kind, cfg):
    solver = Solver(SolverConfig(type=kind, **cfg))
    layer = _layer(W0.astype(np.float32))
    for g in GRADS:
        layer.grads = [g.astype(np.float32)]
        solver.step([(layer, 0)])
    assert np.allclose(layer.params[0], caffe_rule(kind, cfg), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("kind", ["SGD", "Nesterov"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "cfg",
    [
        {},
        {"weight_decay": 0.0005},
        {"weight_decay": 0.1, "regularization_type": "L1"},
        {"iter_size": 3, "weight_decay": 0.01, "momentum": 0.95},
        {"iter_size": 2, "momentum": 0.0},
    ],
)
def test_sgd_loop_gives_the_array_codes_bytes(monkeypatch, kind, dtype, cfg):
    """SGD's and Nesterov's compiled one-pass update and the array code (what CuPy runs):
    the same weights and history, byte for byte, over three steps, with a learning-rate
    multiplier."""
    from dataprep.train.layers import compiled, threads

    rng = np.random.default_rng(9)
    w0 = rng.normal(size=(30, 40)).astype(dtype)
    w0[0, :3] = 0  # L1's sign of zero
    grads = [rng.normal(size=w0.shape).astype(dtype) for _ in range(3)]
    calls = []
    monkeypatch.setattr(compiled, "sgd_update", lambda *a, f=compiled.sgd_update: calls.append(1) or f(*a))
    results = []
    for enabled in (True, False):
        monkeypatch.setattr(threads, "COMPILED", enabled)
        solver = Solver(SolverConfig(type=kind, base_lr=0.05, **cfg))
        layer = _layer(w0, lr_mult=2.0)
        for g in grads:
            layer.grads = [g]
            solver.step([(layer, 0)])
        results.append((layer.params[0].tobytes(), solver.history[0].tobytes()))
    assert len(calls) == 3 and results[0] == results[1]


def test_clipping_scales_every_gradient_by_their_global_norm_and_says_so():
    said = []
    solver = Solver(SolverConfig(type="SGD", base_lr=1.0, momentum=0.0, clip_gradients=0.5))
    a, b = _layer(np.zeros(2, np.float32)), _layer(np.zeros(2, np.float32))
    a.grads, b.grads = [np.array([3.0, 0.0], np.float32)], [np.array([0.0, 4.0], np.float32)]  # norm 5
    solver.step([(a, 0), (b, 0)], said.append)
    assert np.allclose(a.params[0], [-0.3, 0.0]) and np.allclose(b.params[0], [0.0, -0.4])
    assert said == ["Gradient clipping: scaling down gradients (L2 norm 5 > 0.5) by scale factor 0.1"]


def test_the_sigmoid_policy_is_caffes():
    cfg = SolverConfig(lr_policy="sigmoid", base_lr=0.1, gamma=-0.01, stepsize=100)
    assert learning_rate(cfg, 100) == pytest.approx(0.05)
    assert learning_rate(cfg, 0) == pytest.approx(0.1 / (1 + math.exp(-0.01 * 100)))


def _caffe_root(tmp_path: Path, invoke) -> Path:
    """Caffe's root: its MNIST example files, and MNIST LMDBs where they name them."""
    shutil.copytree(_examples() / "examples" / "mnist", tmp_path / "examples" / "mnist")
    assert invoke("example", "mnist", tmp_path / "raw", "--n", 200).exit_code == 0
    assert invoke("import", "mnist", tmp_path / "raw", tmp_path / "examples" / "mnist").exit_code == 0
    return tmp_path


@pytest.mark.parametrize(
    "solver",
    [
        "lenet_adadelta_solver",
        "lenet_solver_rmsprop",
        "lenet_solver_adam",
        "lenet_solver",
        "lenet_multistep_solver",
    ],
)
def test_caffes_lenet_solvers_train_as_shipped(tmp_path, invoke, monkeypatch, solver):
    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    r = invoke(
        "train",
        f"examples/mnist/{solver}.prototxt",
        *("--set", "solver.max_iter=30", "--set", "solver.display=5", "--set", "solver.test_iter=2"),
        *("--set", "solver.test_interval=0", "--set", "solver.snapshot=0"),
    )
    assert r.exit_code == 0, r.stderr
    assert "solver_mode" in r.stderr and "is not a device choice here" in r.stderr  # logged, once
    losses = [
        float(line.rsplit("= ", 1)[1])
        for line in r.stderr.splitlines()
        if "Iteration" in line and "loss = " in line
    ]
    assert losses[-1] < losses[0]


def test_iter_size_and_clip_gradients_change_what_a_prototxt_solver_trains(tmp_path, invoke, monkeypatch):
    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    common = ["--set", "solver.max_iter=3", "--set", "solver.test_interval=0", "--set", "solver.snapshot=0"]
    weights = {}
    for name, extra in (
        ("plain", []),
        ("iter_size", ["solver.iter_size=2"]),
        ("clip", ["solver.clip_gradients=0.01"]),
    ):
        sets = [a for s in extra for a in ("--set", s)]
        r = invoke(
            "train",
            "examples/mnist/lenet_solver.prototxt",
            *common,
            *sets,
            "--set",
            f"solver.snapshot_prefix={name}",
        )
        assert r.exit_code == 0, r.stderr
        weights[name] = np.load(f"{name}_iter_3.npz")["param/conv1/0"]
        if name == "clip":
            assert "Gradient clipping: scaling down gradients" in r.stderr
    assert not np.array_equal(weights["plain"], weights["iter_size"])
    assert not np.array_equal(weights["plain"], weights["clip"])


def test_levels_and_stages_choose_layers_as_caffes_filter_net_does(tmp_path, invoke):
    """include/exclude rules with min_level, max_level, stage and not_stage, against the
    solver's train_state and test_state (Net::FilterNet): each layer lands in the TRAIN
    net, the TEST net, both, or neither."""
    import yaml

    net = (_examples() / "examples/mnist/lenet_train_test.prototxt").read_text()
    net += """
    layer { name: "deep" type: "ReLU" bottom: "ip2" top: "deep" include { min_level: 1 } }
    layer { name: "shallow" type: "ReLU" bottom: "ip2" top: "shallow" include { max_level: 0 } }
    layer { name: "staged" type: "ReLU" bottom: "ip2" top: "staged" include { phase: TRAIN stage: "x" } }
    layer { name: "unstaged" type: "ReLU" bottom: "ip2" top: "unstaged" exclude { stage: "x" } }
    layer { name: "notx" type: "ReLU" bottom: "ip2" top: "notx" include { not_stage: "x" } }
    """
    (tmp_path / "net.prototxt").write_text(net)
    common = 'net: "net.prototxt"\nbase_lr: 0.01\nmax_iter: 1\n'
    cases = {
        "": {"deep": "left out", "shallow": None, "staged": "left out", "unstaged": None, "notx": None},
        'train_state { level: 1 stage: "x" }\n': {
            "deep": "TRAIN",
            "shallow": "TEST",
            "staged": "TRAIN",
            "unstaged": "TEST",
            "notx": "TEST",
        },
        "train_state { level: 1 }\ntest_state { level: 1 }\n": {
            "deep": None,
            "shallow": "left out",
            "staged": "left out",
            "unstaged": None,
            "notx": None,
        },
    }
    for state, want in cases.items():
        (tmp_path / "s.prototxt").write_text(common + state)
        r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
        assert r.exit_code == 0, r.stderr
        layers = {layer["name"]: layer.get("phase") for layer in yaml.safe_load(r.stdout)["net"]}
        got = {name: layers.get(name, "left out") for name in want}
        assert got == want, state
    (tmp_path / "s.prototxt").write_text(common + 'test_state { stage: "x" }\ntest_state { stage: "y" }\n')
    net = net.replace('include { phase: TRAIN stage: "x" }', 'include { phase: TEST stage: "x" }')
    (tmp_path / "net.prototxt").write_text(net)
    r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
    assert (
        r.exit_code == 2
        and "layer 'staged': its rules take it into some test nets and not others" in r.stderr
    )


def test_levels_and_stages_choose_the_data_layers_of_each_net(tmp_path, invoke):
    """Data layers filtered as every other layer (Net::FilterNet per state): TRAIN data
    chosen by train_state's stage, test nets' by level and by several stages; a data layer
    without rules feeds every net, as in Caffe."""
    import yaml

    def data_layer(source, rule):
        return (
            f'layer {{ name: "d_{source}" type: "HDF5Data" top: "data" top: "label" {rule} '
            f'hdf5_data_param {{ source: "{source}.txt" batch_size: 4 }} }}\n'
        )

    net = (
        data_layer("small", 'include { phase: TRAIN not_stage: "big" }')
        + data_layer("big", 'include { phase: TRAIN stage: "big" }')
        + data_layer("quick", "include { phase: TEST max_level: 0 }")
        + data_layer("full", "include { phase: TEST min_level: 1 }")
        + data_layer("both", 'include { phase: TEST stage: "a" stage: "b" }')
        + 'layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" '
        + "inner_product_param { num_output: 2 } }\n"
        + 'layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }\n'
    )
    (tmp_path / "net.prototxt").write_text(net)
    common = 'net: "net.prototxt"\nbase_lr: 0.01\nmax_iter: 1\n'
    cases = {
        "test_iter: 1\n": ("small.txt", "quick.txt"),
        'train_state { stage: "big" }\ntest_iter: 1\ntest_state { level: 1 }\n': ("big.txt", "full.txt"),
    }
    for state, (train, val) in cases.items():
        (tmp_path / "s.prototxt").write_text(common + state)
        r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
        assert r.exit_code == 0, r.stderr
        data = yaml.safe_load(r.stdout)["data"]
        assert (data["train"], data["val"], "tests" in data) == (train, val, False), state
    # three test states; #2 at level 1 with stages a and b takes "full" and "both": refused
    three = "test_iter: 1\ntest_state { }\ntest_iter: 2\ntest_state { level: 1 }\ntest_iter: 3\n"
    (tmp_path / "s.prototxt").write_text(common + three + 'test_state { level: 1 stage: "a" stage: "b" }\n')
    r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
    assert r.exit_code == 2 and "test net #2 takes 2 data layers" in r.stderr, r.stderr
    net = net.replace(
        "include { phase: TEST min_level: 1 }", 'include { phase: TEST min_level: 1 not_stage: "a" }'
    )
    (tmp_path / "net.prototxt").write_text(net)
    r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
    assert r.exit_code == 0, r.stderr
    data = yaml.safe_load(r.stdout)["data"]
    sources = [t["source"]["path"] for t in data["tests"]]
    assert data["val"] == "quick.txt" and sources == ["full.txt", "both.txt"]
    assert [t["test_iter"] for t in data["tests"]] == [2, 3]
    # no rules: the one data layer feeds the TRAIN net and the test net
    (tmp_path / "net.prototxt").write_text(data_layer("all", "") + net.split("\n", 5)[-1])
    (tmp_path / "s.prototxt").write_text(common + "test_iter: 1\n")
    r = invoke("train", tmp_path / "s.prototxt", "--print-recipe")
    data = yaml.safe_load(r.stdout)["data"]
    assert r.exit_code == 0 and data["train"] == data["val"] == "all.txt"


def test_caffes_hdf5_logistic_regression_example_trains_on_n_by_d_data(tmp_path, monkeypatch):
    """examples/hdf5_classification: HDF5Data of N x 4 floats, as the example's notebook
    writes them, into a logistic regression; its accuracy rises."""
    import h5py
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    folder = tmp_path / "examples" / "hdf5_classification"
    (folder / "data").mkdir(parents=True)
    shutil.copy(EXAMPLES / "examples" / "hdf5_classification" / "train_val.prototxt", folder)
    rng = np.random.default_rng(0)
    for split, n in (("train", 400), ("test", 100)):
        x = rng.normal(size=(n, 4)).astype(np.float32)
        y = (x[:, 0] + x[:, 1] > 0).astype(np.float32)
        with h5py.File(folder / "data" / f"{split}.h5", "w") as f:
            f["data"], f["label"] = x, y
        (folder / "data" / f"{split}.txt").write_text(f"examples/hdf5_classification/data/{split}.h5\n")
    (folder / "solver.prototxt").write_text(
        'net: "examples/hdf5_classification/train_val.prototxt"\ntest_iter: 10\ntest_interval: 100\n'
        'base_lr: 0.1\nlr_policy: "fixed"\nmomentum: 0.9\nmax_iter: 200\ndisplay: 100\n'
        'snapshot_prefix: "examples/hdf5_classification/data/train"\nsolver_mode: CPU\n'
    )
    monkeypatch.chdir(tmp_path)
    r = CliRunner().invoke(cli, ["train", "examples/hdf5_classification/solver.prototxt", "--json"])
    assert r.exit_code == 0, r.stderr
    import json

    tests = json.loads((folder / "data" / "train_metrics.json").read_text())["tests"]
    assert tests[-1]["accuracy"] > 0.9 > tests[0]["accuracy"]


def test_caffes_siamese_example_shares_weights_by_name_and_learns(tmp_path, invoke, monkeypatch):
    """examples/siamese: pairs of MNIST-like digits as 2-channel Datums in LevelDB, two
    towers sharing every parameter by name (conv1_w, ...), ContrastiveLoss; the loss falls,
    the towers' blobs are one, and the .caffemodel holds both layers' copies, equal."""
    import h5py

    from dataprep.stores import open_store
    from dataprep.train.caffemodel import read_caffemodel

    pytest.importorskip("plyvel")
    folder = tmp_path / "examples" / "siamese"
    folder.mkdir(parents=True)
    for name in ("mnist_siamese_solver.prototxt", "mnist_siamese_train_test.prototxt"):
        shutil.copy(EXAMPLES / "examples" / "siamese" / name, folder)
    assert invoke("example", "mnist", tmp_path / "raw", "--n", 300).exit_code == 0
    assert invoke("import", "mnist", tmp_path / "raw", tmp_path / "m").exit_code == 0
    with open_store(tmp_path / "m" / "mnist_train_lmdb") as store:
        images = np.stack([rec.array[0] for rec in store])
        labels = np.array([int(rec.labels[0]) for rec in store])
    rng = np.random.default_rng(0)
    for split, n in (("train", 600), ("test", 100)):
        a = rng.integers(0, len(images), n)
        b = np.where(rng.random(n) < 0.5, a, rng.integers(0, len(images), n))  # half the same image
        with h5py.File(tmp_path / f"{split}.h5", "w") as f:
            f["data"] = np.stack([images[a], images[b]], axis=1).astype(np.uint8)
            f["label"] = (labels[a] == labels[b]).astype(np.float32)[:, None]
        target = folder / f"mnist_siamese_{split}_leveldb"
        assert invoke("convert", tmp_path / f"{split}.h5", target, "--to", "leveldb").exit_code == 0
    monkeypatch.chdir(tmp_path)
    r = invoke(
        "train",
        "examples/siamese/mnist_siamese_solver.prototxt",
        *("--set", "solver.max_iter=60", "--set", "solver.display=10", "--set", "solver.test_iter=1"),
        *("--set", "solver.test_interval=0", "--set", "solver.snapshot=0"),
    )
    assert r.exit_code == 0, r.stderr
    losses = [
        float(line.rsplit("= ", 1)[1])
        for line in r.stderr.splitlines()
        if "Iteration" in line and "loss = " in line
    ]
    assert losses[-1] < losses[0]
    saved = np.load(tmp_path / "examples" / "siamese" / "mnist_siamese_iter_60.npz")
    assert "param/conv1/0" in saved.files and "param/conv1_p/0" not in saved.files  # one blob, at its owner
    blobs = read_caffemodel(tmp_path / "examples" / "siamese" / "mnist_siamese_iter_60.caffemodel")
    assert np.array_equal(
        blobs["conv1"][0], blobs["conv1_p"][0]
    )  # Caffe's ToProto: every layer writes its blobs


@pytest.mark.parametrize(
    "solver",
    [
        "mnist_autoencoder_solver",
        "mnist_autoencoder_solver_adagrad",
        "mnist_autoencoder_solver_adadelta",
        "mnist_autoencoder_solver_nesterov",
    ],
)
def test_caffes_autoencoder_solvers_test_two_nets_chosen_by_stage(tmp_path, invoke, monkeypatch, solver):
    """test_state { stage: 'test-on-train' } and { stage: 'test-on-test' }: two test nets,
    each with its own data layer and test_iter, logged as Caffe logs test nets #0 and #1;
    two layers named "loss" (no parameters) as Caffe allows; the loss falls."""
    import json

    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    sets = ["solver.max_iter=20", "solver.test_interval=10", "solver.display=10", "solver.snapshot=0"]
    sets += ["solver.test_iter=2", "data.tests[0].test_iter=1"]
    r = invoke("train", f"examples/mnist/{solver}.prototxt", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.stderr
    for it in (0, 10, 20):
        assert (
            f"Iteration {it}, Testing net (#0)" in r.stderr
            and f"Iteration {it}, Testing net (#1)" in r.stderr
        )
    (found,) = Path("examples/mnist").glob("mnist_autoencoder*_metrics.json")  # the solver's prefix
    metrics = json.loads(found.read_text())
    assert [m["iteration"] for m in metrics["tests"]] == [0, 10, 20]
    assert [(m["iteration"], m["net"]) for m in metrics["more_tests"]] == [(0, 1), (10, 1), (20, 1)]
    assert metrics["tests"][-1]["cross_entropy_loss"] < metrics["tests"][0]["cross_entropy_loss"]


def test_caffes_consolidated_lenet_solver_its_inline_v1_net_upgraded(tmp_path, invoke, monkeypatch):
    """lenet_consolidated_solver: the net inline (net_param) in the pre-2015 `layers` form
    (type: CONVOLUTION, blobs_lr), two test states: upgraded as Caffe's UpgradeNetAsNeeded
    does, trained as shipped; the upgrade is the current form's net layer for layer."""
    from dataprep.stores.caffe_pb import SolverParameter
    from dataprep.train.prototxt import upgrade_v1

    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    sets = ["solver.max_iter=20", "solver.test_interval=10", "solver.display=10", "solver.snapshot=0"]
    sets += ["solver.test_iter=2", "data.tests[0].test_iter=2"]
    r = invoke(
        "train", "examples/mnist/lenet_consolidated_solver.prototxt", *[a for s in sets for a in ("--set", s)]
    )
    assert r.exit_code == 0, r.stderr
    assert "upgraded from the pre-2015 'layers' form" in r.stderr and "Testing net (#1)" in r.stderr
    from google.protobuf import text_format

    solver = text_format.Parse(
        Path("examples/mnist/lenet_consolidated_solver.prototxt").read_text(), SolverParameter()
    )
    net = upgrade_v1(solver.net_param)
    conv1 = next(layer for layer in net.layer if layer.name == "conv1")
    assert conv1.type == "Convolution" and [p.lr_mult for p in conv1.param] == [1, 2]
    assert conv1.convolution_param.num_output == 20
    assert [layer.type for layer in net.layer][:3] == ["Data", "Data", "Data"]
    # a .caffemodel in the V1 form reads by layer name too
    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.caffemodel import read_caffemodel

    old = NetParameter(name="old")
    v1 = old.layers.add(name="ip", type=14)  # INNER_PRODUCT
    blob = v1.blobs.add()
    blob.shape.dim.extend([2, 3])
    blob.data.extend([1, 2, 3, 4, 5, 6])
    (tmp_path / "old.caffemodel").write_bytes(old.SerializeToString())
    assert read_caffemodel(tmp_path / "old.caffemodel")["ip"][0].tolist() == [[1, 2, 3], [4, 5, 6]]


def test_caffes_flickr_style_fine_tuning_trains_from_a_folder_of_photos(tmp_path, invoke, monkeypatch):
    """models/finetune_flickr_style: ImageData layers (a list file of photos, new_height x
    new_width, the 227 crop and a mean file) read the photos straight, split at the last
    space as Caffe's ImageDataLayer does; CaffeNet's layers at a small scale: the net of the
    example with the photos resized to 64x64 and a 56 crop, three iterations."""
    import yaml

    monkeypatch.chdir(tmp_path)
    assert invoke("example", "photos", "data/flickr_style/photos", "--n", 12).exit_code == 0
    photos = sorted(Path("data/flickr_style/photos").glob("*/*.jpg"))
    named = photos[0].with_name("a photo 1.jpg")  # a space in the name: Caffe's lines split at the last space
    photos[0].rename(named)
    photos[0] = named
    lines = [f"{p} {k % 3}" for k, p in enumerate(photos)]
    Path("data/flickr_style/train.txt").write_text("\n".join(lines[:9]) + "\n")
    Path("data/flickr_style/test.txt").write_text("\n".join(lines[9:]) + "\n")
    text = (EXAMPLES / "models" / "finetune_flickr_style" / "train_val.prototxt").read_text()
    text = text.replace("new_height: 256", "new_height: 64").replace("new_width: 256", "new_width: 64")
    text = text.replace("crop_size: 227", "crop_size: 56").replace("batch_size: 50", "batch_size: 3")
    Path("train_val.prototxt").write_text(text)
    mean = ("mean", "data/flickr_style/train.txt", "--root", ".", "--resize", "64x64")
    assert invoke(*mean, "-o", "data/ilsvrc12/imagenet_mean.binaryproto").exit_code == 0
    Path("solver.prototxt").write_text(
        'net: "train_val.prototxt"\ntest_iter: 1\ntest_interval: 3\nbase_lr: 0.001\nlr_policy: "fixed"\n'
        'momentum: 0.9\nmax_iter: 3\ndisplay: 1\nsnapshot_prefix: "flickr"\nsolver_mode: CPU\n'
    )
    r = invoke("train", "solver.prototxt", "--max-memory", "0")
    assert r.exit_code == 0, r.stderr
    recipe = yaml.safe_load(invoke("train", "solver.prototxt", "--print-recipe").stdout)
    want = {"path": "data/flickr_style/train.txt", "root": ".", "resize": "64x64", "color": True}
    assert recipe["data"]["train"] == want  # paths from the current folder, as Caffe reads them


def test_imagedata_decodes_in_the_workers_with_the_same_batches_for_any_count(tmp_path, invoke, monkeypatch):
    """ImageData's photos decoded by the executor's workers (-j 2) or in the loader (-j 1):
    the same shuffled epochs, the same skipped photo, the same weights; and a resume from a
    snapshot mid-epoch gives the uninterrupted run's weights."""
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "photos", "photos", "--n", 12).exit_code == 0
    photos = sorted(Path("photos").glob("*/*.jpg"))
    photos[5].write_bytes(b"not a jpeg")
    Path("train.txt").write_text("".join(f"{p} {k % 3}\n" for k, p in enumerate(photos)))
    Path("net.prototxt").write_text(
        """
    layer { name: "data" type: "ImageData" top: "data" top: "label"
      transform_param { mirror: true crop_size: 12 scale: 0.00390625 }
      image_data_param { source: "train.txt" batch_size: 5 new_height: 16 new_width: 16 shuffle: true } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip"
      inner_product_param { num_output: 3 weight_filler { type: "xavier" } } }
    layer { name: "loss" type: "SoftmaxWithLoss" bottom: "ip" bottom: "label" top: "loss" }
    """
    )
    for prefix in ("one", "two"):
        Path(f"{prefix}.prototxt").write_text(
            'net: "net.prototxt"\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: "fixed"\nmax_iter: 8\n'
            f'display: 4\nsnapshot: 4\nsnapshot_prefix: "{prefix}"\nrandom_seed: 3\n'
        )
    r1 = invoke("train", "one.prototxt", "-j", 1, "--skip-bad")
    r2 = invoke("train", "two.prototxt", "-j", 2, "--skip-bad")
    assert r1.exit_code == 0 and r2.exit_code == 0, r1.stderr + r2.stderr
    for r in (r1, r2):
        assert str(photos[5]) in r.stderr and "skipped 1" in r.stderr.lower()
    one, two = np.load("one_iter_8.npz"), np.load("two_iter_8.npz")
    assert np.array_equal(one["param/ip/0"], two["param/ip/0"])
    for f in Path(".").glob("two_iter_8*"):
        f.unlink()
    r = invoke("train", "two.prototxt", "-j", 2, "--skip-bad", "--resume", "two_iter_4.npz")
    assert r.exit_code == 0, r.stderr
    assert np.array_equal(np.load("two_iter_8.npz")["param/ip/0"], one["param/ip/0"])


def test_snapshot_format_hdf5_writes_caffes_h5_pair_and_reads_it_back(tmp_path, invoke, monkeypatch):
    """cifar10_full_solver's snapshot_format: HDF5: .caffemodel.h5 (data/LAYER/i, as
    Net::ToHDF5) and .solverstate.h5 (iter, learned_net, current_step, history/k) beside
    each .npz; the .h5 weights load back in predict and export to .caffemodel."""
    import h5py

    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    sets = ["solver.max_iter=4", "solver.test_interval=0", "solver.snapshot=0", "solver.snapshot_format=hdf5"]
    r = invoke("train", "examples/mnist/lenet_solver.prototxt", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.stderr
    weights, state = (
        Path("examples/mnist/lenet_iter_4.caffemodel.h5"),
        Path("examples/mnist/lenet_iter_4.solverstate.h5"),
    )
    assert "Snapshotting to HDF5 file" in r.stderr
    with h5py.File(weights) as f:
        assert f["data/conv1/0"].shape == (20, 1, 5, 5) and f["data/conv1/1"].shape == (20,)
    with h5py.File(state) as f:
        assert int(f["iter"][()]) == 4 and f["learned_net"][()].decode() == str(weights)
        assert len(f["history"]) == 8  # two blobs of four layers
    npz = np.load("examples/mnist/lenet_iter_4.npz")
    with h5py.File(weights) as f:
        assert np.array_equal(f["data/ip2/0"][()], npz["param/ip2/0"])
    model = "examples/mnist/lenet_train_test.prototxt"
    r = invoke("predict", model, "--weights", weights, "examples/mnist/mnist_test_lmdb", "--json")
    assert r.exit_code == 0, r.stderr
    assert (
        invoke(
            "export", model, "--weights", weights, "-o", "lenet.caffemodel", "--shape", "1x28x28"
        ).exit_code
        == 0
    )


@pytest.mark.parametrize("solver", ["cifar10_full_solver", "cifar10_full_sigmoid_solver_bn"])
def test_caffes_cifar10_full_solvers_train_as_shipped(tmp_path, invoke, monkeypatch, solver):
    """CIFAR-10 full: LRN within channels (the plain net), BatchNorm with Sigmoid (the _bn
    one), snapshot_format HDF5 (the plain solver): a few iterations as shipped; then, as
    train_full.sh does, cifar10_full_solver_lr1 resumed from the HDF5 solver state."""
    shutil.copytree(EXAMPLES / "examples" / "cifar10", tmp_path / "examples" / "cifar10")
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "cifar10", ".", "--n", 60).exit_code == 0
    assert invoke("import", "cifar10", "cifar-10-binary.tar.gz", "examples/cifar10").exit_code == 0
    assert (
        invoke(
            "mean", "examples/cifar10/cifar10_train_lmdb", "-o", "examples/cifar10/mean.binaryproto"
        ).exit_code
        == 0
    )
    sets = ["solver.max_iter=4", "solver.test_interval=0", "solver.display=2", "solver.test_iter=1"]
    r = invoke("train", f"examples/cifar10/{solver}.prototxt", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.stderr
    if solver == "cifar10_full_solver":
        assert Path("examples/cifar10/cifar10_full_iter_4.caffemodel.h5").is_file()
        # train_full.sh's second stage: the _lr1 solver from the first stage's HDF5 solver state
        sets[0] = "solver.max_iter=6"
        r = invoke(
            "train",
            "examples/cifar10/cifar10_full_solver_lr1.prototxt",
            "--resume",
            "examples/cifar10/cifar10_full_iter_4.solverstate.h5",
            *[a for s in sets for a in ("--set", s)],
        )
        assert r.exit_code == 0, r.stderr
        assert "Iteration 4, lr = 0.0001" in r.stderr
        assert Path("examples/cifar10/cifar10_full_iter_6.caffemodel.h5").is_file()


def _split_lenet(root: Path) -> tuple[str, str]:
    """lenet_train_test as the pre-2014 pair: a train net (its TRAIN data layer, no
    Accuracy) and a test net (its TEST data layer, the Accuracy), no phase rules left."""
    from google.protobuf import text_format

    from dataprep.stores.caffe_pb import NetParameter

    both = text_format.Parse((root / "examples/mnist/lenet_train_test.prototxt").read_text(), NetParameter())
    nets = {}
    for phase, keep in (("train", 0), ("test", 1)):
        net = NetParameter(name=f"LeNet-{phase}")
        for layer in both.layer:
            if layer.include and layer.include[0].phase != keep:
                continue
            net.layer.add().CopyFrom(layer)
            del net.layer[-1].include[:]
        nets[phase] = text_format.MessageToString(net)
    return nets["train"], nets["test"]


@pytest.mark.parametrize("form", ["files", "inline"])
def test_a_separate_test_net_is_tested_as_caffe_tests_it(tmp_path, invoke, monkeypatch, form):
    """train_net + test_net files (or train_net_param + test_net_param inline): the test
    net's data layer is the validation source, its Accuracy a TEST output."""
    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    train, test = _split_lenet(root)
    common = "base_lr: 0.01\nmomentum: 0.9\nlr_policy: 'fixed'\nmax_iter: 20\ntest_iter: 2\n"
    common += "test_interval: 10\ndisplay: 10\nsnapshot_prefix: 'pair'\n"
    if form == "files":
        Path("train.prototxt").write_text(train)
        Path("test.prototxt").write_text(test)
        Path("s.prototxt").write_text(f"train_net: 'train.prototxt'\ntest_net: 'test.prototxt'\n{common}")
    else:
        Path("s.prototxt").write_text(f"train_net_param {{ {train} }}\ntest_net_param {{ {test} }}\n{common}")
    r = invoke("train", "s.prototxt")
    assert r.exit_code == 0, r.stderr
    outputs = [line.split("] ", 1)[1].strip() for line in r.stderr.splitlines() if "Test net output" in line]
    assert any(o.startswith("Test net output #0: accuracy = ") for o in outputs), outputs
    assert any(o.startswith("Test net output #1: loss = ") for o in outputs), outputs
    assert (
        "Train net output #0: loss" in r.stderr
        and "accuracy" not in r.stderr.split("Train net output")[1][:40]
    )
    # a test net whose shared layers differ from the train net's is refused in one line
    Path("test.prototxt").write_text(test.replace("num_output: 500", "num_output: 400"))
    Path("s.prototxt").write_text(f"train_net: 'train.prototxt'\ntest_net: 'test.prototxt'\n{common}")
    Path("train.prototxt").write_text(train)
    r = invoke("train", "s.prototxt")
    assert r.exit_code == 2 and "layer 'ip1' differs between the train and the test net" in r.stderr


def test_several_separate_test_nets_each_test_their_own_source(tmp_path, invoke, monkeypatch):
    """Two test_net files (the test set and the training set, as lenet_consolidated_solver
    does with stages), each with its own test_iter: Caffe's "Testing net (#0)" and "(#1)",
    each net's outputs counted from #0, the second over the training LMDB."""
    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    train, test = _split_lenet(root)
    on_train = test.replace("mnist_test_lmdb", "mnist_train_lmdb")
    assert on_train != test
    Path("train.prototxt").write_text(train)
    Path("test.prototxt").write_text(test)
    Path("test_on_train.prototxt").write_text(on_train)
    Path("s.prototxt").write_text(
        "train_net: 'train.prototxt'\ntest_net: 'test.prototxt'\ntest_net: 'test_on_train.prototxt'\n"
        "test_iter: 2\ntest_iter: 1\nbase_lr: 0.01\nmomentum: 0.9\nlr_policy: 'fixed'\nmax_iter: 10\n"
        "test_interval: 10\ndisplay: 10\nsnapshot_prefix: 'three'\n"
    )
    r = invoke("train", "s.prototxt", "--print-recipe")
    assert r.exit_code == 0, r.stderr
    assert "mnist_train_lmdb" in r.stdout.split("tests:")[1] and "test_iter: 1" in r.stdout.split("tests:")[1]
    r = invoke("train", "s.prototxt")
    assert r.exit_code == 0, r.stderr
    lines = [line.split("] ", 1)[1].strip() for line in r.stderr.splitlines() if "] " in line]
    second = lines.index("Iteration 10, Testing net (#1)")
    assert "Iteration 10, Testing net (#0)" in lines[:second]
    assert any(o.startswith("Test net output #0: accuracy = ") for o in lines[second:])
    # a further test net with other layers than test net #0 is refused in one line
    Path("test_on_train.prototxt").write_text(on_train.replace("num_output: 500", "num_output: 400"))
    r = invoke("train", "s.prototxt")
    assert r.exit_code == 2 and "test net #1 differs from test net #0 in more than its data layer" in r.stderr


def test_v1_transformation_fields_in_data_param_move_to_transform_param_as_caffe_upgrades(tmp_path, caplog):
    """UpgradeNetDataTransformation: a V1 DATA layer's scale, mean_file, crop_size and
    mirror (in data_param then) become its transform_param; in the current form Caffe does
    not read them there, and a line says so."""
    from dataprep.train.prototxt import net_sections

    v1 = """
    name: "old"
    layers { name: "mnist" type: DATA top: "data" top: "label"
      data_param { source: "db" backend: LMDB batch_size: 4 scale: 0.00390625 crop_size: 20 mirror: true } }
    layers { name: "ip" type: INNER_PRODUCT bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    """
    (tmp_path / "v1.prototxt").write_text(v1)
    data = net_sections(tmp_path / "v1.prototxt")["data"]
    assert data["transform"] == {"scale": 0.00390625, "crop_size": 20, "mirror": True}
    current = """
    name: "new"
    layer { name: "mnist" type: "Data" top: "data" top: "label"
      data_param { source: "db" backend: LMDB batch_size: 4 scale: 0.00390625 } }
    layer { name: "ip" type: "InnerProduct" bottom: "data" top: "ip" inner_product_param { num_output: 2 } }
    """
    (tmp_path / "new.prototxt").write_text(current)
    with caplog.at_level("WARNING"):
        data = net_sections(tmp_path / "new.prototxt")["data"]
    assert "transform" not in data
    assert "data_param.scale is the pre-2015 place; Caffe ignores it in this form" in caplog.text


def test_caffes_caffenet_train_val_trains_from_its_imagenet_layout(tmp_path, invoke, monkeypatch):
    """models/bvlc_reference_caffenet as shipped (227 crops of 256 x 256 LMDB records, the
    mean file, mirror): Caffe's root laid out with a few photos; two iterations at batch 2
    and a test pass, and the snapshot predicts and exports to .caffemodel."""
    monkeypatch.chdir(tmp_path)
    shutil.copytree(EXAMPLES / "models" / "bvlc_reference_caffenet", "models/bvlc_reference_caffenet")
    assert invoke("example", "photos", "photos", "--n", 6).exit_code == 0
    photos = sorted(Path("photos").glob("*/*.jpg"))
    Path("list.txt").write_text("".join(f"{p.resolve()} {k % 3}\n" for k, p in enumerate(photos)))
    for split in ("train", "val"):
        r = invoke("lmdb", "list.txt", f"examples/imagenet/ilsvrc12_{split}_lmdb", "--resize", "256x256")
        assert r.exit_code == 0, r.stderr
    r = invoke(
        "mean", "examples/imagenet/ilsvrc12_train_lmdb", "-o", "data/ilsvrc12/imagenet_mean.binaryproto"
    )
    assert r.exit_code == 0, r.stderr
    sets = ["solver.max_iter=2", "solver.test_iter=1", "solver.test_interval=2", "solver.display=1"]
    sets += ["solver.snapshot=0", "data.batch_size=2", "data.val_batch_size=2"]
    r = invoke(
        "train",
        "models/bvlc_reference_caffenet/solver.prototxt",
        *[a for s in sets for a in ("--set", s)],
        "--max-memory",
        "0",
    )
    assert r.exit_code == 0, r.stderr
    assert "Test net output #0: accuracy" in r.stderr and "Iteration 2, loss = " in r.stderr
    snapshot = "models/bvlc_reference_caffenet/caffenet_train_iter_2.npz"
    r = invoke("predict", snapshot, str(photos[0]), "--top-k", "1")
    assert r.exit_code == 0 and r.stdout.strip(), r.stderr
    r = invoke("export", snapshot, "-o", "caffenet.caffemodel")
    assert r.exit_code == 0, r.stderr
    from dataprep.train.caffemodel import read_caffemodel

    assert read_caffemodel("caffenet.caffemodel")["fc8"][0].shape == (1000, 4096)


def test_resume_from_caffes_solver_state_restores_iteration_weights_and_both_histories(
    tmp_path, invoke, monkeypatch
):
    """--resume X.solverstate.h5 (and a binaryproto X.solverstate): the iteration, the
    weights file it names and the histories (Adam's m, then v: Caffe's order) restored,
    in a line saying what is not in it; a state of another solver is refused by count."""
    import h5py

    from dataprep.stores.caffe_pb import SolverState, blob_message

    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    solver = "examples/mnist/lenet_solver_adam.prototxt"
    sets = ["solver.test_interval=0", "solver.snapshot=0", "solver.snapshot_format=hdf5", "solver.display=1"]
    r = invoke("train", solver, *[a for s in [*sets, "solver.max_iter=4"] for a in ("--set", s)])
    assert r.exit_code == 0, r.stderr
    state = "examples/mnist/lenet_iter_4.solverstate.h5"
    npz = np.load("examples/mnist/lenet_iter_4.npz")
    with h5py.File(state) as f:
        history = [f[f"history/{k}"][()] for k in range(len(f["history"]))]
    assert len(history) == 16  # m and v of eight blobs
    assert np.array_equal(history[0], npz["history/0"]) and np.array_equal(history[8], npz["history2/0"])
    binary = SolverState(iter=4, learned_net="examples/mnist/lenet_iter_4.caffemodel.h5")
    binary.history.extend(blob_message(h) for h in history)
    Path("lenet_iter_4.solverstate").write_bytes(binary.SerializeToString())
    weights = {}
    for name, path in (("h5", state), ("binary", "lenet_iter_4.solverstate")):
        more = [*sets, "solver.max_iter=6", f"solver.snapshot_prefix={name}"]
        r = invoke("train", solver, "--resume", path, *[a for s in more for a in ("--set", s)])
        assert r.exit_code == 0, r.stderr
        assert f"Restoring previous solver status from {path} (Caffe's: iteration 4" in r.stderr
        assert "Iteration 0 " not in r.stderr and "Iteration 5 (" in r.stderr  # it goes on from 4
        weights[name] = np.load(f"{name}_iter_6.npz")["param/conv1/0"]
    assert np.array_equal(weights["h5"], weights["binary"])
    assert not np.array_equal(weights["h5"], npz["param/conv1/0"])
    r = invoke(
        "train", "examples/mnist/lenet_solver.prototxt", "--resume", state, "--set", "solver.max_iter=6"
    )
    assert r.exit_code == 1 and "16 histories; this net's 8 parameters with SGD need 8" in r.stderr


def test_debug_info_prints_caffes_per_blob_and_net_wide_lines(tmp_path, invoke, monkeypatch):
    """debug_info: per layer the mean absolute value of each top and parameter (forward),
    of each bottom diff and parameter diff (backward), and the net-wide L1/L2 line; with
    base_lr 0 the weights stay, so the snapshot checks the numbers."""
    root = _caffe_root(tmp_path, invoke)
    monkeypatch.chdir(root)
    sets = ["solver.max_iter=1", "solver.debug_info=true", "solver.base_lr=0", "solver.test_interval=0"]
    sets += ["solver.snapshot=0", "solver.snapshot_prefix=dbg"]
    r = invoke("train", "examples/mnist/lenet_solver.prototxt", *[a for s in sets for a in ("--set", s)])
    assert r.exit_code == 0, r.stderr
    lines = [line.split("] ", 1)[1].strip() for line in r.stderr.splitlines() if "] " in line]
    saved = np.load("dbg_iter_1.npz")
    conv1 = next(line for line in lines if line.startswith("[Forward] Layer conv1, param blob 0 data: "))
    assert float(conv1.rsplit(" ", 1)[1]) == pytest.approx(np.abs(saved["param/conv1/0"]).mean(), rel=1e-4)
    assert any(line.startswith("[Forward] Layer conv1, top blob conv1 data: ") for line in lines)
    assert any(line.startswith("[Backward] Layer ip2, bottom blob ip1 diff: ") for line in lines)
    assert any(line.startswith("[Backward] Layer conv1, param blob 0 diff: ") for line in lines)
    net = next(
        line for line in lines if line.startswith("[Backward] All net params (data, diff): L1 norm = (")
    )
    l1 = float(net.split("L1 norm = (")[1].split(",")[0])
    weights = [saved[k] for k in saved.files if k.startswith("param/")]
    assert l1 == pytest.approx(sum(np.abs(w).sum() for w in weights), rel=1e-4)
