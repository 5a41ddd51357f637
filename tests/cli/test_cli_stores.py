"""``dataprep hdf5`` and ``dataprep lmdb`` through the CLI: options, bad input, interrupts."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import cv2
import h5py
import numpy as np
import pytest
from helpers import leftovers, run_dataprep, tree_bytes, write_images

from dataprep.stores import open_store

COMMANDS = {
    "hdf5": lambda tmp: ["hdf5", "-o", tmp / "out.h5"],
    "lmdb": lambda tmp: ["lmdb", "--list-placeholder", tmp / "out_db"],
    "leveldb": lambda tmp: ["lmdb", "--backend", "leveldb", "--list-placeholder", tmp / "out_db"],
}


def command(kind, tmp, list_path, *extra):
    args = COMMANDS[kind](tmp)
    if "--list-placeholder" in args:
        i = args.index("--list-placeholder")
        args = [*args[:i], list_path, *args[i + 1 :]]
    else:
        args = [*args, list_path]
    return [*args, "-j", 1, *extra]


def destinations(tmp):
    return [p for p in (tmp / "out.h5", tmp / "out_h5.txt", tmp / "out_db") if p.exists()]


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_converts_and_prints_outputs(invoke, tmp_path, kind):
    list_path, images = write_images(tmp_path, 9)
    r = invoke(*command(kind, tmp_path, list_path), "--json")
    assert r.exit_code == 0, r.stderr
    import json

    summary = json.loads(r.stdout)
    assert summary["written"] == 9 and summary["skipped"] == 0
    store_path = tmp_path / ("out_h5.txt" if kind == "hdf5" else "out_db")
    with open_store(store_path) as store:
        assert len(store) == 9 and np.array_equal(store[4].array, images[4].transpose(2, 0, 1))


def corrupt(tmp, list_path):
    (tmp / "img/0003.png").write_bytes(b"not a png at all")


def missing(tmp, list_path):
    (tmp / "img/0003.png").unlink()


def wrong_label_count(tmp, list_path):
    lines = list_path.read_text().splitlines()
    lines[3] += " 7"
    list_path.write_text("\n".join(lines) + "\n")


def non_numeric(tmp, list_path):
    lines = list_path.read_text().splitlines()
    lines[3] = lines[3].split()[0] + " cat"
    list_path.write_text("\n".join(lines) + "\n")


def mixed_sizes(tmp, list_path):
    cv2.imwrite(str(tmp / "img/0003.png"), np.zeros((5, 5, 3), np.uint8))


BAD = {
    "corrupt": (corrupt, "list.txt:4: img/0003.png: cannot decode image"),
    "missing": (missing, "list.txt:4: img/0003.png: cannot read image (No such file or directory)"),
    # a one-label list splits at the last space, as Caffe's convert_imageset: the path is
    # "img/0003.png 3", with a hint
    "labels": (
        wrong_label_count,
        "list.txt:4: img/0003.png 3: cannot read image (No such file or directory; a ",
    ),
    "non_numeric": (non_numeric, "list.txt:4: img/0003.png: label 'cat' is not a number"),
    "mixed": (mixed_sizes, ("list.txt:4: img/0003.png: 5x5 (HxW) with 3 channels, but the first image (")),
}


@pytest.mark.parametrize("bad", sorted(BAD))
@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_bad_input_stops_with_line_and_path(invoke, tmp_path, kind, bad):
    list_path, _ = write_images(tmp_path, 8)
    spoil, message = BAD[bad]
    spoil(tmp_path, list_path)
    args = command(kind, tmp_path, list_path, "--check-size")
    r = invoke(*args)
    assert r.exit_code == 1, r.stdout
    assert message in r.stderr and "Traceback" not in r.stderr
    assert destinations(tmp_path) == [] and leftovers(tmp_path) == []
    r = invoke(*args, "--skip-bad")
    assert r.exit_code == 0, r.stderr
    assert message in r.stderr and "skipped 1 bad input" in r.stderr
    with open_store(tmp_path / ("out.h5" if kind == "hdf5" else "out_db")) as store:
        assert len(store) == 7 and not any(k.endswith("img/0003.png") for k in store.keys())


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_empty_list(invoke, tmp_path, kind):
    (tmp_path / "list.txt").write_text("# nothing here\n")
    r = invoke(*command(kind, tmp_path, tmp_path / "list.txt"))
    assert r.exit_code == 1 and "list.txt: the list is empty" in r.stderr
    assert destinations(tmp_path) == [] and leftovers(tmp_path) == []


def test_lmdb_refuses_float_labels_without_labels_db(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 4, labels="float")
    r = invoke("lmdb", list_path, tmp_path / "db")
    assert r.exit_code == 1 and "--labels-db" in r.stderr and not (tmp_path / "db").exists()
    r = invoke("lmdb", list_path, tmp_path / "db", "--labels-db", tmp_path / "db_labels", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "db") as store:
        assert np.allclose(store[2].labels, [2 / 7, 1.0])


def test_overwrite(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 4)
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    before = tree_bytes(tmp_path / "db")
    r = invoke("lmdb", list_path, tmp_path / "db", "--gray")
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr
    assert tree_bytes(tmp_path / "db") == before
    r = invoke("lmdb", list_path, tmp_path / "db", "--gray", "--overwrite", "-j", 1)
    assert r.exit_code == 0 and open_store(tmp_path / "db")[0].array.shape[0] == 1
    assert leftovers(tmp_path) == []


def test_hdf5_overwrite_removes_stale_shards(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 6)
    assert invoke("hdf5", list_path, "--shard-size", 2, "-j", 1).exit_code == 0
    assert (tmp_path / "list_002.h5").exists()
    r = invoke("hdf5", list_path, "--shard-size", 3, "-j", 1)
    assert r.exit_code == 1 and "list_000.h5 already exists" in r.stderr
    assert invoke("hdf5", list_path, "--shard-size", 3, "-j", 1, "--overwrite").exit_code == 0
    assert sorted(p.name for p in tmp_path.glob("list*.h5")) == ["list_000.h5", "list_001.h5"]


def test_shuffle_resize_gray_mean_through_cli(invoke, tmp_path):
    list_path, images = write_images(tmp_path, 10)
    r = invoke(
        "hdf5",
        list_path,
        "--shuffle",
        "--seed",
        2,
        "--resize",
        "6x8",
        "--gray",
        "--mean",
        "100",
        "--scale",
        "0.5",
        "--label-names",
        "cls",
        "--relative",
        "-j",
        2,
    )
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "list_h5.txt").read_text() == "list.h5\n"
    with h5py.File(tmp_path / "list.h5") as f:
        keys = [k.decode() if isinstance(k, bytes) else k for k in f.attrs["dataprep_keys"]]
        assert sorted(keys) == [f"img/{i:04d}.png" for i in range(10)] and keys != sorted(keys)
        first = int(keys[0][4:8])
        gray = cv2.imread(str(tmp_path / keys[0]), cv2.IMREAD_GRAYSCALE)
        want = (cv2.resize(gray, (8, 6), interpolation=cv2.INTER_LINEAR).astype(np.float32) - 100) * 0.5
        assert np.allclose(f["data"][0, 0], want) and f["cls"][0] == first % 5


def test_mean_file(invoke, tmp_path):
    list_path, images = write_images(tmp_path, 3)
    mean = np.random.default_rng(0).random((3, 12, 16)).astype(np.float32) * 50
    np.save(tmp_path / "mean.npy", mean)
    r = invoke("hdf5", list_path, "--mean-file", tmp_path / "mean.npy", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "list.h5") as f:
        assert np.allclose(f["data"][1], images[1].transpose(2, 0, 1) - mean)
    np.save(tmp_path / "bad.npy", mean[:, :5])
    r = invoke("hdf5", list_path, "--mean-file", tmp_path / "bad.npy", "-j", 1, "-o", tmp_path / "b.h5")
    assert r.exit_code == 1 and "does not fit" in r.stderr and not (tmp_path / "b.h5").exists()


def test_stdin_list(invoke, tmp_path, monkeypatch):
    list_path, _ = write_images(tmp_path, 3)
    monkeypatch.chdir(tmp_path)
    r = invoke("lmdb", "-", tmp_path / "db", "-j", 1, input=list_path.read_text())
    assert r.exit_code == 0, r.stderr
    assert len(open_store(tmp_path / "db")) == 3


def started_writing(folder):
    """True once a partial store holds some records (LMDB commits every 1000)."""
    for p in folder.iterdir():
        if ".partial-" in p.name:
            data = p / "data.mdb" if p.is_dir() else p
            if data.exists() and data.stat().st_blocks * 512 > 200_000:  # LMDB's file is sparse
                return True
    return False


def children(pid: int) -> list[int]:
    """The child processes of ``pid`` (Linux /proc)."""
    found = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        found += [int(c) for c in (task / "children").read_text().split()]
    return found


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM, signal.SIGKILL])
@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_interrupted_write_leaves_no_store(tmp_path, kind, sig):
    list_path, _ = write_images(tmp_path, 4000, shape=(32, 32, 3))
    args = (
        ["lmdb", list_path, tmp_path / "out_db"]
        if kind == "lmdb"
        else ["hdf5", list_path, "-o", tmp_path / "out.h5"]
    )
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args), "-j", "2"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while not started_writing(tmp_path):
        assert proc.poll() is None and time.time() < deadline, "finished before it could be interrupted"
        time.sleep(0.002)
    workers = children(proc.pid)
    assert workers, "the command runs worker processes"
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode != 0
    assert destinations(tmp_path) == []
    deadline = time.time() + 10  # workers end with their parent, even a killed one
    while any(Path(f"/proc/{pid}").exists() for pid in workers):
        assert time.time() < deadline, f"worker processes {workers} outlived their parent"
        time.sleep(0.05)
    if sig != signal.SIGKILL:  # a catchable signal: the partial output is removed too
        assert leftovers(tmp_path) == []
        assert proc.returncode == (143 if sig == signal.SIGTERM else 130)  # 128 + the signal
        assert b"Traceback" not in err and b"Exception ignored" not in err
        return
    # a hard kill leaves the hidden partial output; the next run on that destination frees it
    left = leftovers(tmp_path)
    partials = [name for name in left if not name.endswith(".claim")]
    assert partials and all(f"-{proc.pid}-" in name for name in partials)
    for claim in set(left) - set(partials):  # the claim on the output names its process
        assert (tmp_path / claim).read_text().split()[1] == str(proc.pid)
    rerun = run_dataprep(*args, "-j", "2")
    assert rerun.returncode == 0, rerun.stderr
    assert "left by an interrupted run" in rerun.stderr and partials[0] in rerun.stderr
    assert leftovers(tmp_path) == [] and destinations(tmp_path)


def test_hdf5_refuses_a_list_without_labels_unless_no_labels(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 4, labels="none")
    r = invoke("hdf5", list_path, "-j", 1)
    assert r.exit_code == 1 and "has no labels (paths only)" in r.stderr and "--no-labels" in r.stderr
    assert not (tmp_path / "list.h5").exists()
    r = invoke("hdf5", list_path, "--no-labels", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "list.h5") as f:
        assert list(f) == ["data"] and f["data"].shape == (4, 3, 12, 16)
    labelled, _ = write_images(tmp_path / "l", 2)
    assert invoke("hdf5", labelled, "--no-labels").exit_code == 2


@pytest.mark.parametrize("kind", sorted(COMMANDS))
def test_missing_list_is_a_usage_error(invoke, tmp_path, kind):
    r = invoke(*command(kind, tmp_path, tmp_path / "nope.txt"))
    assert r.exit_code == 2 and "nope.txt: no such list file" in r.stderr


def test_skipped_lines_are_reported_in_list_order(invoke, tmp_path, caplog):
    list_path, _ = write_images(tmp_path, 6)
    lines = list_path.read_text().splitlines()
    lines[4] = "img/0004.png cat"  # a bad label: found while reading the list, before any image
    list_path.write_text("\n".join(lines) + "\n")
    (tmp_path / "img/0001.png").write_bytes(b"junk")
    (tmp_path / "img/0003.png").unlink()
    r = invoke("lmdb", list_path, tmp_path / "db", "--skip-bad", "-j", 2)
    assert r.exit_code == 0, r.stderr
    skipped = [line for line in r.stderr.splitlines() if line.startswith("WARNING: skipped:")]
    assert [line.split("list.txt:")[1].split(":")[0] for line in skipped] == ["2", "4", "5"]
    assert "skipped 3 bad input(s)" in r.stderr
