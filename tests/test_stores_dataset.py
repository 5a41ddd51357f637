"""Readers as PyTorch map-style datasets, checked without torch: ``len()``, indexing that
gives ``(array, labels)`` with a transform, pickling, and forked workers that open their own
handles (LMDB and HDF5 handles must not cross a fork); LevelDB says it admits one process."""

from __future__ import annotations

import multiprocessing
import os
import pickle

import numpy as np
import pytest

from dataprep.errors import StoreError
from dataprep.stores import open_store

READER = None  # the dataset a forked worker inherits, as DataLoader's workers do


def _item(index: int):
    array, labels = READER[index]
    return os.getpid(), READER.__dict__["_handles"]["pid"], array, labels


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    from click.testing import CliRunner

    from dataprep.cli.main import cli

    folder = tmp_path_factory.mktemp("stores")
    for kind in ("hdf5", "lmdb", "leveldb"):
        r = CliRunner().invoke(
            cli,
            [
                "noise",
                "--n",
                "40",
                "--size",
                "8x8",
                "--classes",
                "3",
                "--to",
                kind,
                "--out",
                str(folder / kind),
                "-j",
                "1",
            ],
            catch_exceptions=False,
        )
        assert r.exit_code == 0, r.stderr
    return {
        "hdf5": folder / "hdf5/train_h5.txt",
        "lmdb": folder / "lmdb/train_lmdb",
        "leveldb": folder / "leveldb/train_leveldb",
    }


def double(array):
    return array.astype(np.float32) * 2


@pytest.mark.parametrize("kind", ["hdf5", "lmdb"])
def test_a_reader_is_a_map_style_dataset_for_forked_workers(stores, kind):
    global READER
    plain = open_store(stores[kind])
    first = plain[0]
    array, labels = first  # unpacks as (array, labels); the key rides along
    assert len(plain) == 28 and first.key and labels.shape == (1,)
    READER = open_store(stores[kind], transform=double)
    READER[0]  # the parent opens its handles first, as a dataset used before the DataLoader
    again = pickle.loads(pickle.dumps(READER))  # spawn-style workers get a pickled copy
    assert np.array_equal(again[3][0], double(plain[3][0])) and np.array_equal(again[3][1], plain[3][1])
    with multiprocessing.get_context("fork").Pool(2) as pool:
        results = pool.map(_item, range(len(READER)))
    for index, (pid, handle_pid, array, labels) in enumerate(results):
        assert pid != os.getpid() and handle_pid == pid  # the worker opened its own handle
        assert np.array_equal(array, double(plain[index][0])) and np.array_equal(labels, plain[index][1])
    plain.close()
    READER.close()


def test_leveldb_says_it_admits_one_process(stores):
    global READER
    READER = open_store(stores["leveldb"])
    READER[0]
    with multiprocessing.get_context("fork").Pool(1) as pool:
        with pytest.raises(StoreError, match="LevelDB admits one process per database"):
            pool.map(_item, [0])
    READER.close()
    again = pickle.loads(pickle.dumps(READER))  # once the first process let go, another may read
    assert again[1][1].shape == (1,)
    again.close()
