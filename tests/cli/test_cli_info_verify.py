"""``dataprep info`` and ``dataprep verify`` on good stores and deliberately broken ones."""

from __future__ import annotations

import json
import os

import cv2
import lmdb
import numpy as np
import pytest
from helpers import write_images

from dataprep.convert import list_source, store_meta
from dataprep.stores import STORES


def build(invoke, tmp, kind, labels="int", n=12, extra=()):
    list_path, images = write_images(tmp, n, labels=labels)
    args = {
        "lmdb": ["lmdb", list_path, tmp / "db"],
        "leveldb": ["lmdb", list_path, tmp / "db", "--backend", "leveldb"],
        "hdf5": ["hdf5", list_path, "-o", tmp / "db.h5", "--shard-size", 5],
    }[kind]
    if labels == "float" and kind != "hdf5":
        args += ["--labels-db", tmp / "db_labels"]
    r = invoke(*args, "-j", 1, *extra)
    assert r.exit_code == 0, r.stderr
    return list_path, images, tmp / ("db_h5.txt" if kind == "hdf5" else "db")


@pytest.mark.parametrize("kind", ["lmdb", "leveldb", "hdf5"])
def test_info_numbers_match_the_data(invoke, tmp_path, kind):
    _, images, store = build(invoke, tmp_path, kind)
    r = invoke("info", store, "--json")
    assert r.exit_code == 0, r.stderr
    info = json.loads(r.stdout)
    assert info["type"] == kind and info["count"] == 12
    assert info["shape"] == [3, 12, 16]
    assert info["dtype"] == ("float32" if kind == "hdf5" else "uint8")
    labels = [i % 5 for i in range(12)]
    stats = info["labels"]["stats"][0]
    assert (stats["min"], stats["max"]) == (0, 4) and stats["mean"] == pytest.approx(np.mean(labels))
    assert stats["histogram"] == {str(k): labels.count(k) for k in range(5)} or stats["histogram"] == {
        k: labels.count(k) for k in range(5)
    }
    assert info["bytes_on_disk"] > 12 * 3 * 12 * 16
    assert info["first_keys"][0].endswith("img/0000.png")
    text = invoke("info", store)
    assert "12 records" in text.stdout and "classes 0:3 1:3 2:2 3:2 4:2" in text.stdout


def test_info_float_labels(invoke, tmp_path):
    _, _, store = build(invoke, tmp_path, "lmdb", labels="float")
    info = json.loads(invoke("info", store, "--json").stdout)
    assert info["labels"]["columns"] == 2 and not info["labels"]["integer"]
    assert info["labels"]["stats"][1]["max"] == pytest.approx(5.5)


@pytest.mark.parametrize("kind", ["lmdb", "hdf5"])
def test_grid(invoke, tmp_path, kind):
    _, _, store = build(invoke, tmp_path, kind)
    r = invoke("info", store, "--grid", tmp_path / "grid.png", "--count", 9, "--random")
    assert r.exit_code == 0, r.stderr
    grid = cv2.imread(str(tmp_path / "grid.png"))
    assert grid.shape == (3 * (96 + 14), 3 * 96, 3)
    assert grid.std() > 20  # images and label text, not a blank canvas
    gray = build(invoke, tmp_path / "g", "lmdb", extra=["--gray"])[2]
    assert invoke("info", gray, "--grid", tmp_path / "g.png", "--count", 4).exit_code == 0
    assert cv2.imread(str(tmp_path / "g.png")).shape == (2 * 110, 2 * 96, 3)


@pytest.mark.parametrize("kind", ["lmdb", "leveldb", "hdf5"])
def test_verify_good_stores(invoke, tmp_path, kind):
    list_path, _, store = build(invoke, tmp_path, kind, labels="float" if kind != "leveldb" else "int")
    r = invoke("verify", store, "--list", list_path)
    assert r.exit_code == 0, r.stdout + r.stderr
    assert r.stdout.strip().endswith("12 records checked, OK")


def test_verify_shuffled_store_against_its_list(invoke, tmp_path):
    list_path, _, store = build(invoke, tmp_path, "lmdb", extra=["--shuffle", "--seed", 3])
    assert invoke("verify", store, "--list", list_path).exit_code == 0


def test_verify_tampered_lmdb(invoke, tmp_path):
    _, _, store = build(invoke, tmp_path, "lmdb")
    with lmdb.open(str(store)) as env, env.begin(write=True) as txn:
        key = b"00000004_img/0004.png"
        value = bytearray(txn.get(key))
        value[-10] ^= 0xFF
        txn.put(key, bytes(value))
    r = invoke("verify", store)
    assert r.exit_code == 1
    assert "00000004_img/0004.png: checksum mismatch" in r.stdout
    assert "1 problem(s)" in r.stdout


def _write_and_die(list_path, dest):
    """Write records through the public writer API, then die without closing (a kill)."""
    source = list_source(str(list_path))
    writer = STORES["lmdb"](dest, meta=store_meta(source))
    encode = writer.encoder()
    for i in range(len(source)):
        record = source.record(i)
        writer.put(i, record.key, encode(record))
    os._exit(9)


def test_verify_unfinished_writer(tmp_path, invoke):
    import multiprocessing

    list_path, _ = write_images(tmp_path, 6)
    proc = multiprocessing.get_context("fork").Process(
        target=_write_and_die, args=(list_path, tmp_path / "db")
    )
    proc.start()
    proc.join()
    assert proc.exitcode == 9  # killed: the temporary store is all that is left
    partial = next(p for p in tmp_path.iterdir() if ".partial-" in p.name)
    r = invoke("verify", partial)
    assert r.exit_code == 1 and "unfinished dataprep output" in r.stdout
    assert not (tmp_path / "db").exists()


def test_verify_truncated_and_missing_hdf5_shards(invoke, tmp_path):
    _, _, store = build(invoke, tmp_path, "hdf5")
    shard = tmp_path / "db_001.h5"
    os.truncate(shard, shard.stat().st_size // 2)
    r = invoke("verify", store)
    assert r.exit_code == 1 and "db_001.h5: cannot be read" in r.stdout
    shard.unlink()
    r = invoke("verify", store)
    assert r.exit_code == 1 and "db_001.h5: listed in db_h5.txt but missing" in r.stdout


def test_verify_hdf5_edited_row(invoke, tmp_path):
    import h5py

    _, _, store = build(invoke, tmp_path, "hdf5")
    with h5py.File(tmp_path / "db_000.h5", "r+") as f:
        f["data"][2, 0, 0, 0] += 1
    r = invoke("verify", store)
    assert r.exit_code == 1 and "img/0002.png: checksum mismatch" in r.stdout


def test_verify_against_a_different_list(invoke, tmp_path):
    list_path, _, store = build(invoke, tmp_path, "lmdb")
    lines = list_path.read_text().splitlines()
    lines[5] = lines[5].split()[0] + " 9"
    other = tmp_path / "other.txt"
    other.write_text("\n".join(lines + ["img/extra.png 1"]) + "\n")
    r = invoke("verify", store, "--list", other)
    assert r.exit_code == 1
    assert "00000005_img/0005.png: labels [0.0] differ from the list's [9]" in r.stdout
    assert "img/extra.png: in the list but not in the store" in r.stdout


def test_verify_store_from_another_tool(invoke, tmp_path):
    """No manifest: records are still decoded and checked, with a note."""
    from dataprep.stores.caffe_pb import datum_raw

    with lmdb.open(str(tmp_path / "foreign"), map_size=1 << 24) as env, env.begin(write=True) as txn:
        for i in range(4):
            txn.put(b"%08d_x%d.jpg" % (i, i), datum_raw(np.full((4, 4, 3), i, np.uint8), i))
    r = invoke("verify", tmp_path / "foreign")
    assert r.exit_code == 0 and "4 records checked, OK" in r.stdout and "no manifest" in r.stderr
    with lmdb.open(str(tmp_path / "foreign")) as env, env.begin(write=True) as txn:
        txn.put(b"00000009_bad.jpg", b"\xff\xff garbage")
    r = invoke("verify", tmp_path / "foreign")
    assert r.exit_code == 1 and "00000009_bad.jpg: cannot decode" in r.stdout


def test_grid_refuses_an_existing_file(invoke, tmp_path):
    _, _, store = build(invoke, tmp_path, "lmdb")
    (tmp_path / "grid.png").write_bytes(b"mine")
    r = invoke("info", store, "--grid", tmp_path / "grid.png")
    assert r.exit_code == 1 and "already exists; pass --overwrite" in r.stderr
    assert (tmp_path / "grid.png").read_bytes() == b"mine"
    assert invoke("info", store, "--grid", tmp_path / "grid.png", "--overwrite").exit_code == 0
    assert cv2.imread(str(tmp_path / "grid.png")) is not None


def test_info_of_mixed_sizes_prints_the_range(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 4, sizes=[(6, 8, 3), (9, 5, 3), (7, 7, 3), (6, 8, 3)])
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    info = json.loads(invoke("info", tmp_path / "db", "--json").stdout)
    assert info["shape"] is None and info["shape_min"] == [3, 6, 5] and info["shape_max"] == [3, 9, 8]
    text = invoke("info", tmp_path / "db").stdout
    assert "sizes vary: H 6 to 9, W 5 to 8, 3 channel(s), uint8" in text and "raw pixels" in text


def test_info_names_hdf5_data_and_its_label_datasets(invoke, tmp_path):
    assert invoke("noise", "--n", 14, "--out", tmp_path / "s", "--to", "hdf5", "-j", 1).exit_code == 0
    text = invoke("info", tmp_path / "s/train_h5.txt").stdout
    assert "float32 arrays" in text and "raw" not in text
    assert "100x100 (HxW), 1 channel, float32" in text
    assert "freq[0]:" in text and "freq[1]:" in text and "fx" not in text


def test_verify_lines_up_hdf5_rows_by_path_after_skips(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 8)
    (tmp_path / "img/0002.png").write_bytes(b"junk")
    r = invoke("hdf5", list_path, "-o", tmp_path / "db.h5", "--skip-bad", "-j", 1)
    assert r.exit_code == 0, r.stderr
    r = invoke("verify", tmp_path / "db_h5.txt", "--list", list_path)
    assert r.exit_code == 1
    problems = r.stdout.strip().splitlines()[:-1]
    assert problems == ["img/0002.png: in the list but not in the store"]
    assert invoke("lmdb", list_path, tmp_path / "db", "--skip-bad", "-j", 1).exit_code == 0
    r = invoke("verify", tmp_path / "db", "--list", list_path)
    assert r.stdout.strip().splitlines()[:-1] == problems  # the same report on every store


def test_verify_of_a_missing_store_is_a_usage_error(invoke, tmp_path):
    r = invoke("verify", tmp_path / "nope")
    assert r.exit_code == 2 and "no store there" in r.stderr


@pytest.mark.parametrize("shape", [(192, 4, 4), (192, 1, 1)])
def test_grid_of_features_draws_heat_maps_not_green_swatches(tmp_path, shape):
    """extract's feature stores: 192 float channels, a map per sample or a vector."""
    import cv2

    from dataprep.info import _displayable

    rng = np.random.default_rng(0)
    features = rng.standard_normal(shape).astype(np.float32)
    picture = _displayable(features)
    side = shape[1] if shape[1] > 1 else 14  # 192 values in a 14 x 14 square
    assert picture.shape == (side, side, 3) and picture.dtype == np.uint8
    if shape[1] > 1:
        first = features[0]
    else:  # the vector row by row, the rest of the square at its minimum
        first = np.append(features.ravel(), [features.min()] * 4).reshape(14, 14)
    expected = cv2.applyColorMap(
        ((first - first.min()) * (255.0 / (first.max() - first.min()))).astype(np.uint8), cv2.COLORMAP_VIRIDIS
    )
    assert np.abs(picture.astype(int) - expected).max() <= 8  # one colormap step of rounding
    assert len(np.unique(picture.reshape(-1, 3), axis=0)) > 10  # a map, not a swatch
