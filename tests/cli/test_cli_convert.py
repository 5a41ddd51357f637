"""``dataprep convert``: any store into another kind, records, keys and order kept, a new
manifest; Caffe's own LMDB (no manifest) included; float arrays refused for Datum pixels."""

from __future__ import annotations

import lmdb
import numpy as np
import pytest

from dataprep.stores import open_store
from dataprep.stores.caffe_pb import datum_raw, parse_datum


def records(path):
    with open_store(path) as store:
        return [(rec.key, np.asarray(rec.array, np.float64), rec.labels) for rec in store], store.manifest


@pytest.mark.parametrize("chain", [("lmdb", "hdf5"), ("leveldb", "lmdb"), ("lmdb", "leveldb")])
def test_convert_keeps_records_keys_and_order(invoke, tmp_path, chain):
    source_kind, target = chain
    r = invoke(
        "noise",
        "--n",
        30,
        "--size",
        "8x8",
        "--classes",
        3,
        "--to",
        source_kind,
        "--out",
        tmp_path / "s",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    src = tmp_path / "s" / f"train_{source_kind}"
    out = tmp_path / ("out.h5" if target == "hdf5" else "out")
    r = invoke("convert", src, out, "--to", target, "-j", 2)
    assert r.exit_code == 0, r.stderr
    (before, _), (after, manifest) = records(src), records(out)
    assert len(after) == len(before) == 22  # the 5/7 training share of 30
    for (k0, a0, l0), (k1, a1, l1) in zip(before, after):
        assert k0 == k1 and np.array_equal(a0, a1) and np.array_equal(l0, l1)
    assert manifest["kind"] == target and manifest["labels"]["kind"] == "int"
    assert invoke("verify", out).exit_code == 0


def test_convert_reads_caffes_own_lmdb_and_float_labels(invoke, tmp_path):
    env = lmdb.open(str(tmp_path / "caffe_lmdb"), map_size=1 << 24)  # as convert_imageset, no manifest
    images = np.random.default_rng(1).integers(0, 256, (4, 6, 5, 3), dtype=np.uint8)
    with env.begin(write=True) as txn:
        for i, image in enumerate(images):
            txn.put(f"{i:08d}_img{i}.png".encode(), datum_raw(image, label=i % 2))
    env.close()
    r = invoke("convert", tmp_path / "caffe_lmdb", tmp_path / "copy", "--to", "leveldb")
    assert r.exit_code == 0, r.stderr
    with open_store(tmp_path / "copy") as store:
        got = [(rec.key, rec.array, int(rec.labels[0])) for rec in store]
    assert [k for k, _, _ in got] == [f"{i:08d}_img{i}.png" for i in range(4)]
    assert all(
        np.array_equal(a, images[i].transpose(2, 0, 1)) and label == i % 2
        for i, (_, a, label) in enumerate(got)
    )
    r = invoke("noise", "--n", 20, "--size", "8x8", "--to", "lmdb", "--out", tmp_path / "f", "-j", 1)
    assert r.exit_code == 0, r.stderr
    r = invoke("convert", tmp_path / "f" / "train_lmdb", tmp_path / "floats", "--to", "lmdb")
    assert r.exit_code == 0, r.stderr
    assert (tmp_path / "floats_labels").is_dir()  # fx, fy as float_data in a companion store
    (before, _), (after, _) = records(tmp_path / "f" / "train_lmdb"), records(tmp_path / "floats")
    assert all(np.array_equal(b[2], a[2]) for b, a in zip(before, after))
    env = lmdb.open(str(tmp_path / "floats_labels"), readonly=True, lock=False)
    with env.begin() as txn:
        first = parse_datum(next(iter(txn.cursor()))[1])
    env.close()
    assert list(first.float_data) == pytest.approx(list(before[0][2]))


def test_float_arrays_do_not_become_datum_pixels(invoke, tmp_path):
    r = invoke(
        "noise", "--n", 20, "--size", "8x8", "--to", "hdf5", "--out", tmp_path / "h", "--mean", 128, "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    r = invoke("convert", tmp_path / "h" / "train_h5.txt", tmp_path / "x", "--to", "lmdb")
    assert r.exit_code == 1 and "lmdb holds uint8 pixels" in r.stderr
    assert not (tmp_path / "x").exists()


def test_mixed_sizes_into_hdf5_suggest_what_convert_can_do(invoke, tmp_path):
    """convert has no --resize: its message must not send users to one."""
    from helpers import write_images

    list_path, _ = write_images(tmp_path, 3, sizes=[(6, 6, 3), (5, 6, 3), (6, 6, 3)])
    assert invoke("lmdb", list_path, tmp_path / "db").exit_code == 0
    r = invoke("convert", tmp_path / "db", tmp_path / "db.h5", "--to", "hdf5")
    assert r.exit_code == 1
    assert (
        "convert to lmdb or wds (any sizes), or rebuild from the images (dataprep hdf5 LIST --resize HxW)"
        in r.stderr
    )
    r = invoke("hdf5", list_path, "-o", tmp_path / "l.h5")
    assert r.exit_code == 1 and "pass --resize HxW to give every image one size" in r.stderr


def test_lmdb_to_hdf5_and_back_keeps_uint8_and_gives_the_same_datums(invoke, tmp_path):
    import h5py
    from helpers import write_images

    list_path, _ = write_images(tmp_path, 5, shape=(8, 8, 3))
    assert invoke("lmdb", list_path, tmp_path / "db").exit_code == 0
    assert invoke("convert", tmp_path / "db", tmp_path / "db.h5", "--to", "hdf5").exit_code == 0
    with h5py.File(tmp_path / "db.h5") as f:
        assert f["data"].dtype == np.uint8 and f["data"].shape == (5, 3, 8, 8)
    r = invoke("convert", tmp_path / "db.h5", tmp_path / "db2", "--to", "lmdb")
    assert r.exit_code == 0, r.stderr  # its own output is no longer refused as float

    def datums(path):
        env = lmdb.open(str(path), readonly=True, lock=False)
        try:
            return list(env.begin().cursor())
        finally:
            env.close()

    assert datums(tmp_path / "db2") == datums(tmp_path / "db")  # keys and Datum bytes


@pytest.mark.parametrize("to", ["leveldb", "wds"])
def test_encoded_records_stay_encoded_unless_decode(invoke, tmp_path, to):
    from helpers import write_images

    list_path, _ = write_images(tmp_path, 4, shape=(16, 16, 3), ext="jpg")
    assert invoke("lmdb", list_path, tmp_path / "enc", "--encoded").exit_code == 0
    files = {p.name: p.read_bytes() for p in (tmp_path / "img").iterdir()}
    assert invoke("convert", tmp_path / "enc", tmp_path / "kept", "--to", to).exit_code == 0
    with open_store(tmp_path / "kept") as kept:
        assert kept.encoded() and [r.data for r in kept] == [files[f"{i:04d}.jpg"] for i in range(4)]
    if to == "leveldb":
        assert invoke("convert", tmp_path / "enc", tmp_path / "px", "--to", to, "--decode").exit_code == 0
        with open_store(tmp_path / "px") as pixels, open_store(tmp_path / "enc") as encoded:
            assert not pixels.encoded()
            assert all(np.array_equal(a.array, b.array) for a, b in zip(pixels, encoded))
