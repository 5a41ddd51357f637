"""The four lines as the user writes them (issue 32): ``mean``, ``info`` and ``verify``
without SOURCE (the paths piped on stdin, or on a terminal the folder's one training
store), ``hdf5`` converting every list piped to it, and the commands composing in one
shell pipeline."""

from __future__ import annotations

import shlex
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from dataprep.stores import open_store

DATAPREP = f"{shlex.quote(sys.executable)} -m dataprep.cli.main"


def shell(line: str, cwd: Path, stdin=subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """``line`` in sh, ``dataprep`` being this checkout's CLI."""
    return subprocess.run(
        line.replace("dataprep ", f"{DATAPREP} "),
        shell=True,
        cwd=cwd,
        capture_output=True,
        text=True,
        stdin=stdin,
    )


def mean_of(path: Path) -> np.ndarray:
    from dataprep.stores.means import read_mean_file

    return read_mean_file(path)


@pytest.fixture
def noise_folder(tmp_path):
    r = shell("dataprep noise --n 60 --size 16x16 -j 1", tmp_path)
    assert r.returncode == 0, r.stderr
    return tmp_path


def test_bare_mean_uses_the_folders_one_training_store(invoke, noise_folder, monkeypatch):
    monkeypatch.chdir(noise_folder)
    assert invoke("hdf5", "train.txt", "--label-names", "freq", "-j", 1).exit_code == 0
    r = invoke("mean", "-o", "named.binaryproto")  # no stdin: a terminal's case
    assert r.exit_code == 0, r.stderr
    r_bare = invoke("mean")
    assert r_bare.exit_code == 0 and "mean: train_h5.txt (the training store in this folder)" in r_bare.stderr
    assert np.array_equal(
        mean_of(noise_folder / "mean.binaryproto"), mean_of(noise_folder / "named.binaryproto")
    )
    r = invoke("info")
    count = len((noise_folder / "train.txt").read_text().splitlines())
    assert r.exit_code == 0 and f"hdf5, {count} records" in r.stdout
    assert invoke("verify").exit_code == 0


def test_bare_mean_with_no_store_or_several_is_a_usage_error(invoke, noise_folder, monkeypatch):
    monkeypatch.chdir(noise_folder)
    r = invoke("mean")
    assert (
        r.exit_code == 2 and "no training store here" in r.stderr and "dataprep mean STORE|LIST" in r.stderr
    )
    assert invoke("hdf5", "train.txt", "--label-names", "freq", "-j", 1).exit_code == 0
    assert invoke("lmdb", "train.txt", "train_lmdb", "--labels-db", "labels_db", "-j", 1).exit_code == 0
    r = invoke("mean")
    assert r.exit_code == 2 and "several training stores here (train_h5.txt, train_lmdb)" in r.stderr
    assert not (noise_folder / "mean.binaryproto").exists()


def test_hdf5_piped_into_mean(noise_folder):
    r = shell("dataprep hdf5 train.txt --label-names freq | dataprep mean -o piped.binaryproto", noise_folder)
    assert r.returncode == 0, r.stderr
    assert "mean: train.h5 (from standard input)" in r.stderr
    r = shell("dataprep mean train_h5.txt -o named.binaryproto", noise_folder)
    assert np.array_equal(
        mean_of(noise_folder / "piped.binaryproto"), mean_of(noise_folder / "named.binaryproto")
    )


def test_lmdb_store_path_piped_into_mean_and_verify(tmp_path):
    assert shell("dataprep noise --n 40 --size 16x16 --classes 3", tmp_path).returncode == 0
    r = shell("dataprep lmdb train.txt digits_lmdb | dataprep mean", tmp_path)
    assert r.returncode == 0 and "mean: digits_lmdb (from standard input)" in r.stderr, r.stderr
    want = shell("dataprep mean digits_lmdb -o want.binaryproto", tmp_path)
    assert want.returncode == 0
    assert np.array_equal(mean_of(tmp_path / "mean.binaryproto"), mean_of(tmp_path / "want.binaryproto"))
    r = shell("echo digits_lmdb | dataprep verify", tmp_path)
    assert r.returncode == 0 and "verify: digits_lmdb (from standard input)" in r.stderr


def test_noise_piped_into_hdf5_converts_each_list(tmp_path):
    r = shell("dataprep noise --n 50 --size 16x16 | dataprep hdf5 --label-names freq", tmp_path)
    assert r.returncode == 0, r.stderr
    assert "test_labels.txt passed over: the labels of" in r.stderr
    printed = [Path(p).name for p in r.stdout.split()]
    assert printed == ["train.h5", "train_h5.txt", "val.h5", "val_h5.txt", "test.h5", "test_h5.txt"]
    for split in ("train", "val", "test"):
        lines = (tmp_path / f"{split}.txt").read_text().splitlines()
        with open_store(tmp_path / f"{split}_h5.txt") as store:
            assert len(store) == len(lines)
    with h5py.File(tmp_path / "test.h5") as f:
        assert set(f) == {"data"}  # the unlabelled list: a store without labels
    with h5py.File(tmp_path / "train.h5") as f:
        assert set(f) == {"data", "freq"}
    # "-" keeps its meaning: list lines on stdin
    r = shell("head -3 train.txt | dataprep hdf5 - -o three.h5 --label-names freq", tmp_path)
    assert r.returncode == 0, r.stderr
    with open_store(tmp_path / "three.h5") as store:
        assert len(store) == 3


def test_a_pipe_that_carries_nothing_usable_exits_2_and_writes_nothing(noise_folder):
    r = shell("true | dataprep mean", noise_folder)
    assert r.returncode == 2 and "it closed empty" in r.stderr
    r = shell("echo nothing.txt | dataprep hdf5", noise_folder)
    assert r.returncode == 2 and "no list of images" in r.stderr
    r = shell("dataprep hdf5 missing.txt | dataprep mean", noise_folder)
    assert r.returncode == 2
    assert not list(noise_folder.glob("*.h5")) and not (noise_folder / "mean.binaryproto").exists()


def test_the_four_lines_compose_in_one_pipeline(tmp_path):
    """The README's line at a small N: noise, its HDF5 stores, the training mean, a training."""
    line = (
        "dataprep noise --n 300 --size 32x32 | dataprep hdf5 --mean 128 --label-names freq "
        "| dataprep mean && dataprep train noise_regression --set solver.max_iter=4 "
        "--set data.batch_size=20 --set solver.test_interval=4 --set solver.display=2 -q"
    )
    r = shell(line, tmp_path)
    assert r.returncode == 0, r.stderr
    for split in ("train", "val", "test"):
        lines = (tmp_path / f"{split}.txt").read_text().splitlines()
        with open_store(tmp_path / f"{split}_h5.txt") as store:
            assert len(store) == len(lines) > 0
    assert shell("dataprep mean train_h5.txt -o want.binaryproto", tmp_path).returncode == 0
    assert np.array_equal(mean_of(tmp_path / "mean.binaryproto"), mean_of(tmp_path / "want.binaryproto"))
    assert "noise_regression: 4 iterations" in r.stdout
    assert (tmp_path / "noise_regression_iter_4.npz").is_file()
