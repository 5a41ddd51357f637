"""The regression chapter end to end as the chapter writes it (issue 33): noise images,
HDF5 stores with the chapter's names, its solver and train_val prototxt, its deploy
prototxt (which declares no preparation: --mean 128 given, and the warning without it),
predictions scored against test_labels.txt, the kernel grid with --cols 12."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import cv2

FIXTURES = Path(__file__).parents[1] / "fixtures" / "caffe"


def _deploy(train_val: str) -> str:
    """The chapter's deploy.prototxt: the train_val net with an Input for its data layers
    and without its loss."""
    lines = [
        line for line in train_val.splitlines() if "HDF5Data" not in line and "EuclideanLoss" not in line
    ]
    shape = "shape { dim: 1 dim: 1 dim: 100 dim: 100 }"
    header = f'layer {{ name: "data" type: "Input" top: "data" input_param {{ {shape} }} }}'
    return "\n".join([lines[0], header, *lines[1:]]) + "\n"


def _mae(stdout: str) -> float:
    found = re.search(r"Mean absolute error: ([0-9.]+)", stdout)
    assert found, stdout
    return float(found.group(1))


def test_the_regression_chapter_step_by_step(invoke, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = invoke("noise", "--n", 140, "--split", "100,20,20", "--seed", 21, "-j", 2)
    assert r.exit_code == 0, r.stderr
    for split in ("train", "val"):  # gen_hdf5.py: gray, pixel - 128, the labels named freq
        r = invoke("hdf5", f"{split}.txt", "--gray", "--mean", 128, "--label-names", "freq", "-j", 2)
        assert r.exit_code == 0, r.stderr
    assert Path("train_h5.txt").read_text().strip().endswith("train.h5")
    shutil.copy(FIXTURES / "tutorial_train_val.prototxt", "train_val.prototxt")
    solver = (FIXTURES / "tutorial_solver.prototxt").read_text()
    Path("solver.prototxt").write_text(solver.replace("tutorial_train_val.prototxt", "train_val.prototxt"))
    r = invoke("train", "solver.prototxt", "--set", "solver.max_iter=6", "--set", "solver.test_iter=1")
    assert r.exit_code == 0, r.stderr
    assert Path("tutorial_iter_6.caffemodel").is_file()  # Caffe's binary proto beside the .npz
    Path("deploy.prototxt").write_text(_deploy(Path("train_val.prototxt").read_text()))
    predict = ["predict", "deploy.prototxt", "--weights", "tutorial_iter_6.caffemodel", "test.txt"]
    predict += ["--labels", "test_labels.txt"]
    bare = invoke(*predict)
    assert bare.exit_code == 0 and "declares no preparation" in bare.stderr and "--mean" in bare.stderr
    r = invoke(*predict, "--mean", 128)
    assert r.exit_code == 0 and "declares no preparation" not in r.stderr
    first = r.stdout.splitlines()[0]
    assert re.fullmatch(r"Predicted values for samples/\S+ is 0\.\d\d and 0\.\d\d", first), first
    assert _mae(r.stdout) != _mae(bare.stdout)  # the mean changes what the net sees
    r = invoke("visualize", "deploy.prototxt", "--weights", "tutorial_iter_6.caffemodel", "--layer", "conv1")
    assert r.exit_code == 2  # -o is required
    args = ["--layer", "conv1", "--cols", 12, "-o", "kernels.png"]
    r = invoke("visualize", "deploy.prototxt", "--weights", "tutorial_iter_6.caffemodel", *args)
    assert r.exit_code == 0, r.stderr
    grid = cv2.imread("kernels.png")
    assert abs(grid.shape[1] / grid.shape[0] - 12 / 8) < 0.05  # 96 kernels: 8 rows of 12
