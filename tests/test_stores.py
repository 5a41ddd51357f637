"""Store round trips for HDF5, LMDB and LevelDB, and Caffe wire compatibility."""

from __future__ import annotations

import json

import cv2
import h5py
import lmdb
import numpy as np
import plyvel
import pytest
from helpers import write_images
from wire import FIXED32, LENGTH, VARINT, fields, packed_floats

from dataprep.convert import list_source, store_meta, write_store
from dataprep.errors import DataprepError, StoreExistsError
from dataprep.images import Channels
from dataprep.parallel import InlineExecutor, ProcessExecutor
from dataprep.stores import STORES, open_store
from dataprep.stores.caffe_pb import blob_array, blob_bytes
from dataprep.stores.hdf5 import Hdf5Writer, parse_shard_size

VARIANTS = {
    "color": dict(),
    "gray": dict(channels=Channels("gray")),
    "resized": dict(resize=(8, 10)),
}


def build(kind, list_path, dest, workers=1, encoded=False, **source_kw):
    source = list_source(str(list_path), **source_kw)
    meta = store_meta(source)
    if kind == "hdf5":
        writer = Hdf5Writer(dest, expected=len(source), meta=meta)
    else:
        writer = STORES[kind](dest, encoded=encoded, meta=meta)
    executor = InlineExecutor() if workers == 1 else ProcessExecutor(workers)
    return write_store(source, writer, executor)


def expected_images(images, channels=None, resize=None, folder=None):
    """C x H x W references made with OpenCV directly (gray: imread's own conversion)."""
    out = []
    for i, image in enumerate(images):
        if channels is not None and channels.mode == "gray":
            image = cv2.imread(str(folder / f"img/{i:04d}.png"), cv2.IMREAD_GRAYSCALE)[:, :, None]
        if resize:
            h, w = resize
            image = cv2.resize(image, (w, h), interpolation=cv2.INTER_LINEAR)
            image = image[:, :, None] if image.ndim == 2 else image
        out.append(image.transpose(2, 0, 1))
    return out


@pytest.mark.parametrize("variant", sorted(VARIANTS))
@pytest.mark.parametrize("kind", ["hdf5", "lmdb", "leveldb"])
def test_round_trip(tmp_path, kind, variant):
    list_path, images = write_images(tmp_path, 12)
    kw = VARIANTS[variant]
    dest = tmp_path / ("out.h5" if kind == "hdf5" else "db")
    result = build(kind, list_path, dest, **kw)
    assert result.written == 12 and result.skipped == 0
    want = expected_images(images, folder=tmp_path, **kw)
    with open_store(dest) as store:
        assert store.kind == kind and len(store) == 12
        keys = store.keys()
        prefix = (lambda i: "") if kind == "hdf5" else (lambda i: f"{i:08d}_")
        assert keys == [f"{prefix(i)}img/{i:04d}.png" for i in range(12)]
        for i, rec in enumerate(store):
            assert rec.key == keys[i]
            assert rec.array.shape == want[i].shape
            assert np.array_equal(rec.array, want[i].astype(rec.array.dtype))
            assert rec.labels.tolist() == [i % 5]
        assert np.array_equal(store[5].array, want[5].astype(store[5].array.dtype))
        assert [r.key for r in store.iter_range(3, 6)] == keys[3:6]
        assert store.manifest["count"] == 12
        assert store.manifest["preprocessing"]["gray"] == ("channels" in kw)
        assert store.manifest["preprocessing"]["channels"] == kw.get("channels", Channels()).mode


@pytest.mark.parametrize("kind", ["lmdb", "leveldb"])
def test_encoded_round_trip_passes_files_through(tmp_path, kind):
    list_path, images = write_images(tmp_path, 6)
    build(kind, list_path, tmp_path / "db", encoded=True)
    with open_store(tmp_path / "db") as store:
        for i, rec in enumerate(store):
            assert np.array_equal(rec.array, images[i].transpose(2, 0, 1))
        assert store.manifest["encoded"] is True
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) if kind == "lmdb" else None
    raw = (
        env.begin().get(b"00000002_img/0002.png")
        if env
        else plyvel.DB(str(tmp_path / "db")).get(b"00000002_img/0002.png")
    )
    wire = fields(raw)
    assert [n for n, _, _ in wire] == [4, 5, 7]
    assert wire[0][2] == (tmp_path / "img/0002.png").read_bytes()  # the file, untouched
    assert wire[2] == (7, VARINT, 1)


def test_encoded_resized_records_are_reencoded(tmp_path):
    list_path, images = write_images(tmp_path, 4)
    build("lmdb", list_path, tmp_path / "db", encoded=True, resize=(6, 6))
    with open_store(tmp_path / "db") as store:
        for i, rec in enumerate(store):
            assert np.array_equal(rec.array, expected_images([images[i]], resize=(6, 6))[0])


def test_raw_datum_wire_format_matches_caffe_proto(tmp_path):
    list_path, images = write_images(tmp_path, 3, shape=(5, 7, 3))
    build("lmdb", list_path, tmp_path / "db")
    with lmdb.open(str(tmp_path / "db"), readonly=True, lock=False) as env:
        raw = env.begin().get(b"00000001_img/0001.png")
        assert env.stat()["entries"] == 3  # the manifest is not a key
    wire = fields(raw)
    assert [(n, w) for n, w, _ in wire] == [
        (1, VARINT),
        (2, VARINT),
        (3, VARINT),
        (4, LENGTH),
        (5, VARINT),
        (7, VARINT),
    ]
    values = {n: v for n, _, v in wire}
    assert (values[1], values[2], values[3], values[5], values[7]) == (3, 5, 7, 1, 0)
    chw = np.frombuffer(values[4], np.uint8).reshape(3, 5, 7)
    assert np.array_equal(chw, images[1].transpose(2, 0, 1))  # buffer[(c*H + h)*W + w]


def test_float_labels_go_to_a_companion_store(tmp_path):
    list_path, images = write_images(tmp_path, 5, labels="float")
    source = list_source(str(list_path))
    writer = STORES["lmdb"](tmp_path / "db", labels_path=tmp_path / "db_labels", meta=store_meta(source))
    write_store(source, writer, InlineExecutor())
    with lmdb.open(str(tmp_path / "db_labels"), readonly=True, lock=False) as env:
        raw = env.begin().get(b"00000003_img/0003.png")
    wire = fields(raw)
    assert [(n, w) for n, w, _ in wire] == [
        (1, VARINT),
        (2, VARINT),
        (3, VARINT),
        (5, VARINT),
        (6, FIXED32),
        (6, FIXED32),
        (7, VARINT),
    ]
    assert np.allclose([v for n, _, v in wire if n == 6], [3 / 7, 1.5])
    with open_store(tmp_path / "db") as store:
        assert np.allclose(store[3].labels, [3 / 7, 1.5])
        assert store.manifest["labels"]["db"] == "db_labels"
    with open_store(tmp_path / "db_labels") as labels:
        assert labels[3].array.shape == (2, 1, 1)


def test_blobproto_wire_format():
    mean = np.arange(2 * 3 * 4, dtype=np.float32).reshape(2, 3, 4) / 3
    raw = blob_bytes(mean)
    wire = fields(raw)
    assert [(n, w) for n, w, _ in wire] == [(1, VARINT), (2, VARINT), (3, VARINT), (4, VARINT), (5, LENGTH)]
    assert [v for _, _, v in wire[:4]] == [1, 2, 3, 4]
    assert np.allclose(packed_floats(wire[4][2]), mean.ravel())
    assert np.array_equal(blob_array(raw), mean[None])


def test_hdf5_layout_mean_scale_and_label_names(tmp_path):
    list_path, images = write_images(tmp_path, 7, labels="float")
    source = list_source(str(list_path))
    writer = Hdf5Writer(
        tmp_path / "t.h5",
        label_names=["a", "b"],
        mean=np.array([10, 20, 30]),
        scale=0.5,
        expected=7,
        meta=store_meta(source),
    )
    write_store(source, writer, InlineExecutor())
    assert (tmp_path / "t_h5.txt").read_text() == f"{tmp_path / 't.h5'}\n"
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["data"].dtype == np.float32 and f["data"].shape == (7, 3, 12, 16)
        assert f["a"].shape == (7,) and f["b"].shape == (7,)
        want = (images[2].transpose(2, 0, 1) - np.array([10, 20, 30])[:, None, None]) * 0.5
        assert np.allclose(f["data"][2], want)
        assert np.allclose(f["a"][:], [i / 7 for i in range(7)]) and np.allclose(
            f["b"][:], [i * 0.5 for i in range(7)]
        )
        manifest = json.loads(f.attrs["dataprep"])
        assert manifest["count"] == 7 and manifest["labels"]["names"] == ["a", "b"]
        assert len(f.attrs["dataprep_checksums"]) == 7


def test_hdf5_one_name_holds_all_columns(tmp_path):
    list_path, _ = write_images(tmp_path, 4, labels="float")
    source = list_source(str(list_path))
    write_store(source, Hdf5Writer(tmp_path / "t.h5", label_names=["freq"], expected=4), InlineExecutor())
    with h5py.File(tmp_path / "t.h5") as f:
        assert f["freq"].shape == (4, 2) and f["freq"].dtype == np.float32


def test_hdf5_shards_by_count_and_bytes(tmp_path):
    list_path, images = write_images(tmp_path, 10)
    source = list_source(str(list_path))
    write_store(source, Hdf5Writer(tmp_path / "t.h5", shard_rows=4, expected=10), InlineExecutor())
    listed = (tmp_path / "t_h5.txt").read_text().split()
    assert [p.rsplit("/", 1)[1] for p in listed] == ["t_000.h5", "t_001.h5", "t_002.h5"]
    assert not (tmp_path / "t.h5").exists()
    with open_store(tmp_path / "t_h5.txt") as store:
        assert len(store) == 10 and [len(f["data"]) for f in store.files] == [4, 4, 2]
        assert np.array_equal(store[9].array, images[9].transpose(2, 0, 1))
    row = 3 * 12 * 16 * 4
    assert parse_shard_size("1GB") == (None, 1 << 30) and parse_shard_size("12") == (12, None)
    write_store(
        source,
        Hdf5Writer(tmp_path / "b.h5", shard_bytes=3 * row, expected=10, relative=True),
        InlineExecutor(),
    )
    assert (tmp_path / "b_h5.txt").read_text().split() == [f"b_00{i}.h5" for i in range(4)]


@pytest.mark.parametrize("kind", ["hdf5 shards", "lmdb", "leveldb", "lmdb float labels"])
def test_records_by_index_are_those_of_the_ranges(tmp_path, kind):
    """``iter_indices`` (a shuffled training batch: LMDB and LevelDB read it in one
    transaction, HDF5 by runs of neighbours) gives the records ``iter_range`` gives, the base
    class's run-by-run way too, and still stops at a damaged record, naming it."""
    from dataprep.errors import RecordError
    from dataprep.stores.base import StoreReader

    list_path, _ = write_images(tmp_path, 10, labels="float" if "float" in kind else "int")
    source = list_source(str(list_path))
    if kind == "hdf5 shards":
        dest = tmp_path / "t_h5.txt"
        writer = Hdf5Writer(tmp_path / "t.h5", shard_rows=4, expected=10, meta=store_meta(source))
    else:
        dest = tmp_path / "db"
        extra = {"labels_path": tmp_path / "db_labels"} if "float" in kind else {}
        writer = STORES[kind.split()[0]](dest, meta=store_meta(source), **extra)
    write_store(source, writer, InlineExecutor())
    wanted = [0, 2, 3, 4, 7, 9]  # runs and single records, across the HDF5 shards
    with open_store(dest) as store:
        every = list(store)
        for reader in (store.iter_indices, lambda idx: StoreReader.iter_indices(store, idx)):
            got = list(reader(wanted))
            assert [i for i, _ in got] == wanted
            for i, rec in got:
                assert rec.key == every[i].key and np.array_equal(rec.array, every[i].array)
                assert np.array_equal(rec.labels, every[i].labels)
        damaged = every[4].key
    if kind == "hdf5 shards":
        with h5py.File(tmp_path / "t_001.h5", "r+") as f:
            f["data"][0, 0, 0, 0] += 1
    elif kind.startswith("lmdb"):
        with lmdb.open(str(dest)) as env, env.begin(write=True) as txn:
            key = damaged.encode()
            value = bytearray(txn.get(key))
            value[-5] ^= 1
            txn.put(key, bytes(value))
    else:
        db = plyvel.DB(str(dest))
        value = bytearray(db.get(damaged.encode()))
        value[-5] ^= 1
        db.put(damaged.encode(), bytes(value))
        db.close()
    with open_store(dest) as store, pytest.raises(RecordError, match=damaged.split("_", 1)[-1]):
        list(store.iter_indices(wanted))


def test_writers_refuse_to_overwrite(tmp_path):
    list_path, _ = write_images(tmp_path, 3)
    build("lmdb", list_path, tmp_path / "db")
    with pytest.raises(StoreExistsError, match="--overwrite"):
        build("lmdb", list_path, tmp_path / "db")
    build("hdf5", list_path, tmp_path / "t.h5")
    with pytest.raises(StoreExistsError):
        build("hdf5", list_path, tmp_path / "t.h5")


def test_lmdb_map_grows_instead_of_failing(tmp_path, monkeypatch):
    from dataprep.stores import lmdb_kv

    monkeypatch.setattr(lmdb_kv, "INITIAL_MAP_SIZE", 64 << 10)
    opened = []
    lmdb_open = lmdb.open
    monkeypatch.setattr(
        lmdb, "open", lambda path, **kw: opened.append(kw.get("map_size")) or lmdb_open(path, **kw)
    )
    list_path, images = write_images(tmp_path, 40, shape=(64, 64, 3))
    build("lmdb", list_path, tmp_path / "db")  # 490 KB of records in a 64 KiB map: it must grow
    assert opened[0] == 64 << 10
    with open_store(tmp_path / "db") as store:
        assert len(store) == 40 and np.array_equal(store[39].array, images[39].transpose(2, 0, 1))
    assert (tmp_path / "db/data.mdb").stat().st_size < 2 * 40 * 64 * 64 * 3 + (1 << 20)


def test_same_store_for_one_or_two_workers(tmp_path):
    list_path, _ = write_images(tmp_path, 30)
    for kind in ("lmdb", "hdf5"):
        a = tmp_path / f"{kind}1.h5" if kind == "hdf5" else tmp_path / "db1"
        b = tmp_path / f"{kind}2.h5" if kind == "hdf5" else tmp_path / "db2"
        build(kind, list_path, a, workers=1)
        build(kind, list_path, b, workers=2)
        if kind == "hdf5":
            assert a.read_bytes() == b.read_bytes()
        else:
            assert (a / "data.mdb").read_bytes() == (b / "data.mdb").read_bytes()
            assert (a / "dataprep.json").read_bytes() == (b / "dataprep.json").read_bytes()


def test_leveldb_without_plyvel_says_how_to_install(monkeypatch, tmp_path):
    import builtins

    real = builtins.__import__

    def no_plyvel(name, *args, **kw):
        if name == "plyvel":
            raise ImportError(name)
        return real(name, *args, **kw)

    monkeypatch.setattr(builtins, "__import__", no_plyvel)
    with pytest.raises(DataprepError, match=r"needs plyvel .*: pip install -e '.*\[leveldb\]'"):
        STORES["leveldb"](tmp_path / "db")
    assert not any(tmp_path.iterdir())


def test_hdf5_gzip_compression_reads_back(tmp_path):
    list_path, images = write_images(tmp_path, 5)
    source = list_source(str(list_path))
    write_store(source, Hdf5Writer(tmp_path / "z.h5", compression="gzip", expected=5), InlineExecutor())
    with h5py.File(tmp_path / "z.h5") as f:
        assert f["data"].compression == "gzip" and f["label"].compression == "gzip"
        assert np.array_equal(f["data"][3], images[3].transpose(2, 0, 1).astype(np.float32))
    with pytest.raises(DataprepError, match="unknown compression 'lzf'"):
        Hdf5Writer(tmp_path / "l.h5", compression="lzf")


@pytest.mark.parametrize("module", ["dataprep.stores.means", "dataprep.stores.hdf5", "dataprep.mean"])
def test_the_mean_parsing_sits_below_the_stores_and_mean(module):
    """No import circle: each module imports first in a fresh interpreter, and the stores
    never import ``dataprep.mean`` (which reads the stores)."""
    import subprocess
    import sys
    from pathlib import Path

    subprocess.run([sys.executable, "-c", f"import {module}"], check=True)
    stores = Path(__file__).parents[1] / "dataprep" / "stores"
    for path in stores.glob("*.py"):
        text = path.read_text()
        assert "from ..mean import" not in text and "dataprep.mean import" not in text, path


def test_the_reading_api_is_at_the_top_level_and_loaded_lazily():
    import subprocess
    import sys

    code = (
        "import sys, dataprep; assert 'numpy' not in sys.modules and 'lmdb' not in sys.modules; "
        "from dataprep import open_store, StoreReader; import dataprep.stores as s; "
        "assert open_store is s.open_store; print('ok')"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout == "ok\n"
    help_code = (
        "import sys; from dataprep.cli.main import cli\n"
        "try: cli(['--help'])\n"
        "except SystemExit: pass\n"
        "heavy = {'numpy', 'h5py', 'lmdb'} & set(sys.modules)\n"
        "assert not heavy, heavy"
    )
    done = subprocess.run([sys.executable, "-c", help_code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_a_store_the_caller_holds_through_lmdb_open_is_named(tmp_path):
    from dataprep.errors import StoreError

    list_path, _ = write_images(tmp_path, 2)
    write_store(list_source(str(list_path)), STORES["lmdb"](tmp_path / "db"), InlineExecutor())
    env = lmdb.open(str(tmp_path / "db"), readonly=True, lock=False)
    try:
        with pytest.raises(StoreError, match="already holds the store through its own lmdb.open"):
            open_store(tmp_path / "db")
    finally:
        env.close()
    with open_store(tmp_path / "db") as a, open_store(tmp_path / "db") as b:  # ours share one
        assert len(a) == len(b) == 2
