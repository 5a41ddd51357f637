"""``dataprep mean``: exact means of stores and lists, Caffe's binaryproto, errors."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from helpers import write_images
from wire import LENGTH, VARINT, fields, packed_floats

from dataprep.mean import StoreArrays, compute_mean
from dataprep.parallel import InlineExecutor, ProcessExecutor

STORES = {
    "lmdb": lambda lst, tmp: ["lmdb", lst, tmp / "db"],
    "encoded": lambda lst, tmp: ["lmdb", lst, tmp / "db", "--encoded"],
    "leveldb": lambda lst, tmp: ["lmdb", lst, tmp / "db", "--backend", "leveldb"],
    "hdf5": lambda lst, tmp: ["hdf5", lst, "-o", tmp / "db.h5"],
}


def store_path(kind, tmp):
    return tmp / ("db_h5.txt" if kind == "hdf5" else "db")


@pytest.mark.parametrize("kind", sorted(STORES))
def test_mean_matches_numpy(invoke, tmp_path, kind):
    list_path, images = write_images(tmp_path, 23, shape=(6, 8, 3))
    assert invoke(*STORES[kind](list_path, tmp_path), "-j", 1).exit_code == 0
    out = tmp_path / "m.binaryproto"
    r = invoke("mean", store_path(kind, tmp_path), "-o", out, "--npy", tmp_path / "m.npy", "-j", 2)
    assert r.exit_code == 0, r.stderr
    want = np.mean([im.transpose(2, 0, 1).astype(np.float64) for im in images], axis=0)
    npy = np.load(tmp_path / "m.npy")
    assert npy.shape == (3, 6, 8) and npy.dtype == np.float32
    assert np.allclose(npy, want, rtol=1e-6)
    wire = fields(out.read_bytes())
    assert [(n, w) for n, w, _ in wire] == [(1, VARINT), (2, VARINT), (3, VARINT), (4, VARINT), (5, LENGTH)]
    assert [v for _, _, v in wire[:4]] == [1, 3, 6, 8]
    assert np.array_equal(np.array(packed_floats(wire[4][2]), np.float32), npy.ravel())
    channel = want.mean(axis=(1, 2))
    assert r.stdout.strip() == "  ".join(f"{n} {v:.2f}" for n, v in zip("BGR", channel))


def test_identical_for_any_worker_count(tmp_path, invoke):
    list_path, _ = write_images(tmp_path, 300, shape=(5, 5, 3))
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    a = compute_mean(StoreArrays(str(tmp_path / "db")), InlineExecutor())
    b = compute_mean(StoreArrays(str(tmp_path / "db")), ProcessExecutor(2))
    assert a.count == b.count == 300 and np.array_equal(a.mean, b.mean)


def test_no_drift_on_large_sums():
    """float32 sums (compute_image_mean) drift past 2**24 (70000 x 255 is 1.8e7); the mean
    of 70000 images alternating 255 and 254 must still be exactly 254.5."""

    class Alternating:
        shareable = True

        def __len__(self):
            return 70000

        def arrays(self, start, stop, damaged=None):
            images = [np.full((1, 2, 2), 254, np.uint8), np.full((1, 2, 2), 255, np.uint8)]
            for i in range(start, stop):
                yield str(i), images[i % 2]

    result = compute_mean(Alternating(), InlineExecutor())
    assert result.count == 70000 and (result.mean == 254.5).all()
    assert result.channels == [("gray", 254.5)]


def test_a_chunk_sum_is_exact_past_uint16():
    """A chunk's uint8 sum is kept in uint16 for up to 257 images (and sent back so, a
    quarter of the bytes); more images in one chunk widen it, never wrap it."""
    from dataprep.mean import _SumTask

    class Bright:
        shareable = True

        def __len__(self):
            return 600

        def arrays(self, start, stop, damaged=None):
            for i in range(start, stop):
                yield str(i), np.full((1, 2, 2), 255, np.uint8)

    (small,) = _SumTask(Bright())(0, 128)
    (large,) = _SumTask(Bright())(0, 600)
    assert small.total.dtype == np.uint16 and (small.total == 128 * 255).all()
    assert large.total.dtype == np.uint64 and (large.total == 600 * 255).all()


def test_list_source_with_resize_and_gray(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 6, sizes=[(10, 12, 3), (7, 9, 3)] * 3)
    r = invoke("mean", list_path, "--resize", "4x5", "--gray", "--json", "-o", tmp_path / "m.bp", "-j", 1)
    assert r.exit_code == 0, r.stderr
    summary = json.loads(r.stdout)
    imgs = [
        cv2.resize(
            cv2.imread(str(tmp_path / f"img/{i:04d}.png"), cv2.IMREAD_GRAYSCALE),
            (5, 4),
            interpolation=cv2.INTER_LINEAR,
        )
        for i in range(6)
    ]
    assert summary["shape"] == [1, 4, 5] and summary["count"] == 6
    assert list(summary["channels"]) == ["gray"]
    assert summary["channels"]["gray"] == pytest.approx(np.mean(imgs), rel=1e-9)
    r = invoke("mean", list_path, "--resize", "4x5", "--json", "-o", tmp_path / "c.bp", "-j", 1)
    assert list(json.loads(r.stdout)["channels"]) == ["B", "G", "R"]  # color stays color


def test_per_channel_only_writes_nothing(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3)
    r = invoke("mean", list_path, "--per-channel-only", "-o", tmp_path / "m.bp")
    assert r.exit_code == 0 and not (tmp_path / "m.bp").exists()
    assert r.stdout.startswith("B ")


def test_errors(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 4, sizes=[(6, 6, 3), (6, 6, 3), (5, 6, 3), (6, 6, 3)])
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    r = invoke("mean", tmp_path / "db", "-o", tmp_path / "m.bp")
    assert r.exit_code == 1
    assert (
        "records of different sizes: 00000002_img/0002.png: 5x6 (HxW) with 3 channels, but "
        "00000000_img/0000.png is 6x6 (HxW) with 3 channels: pass --resize HxW (a list) or "
        "--per-channel-only"
    ) in r.stderr
    assert not (tmp_path / "m.bp").exists()
    (tmp_path / "empty.txt").write_text("\n")
    assert "the list is empty" in invoke("mean", tmp_path / "empty.txt").stderr
    (tmp_path / "folder").mkdir()
    r = invoke("mean", tmp_path / "folder")
    assert r.exit_code == 1 and "neither an LMDB nor a LevelDB" in r.stderr
    r = invoke("mean", tmp_path / "x.bin")
    assert r.exit_code == 2 and "no store there" in r.stderr  # a missing input: usage


def test_per_channel_only_takes_mixed_sizes(invoke, tmp_path):
    list_path, images = write_images(
        tmp_path, 5, sizes=[(6, 6, 3), (4, 9, 3), (6, 6, 3), (7, 3, 3), (5, 5, 3)]
    )
    assert invoke("lmdb", list_path, tmp_path / "db", "-j", 1).exit_code == 0
    r = invoke("mean", tmp_path / "db", "--per-channel-only", "--json", "-j", 2)
    assert r.exit_code == 0, r.stderr
    pixels = np.concatenate([im.reshape(-1, 3) for im in images]).astype(np.float64)
    got = json.loads(r.stdout)["channels"]
    assert [got[c] for c in "BGR"] == pytest.approx(pixels.mean(axis=0).tolist(), rel=1e-12)
    assert (
        invoke("mean", tmp_path / "db", "-o", tmp_path / "m.bp").exit_code == 1
    )  # a mean image needs one size
