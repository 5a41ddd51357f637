"""A Caffe user's habits and a shell user's (issue 31): Caffe's list lines, pipelines that
run twice, one option name per concept, Caffe's argument orders, the shipped recipes to
copy, quiet training with a full log that shows the net, plot --watch before the log."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from helpers import run_dataprep, write_images
from test_cli_train import write_recipe

from dataprep.stores import open_store

ROOT = Path(__file__).parents[2]


def test_caffes_list_lines_with_spaces_read_and_dataprep_writes_them(tmp_path, invoke, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "photos", "photos", "--n", 12).exit_code == 0
    folder = tmp_path / "photos" / "red apples"
    folder.mkdir()
    first = sorted((tmp_path / "photos").glob("*/*.jpg"))[0]
    (folder / "img 03.jpg").write_bytes(first.read_bytes())
    # as convert_imageset reads it: the path is all before the last space
    Path("caffe_style.txt").write_text(
        "photos/red apples/img 03.jpg 1\n" + f"{first.relative_to(tmp_path)} 0\n"
    )
    r = invoke("lmdb", "caffe_style.txt", "c_lmdb")
    assert r.exit_code == 0, r.stderr
    with open_store("c_lmdb") as store:
        assert [rec.key.split("_", 1)[1] for rec in store] == [
            "photos/red apples/img 03.jpg",
            str(first.relative_to(tmp_path)),
        ]
    r = invoke("list", "photos", "-o", "all.txt")
    line = next(x for x in Path("all.txt").read_text().splitlines() if "apples" in x)
    assert line == "photos/red apples/img 03.jpg 1"  # unquoted: what Caffe reads


def _readme_line(fragment: str) -> str:
    return next(line for line in (ROOT / "README.md").read_text().splitlines() if fragment in line)


def test_the_readmes_list_pipeline_runs_twice_in_a_row(tmp_path):
    assert run_dataprep("example", "photos", "photos", "--n", 12, cwd=tmp_path).returncode == 0
    line = _readme_line("| grep -v stripes |").split("#")[0].strip()
    shell = line.replace("dataprep ", f"{sys.executable} -m dataprep.cli.main ")
    for _ in range(2):
        done = subprocess.run(shell, shell=True, cwd=tmp_path, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    assert not (tmp_path / "classes.txt").exists()
    with open_store(tmp_path / "sub_lmdb") as store:
        assert len(store) and not any("stripes" in rec.key for rec in store)


def test_list_split_into_a_named_list_writes_the_whole_list_too(tmp_path):
    assert run_dataprep("example", "photos", "photos", "--n", 20, cwd=tmp_path).returncode == 0
    r = run_dataprep("list", "photos", "--split", "0.8,0.1,0.1", "-o", "lists/all.txt", cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    whole = (tmp_path / "lists/all.txt").read_text().splitlines()
    parts = [(tmp_path / f"lists/{s}.txt").read_text().splitlines() for s in ("train", "val", "test")]
    assert len(whole) == 20 and sorted(whole) == sorted(sum(parts, []))


def test_plot_watch_waits_for_a_log_that_does_not_exist_yet(tmp_path):
    log = tmp_path / "stream.log"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "dataprep.cli.main",
            "plot",
            str(log),
            "--watch",
            "0.2",
            "-o",
            str(tmp_path / "c.png"),
        ],
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1.5)
    assert proc.poll() is None  # waiting, not "no training outputs found"
    recipe = write_recipe(tmp_path, solver__max_iter=20, solver__display=5)
    assert run_dataprep("train", recipe, "-q", "--log", log).returncode == 0
    deadline = time.monotonic() + 30
    while not (tmp_path / "c.png").exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "waiting for" in err


def test_a_missing_store_of_a_recipe_says_where_paths_resolve(tmp_path, invoke, monkeypatch):
    (tmp_path / "t3").mkdir()
    recipe = {
        "data": {"train": "train_lmdb", "batch_size": 2},
        "net": [
            {"name": "fc", "type": "InnerProduct", "num_output": 2},
            {"name": "l", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 1, "snapshot_prefix": "x"},
    }
    (tmp_path / "t3" / "r.yaml").write_text(yaml.safe_dump(recipe))
    monkeypatch.chdir(tmp_path)
    r = invoke("train", "t3/r.yaml")
    assert r.exit_code == 2
    assert (
        f"train_lmdb: no store there: the recipe's data paths resolve against the current folder ({tmp_path})"
        in (r.stderr)
    )


# one name per concept: (concept, option, commands that take it)
OPTION_TABLE = [
    (
        "the exact size images are resized to",
        "--resize",
        ["lmdb", "hdf5", "mean", "wds", "predict", "resize"],
    ),
    (
        "the output file of a one-output command",
        "--out",
        ["mean", "export", "plot", "recipe to-yaml", "list"],
    ),
    (
        "results as JSON",
        "--json",
        ["export", "plot", "mean", "predict", "train", "time", "info", "recipe list"],
    ),
    (
        "the memory limit of a net",
        "--max-memory",
        ["train", "time", "predict", "extract", "export", "visualize"],
    ),
    ("the preparation a model may lack", "--crop", ["predict", "extract", "visualize"]),
    ("the channel order a model may lack", "--channel-order", ["predict", "extract", "visualize"]),
    ("what runs the net forward", "--engine", ["predict", "extract"]),
    ("a mean a model may lack", "--mean", ["predict", "extract", "visualize"]),
]


@pytest.mark.parametrize("concept, option, commands", OPTION_TABLE)
def test_one_option_name_per_concept_across_commands(concept, option, commands):
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    for command in commands:
        r = CliRunner().invoke(cli, [*command.split(), "--help"])
        assert r.exit_code == 0, (command, r.output)
        assert re.search(rf"(?<![\w-]){re.escape(option)}(?![\w-])", r.output), (
            f"{command} lacks {option} ({concept})"
        )


def test_caffes_phase_names_and_the_exit_codes_in_the_help(invoke):
    r = invoke(
        "time", ROOT / "recipes" / "lenet.yaml", "--shape", "1x28x28", "--phase", "TEST", "--iterations", 1
    )
    assert r.exit_code == 0, r.stderr
    r = invoke("--help")
    for code in ("0 success", "1 data", "2 usage", "130 Ctrl-C", "141", "143"):
        assert code in " ".join(r.stdout.split()), code


def test_caffe_argument_orders_get_the_dataprep_form(tmp_path, invoke, monkeypatch):
    monkeypatch.chdir(tmp_path)
    list_path, _ = write_images(tmp_path, 3)
    assert invoke("lmdb", "list.txt", "train_lmdb").exit_code == 0
    r = invoke("mean", "train_lmdb", "mine.binaryproto")
    assert r.exit_code == 2 and "did you mean: dataprep mean train_lmdb -o mine.binaryproto" in r.stderr
    r = invoke("lmdb", "img", "list.txt", "x_lmdb")
    assert r.exit_code == 2 and "did you mean: dataprep lmdb list.txt x_lmdb --root img" in r.stderr


def test_the_shipped_recipes_are_listed_and_copied_with_their_comments(tmp_path, invoke):
    r = invoke("recipe", "list")
    names = [line.split()[0] for line in r.stdout.splitlines()]
    assert "lenet" in names and "cifar10_quick" in names
    assert "Caffe's LeNet on MNIST" in r.stdout
    r = invoke("recipe", "copy", "lenet", tmp_path)
    assert (
        r.exit_code == 0
        and (tmp_path / "lenet.yaml").read_text() == (ROOT / "recipes" / "lenet.yaml").read_text()
    )
    r = invoke("recipe", "copy", "lenet", tmp_path)
    assert r.exit_code == 1 and "exists" in r.stderr
    r = invoke("recipe", "copy", "nothing", tmp_path)
    assert r.exit_code == 2 and "no shipped recipe 'nothing'" in r.stderr


def test_train_q_is_quiet_and_log_holds_the_net_and_every_snapshot(tmp_path):
    recipe = write_recipe(tmp_path, solver__max_iter=20, solver__snapshot=10, solver__display=5)
    r = run_dataprep("train", recipe, "-q", "--log", tmp_path / "run.log")
    assert r.returncode == 0 and r.stderr == "", r.stderr
    log = (tmp_path / "run.log").read_text()
    assert "Creating Layer conv1" in log and "Setting up conv1" in log
    assert re.search(r"net\.cpp:121\] Top shape: 20 8 7 7 \(7840\)", log)  # conv1 on 16x16, stride 2
    assert re.search(r"Memory required for data: \d+", log)
    assert f"Snapshotting to NumPy archive {tmp_path}/tiny_iter_10.npz" in log
    assert f"Snapshotting to NumPy archive {tmp_path}/tiny_iter_20.npz" in log
    # parse_log.py's tables still come out of it
    r = run_dataprep("plot", tmp_path / "run.log", "-o", tmp_path / "c.png", "--csv", tmp_path / "tables")
    assert r.returncode == 0, r.stderr
    train_table = (tmp_path / "tables" / "run.log.train").read_text().splitlines()
    assert train_table[0].startswith("NumIters,Seconds,LearningRate") and len(train_table) >= 4
    r = run_dataprep("train", recipe, "--log", tmp_path / "run.log", "--overwrite")
    assert r.returncode == 0 and "Top shape" in r.stderr  # without -q the log shows on stderr too


def test_the_test_command_lists_skip_reasons():
    line = next(line for line in (ROOT / "dev").read_text().splitlines() if "-m pytest" in line)
    assert " -rs " in line
