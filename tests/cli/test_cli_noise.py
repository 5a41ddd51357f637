"""``dataprep noise`` through the CLI: files, lists, determinism, errors, stores."""

from __future__ import annotations

import cv2
import h5py
import numpy as np
import pytest
from helpers import leftovers, run_dataprep, tree_bytes

from dataprep.listfile import read_list
from dataprep.noise import NoiseSource
from dataprep.stores import open_store


def test_files_and_lists(invoke, tmp_path):
    out = tmp_path / "samples"
    r = invoke("noise", "--n", 70, "--out", out, "--size", "20x30", "--seed", 3, "-j", 1)
    assert r.exit_code == 0, r.stderr
    assert r.stdout.split() == [
        str(tmp_path / f) for f in ("train.txt", "val.txt", "test.txt", "test_labels.txt")
    ]
    train, val = read_list(tmp_path / "train.txt"), read_list(tmp_path / "val.txt")
    test, held = read_list(tmp_path / "test.txt"), read_list(tmp_path / "test_labels.txt")
    assert (len(train), len(val), len(test)) == (50, 10, 10)
    assert test.label_count == 0 and held.label_count == 2
    assert [e.path for e in test.entries] == [e.path for e in held.entries]
    paths = {e.path for lf in (train, val, test) for e in lf.entries}
    assert len(paths) == 70 and all(p.startswith("samples/") for p in paths)
    assert len(list(out.iterdir())) == 70
    for entry in train.entries[:10]:
        index = int(entry.path.split("/")[1].split("_")[0])
        fx, fy = entry.labels
        image, h, w = NoiseSource(70, (20, 30), seed=3).sample(index)
        assert (fx, fy) == (w / 30, h / 20)
        assert entry.path.endswith(f"_{fx:.2f}_{fy:.2f}.jpg")
        stored = cv2.imread(str(tmp_path / entry.path), cv2.IMREAD_GRAYSCALE)
        assert np.abs(stored.astype(int) - image[:, :, 0]).mean() < 3  # JPEG q95


def test_same_bytes_for_any_worker_count(invoke, tmp_path):
    for j in (1, 2):
        r = invoke("noise", "--n", 60, "--out", tmp_path / f"w{j}/s", "-j", j, "--seed", 5)
        assert r.exit_code == 0, r.stderr
    assert tree_bytes(tmp_path / "w1") == tree_bytes(tmp_path / "w2")


def test_png_is_lossless_and_classes_write_class_names(invoke, tmp_path):
    r = invoke(
        "noise",
        "--n",
        30,
        "--out",
        tmp_path / "s",
        "--format",
        "png",
        "--classes",
        3,
        "--split",
        "20,5,5",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "labels.txt").exists()  # *_labels.txt is for ground truth only
    labels = (tmp_path / "classes.txt").read_text().splitlines()
    assert labels == ["0 fx[0,0.3333)", "1 fx[0.3333,0.6667)", "2 fx[0.6667,1)"]
    train = read_list(tmp_path / "train.txt")
    assert train.integer_labels and {e.labels[0] for e in train.entries} <= {0, 1, 2}
    source = NoiseSource(30, seed=0, classes=3)
    for entry in train.entries:
        index = int(entry.path.split("/")[1][:5])
        stored = cv2.imread(str(tmp_path / entry.path), cv2.IMREAD_UNCHANGED)
        assert np.array_equal(stored, source.sample(index)[0][:, :, 0])
        assert source.record(index).labels == entry.labels


def test_lists_dir_and_ratio_split(invoke, tmp_path):
    r = invoke(
        "noise",
        "--n",
        40,
        "--out",
        tmp_path / "a/imgs",
        "--lists-dir",
        tmp_path / "lists",
        "--split",
        "0.5,0.25,0.25",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    train = read_list(tmp_path / "lists/train.txt")
    assert len(train) == 20 and train.entries[0].path.startswith("../a/imgs/")
    assert (tmp_path / "lists" / train.entries[0].path).is_file()


def test_refuses_non_empty_out_unless_overwrite(invoke, tmp_path):
    args = ["noise", "--n", 10, "--out", tmp_path / "s", "-j", 1]
    assert invoke(*args).exit_code == 0
    before = tree_bytes(tmp_path / "s")
    r = invoke(*args, "--seed", 9)
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr
    assert tree_bytes(tmp_path / "s") == before
    assert invoke(*args, "--seed", 9, "--overwrite").exit_code == 0
    assert tree_bytes(tmp_path / "s") != before and leftovers(tmp_path) == []


@pytest.mark.parametrize(
    "args, message",
    [
        (["--n", 0], "0 is not in the range x>=1"),
        (["--split", "5,5,5"], "--split counts add up to 15, not 10"),
        (["--split", "0.5,0.6"], "ratios add up to 1.1"),
        (["--size", "big"], "--size 'big': give HxW"),
        (["--size", "256,256"], "--size '256,256': give HxW"),
        (["--size", "256 x 256"], "or S for an S x S square"),
    ],
)
def test_bad_option_values_are_usage_errors_exit_2(invoke, tmp_path, args, message):
    r = invoke("noise", "--n", 10, "--out", tmp_path / "s", *args)
    assert r.exit_code == 2
    assert message in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith("Error:")
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory(invoke, tmp_path):
    (tmp_path / "file").write_text("x")
    r = invoke("noise", "--n", 5, "--out", tmp_path / "file/s", "--lists-dir", tmp_path / "file/lists")
    assert "cannot create" in r.stderr
    assert r.exit_code == 1 and "file" in r.stderr and "Traceback" not in r.stderr


def test_stores_hold_the_png_route_pixels(invoke, tmp_path):
    r = invoke("noise", "--n", 35, "--out", tmp_path / "files", "--format", "png", "-j", 1)
    assert r.exit_code == 0, r.stderr
    for kind in ("hdf5", "lmdb"):
        r = invoke("noise", "--n", 35, "--to", kind, "--out", tmp_path / kind, "-j", 2)
        assert r.exit_code == 0, r.stderr
    train = read_list(tmp_path / "train.txt")
    h5 = open_store(tmp_path / "hdf5/train_h5.txt")
    db = open_store(tmp_path / "lmdb/train_lmdb")
    assert len(h5) == len(db) == len(train) == 25
    for entry, a, b in zip(train.entries, h5, db):
        png = cv2.imread(str(tmp_path / entry.path), cv2.IMREAD_UNCHANGED)[None]
        assert np.array_equal(a.array, png.astype(np.float32)) and np.array_equal(b.array, png)
        assert np.allclose(a.labels, entry.labels) and np.allclose(b.labels, entry.labels)
        assert b.key.endswith(entry.path.split("/")[1])
    assert h5.label_names == ["freq"] and h5.files[0]["freq"].shape == (25, 2)


def test_console_script_runs(tmp_path):
    p = run_dataprep("noise", "--n", 8, "--out", tmp_path / "s", "-q", "-j", 1)
    assert p.returncode == 0 and p.stderr == ""
    assert (tmp_path / "train.txt").is_file()


def test_classes_out_chooses_the_class_file(invoke, tmp_path):
    r = invoke(
        "noise",
        "--n",
        10,
        "--out",
        tmp_path / "s",
        "--classes",
        2,
        "--classes-out",
        tmp_path / "names/noise_classes.txt",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "names/noise_classes.txt").read_text().splitlines()[0] == "0 fx[0,0.5)"
    assert not (tmp_path / "classes.txt").exists()


@pytest.mark.parametrize("to", ["files", "hdf5"])
def test_two_split_values_mean_train_and_val_only(invoke, tmp_path, to):
    r = invoke("noise", "--n", 20, "--out", tmp_path / "s", "--split", "0.5,0.5", "--to", to, "-j", 1)
    assert r.exit_code == 0, r.stderr
    if to == "files":
        assert len(read_list(tmp_path / "train.txt")) == 10 and len(read_list(tmp_path / "val.txt")) == 10
        assert not (tmp_path / "test.txt").exists() and not (tmp_path / "test_labels.txt").exists()
    else:
        assert sorted(p.name for p in (tmp_path / "s").iterdir()) == [
            "train.h5",
            "train_h5.txt",
            "val.h5",
            "val_h5.txt",
        ]
    assert "Two values make train and val only" in " ".join(invoke("noise", "--help").stdout.split())


def test_label_names_with_spaces_name_the_datasets_as_hdf5_does(invoke, tmp_path):
    r = invoke(
        "noise", "--n", 10, "--out", tmp_path / "s", "--to", "hdf5", "--label-names", "fx, fy", "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "s/train.h5") as f:
        assert sorted(f) == ["data", "fx", "fy"] and f["fx"].shape == (f["data"].shape[0],)
    assert (
        invoke(
            "noise",
            "--n",
            10,
            "--out",
            tmp_path / "f",
            "--format",
            "png",
            "-j",
            1,
            "--lists-dir",
            tmp_path / "f_lists",
        ).exit_code
        == 0
    )
    r = invoke("hdf5", tmp_path / "f_lists/train.txt", "--label-names", "fx, fy", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "f_lists/train.h5") as f:
        assert sorted(f) == ["data", "fx", "fy"]


def test_ctrl_c_into_hdf5_exits_130_without_a_traceback(tmp_path):
    import signal
    import subprocess
    import sys
    import time

    for k, delay in enumerate((0.4, 0.7, 1.0)):
        out = tmp_path / f"s{k}"
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "dataprep.cli.main",
                "noise",
                "--n",
                "60000",
                "--to",
                "hdf5",
                "--out",
                str(out),
                "-j",
                "2",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        started = time.monotonic()  # the run has begun once its partial output exists
        while not list(tmp_path.glob(f"s{k}/.*partial*")) and time.monotonic() - started < 30:
            time.sleep(0.02)
        time.sleep(delay - 0.4)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, err
        assert "Traceback" not in err and "Exception ignored" not in err, err
        assert not out.exists() or (leftovers(out) == [] and not list(out.glob("*.h5")))


@pytest.mark.parametrize("to", ["lmdb", "hdf5"])
def test_classes_out_with_stores(invoke, tmp_path, to):
    r = invoke(
        "noise",
        "--n",
        30,
        "--classes",
        3,
        "--to",
        to,
        "--out",
        tmp_path / "s",
        "--classes-out",
        tmp_path / "c.txt",
    )
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "c.txt").read_text().splitlines() == [
        "0 fx[0,0.3333)",
        "1 fx[0.3333,0.6667)",
        "2 fx[0.6667,1)",
    ]
    r = invoke("noise", "--n", 30, "--classes", 3, "--to", to, "--out", tmp_path / "t")
    assert r.exit_code == 0 and (tmp_path / "t" / "classes.txt").is_file()


def test_label_age_writes_ages_0_to_99_into_the_datum_labels(invoke, tmp_path):
    import lmdb

    from dataprep.stores.caffe_pb import parse_datum

    r = invoke(
        "noise", "--n", 40, "--size", "100x100", "--label", "age", "--to", "lmdb", "--out", tmp_path / "a"
    )
    assert r.exit_code == 0, r.stderr
    assert not (tmp_path / "a" / "train_lmdb_labels").exists()  # the age is the Datum's own label
    env = lmdb.open(str(tmp_path / "a" / "train_lmdb"), readonly=True, lock=False)
    with env.begin() as txn:
        for key, value in txn.cursor():
            fx = float(key.decode().split("_")[2])  # the name's fx, 2 decimals
            assert abs(parse_datum(value).label - 100 * fx) <= 1
    env.close()
    assert invoke("noise", "--n", 4, "--label", "age", "--classes", 3).exit_code == 2
