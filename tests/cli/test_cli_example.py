"""``dataprep example``: small made-up datasets in the official formats, which the
importers and the list command take as they take the real ones."""

from __future__ import annotations

import json

import numpy as np
from helpers import tree_bytes

from dataprep.stores import open_store


def test_mnist_and_cifar10_files_import_as_the_official_ones(invoke, tmp_path):
    assert invoke("example", "mnist", tmp_path / "mnist", "--n", 50).exit_code == 0
    assert sorted(p.name for p in (tmp_path / "mnist").iterdir()) == [
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
    ]
    r = invoke("import", "mnist", tmp_path / "mnist", tmp_path, "--to", "lmdb")
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "mnist_train_lmdb") as train, open_store(tmp_path / "mnist_test_lmdb") as test:
        assert (len(train), len(test)) == (50, 10) and train[0].array.shape == (1, 28, 28)
        assert set(train.all_labels().ravel()) <= set(range(10))
    assert invoke("example", "cifar10", tmp_path, "--n", 50).exit_code == 0
    r = invoke("import", "cifar10", tmp_path / "cifar-10-binary.tar.gz", tmp_path / "c", "--to", "lmdb")
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "c" / "cifar10_train_lmdb") as train:
        assert len(train) == 50 and train[0].array.shape == (3, 32, 32)
    assert (tmp_path / "c" / "cifar10_classes.txt").read_text().splitlines()[0] == "0 airplane"


def test_photos_are_seeded_class_folders_of_jpegs(invoke, tmp_path):
    r = invoke("example", "photos", tmp_path / "a", "--n", 12, "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["outputs"] == [str(tmp_path / "a")]
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["circles", "squares", "stripes"]
    assert len(list((tmp_path / "a").rglob("*.jpg"))) == 12
    assert invoke("example", "photos", tmp_path / "b", "--n", 12).exit_code == 0
    assert tree_bytes(tmp_path / "a") == tree_bytes(tmp_path / "b")  # the same seed, the same bytes
    assert invoke("example", "photos", tmp_path / "a", "--n", 12).exit_code == 1  # no silent overwrite
    r = invoke("list", tmp_path / "a", "-o", tmp_path / "all.txt")
    assert r.exit_code == 0
    labels = [int(line.split()[1]) for line in (tmp_path / "all.txt").read_text().splitlines()]
    assert np.bincount(labels).tolist() == [4, 4, 4]
