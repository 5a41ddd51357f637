"""``dataprep plot`` (issue 23): Caffe's logs in both glog prefix forms and dataprep's own,
parse_log.py's tables exactly, several runs, resumed runs, cut logs, --watch."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import pytest
from helpers import run_dataprep

from dataprep.logs import log_series, parse_log

LOGS = Path(__file__).parents[1] / "fixtures" / "caffe" / "logs"
FORMS = ["classic", "glog06"]


@pytest.mark.parametrize("form", FORMS)
@pytest.mark.parametrize("run", ["caffe_lenet_digits", "caffe_lenet_digits_resumed"])
def test_csv_gives_parse_logs_tables_for_both_prefix_forms(tmp_path, run, form):
    r = run_dataprep("plot", LOGS / f"{run}.{form}.log", "-o", tmp_path / "c.png", "--csv", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    for suffix in ("train", "test"):
        got = (tmp_path / "t" / f"{run}.{form}.log.{suffix}").read_bytes()
        assert got == (LOGS / "expected" / f"{run}.classic.log.{suffix}").read_bytes()
    assert cv2.imread(str(tmp_path / "c.png")) is not None


def test_several_runs_in_one_picture_named_by_label(tmp_path):
    logs = [LOGS / "caffe_lenet_digits.classic.log", LOGS / "caffe_lenet_digits_resumed.glog06.log"]
    r = run_dataprep(
        "plot",
        *logs,
        "--label",
        "first",
        "--label",
        "resumed",
        "--y",
        "loss",
        "--lr",
        "-o",
        tmp_path / "c.png",
    )
    assert r.returncode == 0, r.stderr
    series = log_series(logs[0], "first", "iters", ["loss"], rate=True)
    assert [s.label for s in series] == ["first: train loss", "first: test loss", "first: learning rate"]
    assert series[0].points[0] == (0.0, 2.25597) and series[0].points[-1] == (180.0, 0.0803673)
    by_seconds = log_series(logs[0], "first", "seconds", ["accuracy"])
    assert [p[0] for p in by_seconds[0].points] == [0.354005, 17.618763, 36.033635]
    bad = run_dataprep("plot", *logs, "--label", "one", "-o", tmp_path / "d.png")
    assert bad.returncode == 2 and "2 logs" in bad.stderr


def test_a_resumed_run_in_one_log_is_a_new_segment_of_the_same_line(tmp_path):
    both = tmp_path / "both.log"
    both.write_text(
        (LOGS / "caffe_lenet_digits.classic.log").read_text()
        + (LOGS / "caffe_lenet_digits_resumed.classic.log").read_text()
    )
    (test_accuracy,) = log_series(both, "run", "iters", ["test accuracy"])
    xs = [x for x, _ in test_accuracy.points]
    assert xs[:3] == [0.0, 100.0, 200.0] and math.isnan(xs[3]) and xs[4:] == [100.0, 200.0, 300.0]
    seconds = [
        x for x, _ in log_series(both, "run", "seconds", ["test accuracy"])[0].points if not math.isnan(x)
    ]
    assert seconds == sorted(seconds)  # one clock for both runs


def test_a_log_cut_mid_line_reads_as_far_as_its_last_whole_line(tmp_path):
    text = (LOGS / "caffe_lenet_digits.glog06.log").read_text()
    at = text.index("Train net output #0: loss = 0.0803673") + len("Train net output #0: loss = 0.08")
    (tmp_path / "cut.log").write_text(text[:at])
    (tmp_path / "whole.log").write_text(text[: text.rindex("\n", 0, at) + 1])
    assert parse_log(tmp_path / "cut.log") == parse_log(tmp_path / "whole.log")
    train, _ = parse_log(tmp_path / "cut.log")
    assert train[-1]["NumIters"] == 160.0  # iteration 180's row was never finished


def test_the_classic_prefix_carries_into_the_next_year(tmp_path):
    log = tmp_path / "newyear.log"
    log.write_text(
        "I1231 23:59:59.000000 1 solver.cpp:289] Solving net\n"
        "I1231 23:59:59.500000 1 solver.cpp:239] Iteration 0 (0 iter/s), loss = 2\n"
        "I1231 23:59:59.500000 1 solver.cpp:258]     Train net output #0: loss = 2\n"
        "I0101 00:00:01.000000 1 solver.cpp:239] Iteration 20 (0 iter/s), loss = 1\n"
        "I0101 00:00:01.000000 1 solver.cpp:258]     Train net output #0: loss = 1\n"
        "I0101 00:00:03.000000 1 solver.cpp:239] Iteration 40 (0 iter/s), loss = 0.5\n"
        "I0101 00:00:03.000000 1 solver.cpp:258]     Train net output #0: loss = 0.5\n"
    )
    train, _ = parse_log(log)
    assert [row["Seconds"] for row in train] == [0.5, 2.0, 4.0]


def test_dataprep_trains_own_log_plots(invoke, tmp_path):
    import yaml

    recipe = {
        "data": {
            "train": {"noise": {"n": 40, "offset": 0, "size": "16x16"}},
            "val": {"noise": {"n": 20, "offset": 40, "size": "16x16"}},
            "batch_size": 10,
            "target": "freq",
            "transform": {"scale": 0.00390625},
        },
        "net": [
            {"name": "fc", "type": "InnerProduct", "num_output": 2},
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["fc", "freq"]},
        ],
        "solver": {"max_iter": 20, "display": 5, "test_interval": 10, "snapshot_prefix": str(tmp_path / "r")},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    trained = run_dataprep("train", "r.yaml", cwd=tmp_path)
    assert trained.returncode == 0
    (tmp_path / "train.log").write_text(trained.stderr)
    train, test = parse_log(tmp_path / "train.log")
    assert [row["NumIters"] for row in train] == [0.0, 5.0, 10.0, 15.0]  # display lines (not the last)
    assert [row["NumIters"] for row in test] == [0.0, 10.0, 20.0] and "loss_mae0" in test[0]
    assert run_dataprep("plot", "train.log", "-o", "c.png", cwd=tmp_path).returncode == 0


def test_watch_redraws_while_the_log_grows_and_ctrl_c_leaves_the_picture_complete(tmp_path):
    lines = (LOGS / "caffe_lenet_digits.classic.log").read_text().splitlines(keepends=True)
    solving = next(k for k, line in enumerate(lines) if "Solving" in line)
    log = tmp_path / "growing.log"
    log.write_text("".join(lines[: solving + 12]))
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataprep.cli.main",
            "plot",
            str(log),
            "-o",
            str(tmp_path / "c.png"),
            "--watch",
            "0.2",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    picture = tmp_path / "c.png"
    deadline = time.monotonic() + 60
    while not picture.exists():
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    first = picture.stat().st_mtime_ns
    with open(log, "a") as f:
        f.write("".join(lines[solving + 12 :]))
    while picture.stat().st_mtime_ns == first:
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    time.sleep(0.3)
    proc.send_signal(signal.SIGINT)
    assert proc.wait(30) == 130
    assert cv2.imread(str(picture)) is not None
    assert not [p for p in os.listdir(tmp_path) if ".partial-" in p]


def test_a_2014_log_reads_its_loss_lines_and_numbered_test_scores(tmp_path):
    """Caffe's logs before "net output #": ``Iteration N, loss = X`` and ``Test score #K: X``."""
    log = tmp_path / "old.log"
    log.write_text(
        "I0616 22:00:10.680000 14079 solver.cpp:160] Solving LeNet\n"
        "I0616 22:00:10.700000 14079 solver.cpp:247] Iteration 0, Testing net (#0)\n"
        "I0616 22:00:11.700000 14079 solver.cpp:298]     Test score #0: 0.0871\n"
        "I0616 22:00:11.700001 14079 solver.cpp:298]     Test score #1: 2.30571\n"
        "I0616 22:00:11.800000 14079 solver.cpp:191] Iteration 100, loss = 0.267046\n"
        "I0616 22:00:11.800001 14079 solver.cpp:403] Iteration 100, lr = 0.00992565\n"
        "I0616 22:00:12.800000 14079 solver.cpp:191] Iteration 200, loss = 0.161234\n"
        "I0616 22:00:13.000000 14079 solver.cpp:247] Iteration 200, Testing net (#0)\n"
        "I0616 22:00:13.500000 14079 solver.cpp:298]     Test score #0: 0.9504\n"
        "I0616 22:00:13.500001 14079 solver.cpp:298]     Test score #1: 0.163\n"
    )
    r = run_dataprep("plot", log, "-o", tmp_path / "c.png", "--csv", tmp_path / "t")
    assert r.returncode == 0, r.stderr
    train = (tmp_path / "t" / "old.log.train").read_text().splitlines()
    test = (tmp_path / "t" / "old.log.test").read_text().splitlines()
    assert train[0] == "NumIters,Seconds,LearningRate,loss"
    assert [line.split(",")[0::3] for line in train[1:]] == [["100.0", "0.267046"], ["200.0", "0.161234"]]
    assert test[0] == "NumIters,Seconds,LearningRate,accuracy,loss"
    assert [line.split(",")[3:] for line in test[1:]] == [["0.0871", "2.30571"], ["0.9504", "0.163"]]
    assert cv2.imread(str(tmp_path / "c.png")) is not None
