"""``dataprep time``: Caffe's ``caffe time`` report for recipes, train_val and deploy
prototxts, on random inputs of the net's shapes; the per-layer times add up to the total."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataprep.train.timing import bench_net, caffe_lines, time_net

ROOT = Path(__file__).parents[2]
RECIPES = ROOT / "recipes"
CAFFENET = ROOT / "tests" / "fixtures" / "zoo" / "bvlc_reference_caffenet_deploy.prototxt"
PREFIX = r"I\d{4} \d\d:\d\d:\d\d\.\d{6} +\d+ caffe\.cpp:\d+\] "
NUMBER = r"([0-9.e+-]+)"


def report(stderr: str) -> dict:
    """What a script written for ``caffe time`` reads from the log."""
    lines = stderr.strip().splitlines()
    assert all(re.match(PREFIX, line) for line in lines), lines[:3]
    body = [re.sub(PREFIX, "", line) for line in lines]
    assert body[0] == "*** Benchmark begins ***" and body[-1] == "*** Benchmark ends ***"
    layers: dict[str, dict] = {}
    for line in body:
        match = re.fullmatch(r" *(\S+)\t(forward|backward): " + NUMBER + " ms\\.", line)
        if match:
            layers.setdefault(match[1], {})[match[2]] = float(match[3])
    totals = {}
    for key in ("Average Forward pass", "Average Backward pass", "Average Forward-Backward", "Total Time"):
        (line,) = [x for x in body if x.startswith(key + ":")]
        totals[key] = float(re.fullmatch(re.escape(key) + ": " + NUMBER + " ms\\.", line)[1])
    return {
        "layers": layers,
        "totals": totals,
        "iterations": [x for x in body if x.startswith("Iteration: ")],
    }


def check_sums(parsed: dict) -> None:
    """The per-layer times add up to the forward-backward average within 10%."""
    layer_sum = sum(t["forward"] + t["backward"] for t in parsed["layers"].values())
    total = parsed["totals"]["Average Forward-Backward"]
    assert abs(layer_sum - total) <= 0.1 * total, (layer_sum, total)
    halves = parsed["totals"]["Average Forward pass"] + parsed["totals"]["Average Backward pass"]
    assert abs(halves - total) <= 0.1 * total


def test_time_a_recipe_in_caffes_form_with_the_same_numbers_in_json(runner, tmp_path):
    from dataprep.cli.main import cli

    result = runner.invoke(
        cli, ["time", str(RECIPES / "lenet.yaml"), "--shape", "1x28x28", "--iterations", "3", "--json"]
    )
    assert result.exit_code == 0, result.output
    parsed = report(result.stderr)
    assert list(parsed["layers"]) == ["conv1", "pool1", "conv2", "pool2", "ip1", "relu1", "ip2", "loss"]
    assert len(parsed["iterations"]) == 3
    check_sums(parsed)
    summary = json.loads(result.stdout)
    assert summary["batch"] == 64 and summary["phase"] == "train" and summary["iterations"] == 3
    for layer in summary["layers"]:
        assert parsed["layers"][layer["name"]]["forward"] == pytest.approx(layer["forward_ms"], rel=1e-4)
        assert parsed["layers"][layer["name"]]["backward"] == pytest.approx(layer["backward_ms"], rel=1e-4)
    assert parsed["totals"]["Total Time"] == pytest.approx(summary["total_ms"], rel=1e-4)
    assert parsed["totals"]["Average Forward-Backward"] == pytest.approx(
        summary["forward_backward_ms"], rel=1e-4
    )


def test_time_a_train_val_prototxt_in_both_phases():
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    net = RECIPES / "caffe" / "lenet_train_val.prototxt"
    for phase, batch, layers in (("train", 64, 8), ("test", 100, 9)):
        args = ["time", str(net), "--shape", "1x28x28", "--iterations", "2", "--phase", phase, "--json"]
        result = CliRunner().invoke(cli, args)
        assert result.exit_code == 0, result.output
        assert json.loads(result.stdout)["batch"] == batch  # the phase's own batch size
        parsed = report(result.stderr)
        assert len(parsed["layers"]) == layers  # Accuracy runs in the TEST phase only
        check_sums(parsed)


def test_time_takes_the_input_shape_from_the_models_store(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert (
        invoke(
            "noise", "--n", "30", "--size", "20x24", "--classes", "10", "--to", "lmdb", "--out", "s"
        ).exit_code
        == 0
    )
    recipe = yaml.safe_load((RECIPES / "lenet.yaml").read_text())
    recipe["data"].update(train="s/train_lmdb", val="s/val_lmdb")
    Path("r.yaml").write_text(yaml.safe_dump(recipe))
    bench = bench_net("r.yaml", batch=5)
    assert bench.batch["data"].shape == (5, 1, 20, 24)
    labels = bench.batch["label"]
    assert labels.shape == (5,) and labels.min() >= 0 and labels.max() < 10  # ip2 has 10 outputs
    result = invoke("time", "r.yaml", "--batch", "4", "--iterations", "1")
    assert result.exit_code == 0
    assert report(result.stderr)["layers"]["conv1"]["forward"] > 0


def test_a_model_without_an_input_shape_is_a_usage_error(runner):
    from dataprep.cli.main import cli

    result = runner.invoke(cli, ["time", str(RECIPES / "lenet.yaml")])
    assert result.exit_code == 2
    assert "--shape" in result.stderr and "Traceback" not in result.stderr
    result = runner.invoke(cli, ["time", str(RECIPES / "lenet.yaml"), "--shape", "28x28"])
    assert result.exit_code == 2 and "CxHxW" in result.stderr


def test_a_deploy_net_times_every_parameter_gradient():
    """The zoo's CaffeNet has no loss: its backward pass starts from its output and
    computes every parameter gradient, but no gradient of the input data."""
    bench = bench_net(CAFFENET, batch=1)
    assert bench.batch["data"].shape == (1, 3, 227, 227)
    timing = time_net(bench, iterations=1)
    assert [layer.name for layer in timing.layers][:3] == ["conv1", "relu1", "pool1"]
    for layer in bench.net.layers:
        for grad, param in zip(layer.grads, layer.params):
            assert grad is not None and grad.shape == param.shape and np.abs(grad).sum() > 0, layer.name
    assert not bench.net.layers[0].propagate  # conv1's bottom is the input
    lines = caffe_lines(timing)
    assert lines[-2].startswith("Total Time: ") and lines[-5].startswith("Average Forward pass: ")


def test_time_the_zoo_caffenet_at_batch_32(runner):
    from dataprep.cli.main import cli

    result = runner.invoke(cli, ["time", str(CAFFENET), "--batch", "32", "--iterations", "1", "--json"])
    assert result.exit_code == 0, result.output
    parsed = report(result.stderr)
    assert len(parsed["layers"]) == 23 and "fc8" in parsed["layers"]
    check_sums(parsed)
    assert json.loads(result.stdout)["batch"] == 32


def test_time_on_a_gpu_without_one_is_a_clear_error(runner):
    from dataprep.cli.main import cli
    from dataprep.gpu import gpu_available

    if gpu_available():
        pytest.skip("a GPU is here: the GPU test below runs instead")
    result = runner.invoke(
        cli, ["time", str(RECIPES / "lenet.yaml"), "--shape", "1x28x28", "--device", "gpu"]
    )
    assert result.exit_code == 1 and "Traceback" not in result.stderr
    assert "cupy" in result.stderr.lower() or "gpu" in result.stderr.lower()


@pytest.mark.gpu
def test_time_on_a_gpu_synchronizes_each_layer(runner):
    from dataprep.cli.main import cli
    from dataprep.gpu import gpu_available

    if not gpu_available():
        pytest.skip("needs CuPy and a CUDA device")
    args = ["time", str(RECIPES / "lenet.yaml"), "--shape", "1x28x28", "--device", "gpu", "--iterations", "3"]
    result = runner.invoke(cli, args)
    assert result.exit_code == 0, result.output
    check_sums(report(result.stderr))


def test_time_a_regression_recipe_without_its_store(invoke):
    """The target takes the prediction's shape (the loss checks them at set-up)."""
    r = invoke(
        "time",
        Path(__file__).parents[2] / "recipes" / "noise_regression.yaml",
        "--shape",
        "1x40x40",
        "--iterations",
        1,
        "--batch",
        2,
        "--json",
    )
    assert r.exit_code == 0, r.stderr
