"""Channels on every command that decodes: images keep their own by default (gray stays 1
channel), --gray forces 1, --color forces 3 (convert_imageset's default)."""

from __future__ import annotations

import json

import cv2
import h5py
import lmdb
import numpy as np
import pytest
from helpers import write_images

from dataprep.stores import open_store
from dataprep.stores.caffe_pb import parse_datum


def gray_then_color(tmp_path, color_line=3):
    """A list of gray PNGs with one color image at ``color_line``."""
    (tmp_path / "img").mkdir(parents=True)
    rng = np.random.default_rng(0)
    lines = []
    for i in range(5):
        shape = (6, 8, 3) if i + 1 == color_line else (6, 8)
        cv2.imwrite(str(tmp_path / f"img/{i}.png"), rng.integers(0, 256, shape, dtype=np.uint8))
        lines.append(f"img/{i}.png {i % 2}")
    (tmp_path / "list.txt").write_text("\n".join(lines) + "\n")
    return tmp_path / "list.txt"


def test_noise_pipeline_stays_one_channel(invoke, tmp_path):
    assert invoke("noise", "--n", 20, "--out", tmp_path / "samples", "-j", 1).exit_code == 0
    r = invoke("hdf5", tmp_path / "train.txt", "--mean", 128, "--label-names", "freq", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with h5py.File(tmp_path / "train.h5") as f:
        assert f["data"].shape[1:] == (1, 100, 100) and f["freq"].shape[1:] == (2,)
        assert json.loads(f.attrs["dataprep"])["preprocessing"]["channels"] == "auto"


@pytest.mark.parametrize("command", ["hdf5", "lmdb", "mean", "resize", "augment"])
def test_gray_first_then_color_names_the_line_and_says_color(invoke, tmp_path, command):
    list_path = gray_then_color(tmp_path)
    args = {
        "hdf5": ["-o", tmp_path / "o.h5"],
        "lmdb": [tmp_path / "db"],
        "mean": ["-o", tmp_path / "m.bp"],
        "resize": [tmp_path / "out", "--size", "3x4"],
        "augment": [tmp_path / "out", "--mirror"],
    }[command]
    r = invoke(command, list_path, *args, "-j", 1)
    assert r.exit_code == 1
    assert "list.txt:3: img/2.png: a color image, but the first image" in r.stderr
    assert "list.txt:1: img/0.png) is gray: pass --color" in r.stderr
    r = invoke(command, list_path, *args, "-j", 1, "--color", "--overwrite")
    assert r.exit_code == 0, r.stderr


def test_color_first_expands_later_gray_and_color_flag_forces_three(invoke, tmp_path):
    list_path = gray_then_color(tmp_path, color_line=1)
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    with open_store(tmp_path / "db") as store:
        arrays = [rec.array for rec in store]
        assert {a.shape for a in arrays} == {(3, 6, 8)}
        gray = cv2.imread(str(tmp_path / "img/1.png"), cv2.IMREAD_UNCHANGED)
        assert all(np.array_equal(arrays[1][c], gray) for c in range(3))  # replicated, as Caffe
        assert store.manifest["preprocessing"]["channels"] == "auto"
    all_gray = gray_then_color(tmp_path / "g", color_line=0)
    assert invoke("hdf5", all_gray, "--color", "-j", 1).exit_code == 0
    with h5py.File(tmp_path / "g/list.h5") as f:
        assert f["data"].shape[1] == 3
        assert json.loads(f.attrs["dataprep"])["preprocessing"]["channels"] == "color"


def test_gray_and_color_are_exclusive(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2)
    r = invoke("hdf5", list_path, "--gray", "--color")
    assert r.exit_code == 2 and "--gray and --color are exclusive" in r.stderr


def test_encoded_gray_reencodes_a_color_file(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3, ext="jpg")
    r = invoke("lmdb", list_path, tmp_path / "db", "--encoded", "--gray", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env:
        datum = parse_datum(env.begin().get(b"00000000_img/0000.jpg"))
    assert datum.encoded and datum.data != (tmp_path / "img/0000.jpg").read_bytes()
    # what Caffe decodes from the record is the 1-channel image the manifest promises
    assert cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_ANYCOLOR).ndim == 2
    # files whose pixels are unchanged still pass through untouched
    r = invoke("lmdb", list_path, tmp_path / "db2", "--encoded", "-j", 1)
    with lmdb.open(str(tmp_path / "db2"), readonly=True, lock=False) as env:
        datum = parse_datum(env.begin().get(b"00000000_img/0000.jpg"))
    assert datum.data == (tmp_path / "img/0000.jpg").read_bytes()


def test_resize_keeps_gray_images_gray(invoke, tmp_path):
    list_path = gray_then_color(tmp_path, color_line=0)
    assert invoke("resize", list_path, tmp_path / "out", "--size", "3x4", "-j", 1).exit_code == 0
    assert cv2.imread(str(tmp_path / "out/0.png"), cv2.IMREAD_UNCHANGED).shape == (3, 4)


@pytest.mark.parametrize("op", ["--lighting", "--saturation"])
def test_color_operations_refuse_gray_images(invoke, tmp_path, op):
    list_path = gray_then_color(tmp_path, color_line=0)
    r = invoke("augment", list_path, tmp_path / "out", op, "0.1", "-j", 1)
    assert r.exit_code == 1 and f"{op} work on color images only" in r.stderr
    assert "pass --color" in r.stderr and not (tmp_path / "out").exists()
    color_list, _ = write_images(tmp_path / "c", 2)
    r = invoke("augment", color_list, tmp_path / "out2", op, "0.1", "--gray", "-j", 1)
    assert r.exit_code == 2 and "--gray makes every output 1-channel" in r.stderr
