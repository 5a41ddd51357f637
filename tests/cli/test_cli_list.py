"""``dataprep list`` through the CLI."""

from __future__ import annotations

import cv2
import numpy as np

from dataprep.listfile import read_list


def make_tree(root, counts):
    for cls, n in counts.items():
        (root / cls).mkdir(parents=True)
        for i in range(n):
            cv2.imwrite(str(root / cls / f"{i}.png"), np.full((4, 4), i, np.uint8))
    (root / sorted(counts)[-1] / "notes.txt").write_text("not an image")


def test_classes_by_sorted_name(invoke, tmp_path):
    make_tree(tmp_path / "imgs", {"dog": 3, "cat": 2})
    r = invoke("list", tmp_path / "imgs", "--out", tmp_path / "train.txt")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "classes.txt").read_text() == "0 cat\n1 dog\n"
    lf = read_list(tmp_path / "train.txt")
    assert [(e.path, e.labels) for e in lf.entries] == [
        ("imgs/cat/0.png", (0,)),
        ("imgs/cat/1.png", (0,)),
        ("imgs/dog/0.png", (1,)),
        ("imgs/dog/1.png", (1,)),
        ("imgs/dog/2.png", (1,)),
    ]
    assert all(lf.resolve(e).is_file() for e in lf.entries)


def test_stratified_seeded_split(invoke, tmp_path):
    make_tree(tmp_path / "imgs", {"a": 10, "b": 20})
    args = ["list", tmp_path / "imgs", "--out", tmp_path / "l/x.txt", "--split", "0.8,0.1,0.1", "--seed", 4]
    assert invoke(*args).exit_code == 0
    parts = {n: read_list(tmp_path / f"l/{n}.txt") for n in ("train", "val", "test")}
    assert [len(p) for p in parts.values()] == [24, 3, 3]
    assert sorted(e.labels[0] for e in parts["val"].entries) == [0, 1, 1]
    everything = [e.path for p in parts.values() for e in p.entries]
    assert len(set(everything)) == 30
    first = (tmp_path / "l/train.txt").read_text()
    assert invoke(*args, "--overwrite").exit_code == 0
    assert (tmp_path / "l/train.txt").read_text() == first


def test_flat_and_extensions(invoke, tmp_path):
    make_tree(tmp_path / "imgs", {"dog": 2})
    cv2.imwrite(str(tmp_path / "imgs/top.jpg"), np.zeros((4, 4), np.uint8))
    r = invoke("list", tmp_path / "imgs", "--flat", "--out", tmp_path / "f.txt", "--extensions", "jpg")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "f.txt").read_text() == "imgs/top.jpg 0\n"
    assert not (tmp_path / "classes.txt").exists()


def test_errors(invoke, tmp_path):
    (tmp_path / "empty").mkdir()
    r = invoke("list", tmp_path / "empty", "--out", tmp_path / "t.txt")
    assert r.exit_code == 1 and "no class subfolders" in r.stderr
    make_tree(tmp_path / "imgs", {"a": 1})
    assert invoke("list", tmp_path / "imgs", "--out", tmp_path / "t.txt").exit_code == 0
    r = invoke("list", tmp_path / "imgs", "--out", tmp_path / "t.txt")
    assert r.exit_code == 1 and "already exists" in r.stderr


def test_dash_writes_the_list_to_stdout(invoke, tmp_path, monkeypatch):
    make_tree(tmp_path / "imgs", {"cat": 1, "dog": 1})
    monkeypatch.chdir(tmp_path)
    r = invoke("list", "imgs", "-o", "-")
    assert r.exit_code == 0, r.stderr
    assert r.stdout == "imgs/cat/0.png 0\nimgs/dog/0.png 1\n"
    assert not (tmp_path / "-").exists()
    assert not (tmp_path / "classes.txt").exists()  # -o - writes no file unless asked
    r = invoke("list", "imgs", "-o", "-", "--classes-out", "names.txt")
    assert (tmp_path / "names.txt").read_text() == "0 cat\n1 dog\n"
    r = invoke("list", "imgs", "-o", "-", "--classes-out", "/dev/null")  # a device: written as it is
    assert r.exit_code == 0, r.stderr
    r = invoke("list", "imgs", "-o", "-", "--split", "0.5,0.5")
    assert r.exit_code == 2 and "give --out a file" in r.stderr


def test_classes_out_keeps_two_lists_apart(invoke, tmp_path):
    make_tree(tmp_path / "a", {"x": 1, "y": 1})
    make_tree(tmp_path / "b", {"p": 1, "q": 1, "r": 1})
    assert (
        invoke(
            "list", tmp_path / "a", "-o", tmp_path / "a.txt", "--classes-out", tmp_path / "a_classes.txt"
        ).exit_code
        == 0
    )
    assert (
        invoke(
            "list", tmp_path / "b", "-o", tmp_path / "b.txt", "--classes-out", tmp_path / "b_classes.txt"
        ).exit_code
        == 0
    )
    assert (tmp_path / "a_classes.txt").read_text() == "0 x\n1 y\n"
    assert (tmp_path / "b_classes.txt").read_text() == "0 p\n1 q\n2 r\n"


def test_missing_folder_is_a_usage_error(invoke, tmp_path):
    assert invoke("list", tmp_path / "nope").exit_code == 2
