"""``dataprep train``: recipes validated with their key paths, training from the noise
generator and from HDF5 stores, Caffe's log lines, snapshots and metrics."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataprep.gpu import gpu_available

RECIPES = Path(__file__).parents[2] / "recipes"
SMALL_NET = [
    {
        "name": "conv1",
        "type": "Convolution",
        "num_output": 8,
        "kernel_size": 3,
        "stride": 2,
        "weight_filler": {"type": "gaussian", "std": 0.05},
    },
    {"name": "relu1", "type": "ReLU"},
    {"name": "pool1", "type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2},
    {
        "name": "fc2",
        "type": "InnerProduct",
        "num_output": 2,
        "weight_filler": {"type": "gaussian", "std": 0.05},
    },
    {"name": "pred", "type": "Sigmoid"},
    {"name": "loss", "type": "EuclideanLoss", "bottom": ["pred", "freq"]},
]


def write_recipe(folder: Path, **changes) -> Path:
    recipe = {
        "name": "tiny",
        "data": {
            "train": {"noise": {"n": 400, "offset": 0, "size": "16x16", "seed": 3}},
            "val": {"noise": {"n": 40, "offset": 400, "size": "16x16", "seed": 3}},
            "batch_size": 20,
            "target": "freq",
            "transform": {"mean_value": 128, "scale": 0.01},
        },
        "net": SMALL_NET,
        "solver": {
            "type": "Nesterov",
            "base_lr": 0.2,
            "momentum": 0.9,
            "max_iter": 150,
            "display": 50,
            "test_interval": 75,
            "snapshot_prefix": str(folder / "tiny"),
            "random_seed": 1,
        },
    }
    for key, value in changes.items():
        section, name = key.split("__")
        recipe.setdefault(section, {})[name] = value
    path = folder / "tiny.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


# the regular expressions Caffe's tools/extra/parse_log.py reads the log with
ITERATION = re.compile(r"Iteration (\d+)")
OUTPUT = re.compile(r"(Test|Train) net output #(\d+): (\S+) = ([.\deE+-]+)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
PREFIX = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ [\w.]+:\d+\] ")


def test_trains_from_the_generator_with_caffes_log(invoke, tmp_path):
    r = invoke("train", write_recipe(tmp_path), "--json")
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    metrics = json.loads((tmp_path / "tiny_metrics.json").read_text())["tests"]
    assert [m["iteration"] for m in metrics] == [0, 75, 150]
    assert metrics[-1]["loss"] < 0.3 * metrics[0]["loss"]  # it learns the frequencies
    assert set(metrics[-1]) == {"iteration", "loss", "loss_mae0", "loss_mae1"}  # per-column MAE
    assert max(metrics[-1]["loss_mae0"], metrics[-1]["loss_mae1"]) < max(
        metrics[0]["loss_mae0"], metrics[0]["loss_mae1"]
    )
    lines = r.stderr.splitlines()
    assert all(PREFIX.match(line) for line in lines)
    solving = next(k for k, line in enumerate(lines) if "Solving tiny" in line)
    assert solving > 0 and all("net.cpp:" in line for line in lines[:solving])  # the net's set-up first
    trains = [OUTPUT.search(line) for line in lines if "Train net output" in line]
    assert len(trains) == 3 and all(m and m.group(3) == "loss" for m in trains)
    assert [int(ITERATION.search(line).group(1)) for line in lines if ", lr = " in line] == [0, 50, 100]
    assert all(LEARNING_RATE.search(line) for line in lines if ", lr = " in line)
    speeds = [line for line in lines if " iter/s, " in line]
    assert len(speeds) == 3 and all(re.search(r"iter/s, [\d.e+]+ images/s, ", line) for line in speeds)
    tests = [line for line in lines if "Testing net" in line]
    assert len(tests) == 3 and "Test net output #1: loss_mae0 = " in r.stderr
    snapshot = np.load(tmp_path / "tiny_iter_150.npz", allow_pickle=False)
    assert snapshot["param/conv1/0"].shape == (8, 1, 3, 3) and int(snapshot["iteration"]) == 150
    assert yaml.safe_load(str(snapshot["recipe"]))["name"] == "tiny"
    assert summary["iterations"] == 150 and summary["test"]["loss"] == pytest.approx(metrics[-1]["loss"])


def test_trains_from_hdf5_stores(invoke, tmp_path):
    r = invoke(
        "noise",
        "--n",
        120,
        "--size",
        "16x16",
        "--to",
        "hdf5",
        "--out",
        tmp_path / "s",
        "--mean",
        128,
        "--scale",
        0.01,
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    recipe = write_recipe(
        tmp_path,
        data__train=str(tmp_path / "s/train_h5.txt"),
        data__val=str(tmp_path / "s/val_h5.txt"),
        data__transform={},
        solver__max_iter=6,
    )
    r = invoke("train", recipe, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["iterations"] == 6 and (tmp_path / "tiny_iter_6.npz").is_file()


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"solver__base_lr": "fast"}, "recipe solver.base_lr: expected float, got 'fast'"),
        ({"data__crop": 3}, "recipe data.crop: unknown key; valid: batch_size"),
        ({"solver__lr_policy": "cosine"}, "solver.lr_policy 'cosine': choose from fixed"),
        (
            {"data__val": {"noise": {"n": 40, "offset": 390, "size": "16x16", "seed": 3}}},
            "the train samples [0, 400) and the val samples [390, 430) overlap",
        ),
    ],
)
def test_bad_recipes_name_the_key(invoke, tmp_path, changes, message):
    r = invoke("train", write_recipe(tmp_path, **changes))
    assert r.exit_code == 2 and message in r.stderr
    assert not (tmp_path / "tiny_metrics.json").exists()


def test_set_overrides_and_print_recipe(invoke, tmp_path):
    path = write_recipe(tmp_path)
    r = invoke("train", path, "--set", "solver.max_iter=3", "--set", "net[0].num_output=4", "--print-recipe")
    assert r.exit_code == 0, r.stderr
    printed = yaml.safe_load(r.stdout)
    assert printed["solver"]["max_iter"] == 3 and printed["net"][0]["num_output"] == 4
    r = invoke("train", path, "--set", "solver.max_iter")
    assert r.exit_code == 2 and "give KEY=VALUE" in r.stderr
    r = invoke("train", path, "--set", "solver.max_iter=many")
    assert r.exit_code == 2 and "solver.max_iter: expected int" in r.stderr


@pytest.mark.skipif(gpu_available(), reason="checks the message given where there is no GPU")
def test_device_gpu_without_a_gpu_is_a_clear_error(invoke, tmp_path):
    r = invoke("train", write_recipe(tmp_path, solver__device="gpu"))
    assert r.exit_code == 1 and "--device gpu needs CuPy and a CUDA GPU" in r.stderr


@pytest.mark.parametrize(
    "name",
    [
        "noise_regression",
        "noise_stream",
        "noise_classes",
        "age_regression",
        "age_expectation",
        "caffenet",
        "lenet",
        "cifar10_quick",
    ],
)
def test_shipped_recipes_are_valid_and_say_what_they_train(invoke, tmp_path, name, monkeypatch):
    r = invoke("train", RECIPES / f"{name}.yaml", "--print-recipe")
    assert r.exit_code == 0, r.stderr
    assert yaml.safe_load(r.stdout)["name"] == name
    assert (RECIPES / f"{name}.yaml").read_text().startswith("# ")  # the comment block
    if name == "noise_stream":  # two tiny iterations of the real net, from the generator
        monkeypatch.chdir(tmp_path)
        r = invoke(
            "train",
            RECIPES / f"{name}.yaml",
            "--set",
            "solver.max_iter=2",
            "--set",
            "data.batch_size=2",
            "--set",
            "solver.test_iter=1",
            "--set",
            "solver.test_interval=0",
        )
        assert r.exit_code == 0, r.stderr
        assert (tmp_path / "noise_stream_iter_2.npz").is_file()


def params_of(path: Path) -> dict[str, np.ndarray]:
    saved = np.load(path, allow_pickle=False)
    return {key: saved[key] for key in saved.files if key.startswith(("param/", "history"))}


def test_resume_gives_the_weights_of_an_uninterrupted_run(invoke, tmp_path):
    net = [
        {**SMALL_NET[0]},
        SMALL_NET[1],
        SMALL_NET[2],
        {**SMALL_NET[3]},
        {"name": "drop", "type": "Dropout", "dropout_ratio": 0.3, "bottom": "fc2"},
        {**SMALL_NET[4], "bottom": "drop"},
        SMALL_NET[5],
    ]
    # online augmentation too: drawn per (seed, epoch, index), so a resumed run repeats it
    common = {
        "data__shuffle": True,
        "augment__mirror": True,
        "augment__brightness": 0.2,
        "augment__noise": 2.0,
    }
    (tmp_path / "a").mkdir()
    straight = write_recipe(tmp_path / "a", **common)
    r = invoke(
        "train",
        straight,
        "--set",
        "solver.max_iter=30",
        "--set",
        "solver.test_interval=10",
        "--set",
        f"net={yaml.safe_dump(net, default_flow_style=True).strip()}",
    )
    assert r.exit_code == 0, r.stderr
    (tmp_path / "b").mkdir()
    halves = write_recipe(tmp_path / "b", **common)
    args = [
        "--set",
        "solver.test_interval=10",
        "--set",
        f"net={yaml.safe_dump(net, default_flow_style=True).strip()}",
    ]
    r = invoke("train", halves, "--set", "solver.max_iter=14", *args)
    assert r.exit_code == 0, r.stderr
    r = invoke(
        "train", halves, "--set", "solver.max_iter=30", *args, "--resume", tmp_path / "b/tiny_iter_14.npz"
    )
    assert r.exit_code == 0, r.stderr
    want, got = params_of(tmp_path / "a/tiny_iter_30.npz"), params_of(tmp_path / "b/tiny_iter_30.npz")
    assert sorted(want) == sorted(got) and all(np.array_equal(want[k], got[k]) for k in want)
    tests = json.loads((tmp_path / "b/tiny_metrics.json").read_text())["tests"]
    assert [t["iteration"] for t in tests] == [0, 10, 14, 20, 30]  # the first run's tests are kept
    r = invoke("train", halves, "--resume", tmp_path / "a/tiny_iter_30.npz", "--set", "net[0].num_output=4")
    assert r.exit_code == 2 and "a snapshot of another net" in r.stderr


@pytest.mark.parametrize("costly", [False, True])
def test_the_loader_makes_cheap_batches_in_the_consumer_with_the_same_batches(monkeypatch, costly):
    """Batches that take under SYNC_SHARE of the time between them are made by the consumer
    once WATCHED have been handed out (the thread stops); costly ones stay in the thread.
    The batches are the same as a loader that never chooses gives, past the choice too."""
    import time

    from dataprep.train import loader as loaders
    from dataprep.train.recipe import NoiseSpec, Source, Transform

    source = Source(noise=NoiseSpec(n=50, size="8x8", seed=3))
    make = loaders.BatchLoader._make

    def slow(self, start):  # a batch costing 10 ms of the thread's CPU time, a fifth of the pause
        began = time.thread_time()
        while costly and time.thread_time() - began < 0.01:
            pass
        return make(self, start)

    monkeypatch.setattr(loaders.BatchLoader, "_make", slow)

    def batches(share: float) -> tuple[list, bool]:
        monkeypatch.setattr(loaders, "SYNC_SHARE", share)
        loader = loaders.BatchLoader(source, 16, Transform(), "data", "freq", True, 4, start=8)
        try:
            out = []
            for _ in range(loaders.WATCHED + 6):
                out.append(loader.next())
                time.sleep(0.05)  # the consumer's pass
            assert len(loader._making) <= loaders.WATCHED + 2 + loaders.PREFETCH + 1  # not one per batch
            return out, loader._thread is None
        finally:
            loader.close()

    chosen, by_consumer = batches(loaders.SYNC_SHARE)
    plain, never = batches(0.0)  # no batch is that cheap: the thread throughout
    assert by_consumer == (not costly) and not never
    assert all(np.array_equal(a[k], b[k]) for a, b in zip(chosen, plain) for k in ("data", "freq"))


def test_an_error_made_ahead_neither_hangs_the_loaders_choice_nor_comes_early(monkeypatch):
    """The thread, reading ahead, meets a bad batch while the queue is full; the consumer then
    stops the thread (its choice): it must not wait on the thread's hand-over forever, and
    the error comes when the consumer reaches that batch itself."""
    import time

    from dataprep.train import loader as loaders
    from dataprep.train.recipe import NoiseSpec, Source, Transform

    make, bad = loaders.BatchLoader._make, loaders.WATCHED + 2 + loaders.PREFETCH  # 4th ahead of the choice

    def failing(self, start):
        if start == bad * 4:
            raise ValueError(f"bad batch at {start}")
        return make(self, start)

    monkeypatch.setattr(loaders.BatchLoader, "_make", failing)
    monkeypatch.setattr(loaders, "SYNC_SHARE", 1e9)  # every batch counts as cheap: the consumer's
    loader = loaders.BatchLoader(
        Source(noise=NoiseSpec(n=50, size="8x8", seed=3)), 4, Transform(), "data", "freq", True, 4
    )
    try:
        for _ in range(bad):
            loader.next()
            time.sleep(0.02)  # the thread fills the queue and meets the bad batch meanwhile
        assert loader._thread is None  # chosen: the consumer makes the batches
        with pytest.raises(ValueError, match=f"bad batch at {bad * 4}"):
            loader.next()
    finally:
        loader.close()


def test_online_augmentation_repeats_per_seed_epoch_and_index(tmp_path):
    from dataprep.train.loader import BatchLoader
    from dataprep.train.recipe import Augment, NoiseSpec, Source, Transform

    source = Source(noise=NoiseSpec(n=30, size="16x16", seed=2))
    spec = Augment(mirror=True, brightness=0.3, noise=3.0, crop="12x12").spec()

    def batches(augment=spec, seed=5, start=0, count=3):
        loader = BatchLoader(
            source, 20, Transform(), "data", "freq", False, 1, start=start, augment=augment, augment_seed=seed
        )
        try:
            return [loader.next()["data"] for _ in range(count)]
        finally:
            loader.close()

    first = batches()
    assert first[0].shape == (20, 1, 12, 12)  # augment.crop applies before the net
    assert all(np.array_equal(a, b) for a, b in zip(first, batches()))  # a run repeats
    assert all(np.array_equal(a, b) for a, b in zip(first[1:], batches(start=20, count=2)))  # and resumes
    assert not np.array_equal(first[0], batches(seed=6, count=1)[0])  # the seed decides
    # 30 samples, batches of 20: sample 0 is row 0 of batch 0 (epoch 0) and row 10 of batch 1
    # (epoch 1); each epoch draws anew, where without augmentation the two are the same
    assert not np.array_equal(first[0][0], first[1][10])
    plain = batches(augment=None, count=2)
    assert np.array_equal(plain[0][0], plain[1][10])


@pytest.mark.parametrize(
    "augment, message",
    [
        ({"crop_scale": [0.5, 1.0]}, "recipe augment.crop_scale change(s) scale or orientation"),
        ({"crop_scale": [0.5, 2.0]}, "recipe augment.crop_scale '0.5,2.0': needs 0 < MIN <= MAX <= 1"),
        ({"saturation": 0.3}, "recipe augment.saturation: work on color images only"),
        ({"crop": "20x20"}, "recipe augment.crop 20x20 is larger than the training images (16x16 (HxW)"),
        ({"pad": True}, "recipe augment.pad: goes with augment.crop"),
        ({"flip": True}, "recipe augment.flip: unknown key"),
    ],
)
def test_bad_augment_sections_name_the_key(invoke, tmp_path, augment, message):
    r = invoke("train", write_recipe(tmp_path, **{f"augment__{k}": v for k, v in augment.items()}))
    assert r.exit_code == 2 and message in r.stderr, r.stderr
    r = invoke(
        "train",
        write_recipe(tmp_path, augment__crop_scale=[0.5, 1.0], augment__force=True, solver__max_iter=2),
    )
    assert r.exit_code == 0, r.stderr  # force: the user says the labels do not depend on scale


def test_keep_best_and_the_loss_plot(invoke, tmp_path):
    r = invoke(
        "train",
        write_recipe(tmp_path, solver__keep_best="loss", solver__max_iter=60, solver__test_interval=20),
    )
    assert r.exit_code == 0, r.stderr
    record = json.loads((tmp_path / "tiny_metrics.json").read_text())
    best = min(record["tests"], key=lambda t: t["loss"])
    assert record["best"] == {"output": "loss", "value": best["loss"], "iteration": best["iteration"]}
    saved = np.load(tmp_path / "tiny_best.npz", allow_pickle=False)
    assert int(saved["iteration"]) == best["iteration"]
    import cv2

    plot = cv2.imread(str(tmp_path / "tiny_loss.png"))
    assert plot is not None and plot.shape[0] > 450 and plot.std() > 10  # two panels: loss, MAE
    assert record["train"][-1][0] == 60  # the train line reaches the last iteration
    r = invoke("train", write_recipe(tmp_path, solver__keep_best="accuracy"), "--overwrite")
    assert r.exit_code == 2 and "'accuracy' is no test output (loss, loss_mae0, loss_mae1)" in r.stderr


def test_ctrl_c_snapshots_then_exits_130_and_resumes_exactly(tmp_path, invoke):
    import signal
    import subprocess
    import sys

    recipe = write_recipe(tmp_path, solver__max_iter=100000, solver__display=1)
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", "train", str(recipe)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines = []
    while sum(", lr = " in line for line in lines) < 4:  # a few iterations in
        lines.append(proc.stderr.readline())
        assert proc.poll() is None, "".join(lines)
    proc.send_signal(signal.SIGINT)
    _, rest = proc.communicate(timeout=60)
    assert proc.returncode == 130 and "Traceback" not in rest, rest
    snapshots = sorted(tmp_path.glob("tiny_iter_*.npz"))
    assert len(snapshots) == 1 and "Snapshotting to" in rest
    stopped = int(np.load(snapshots[0], allow_pickle=False)["iteration"])
    assert stopped >= 3
    # wherever the interrupt landed, resuming gives what an uninterrupted run gives
    end = f"solver.max_iter={stopped + 5}"
    r = invoke("train", recipe, "--set", end, "--resume", snapshots[0])
    assert r.exit_code == 0, r.stderr
    (tmp_path / "straight").mkdir()
    straight = write_recipe(tmp_path / "straight", solver__display=1)
    assert invoke("train", straight, "--set", end).exit_code == 0
    want = params_of(tmp_path / f"straight/tiny_iter_{stopped + 5}.npz")
    got = params_of(tmp_path / f"tiny_iter_{stopped + 5}.npz")
    assert all(np.array_equal(want[k], got[k]) for k in want)


def test_noise_classes_recipe_trains_from_lmdb(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke(
        "noise", "--n", 300, "--size", "28x28", "--classes", 5, "--to", "lmdb", "--out", "noise_lmdb", "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    r = invoke(
        "train",
        RECIPES / "noise_classes.yaml",
        "--json",
        "--set",
        "solver.max_iter=4",
        "--set",
        "data.batch_size=16",
        "--set",
        "solver.test_interval=2",
        "--set",
        "solver.test_iter=2",
    )
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert set(summary["test"]) == {"loss", "accuracy"} and 0 <= summary["test"]["accuracy"] <= 1
    assert "Test net output #1: accuracy = " in r.stderr and (tmp_path / "noise_classes_best.npz").is_file()


@pytest.mark.parametrize("name", ["age_regression", "age_expectation"])
def test_age_recipes_train_on_noise_ages_and_the_fixed_kernel_stays_0_to_99(
    invoke, tmp_path, monkeypatch, name
):
    """Both designs train on `noise --label age` stores; design 2's expectation kernel is
    0..99 after training (lr_mult 0), and to-prototxt writes it for Caffe as an init
    .caffemodel the solver names."""
    from dataprep.train.caffemodel import read_caffemodel

    monkeypatch.chdir(tmp_path)
    r = invoke("noise", "--n", 120, "--size", "64x64", "--label", "age", "--to", "lmdb", "--out", "age_lmdb")
    assert r.exit_code == 0, r.stderr
    r = invoke("train", name, "--json", *("--set", "solver.max_iter=6", "--set", "solver.test_interval=3"))
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    assert 0 < summary["test"]["loss_mae0"] < 100
    if name == "age_expectation":
        kernel = np.load(tmp_path / "age_expectation_iter_6.npz")["param/age/0"]
        assert kernel.tolist() == [list(range(100))]
        r = invoke("recipe", "to-prototxt", name, "caffe")
        assert r.exit_code == 0, r.stderr
        assert (
            "caffe train -solver age_expectation_solver.prototxt -weights age_expectation_init.caffemodel"
            in r.stderr
        )
        assert (
            'weights: "age_expectation_init.caffemodel"'
            in (tmp_path / "caffe" / f"{name}_solver.prototxt").read_text()
        )
        assert (
            "range" not in (tmp_path / "caffe" / f"{name}_train_val.prototxt").read_text()
        )  # Caffe has no range filler
        init = read_caffemodel(tmp_path / "caffe" / f"{name}_init.caffemodel")
        assert list(init) == ["age"] and init["age"][0].ravel().tolist() == list(range(100))


def test_caffenet_runs_one_forward_and_backward_pass():
    from dataprep.train.net import Net
    from dataprep.train.recipe import load_recipe

    recipe = load_recipe(RECIPES / "caffenet.yaml")
    net = Net(recipe.net, {"data": (2, 3, 227, 227), "label": (2,)}, target="label")
    assert net.shapes["pool5"] == (2, 256, 6, 6) and net.layers[4].params[0].shape == (256, 48, 5, 5)
    rng = np.random.default_rng(0)
    outputs = net.forward(
        {"data": rng.normal(0, 30, (2, 3, 227, 227)).astype(np.float32), "label": np.array([3, 998])}
    )
    assert np.isfinite(outputs["loss"]) and outputs["loss"] == pytest.approx(np.log(1000), rel=0.2)
    net.backward()
    assert all(layer.grads[i] is not None and np.isfinite(layer.grads[i]).all() for layer, i in net.params())


def test_caffemodel_snapshots_and_fine_tuning_by_layer_name(invoke, tmp_path):
    from dataprep.train.caffemodel import read_caffemodel

    r = invoke("train", write_recipe(tmp_path, solver__max_iter=5), "--caffemodel")
    assert r.exit_code == 0, r.stderr
    blobs = read_caffemodel(tmp_path / "tiny_iter_5.caffemodel")
    saved = np.load(tmp_path / "tiny_iter_5.npz")
    assert sorted(blobs) == ["conv1", "fc2"] and np.array_equal(blobs["conv1"][0], saved["param/conv1/0"])
    (tmp_path / "b").mkdir()
    net = [dict(SMALL_NET[0]), *SMALL_NET[1:3], {**SMALL_NET[3], "name": "fc_new"}, *SMALL_NET[4:]]
    recipe = write_recipe(tmp_path / "b")
    r = invoke(
        "train",
        recipe,
        "--weights",
        tmp_path / "tiny_iter_5.caffemodel",
        "--set",
        "solver.max_iter=0",
        "--set",
        f"net={yaml.safe_dump(net, default_flow_style=True).strip()}",
    )
    assert r.exit_code == 0, r.stderr
    assert "Copying weights of conv1 from" in r.stderr  # fc_new is new: its filler's values stay
    tuned = np.load(tmp_path / "b" / "tiny_iter_0.npz")
    assert np.array_equal(tuned["param/conv1/0"], saved["param/conv1/0"])
    r = invoke(
        "train",
        recipe,
        "--weights",
        tmp_path / "tiny_iter_5.caffemodel",
        "--resume",
        tmp_path / "tiny_iter_5.npz",
    )
    assert r.exit_code == 2 and "give one of them" in r.stderr


def test_an_explicit_test_iter_beyond_one_pass_warns_once_and_testing_is_logged_as_it_starts(tmp_path):
    from dataprep.train.recipe import load_recipe
    from dataprep.train.runner import Training

    path = write_recipe(tmp_path, solver__test_iter=5, solver__max_iter=4, solver__test_interval=2)
    events: list[str] = []
    training = Training(load_recipe(path), say=events.append)
    forward = training.net.forward

    def traced(batch, train=True):
        events.append("test forward" if not train else "train forward")
        return forward(batch, train=train)

    training.net.forward = traced
    training.run()
    warnings = [e for e in events if e.startswith("W")]
    assert len(warnings) == 1 and warnings[0].endswith(
        "test_iter 5 x batch 20 = 100 images cycles the 40 validation images 2.5 times; "
        "one pass is test_iter 2"
    )
    first = next(k for k, e in enumerate(events) if "Testing net" in e)
    assert events[first + 1] == "test forward"  # logged before the pass, as Caffe does


def test_default_test_iter_is_one_pass_and_shipped_recipes_leave_it_out():
    for name in ("noise_regression", "noise_stream"):
        assert "test_iter" not in yaml.safe_load((RECIPES / f"{name}.yaml").read_text())["solver"]


def test_a_rerun_with_the_same_snapshot_prefix_is_refused_without_overwrite(invoke, tmp_path):
    path = write_recipe(tmp_path, solver__max_iter=2, solver__test_interval=2)
    assert invoke("train", path).exit_code == 0
    before = (tmp_path / "tiny_iter_2.npz").read_bytes()
    again = invoke("train", path, "--set", "solver.max_iter=4")
    assert again.exit_code == 1
    assert "tiny_best.npz exists" in again.stderr or "tiny_iter_2.npz exists" in again.stderr
    assert "--overwrite" in again.stderr and (tmp_path / "tiny_iter_2.npz").read_bytes() == before
    assert not (tmp_path / "tiny_iter_4.npz").exists()
    resumed = invoke("train", path, "--set", "solver.max_iter=4", "--resume", tmp_path / "tiny_iter_2.npz")
    assert resumed.exit_code == 0, resumed.stderr  # a resumed run extends its own
    assert invoke("train", path, "--overwrite").exit_code == 0


def test_recipes_by_name_resolve_to_the_shipped_ones_and_a_local_file_wins(invoke, tmp_path, monkeypatch):
    from dataprep.train.recipe import resolve_recipe

    monkeypatch.chdir(tmp_path)
    assert resolve_recipe("noise_stream") == RECIPES / "noise_stream.yaml"
    r = invoke("train", "noise_stream", "--print-recipe")
    assert r.exit_code == 0 and "name: noise_stream" in r.stdout
    (tmp_path / "noise_stream").write_text("name: mine\n")
    assert resolve_recipe("noise_stream") == Path("noise_stream")
    assert invoke("train", "nothing_like_it").exit_code == 2


def test_the_loss_plot_has_one_panel_per_kind_of_quantity():
    from dataprep.plotting import panels, spans_decades, training_series

    tests = [
        {"iteration": 0, "loss": 0.5, "loss_mae0": 0.3, "loss_mae1": 0.2, "accuracy": 0.1},
        {"iteration": 200, "loss": 0.01, "loss_mae0": 0.05, "loss_mae1": 0.04, "accuracy": 0.9},
    ]
    grouped = panels(training_series([(0, 0.6), (100, 0.1), (200, 0.02)], tests))
    assert list(grouped) == ["loss", "error (MAE)", "accuracy"]
    assert [s.label for s in grouped["loss"]] == ["train loss", "test loss"]
    assert [s.label for s in grouped["error (MAE)"]] == ["test loss_mae0", "test loss_mae1"]
    assert grouped["loss"][0].points[-1] == (200.0, 0.02)
    assert spans_decades([0.6, 0.001]) and not spans_decades([0.6, 0.1]) and not spans_decades([1.0, 0.0])


def test_tensorboard_events_hold_every_logged_value_and_a_resume_drops_the_later_ones(invoke, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    path = write_recipe(
        tmp_path, solver__max_iter=20, solver__display=5, solver__test_interval=10, solver__snapshot=10
    )
    r = invoke("train", path, "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 0, r.stderr

    def scalars():
        events = EventAccumulator(str(tmp_path / "tb" / "tiny"))
        events.Reload()
        return {tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]}

    found = scalars()
    assert {"train/loss", "train/lr", "train/images_per_second", "test/loss", "test/loss_mae0"} <= set(found)
    metrics = json.loads((tmp_path / "tiny_metrics.json").read_text())
    assert [(s, pytest.approx(v)) for s, v in found["test/loss"]] == [
        (t["iteration"], t["loss"]) for t in metrics["tests"]
    ]
    assert [s for s, _ in found["train/loss"]] == [0, 5, 10, 15]
    assert [pytest.approx(v) for _, v in found["train/loss"]] == [loss for _, loss in metrics["train"][:4]]
    # resumed from iteration 10: the first run's events from 10 on are dropped, each step shows once
    r = invoke("train", path, "--resume", tmp_path / "tiny_iter_10.npz", "--tensorboard", tmp_path / "tb")
    assert r.exit_code == 0, r.stderr
    steps = [s for s, _ in scalars()["train/loss"]]
    assert steps == [0, 5, 10, 15]
    assert [s for s, _ in scalars()["test/loss"]] == [0, 10, 20]


def test_tensorboard_without_tensorboardx_is_one_line(tmp_path):
    import subprocess
    import sys

    path = write_recipe(tmp_path, solver__max_iter=2)
    code = "import sys; sys.modules['tensorboardX'] = None; from dataprep.cli.main import cli; cli()"
    done = subprocess.run(
        [sys.executable, "-c", code, "train", str(path), "--tensorboard", str(tmp_path / "tb")],
        capture_output=True,
        text=True,
    )
    assert (
        done.returncode == 1 and "needs tensorboardX: pip install -e '" in done.stderr
    )  # an environment problem
    assert "[tensorboard]'" in done.stderr
