"""Faults and hostile input (issue 20): two runs on one output, outputs over their inputs.
Every command prints one line naming the file and the cause, exits 1 (data) or 2 (usage),
leaves nothing half-made, and never harms a good output or an input."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import leftovers, run_dataprep, tree_bytes, write_images

from dataprep.staging import PAUSE_HOOK

# (command line for a list and an output, the output's path(s), how many records it holds)
WRITERS = {
    "lmdb": (lambda lst, out: ["lmdb", lst, out], lambda out: [out]),
    "leveldb": (lambda lst, out: ["lmdb", lst, out, "--backend", "leveldb"], lambda out: [out]),
    "hdf5": (
        lambda lst, out: ["hdf5", lst, "-o", f"{out}.h5", "--shard-size", "4"],
        lambda out: sorted(Path(out).parent.glob(Path(out).name + "*")),
    ),
    "wds": (
        lambda lst, out: ["wds", lst, out, "--shard-size", "4"],
        lambda out: sorted(Path(out).parent.glob(Path(out).name + "*")),
    ),
}


def count(kind: str, out: Path) -> int:
    from dataprep.stores import open_store

    target = {"hdf5": f"{out}_h5.txt", "wds": out.parent / f"{out.name}.manifest.json"}.get(kind, out)
    reader = open_store(target if kind != "wds" else out)
    try:
        return len(reader)
    finally:
        reader.close()


def start_paused(args: list, cwd: Path, hook: Path) -> tuple[subprocess.Popen, int]:
    """A dataprep run that stops just before its commit; returns it and its pid."""
    hook.mkdir(exist_ok=True)
    env = {**os.environ, PAUSE_HOOK: str(hook)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    paused = hook / f"paused-{proc.pid}"
    deadline = time.monotonic() + 60
    while not paused.exists():
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline
        time.sleep(0.02)
    return proc, proc.pid


@pytest.fixture
def lists(tmp_path):
    a, _ = write_images(tmp_path, 6, list_name="a.txt")
    b, _ = write_images(tmp_path / "b", 9, seed=1, list_name="b.txt")
    return a, b


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_a_second_run_on_a_claimed_output_fails_and_the_first_finishes_intact(tmp_path, lists, kind):
    args, _ = WRITERS[kind]
    a, b = lists
    out = tmp_path / "s"
    first, pid = start_paused(args(a, out), tmp_path, tmp_path / "hook")
    second = run_dataprep(*args(b, out), cwd=tmp_path)
    assert second.returncode == 1, second.stderr
    assert "already exists" in second.stderr and "Traceback" not in second.stderr
    (tmp_path / "hook" / f"go-{pid}").touch()
    _, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    assert count(kind, out) == 6  # the first run's records, whole
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_with_overwrite_the_last_commit_wins_and_no_output_is_a_mix(tmp_path, lists, kind):
    args, outputs = WRITERS[kind]
    a, b = lists
    out = tmp_path / "s"
    assert run_dataprep(*args(b, out), cwd=tmp_path).returncode == 0  # an existing output
    first, pid = start_paused([*args(a, out), "--overwrite"], tmp_path, tmp_path / "hook")
    second = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args(b, out)), "--overwrite", "-v"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    waited = ""
    while "waiting for process" not in waited:  # the second run waits for the first's commit
        line = second.stderr.readline()
        assert line, second.communicate()
        waited += line
    (tmp_path / "hook" / f"go-{pid}").touch()
    assert first.wait(60) == 0 and second.wait(60) == 0
    assert count(kind, out) == 9  # the last commit's records, and only those
    target = {"hdf5": f"{out}_h5.txt"}.get(kind, out)
    checked = run_dataprep("verify", target, "--list", b, cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr  # one run's whole set
    assert outputs(out) and leftovers(tmp_path) == []


def test_a_killed_runs_claim_is_removed_by_the_next_run(tmp_path, lists):
    a, _ = lists
    (tmp_path / ".s.claim").write_text(f"{__import__('socket').gethostname()} 999999\n")
    result = run_dataprep("lmdb", a, tmp_path / "s", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert count("lmdb", tmp_path / "s") == 6 and leftovers(tmp_path) == []
    assert tree_bytes(tmp_path / "s")


ZOO_FCN = Path(__file__).parents[1] / "fixtures" / "zoo" / "fcn_small_deploy.prototxt"


# Outputs over their own inputs: refused with or without --overwrite (exit 2), the input
# unharmed. Each case: (setup commands, the command, what must stay byte-identical).
def _over_inputs_cases():
    return {
        "resize into its own folder": ([], ["resize", "img", "img", "--size", "8x8"], "img"),
        "resize into the folder of its list": ([], ["resize", "list.txt", ".", "--size", "8x8"], "img"),
        "augment over its list's folder": (
            [],
            ["augment", "list.txt", "img", "--copies", "1", "--mirror"],
            "img",
        ),
        "hdf5 onto an image of its list": ([], ["hdf5", "list.txt", "-o", "img/0001.png"], "img"),
        "hdf5 onto its list": ([], ["hdf5", "list.txt", "-o", "list.txt"], "list.txt"),
        "lmdb onto its list": ([], ["lmdb", "list.txt", "list.txt"], "list.txt"),
        "lmdb into a folder holding its images": ([], ["lmdb", "list.txt", "img"], "img"),
        "mean into its store": ([["lmdb", "list.txt", "db"]], ["mean", "db", "-o", "db/data.mdb"], "db"),
        "convert onto its source": (
            [["lmdb", "list.txt", "db"]],
            ["convert", "db", "db", "--to", "lmdb"],
            "db",
        ),
        "convert into its source": (
            [["lmdb", "list.txt", "db"]],
            ["convert", "db", "db/copy.h5", "--to", "hdf5"],
            "db",
        ),
        "info grid into its store": (
            [["lmdb", "list.txt", "db"]],
            ["info", "db", "--grid", "db/g.png"],
            "db",
        ),
        "export onto its model": (
            [["export", ZOO_FCN, "--random-init", "0", "-o", "m.npz"]],
            ["export", "m.npz", "-o", "m.npz"],
            "m.npz",
        ),
    }


@pytest.mark.parametrize("case", sorted(_over_inputs_cases()))
@pytest.mark.parametrize("overwrite", [False, True])
def test_an_output_over_an_input_is_refused_and_the_input_unharmed(tmp_path, case, overwrite):
    setup, command, kept = _over_inputs_cases()[case]
    write_images(tmp_path, 6)
    for args in setup:
        assert run_dataprep(*args, cwd=tmp_path).returncode == 0
    before = tree_bytes(tmp_path / kept)
    result = run_dataprep(*command, *(["--overwrite"] if overwrite else []), cwd=tmp_path)
    assert result.returncode in (1, 2), result.stderr
    refused = "this command's input" in result.stderr or "this command reads" in result.stderr
    if result.returncode == 2 or overwrite:  # without --overwrite, "exists" may come first
        assert result.returncode == 2 and refused, result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and "Traceback" not in result.stderr
    assert tree_bytes(tmp_path / kept) == before
    assert leftovers(tmp_path) == []


def test_plot_onto_its_own_log_is_refused(tmp_path):
    log = Path(__file__).parents[1] / "fixtures" / "caffe" / "logs" / "caffe_lenet_digits.classic.log"
    (tmp_path / "run.log").write_bytes(log.read_bytes())
    result = run_dataprep("plot", "run.log", "-o", "run.log", "--overwrite", cwd=tmp_path)
    assert result.returncode == 2 and "this command" in result.stderr
    assert (tmp_path / "run.log").read_bytes() == log.read_bytes()


def test_an_output_beside_its_inputs_is_still_fine(tmp_path):
    write_images(tmp_path, 6)
    assert run_dataprep("lmdb", "list.txt", "db", cwd=tmp_path).returncode == 0
    assert run_dataprep("mean", "db", "-o", "mean.binaryproto", cwd=tmp_path).returncode == 0
    assert run_dataprep("convert", "db", "db2", "--to", "lmdb", cwd=tmp_path).returncode == 0
    assert run_dataprep("resize", "list.txt", "small", "--size", "8x8", cwd=tmp_path).returncode == 0


def test_an_import_into_its_own_source_folder_is_refused(tmp_path):
    from helpers import mnist_files

    mnist_files(tmp_path / "mnist")
    before = tree_bytes(tmp_path / "mnist")
    result = run_dataprep("import", "mnist", "mnist", "mnist", "--to", "files", "--overwrite", cwd=tmp_path)
    assert result.returncode == 2 and "this command's input" in result.stderr, result.stderr
    assert tree_bytes(tmp_path / "mnist") == before


@pytest.mark.parametrize(
    "command",
    [
        ["info", "s/train_lmdb"],
        ["verify", "s/train_lmdb"],
        ["mean", "s/train_lmdb", "-o", "m.binaryproto"],
        ["convert", "s/train_lmdb", "copy", "--to", "lmdb"],
        ["train", "RECIPE", "--set", "data.train=s/train_lmdb", "--set", "data.val=s/val_lmdb"],
    ],
)
def test_a_truncated_lmdb_is_refused_with_its_sizes_not_a_bus_error(tmp_path, command):
    assert (
        run_dataprep(
            "noise",
            "--n",
            300,
            "--size",
            "28x28",
            "--classes",
            10,
            "--to",
            "lmdb",
            "--out",
            "s",
            cwd=tmp_path,
        ).returncode
        == 0
    )
    data = tmp_path / "s" / "train_lmdb" / "data.mdb"
    os.truncate(data, 100_000)
    recipe = str(Path(__file__).parents[2] / "recipes" / "lenet.yaml")
    result = run_dataprep(*[recipe if a == "RECIPE" else a for a in command], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)  # not 135 (SIGBUS)
    assert "data.mdb: truncated (100.0 KB, needs" in result.stdout + result.stderr  # the unit that shows it
    assert "Traceback" not in result.stderr
    assert (
        leftovers(tmp_path) == []
        and not (tmp_path / "copy").exists()
        and not (tmp_path / "m.binaryproto").exists()
    )


def _named_images(folder: Path, names: list[bytes]) -> None:
    import cv2
    import numpy as np

    os.makedirs(folder / "img", exist_ok=True)
    for k, name in enumerate(names):
        ok, buf = cv2.imencode(".png", np.full((8, 8, 3), 10 * k, np.uint8))
        with open(os.fsencode(folder / "img") + b"/" + name, "wb") as out:
            out.write(buf.tobytes())


@pytest.mark.parametrize("kind", ["lmdb", "hdf5", "wds"])
def test_a_list_with_a_byte_order_mark_and_names_that_are_not_utf8(tmp_path, kind):
    """The mark Windows editors write is not part of the first path; Linux file names that
    are not UTF-8 are read as the bytes they are, and stores hold their records."""
    _named_images(tmp_path, [b"caf\xe9.png", b"plain.png"])
    (tmp_path / "list.txt").write_bytes(b"\xef\xbb\xbfimg/caf\xe9.png 1\nimg/plain.png 2\n")
    args = {"lmdb": ["lmdb", "list.txt", "s"], "hdf5": ["hdf5", "list.txt"], "wds": ["wds", "list.txt", "s"]}
    result = run_dataprep(*args[kind], cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    store = {"lmdb": "s", "hdf5": "list_h5.txt", "wds": "s"}[kind]
    assert count(kind if kind != "hdf5" else "lmdb", tmp_path / store) == 2
    checked = run_dataprep("verify", store, "--list", "list.txt", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    resized = run_dataprep("resize", "list.txt", "small", "--size", "4x4", cwd=tmp_path)
    assert resized.returncode == 0, resized.stderr
    assert (tmp_path / "small" / "list.txt").read_bytes().startswith(b"caf\xe9.png 1\n")


def test_a_list_with_a_nul_byte_is_refused_naming_file_and_line(tmp_path):
    _named_images(tmp_path, [b"a.png"])
    (tmp_path / "list.txt").write_bytes(b"img/a.png 1\nimg/a\x00.png 2\n")
    result = run_dataprep("lmdb", "list.txt", "s", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip() == "Error: list.txt:2: a NUL byte: not a list line"
    assert not (tmp_path / "s").exists() and leftovers(tmp_path) == []


RECIPE = Path(__file__).parents[2] / "recipes" / "noise_stream.yaml"


@pytest.mark.parametrize(
    "setting, message",
    [
        ("data.batch_size=-1", "recipe data.batch_size: -1 is below 1"),
        ("data.batch_size=0", "recipe data.batch_size: 0 is below 1"),
        ("solver.max_iter=-3", "recipe solver.max_iter: -3 is below 0"),
        ("solver.base_lr=nan", "recipe solver.base_lr: nan is not a finite number"),
        ("solver.base_lr=.inf", "recipe solver.base_lr: inf is not a finite number"),
        ("solver.base_lr=-0.01", "recipe solver.base_lr: -0.01 is below 0"),
        ("solver.test_iter=0", "recipe solver.test_iter: 0 is below 1"),
        ("data.train.noise.n=0", "recipe data.train.noise.n: 0 is below 1"),
        ("net[0].stide=3", "recipe net[0] (conv1).stide: not a Convolution key; valid: "),
    ],
)
def test_recipe_numbers_out_of_range_and_mistyped_keys_are_usage_errors(invoke, setting, message):
    result = invoke("train", RECIPE, "--set", setting, "--print-recipe")
    assert result.exit_code == 2
    assert result.stderr.startswith("Error: " + message) and len(result.stderr.splitlines()) == 1


def test_every_float_python_reads_is_a_float_in_a_recipe(invoke, tmp_path):
    """YAML 1.1 reads 1e-3 (no dot) as a string; a recipe takes it as the number."""
    text = RECIPE.read_text().replace("base_lr: 0.01", "base_lr: 1e-3")
    (tmp_path / "r.yaml").write_text(text)
    from dataprep.train.recipe import load_recipe

    assert load_recipe(tmp_path / "r.yaml", ["solver.weight_decay=5e-4"]).solver.base_lr == 0.001
    assert load_recipe(tmp_path / "r.yaml", ["solver.weight_decay=5e-4"]).solver.weight_decay == 0.0005


def test_a_broken_recipe_file_is_one_line_with_its_place(invoke, tmp_path):
    (tmp_path / "bad.yaml").write_text("name: x\ndata: {train: a\nnet: [\n")
    result = invoke("train", tmp_path / "bad.yaml")
    assert result.exit_code == 2 and len(result.stderr.splitlines()) == 1
    assert result.stderr.startswith(f"Error: {tmp_path / 'bad.yaml'}:3:4: not valid YAML: ")
    (tmp_path / "bin.yaml").write_bytes(bytes(range(256)) * 4)
    result = invoke("train", tmp_path / "bin.yaml")
    assert result.exit_code == 2 and result.stderr.strip().endswith("not a text file (a recipe is YAML)")


@pytest.fixture(scope="module")
def snapshot(tmp_path_factory):
    folder = tmp_path_factory.mktemp("snap")
    args = ["train", RECIPE, "--set", "solver.max_iter=2", "--set", "data.batch_size=2"]
    args += ["--set", "data.val.noise.n=4", "--set", f"solver.snapshot_prefix={folder / 'run'}"]
    assert run_dataprep(*args).returncode == 0
    return folder / "run_iter_2.npz"


@pytest.mark.parametrize(
    "command, damage",
    [
        ("resume", "garbage"),
        ("resume", "damaged member"),
        ("resume", "no recipe"),
        ("predict", "truncated"),
        ("predict", "no recipe"),
        ("weights", "garbage"),  # its loaders' threads were running: an abort after the line
    ],
)
def test_a_damaged_snapshot_is_named_not_a_traceback(tmp_path, snapshot, damage, command):
    import numpy as np

    bad = tmp_path / "bad.npz"
    data = bytearray(snapshot.read_bytes())
    if damage == "garbage":
        bad.write_bytes(b"garbage\n")
    elif damage == "truncated":
        bad.write_bytes(bytes(data[:3000]))
    elif damage == "damaged member":
        middle = len(data) // 2
        data[middle : middle + 64] = bytes(64)
        bad.write_bytes(bytes(data))
    else:
        np.savez(bad, weights=np.zeros(3))
    list_path, _ = write_images(tmp_path, 2, shape=(100, 100), labels="float")
    run = {
        "resume": ["train", RECIPE, "--resume", bad, "--set", "solver.max_iter=3"],
        "predict": ["predict", bad, list_path],
        "weights": ["train", RECIPE, "--weights", bad, "--set", "solver.max_iter=1"],
    }[command]
    result = run_dataprep(*run, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert f"{bad}: not a dataprep snapshot" in result.stderr and "Traceback" not in result.stderr


def _classifier(tmp_path: Path, **changes) -> Path:
    import yaml

    recipe = {
        "name": "c",
        "data": {
            "train": {"noise": {"n": 40, "size": "12x12", "classes": 10}},
            "batch_size": 8,
            "transform": {"crop_size": changes.pop("crop", 0)},
        },
        "net": [
            {
                "name": "conv1",
                "type": "Convolution",
                "num_output": 4,
                "kernel_size": changes.pop("kernel", 3),
            },
            {"name": "ip1", "type": "InnerProduct", "num_output": changes.pop("outputs", 10)},
            {"name": "loss", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 2, "display": 1, "snapshot_prefix": str(tmp_path / "run")},
    }
    path = tmp_path / "r.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


@pytest.mark.parametrize(
    "change, code, message",
    [
        (
            {"crop": 20},
            2,
            "recipe data.transform.crop_size 20 is larger than the images of the generator (12x12",
        ),
        ({"kernel": 20}, 2, "layer conv1: kernel 20 larger than its 12x12 input"),
        ({"outputs": -4}, 2, "layer ip1: num_output -4: give 1 or more"),
        ({"outputs": 3}, 1, "layer loss: label "),
    ],
)
def test_a_net_that_cannot_run_on_its_data_names_the_layer_and_the_numbers(
    invoke, tmp_path, change, code, message
):
    result = invoke("train", _classifier(tmp_path, **change))
    assert result.exit_code == code, result.stderr
    assert message in result.stderr and "internal error" not in result.stderr
    assert result.stderr.count("Error:") == 1


def test_a_classifier_with_enough_outputs_trains(invoke, tmp_path):
    result = invoke("train", _classifier(tmp_path))
    assert result.exit_code == 0, result.stderr


@pytest.fixture
def small_disk(tmp_path):
    """A 3 MB tmpfs (root only; CI runs as root): under CI a failed mount fails the test."""
    folder = tmp_path / "small"
    folder.mkdir()
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(folder)], capture_output=True
    )
    if mounted.returncode:
        if os.environ.get("CI") == "true":
            pytest.fail(f"cannot mount a tmpfs under CI: {mounted.stderr!r}")
        pytest.skip("mounting a tmpfs needs root")
    yield folder
    subprocess.run(["umount", "-l", str(folder)], check=True)


FULL_DISK = {
    "lmdb": ["lmdb", "list.txt", "small/db"],
    "leveldb": ["lmdb", "list.txt", "small/db", "--backend", "leveldb"],
    "hdf5": ["hdf5", "list.txt", "-o", "small/db.h5"],  # HDF5 itself crashed (SIGSEGV) on it
    "wds": ["wds", "list.txt", "small/db"],
    "noise lmdb": ["noise", "--n", 900, "--size", "64x64", "--to", "lmdb", "--out", "small/out"],
    "noise hdf5": ["noise", "--n", 900, "--size", "64x64", "--to", "hdf5", "--out", "small/out"],
}


@pytest.mark.parametrize("case", sorted(FULL_DISK))
def test_a_full_disk_is_one_line_and_leaves_nothing(tmp_path, small_disk, case):
    write_images(tmp_path, 100, shape=(128, 128, 3))  # 4.9 MB of pixels: more than fits
    result = run_dataprep(*FULL_DISK[case], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)  # not 135 (SIGBUS), 139
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "No space left on device (wrote " in lines[0], lines
    assert lines[0].startswith("Error: small/")
    assert os.listdir(small_disk) == []  # no partial, no claim, no empty folder


@pytest.mark.parametrize("kind", ["wds", "hdf5"])
def test_an_output_set_is_replaced_as_a_whole(tmp_path, kind):
    """A glob of the shards, as WebDataset users write it, reads the new set only."""
    big, _ = write_images(tmp_path, 12, list_name="big.txt")
    two = tmp_path / "two.txt"
    two.write_text("".join(big.read_text().splitlines(keepends=True)[:2]))
    args = {"wds": lambda lst: ["wds", lst, "w"], "hdf5": lambda lst: ["hdf5", lst, "-o", "w.h5"]}[kind]
    assert run_dataprep(*args(big), "--shard-size", 5, cwd=tmp_path).returncode == 0
    again = run_dataprep(*args(two), cwd=tmp_path)
    assert again.returncode == 1 and "already exists" in again.stderr
    assert run_dataprep(*args(two), "--overwrite", cwd=tmp_path).returncode == 0
    pattern = {"wds": "w-*.tar", "hdf5": "w*.h5"}[kind]
    assert [p.name for p in sorted(tmp_path.glob(pattern))] == [{"wds": "w-000000.tar", "hdf5": "w.h5"}[kind]]
    assert count("wds" if kind == "wds" else "hdf5", tmp_path / "w") == 2


def test_an_import_killed_while_unpacking_is_cleaned_by_the_next(tmp_path):
    """The archive unpacks into a hidden partial inside OUT, named by host and process: a
    kill -9 leaves it, and the next import into OUT removes it."""
    import socket

    from helpers import mnist_files

    mnist_files(tmp_path / "mnist")
    out = tmp_path / "out"
    stale = out / f".unpacked.partial-{socket.gethostname()}-999999-0123abcd"
    (stale / "cifar-10-batches-py").mkdir(parents=True)
    (stale / "cifar-10-batches-py" / "data_batch_1").write_bytes(bytes(1000))
    result = run_dataprep("import", "mnist", "mnist", out, "--to", "lmdb", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "left by an interrupted run" in result.stderr and not stale.exists()
    assert sorted(p.name for p in out.iterdir() if p.name.startswith(".")) == []


@pytest.mark.parametrize(
    "command", [["mean", "w", "-o", "m.binaryproto"], ["convert", "w", "c", "--to", "lmdb"]]
)
@pytest.mark.parametrize("damage", ["member", "manifest"])
def test_a_damaged_webdataset_record_is_named_by_store_and_key(tmp_path, command, damage):
    import json

    list_path, _ = write_images(tmp_path, 4)
    assert run_dataprep("wds", list_path, "w", cwd=tmp_path).returncode == 0
    manifest_path = tmp_path / "w.manifest.json"
    manifest = json.loads(manifest_path.read_text())
    if damage == "member":  # the second image's bytes zeroed inside its shard
        shard, at, size = manifest["records"][1][:3]
        data = bytearray((tmp_path / manifest["shards"][shard]).read_bytes())
        data[at : at + size] = bytes(size)
        (tmp_path / manifest["shards"][shard]).write_bytes(bytes(data))
    else:  # an edited manifest: the second record points into the tar headers
        manifest["records"][1][1] = 0
        manifest_path.write_text(json.dumps(manifest))
    result = run_dataprep(*command, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "w: record 00000001: " in result.stderr and "internal error" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1 and leftovers(tmp_path) == []


def test_a_truncated_archive_is_named_not_an_eof_error(tmp_path):
    import tarfile

    from helpers import mnist_files

    mnist_files(tmp_path / "mnist", n=30)
    with tarfile.open(tmp_path / "mnist.tar.gz", "w:gz") as archive:
        archive.add(tmp_path / "mnist", arcname="mnist")
    data = (tmp_path / "mnist.tar.gz").read_bytes()
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    result = run_dataprep("import", "mnist", "cut.tar.gz", "out", "--to", "lmdb", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "cut.tar.gz: a damaged archive" in result.stderr and "internal error" not in result.stderr
    assert not (tmp_path / "out").exists() or list((tmp_path / "out").iterdir()) == []


def _flip(path: Path, needle: bytes) -> None:
    """Flip one bit in the middle of the bytes ``needle`` inside the file ``path``."""
    data = bytearray(path.read_bytes())
    at = data.find(needle)
    assert at >= 0, f"{needle[:8]!r} not in {path}"
    data[at + len(needle) // 2] ^= 0x10
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("kind", ["lmdb", "hdf5", "wds"])
@pytest.mark.parametrize(
    "command",
    [
        ["convert", "STORE", "copy.h5", "--to", "hdf5"],
        ["mean", "STORE", "-o", "m.binaryproto"],
        ["info", "STORE", "--grid", "g.png", "--count", "6"],
    ],
)
def test_a_bit_flip_inside_a_record_stops_every_reader(tmp_path, kind, command):
    """A derived store must never launder a damaged record: convert, mean and info check
    each record they read against the manifest's checksums."""
    import numpy as np

    list_path, images = write_images(tmp_path, 6, shape=(16, 16, 3))
    store = {"lmdb": "s", "hdf5": "list_h5.txt", "wds": "s"}[kind]
    make = {"lmdb": ["lmdb", list_path, "s"], "hdf5": ["hdf5", list_path], "wds": ["wds", list_path, "s"]}[
        kind
    ]
    assert run_dataprep(*make, cwd=tmp_path).returncode == 0
    if kind == "lmdb":  # Datum pixels: C x H x W bytes
        _flip(tmp_path / "s" / "data.mdb", images[3].transpose(2, 0, 1).tobytes())
    elif kind == "hdf5":  # float32 rows
        _flip(tmp_path / "list.h5", images[3].transpose(2, 0, 1).astype(np.float32).tobytes())
    else:  # the PNG file's own bytes
        _flip(tmp_path / "s-000000.tar", (tmp_path / "img" / "0003.png").read_bytes()[40:200])
    args = [store if a == "STORE" else a for a in command]
    result = run_dataprep(*args, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert ": record " in result.stderr and "0003" in result.stderr, result.stderr  # its key
    assert result.stderr.strip().endswith(": checksum mismatch")
    assert "internal error" not in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not (tmp_path / "copy.h5").exists() and not (tmp_path / "m.binaryproto").exists()
    assert leftovers(tmp_path) == []
    assert run_dataprep("verify", store, cwd=tmp_path).returncode == 1  # verify still reports it


def test_training_stops_at_a_damaged_record(tmp_path):
    import yaml

    list_path, images = write_images(tmp_path, 6, shape=(16, 16, 3))
    assert run_dataprep("lmdb", list_path, "s", cwd=tmp_path).returncode == 0
    _flip(tmp_path / "s" / "data.mdb", images[3].transpose(2, 0, 1).tobytes())
    recipe = {
        "data": {"train": "s", "batch_size": 6},
        "net": [
            {"name": "conv1", "type": "Convolution", "num_output": 2, "kernel_size": 3},
            {"name": "ip1", "type": "InnerProduct", "num_output": 5},
            {"name": "loss", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 2, "snapshot_prefix": "run"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = run_dataprep("train", "r.yaml", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().endswith("s: record 00000003_img/0003.png: checksum mismatch")
    assert not list(tmp_path.glob("run_*"))


def test_a_full_disk_under_resize_names_the_file(tmp_path, small_disk):
    write_images(tmp_path, 100, shape=(128, 128, 3))
    result = run_dataprep("resize", "list.txt", "small/r", "--size", "128x128", cwd=tmp_path)
    assert result.returncode == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"Error: {small_disk / 'r'}/") and line.endswith(".png: No space left on device")
    assert not [p for p in (small_disk / "r").iterdir() if p.name.endswith(".partial")]


def test_an_interrupt_between_write_and_rename_leaves_no_partial(tmp_path, monkeypatch):
    import numpy as np

    from dataprep import images

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(images.os, "replace", interrupted)
    with pytest.raises(KeyboardInterrupt):
        images.write_image(tmp_path / "a_aug0.png", np.zeros((4, 4, 3), np.uint8))
    assert list(tmp_path.iterdir()) == []


def test_convert_skip_bad_leaves_a_damaged_record_out_and_counts_it(tmp_path):
    import json

    list_path, images = write_images(tmp_path, 6, shape=(16, 16, 3))
    assert run_dataprep("lmdb", list_path, "s", cwd=tmp_path).returncode == 0
    _flip(tmp_path / "s" / "data.mdb", images[3].transpose(2, 0, 1).tobytes())
    result = run_dataprep("convert", "s", "copy", "--to", "lmdb", "--skip-bad", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["written"] == 5 and json.loads(result.stdout)["skipped"] == 1
    assert "skipped: s: record 00000003_img/0003.png: checksum mismatch" in result.stderr
    assert count("lmdb", tmp_path / "copy") == 5
    assert run_dataprep("verify", "copy", cwd=tmp_path).returncode == 0  # nothing damaged passed on


def _bomb(path: Path, fmt: str) -> None:
    """A small file whose header declares 40000 x 30000 pixels (1.2 gigapixels)."""
    import struct

    import cv2
    import numpy as np

    ok, buf = cv2.imencode(f".{fmt}", np.zeros((16, 16, 3), np.uint8))
    data = bytearray(buf.tobytes())
    if fmt == "png":
        data[16:24] = struct.pack(">II", 30000, 40000)
    else:  # the frame header (SOF0) of a baseline JPEG
        at = data.find(b"\xff\xc0")
        data[at + 5 : at + 9] = struct.pack(">HH", 40000, 30000)
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("fmt", ["png", "jpg"])
@pytest.mark.parametrize(
    "command",
    [
        ["lmdb", "list.txt", "db"],
        ["hdf5", "list.txt"],
        ["resize", "list.txt", "small", "--size", "8x8"],
        ["mean", "list.txt", "-o", "m.binaryproto"],
    ],
)
def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, fmt, command):
    list_path, _ = write_images(tmp_path, 3, ext=fmt)
    _bomb(tmp_path / "img" / f"0001.{fmt}", fmt)
    result = run_dataprep(*command, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    assert f"list.txt:2: img/0001.{fmt}: 40000x30000 (HxW) is 1200 megapixels, over --max-pixels" in line


def test_max_pixels_sets_the_limit(invoke, tmp_path):
    write_images(tmp_path, 2, shape=(12, 16, 3))
    refused = invoke("lmdb", tmp_path / "list.txt", tmp_path / "db", "--max-pixels", 100)
    assert refused.exit_code == 1 and "12x16 (HxW) is 0 megapixels, over --max-pixels 100" in refused.stderr
    assert invoke("lmdb", tmp_path / "list.txt", tmp_path / "db").exit_code == 0  # the default again
    off = invoke("lmdb", tmp_path / "list.txt", tmp_path / "db0", "--max-pixels", 0)  # no limit at all
    assert off.exit_code == 0, off.stderr


def test_header_sizes_match_the_decoded_images():
    import cv2
    import numpy as np

    from dataprep.images import header_size

    image = np.zeros((23, 41, 3), np.uint8)
    for ext in (".png", ".jpg", ".bmp"):
        assert header_size(cv2.imencode(ext, image)[1].tobytes()) == (23, 41), ext
    assert header_size(b"not an image") is None


@pytest.mark.parametrize("kind", ["pixels", "encoded", "wds"])
def test_images_with_an_exif_orientation_are_listed_and_warned_about_once(tmp_path, kind):
    import io
    import json

    import numpy as np
    from PIL import Image

    (tmp_path / "img").mkdir()
    lines = []
    for i in range(3):
        exif = Image.Exif()
        if i == 1:
            exif[0x0112] = 6  # "rotate 90 clockwise to display"
        out = io.BytesIO()
        Image.fromarray(np.full((10, 20, 3), 40 * i, np.uint8)).save(out, "JPEG", exif=exif.tobytes())
        (tmp_path / "img" / f"{i}.jpg").write_bytes(out.getvalue())
        lines.append(f"img/{i}.jpg {i}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    args = {
        "pixels": ["lmdb", "list.txt", "s", "--color", "--resize", "10x20"],
        "encoded": ["lmdb", "list.txt", "s", "--encoded"],
        "wds": ["wds", "list.txt", "s"],
    }[kind]
    result = run_dataprep(*args, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    warnings = [line for line in result.stderr.splitlines() if "EXIF orientation" in line]
    assert len(warnings) == 1 and "1 image(s)" in warnings[0] and "img/1.jpg" in warnings[0]
    manifest = tmp_path / ("s.manifest.json" if kind == "wds" else "s/dataprep.json")
    assert json.loads(manifest.read_text())["exif_oriented"] == ["img/1.jpg"]


def _damaged_store(tmp_path: Path, kind: str):
    """Six 16 x 16 images in a store of ``kind`` whose fourth record has one bit flipped;
    returns the store's argument and the images."""
    import numpy as np

    list_path, images = write_images(tmp_path, 6, shape=(16, 16, 3))
    make = {"lmdb": ["lmdb", list_path, "s"], "hdf5": ["hdf5", list_path], "wds": ["wds", list_path, "s"]}
    assert run_dataprep(*make[kind], cwd=tmp_path).returncode == 0
    if kind == "lmdb":
        _flip(tmp_path / "s" / "data.mdb", images[3].transpose(2, 0, 1).tobytes())
    elif kind == "hdf5":
        _flip(tmp_path / "list.h5", images[3].transpose(2, 0, 1).astype(np.float32).tobytes())
    else:
        _flip(tmp_path / "s-000000.tar", (tmp_path / "img" / "0003.png").read_bytes()[40:200])
    return {"lmdb": "s", "hdf5": "list_h5.txt", "wds": "s"}[kind], images


@pytest.mark.parametrize("kind", ["lmdb", "hdf5", "wds"])
def test_mean_skip_bad_leaves_a_damaged_record_out_and_counts_it(tmp_path, kind):
    import json

    import numpy as np

    store, images = _damaged_store(tmp_path, kind)
    result = run_dataprep("mean", store, "--npy", "m.npy", "--skip-bad", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert (summary["count"], summary["skipped"]) == (5, 1)
    assert result.stderr.count("checksum mismatch") == 1 and "skipped 1 bad input(s)" in result.stderr
    sound = np.stack([image for k, image in enumerate(images) if k != 3]).astype(np.float64)
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), sound.mean(axis=0).transpose(2, 0, 1), rtol=1e-6)


def test_mean_skip_bad_passes_over_a_missing_image_of_a_list(tmp_path):
    import json

    list_path, _ = write_images(tmp_path, 5)
    (tmp_path / "img" / "0002.png").unlink()
    strict = run_dataprep("mean", list_path, cwd=tmp_path)
    assert strict.returncode == 1 and "list.txt:3: img/0002.png: cannot read image" in strict.stderr
    result = run_dataprep("mean", list_path, "--skip-bad", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (json.loads(result.stdout)["count"], json.loads(result.stdout)["skipped"]) == (4, 1)


def test_train_skip_bad_logs_a_damaged_record_once_and_trains_on(tmp_path):
    import json

    import yaml

    store, _ = _damaged_store(tmp_path, "lmdb")
    recipe = {
        "data": {"train": store, "batch_size": 6},
        "net": [
            {"name": "ip1", "type": "InnerProduct", "num_output": 5},
            {"name": "loss", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 3, "snapshot_prefix": "run"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = run_dataprep("train", "r.yaml", "--skip-bad", "--json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["skipped"] == 1
    # three epochs of six read record 3 three times: logged and counted once
    assert result.stderr.count("skipped: s: record 00000003_img/0003.png: checksum mismatch") == 1


def test_a_damaged_sample_stands_in_for_the_next_sound_one(tmp_path):
    import numpy as np

    from dataprep.errors import OnError
    from dataprep.train.loader import open_samples
    from dataprep.train.recipe import Source

    store, images = _damaged_store(tmp_path, "lmdb")
    on_error = OnError(skip=True)
    samples = open_samples(Source(path=str(tmp_path / store)), on_error)
    try:
        read = samples.read([2, 3, 5, 3])
    finally:
        samples.close()
    assert [np.array_equal(image, images[k]) for (image, _), k in zip(read, [2, 4, 5, 4])] == [True] * 4
    assert on_error.skipped == 1


def _fill(folder: Path, leave: int = 16_000) -> None:
    """Fill a small disk but for ``leave`` bytes."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    (folder / "filler").write_bytes(bytes(max(free - leave, 0)))


@pytest.mark.parametrize(
    "command, output",
    [
        (["mean", "s", "-o", "small/m.binaryproto", "--npy", "small/m.npy"], "small/m.binaryproto"),
        (["info", "s", "--grid", "small/g.png", "--count", "6"], "small/g.png"),
        (["train", "r.yaml"], "small/run_iter_1.npz"),
    ],
)
def test_a_full_disk_under_mean_grid_and_snapshots_names_the_file(tmp_path, small_disk, command, output):
    import yaml

    list_path, _ = write_images(tmp_path, 6, shape=(64, 64, 3))
    assert run_dataprep("lmdb", list_path, "s", cwd=tmp_path).returncode == 0
    recipe = {
        "data": {"train": "s", "batch_size": 2},
        "net": [
            {"name": "ip1", "type": "InnerProduct", "num_output": 5},
            {"name": "loss", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 1, "snapshot_prefix": "small/run"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    _fill(small_disk)
    result = run_dataprep(*command, cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert result.stderr.strip().splitlines()[-1] == f"Error: {output}: No space left on device"
    assert os.listdir(small_disk) == ["filler"]  # no partial, no claim


# kill -9 at a seeded point of the work (progress reaching N, see progress.KILL_HOOK): the
# destination holds nothing that looks complete, and the next run cleans up and gives the
# same bytes as a run never killed. (command, how many items it counts); outputs: out*
KILLED = {
    "lmdb": (["lmdb", "list.txt", "out"], 40),
    "leveldb": (["lmdb", "list.txt", "out", "--backend", "leveldb"], 40),
    "hdf5": (["hdf5", "list.txt", "-o", "out.h5", "--shard-size", 15], 40),
    "wds": (["wds", "list.txt", "out", "--shard-size", 15], 40),
    "noise": (["noise", "--n", 300, "--to", "lmdb", "--out", "out"], 300),
    "import": (["import", "mnist", "mnist", "out", "--to", "lmdb"], 60),
    "resize": (["resize", "list.txt", "out", "--size", "8x8"], 40),
}


@pytest.mark.parametrize("seed", [1, 2])
@pytest.mark.parametrize("case", sorted(KILLED))
def test_a_run_killed_at_a_seeded_point_leaves_nothing_complete_and_the_next_run_finishes(
    tmp_path, case, seed
):
    import numpy as np
    from helpers import mnist_files

    from dataprep.progress import KILL_HOOK

    args, n = KILLED[case]
    kill_at = int(np.random.default_rng(seed).integers(1, n))
    work = tmp_path / "w"  # one folder for both runs: manifests name absolute paths
    write_images(work, 40)
    mnist_files(work / "mnist", n=30)

    def outputs() -> dict:
        return {p.name: tree_bytes(p) for p in sorted(work.glob("out*"))}

    assert run_dataprep(*args, "-j", 2, cwd=work).returncode == 0
    expected = outputs()
    for path in work.glob("out*"):
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    killed = run_dataprep(*args, "-j", 2, cwd=work, env={**os.environ, KILL_HOOK: str(kill_at)})
    assert killed.returncode == -9, (kill_at, killed.stderr)
    if case != "resize":  # resize keeps each finished image, so a rerun resumes
        left = [p for p in work.glob("out*") if not p.is_dir() or any(work.glob(f"{p.name}/[!.]*"))]
        assert left == []  # at most a folder of hidden partials
    again = run_dataprep(*args, "-j", 2, cwd=work)
    assert again.returncode == 0, again.stderr
    assert outputs() == expected
    assert leftovers(work) == [] and not list(work.glob("out*/.*"))


def test_a_failed_file_job_removes_the_partials_its_stopped_workers_left(tmp_path):
    """Workers stopped at an error (SIGTERM) die mid-write: the job removes their partial
    files (a full disk under resize left `.0050.png.partial` in one run of several)."""
    write_images(tmp_path, 8)
    (tmp_path / "img" / "0006.png").unlink()  # the job stops at line 7
    assert run_dataprep("resize", "list.txt", "r", "--size", "8x8", cwd=tmp_path).returncode == 1
    left = tmp_path / "r" / ".0003.png.partial"  # as a worker killed in the middle leaves it
    left.write_bytes(b"half")
    result = run_dataprep("resize", "list.txt", "r", "--size", "8x8", cwd=tmp_path)
    assert result.returncode == 1 and "0006.png" in result.stderr
    assert not left.exists() and not list((tmp_path / "r").glob(".*.partial"))
