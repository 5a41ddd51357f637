"""``dataprep import``: tiny files in each official layout (CIFAR-10/100 pickles and
binaries, MNIST IDX plain and gzipped, the .tar.gz), checked byte for byte against what
Caffe's converters stored; malformed and hostile files refused with nothing left behind."""

from __future__ import annotations

import pickle
import struct
import tarfile
from pathlib import Path

import cv2
import h5py
import lmdb
import numpy as np
import pytest
from helpers import idx, mnist_files

from dataprep.stores.caffe_pb import parse_datum

rng = np.random.default_rng(5)
NAMES10 = [f"class{k}" for k in range(10)]


def cifar10_pickles(
    folder: Path, per_batch: int = 2, test: int = 3
) -> dict[str, tuple[np.ndarray, list[int]]]:
    """data_batch_1..5, test_batch and batches.meta as the official Python version holds
    them (Python 2 pickles: bytes keys, uint8 N x 3072 data, R G B planes)."""
    folder.mkdir(parents=True, exist_ok=True)
    made = {}
    for name, n in [*((f"data_batch_{k}", per_batch) for k in range(1, 6)), ("test_batch", test)]:
        data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
        labels = [int(v) for v in rng.integers(0, 10, n)]
        batch = {
            b"batch_label": name.encode(),
            b"labels": labels,
            b"data": data,
            b"filenames": [b"x.png"] * n,
        }
        (folder / name).write_bytes(pickle.dumps(batch, protocol=2))
        made[name] = (data, labels)
    meta = {
        b"label_names": [n.encode() for n in NAMES10],
        b"num_cases_per_batch": per_batch,
        b"num_vis": 3072,
    }
    (folder / "batches.meta").write_bytes(pickle.dumps(meta, protocol=2))
    return made


def order_of(store: Path) -> str:
    from dataprep.stores import open_store

    with open_store(store) as reader:
        return reader.manifest["preprocessing"]["channel_order"]


def datums(path: Path) -> list[tuple[bytes, object]]:
    env = lmdb.open(str(path), readonly=True, lock=False)
    with env.begin() as txn:
        out = [(k, parse_datum(v)) for k, v in txn.cursor()]
    env.close()
    return out


def test_cifar10_pickles_into_lmdb_as_convert_cifar_data(invoke, tmp_path):
    made = cifar10_pickles(tmp_path / "cifar-10-batches-py")
    r = invoke("import", "cifar10", tmp_path / "cifar-10-batches-py", tmp_path / "out", "-j", 1)
    assert r.exit_code == 0, r.stderr
    train = datums(tmp_path / "out" / "cifar10_train_lmdb")
    assert [k for k, _ in train] == [f"{i:05d}".encode() for i in range(10)]
    data = np.concatenate([made[f"data_batch_{k}"][0] for k in range(1, 6)])
    labels = sum((made[f"data_batch_{k}"][1] for k in range(1, 6)), [])
    for i, (_, d) in enumerate(train):  # the file's 3072 bytes unchanged: R, G, B planes
        assert (
            (d.channels, d.height, d.width) == (3, 32, 32)
            and d.data == data[i].tobytes()
            and d.label == labels[i]
        )
    test = datums(tmp_path / "out" / "cifar10_test_lmdb")
    assert len(test) == 3 and test[2][1].data == made["test_batch"][0][2].tobytes()
    assert (tmp_path / "out" / "cifar10_classes.txt").read_text().splitlines()[3] == "3 class3"
    assert order_of(tmp_path / "out" / "cifar10_train_lmdb") == "RGB"  # recorded in the manifest


def test_cifar10_binary_tar_gz_with_bgr(invoke, tmp_path):
    folder = tmp_path / "cifar-10-batches-bin"
    folder.mkdir()
    records = {}
    for name, n in [*((f"data_batch_{k}.bin", 2) for k in range(1, 6)), ("test_batch.bin", 2)]:
        rows = rng.integers(0, 256, (n, 3073), dtype=np.uint8)
        rows[:, 0] %= 10
        (folder / name).write_bytes(rows.tobytes())
        records[name] = rows
    (folder / "batches.meta.txt").write_text("\n".join(NAMES10) + "\n")
    archive = tmp_path / "cifar-10-binary.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="cifar-10-batches-bin")
    r = invoke("import", "cifar10", archive, tmp_path / "out", "--bgr", "-j", 1)
    assert r.exit_code == 0, r.stderr
    test = datums(tmp_path / "out" / "cifar10_test_lmdb")
    planes = records["test_batch.bin"][1, 1:].reshape(3, 32, 32)
    assert test[1][1].data == planes[::-1].tobytes() and test[1][1].label == records["test_batch.bin"][1, 0]
    assert order_of(tmp_path / "out" / "cifar10_test_lmdb") == "BGR"
    assert not list(tmp_path.glob(".dataprep-import-*"))  # the unpacked archive is gone


def test_cifar100_fine_and_coarse_labels_from_binaries_and_pickles(invoke, tmp_path):
    binary = tmp_path / "cifar-100-binary"
    binary.mkdir()
    rows = rng.integers(0, 256, (3, 3074), dtype=np.uint8)
    rows[:, 0] %= 20
    rows[:, 1] %= 100
    for name in ("train.bin", "test.bin"):
        (binary / name).write_bytes(rows.tobytes())
    (binary / "fine_label_names.txt").write_text("\n".join(f"f{k}" for k in range(100)))
    (binary / "coarse_label_names.txt").write_text("\n".join(f"c{k}" for k in range(20)))
    for label, column in (("fine", 1), ("coarse", 0)):
        out = tmp_path / f"out_{label}"
        r = invoke("import", "cifar100", binary, out, "--label", label, "--to", "hdf5", "-j", 1)
        assert r.exit_code == 0, r.stderr
        with h5py.File(out / "cifar100_train.h5") as f:
            assert f["label"][:].ravel().tolist() == rows[:, column].tolist()
            assert np.array_equal(f["data"][2], rows[2, 2:].reshape(3, 32, 32).astype(np.float32))
        names = (out / "cifar100_classes.txt").read_text().splitlines()
        assert names[5] == ("5 f5" if label == "fine" else "5 c5")
    py = tmp_path / "cifar-100-python"
    py.mkdir()
    data = rng.integers(0, 256, (2, 3072), dtype=np.uint8)
    batch = {b"data": data, b"fine_labels": [7, 9], b"coarse_labels": [1, 2], b"filenames": [b"a", b"b"]}
    for name in ("train", "test"):
        (py / name).write_bytes(pickle.dumps(batch, protocol=2))
    meta = {b"fine_label_names": [f"f{k}".encode() for k in range(100)], b"coarse_label_names": [b"c"] * 20}
    (py / "meta").write_bytes(pickle.dumps(meta, protocol=2))
    r = invoke("import", "cifar100", py, tmp_path / "py", "-j", 1)
    assert r.exit_code == 0, r.stderr
    assert [d.label for _, d in datums(tmp_path / "py" / "cifar100_train_lmdb")] == [7, 9]


@pytest.mark.parametrize("zipped", [False, True])
def test_mnist_idx_files_into_leveldb_and_files(invoke, tmp_path, zipped):
    made = mnist_files(tmp_path / "mnist", zipped=zipped)
    r = invoke("import", "mnist", tmp_path / "mnist", tmp_path / "out", "--to", "leveldb", "-j", 1)
    assert r.exit_code == 0, r.stderr
    import plyvel

    db = plyvel.DB(str(tmp_path / "out" / "mnist_test_leveldb"))
    rows = [(k, parse_datum(v)) for k, v in db if not k.startswith(b"__")]
    db.close()
    assert [k for k, _ in rows] == [f"{i:08d}".encode() for i in range(4)]
    images, labels = made["t10k"]
    assert all(d.data == images[i].tobytes() and d.label == labels[i] for i, (_, d) in enumerate(rows))
    assert (rows[0][1].channels, rows[0][1].height, rows[0][1].width) == (1, 28, 28)
    r = invoke("import", "mnist", tmp_path / "mnist", tmp_path / "files", "--to", "files", "-j", 1)
    assert r.exit_code == 0, r.stderr
    line = (tmp_path / "files" / "mnist_train.txt").read_text().splitlines()[1]
    path, label = line.split()
    assert path == f"mnist/train/{made['train'][1][1]}/00000001.png" and int(label) == made["train"][1][1]
    png = cv2.imread(str(tmp_path / "files" / path), cv2.IMREAD_UNCHANGED)
    assert np.array_equal(png, made["train"][0][1])


class Hostile:
    def __reduce__(self):
        import os

        return (os.system, ("touch pwned",))


@pytest.mark.parametrize(
    "damage, message, code",
    [
        ("missing", "no MNIST train-images-idx3-ubyte", 2),
        ("magic", "magic number 2049, expected 2051 (images)", 1),
        ("truncated", "truncated: 3000 bytes of data, the header says 3136", 1),
        ("counts", "4 images but train-labels-idx1-ubyte holds 3 labels", 1),
    ],
)
def test_bad_mnist_files_are_refused(invoke, tmp_path, damage, message, code):
    mnist_files(tmp_path / "m")
    images = tmp_path / "m" / "train-images-idx3-ubyte"
    if damage == "missing":
        images.unlink()
    elif damage == "magic":
        images.write_bytes(struct.pack(">I", 2049) + images.read_bytes()[4:])
    elif damage == "truncated":
        images.write_bytes(images.read_bytes()[: 16 + 3000])
    else:
        (tmp_path / "m" / "train-labels-idx1-ubyte").write_bytes(idx(2049, np.zeros(3, np.uint8)))
    r = invoke("import", "mnist", tmp_path / "m", tmp_path / "out")
    assert r.exit_code == code and message in r.stderr, r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


@pytest.mark.parametrize("damage", ["hostile", "not_a_batch", "truncated_bin"])
def test_bad_cifar_files_are_refused_and_pickles_cannot_run_code(invoke, tmp_path, monkeypatch, damage):
    monkeypatch.chdir(tmp_path)
    if damage == "truncated_bin":
        folder = tmp_path / "bin"
        folder.mkdir()
        for name in [*(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin"]:
            (folder / name).write_bytes(bytes(3073 * 2 - 10))
        message = "is not a whole number of 3073-byte records"
    else:
        folder = tmp_path / "py"
        cifar10_pickles(folder)
        bad = {"hostile": {b"data": Hostile(), b"labels": [1]}, "not_a_batch": [1, 2, 3]}[damage]
        (folder / "data_batch_3").write_bytes(pickle.dumps(bad, protocol=2))
        message = "posix.system is not allowed" if damage == "hostile" else "not a CIFAR pickle batch: a list"
    r = invoke("import", "cifar10", folder, tmp_path / "out")
    assert r.exit_code == 1 and message in r.stderr and "data_batch" in r.stderr, r.stderr
    assert not (tmp_path / "pwned").exists()
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())


RECIPES = Path(__file__).parents[1] / "recipes"


def test_lenet_and_cifar10_quick_train_on_imported_stores(invoke, tmp_path, monkeypatch):
    mnist_files(tmp_path / "mnist", n=12)
    cifar10_pickles(tmp_path / "cifar", per_batch=3, test=4)
    monkeypatch.chdir(tmp_path)
    for args in (
        ("import", "mnist", "mnist", "."),
        ("import", "cifar10", "cifar", "."),
        ("mean", "cifar10_train_lmdb"),
    ):
        r = invoke(*args, "-j", 1)
        assert r.exit_code == 0, r.stderr
    for name in ("lenet", "cifar10_quick"):
        r = invoke(
            "train",
            RECIPES / f"{name}.yaml",
            "--set",
            "solver.max_iter=2",
            "--set",
            "solver.test_iter=1",
            "--set",
            "data.batch_size=4",
            "--set",
            "data.val_batch_size=4",
            "--json",
        )
        assert r.exit_code == 0, r.stderr
        assert "accuracy" in r.stdout and (tmp_path / f"{name}_iter_2.npz").is_file()


def test_cifar_into_webdataset_shards_in_true_color(invoke, tmp_path):
    made = cifar10_pickles(tmp_path / "py")
    r = invoke("import", "cifar10", tmp_path / "py", tmp_path / "out", "--to", "wds", "-j", 1)
    assert r.exit_code == 0, r.stderr
    with tarfile.open(tmp_path / "out" / "cifar10_test_wds-000000.tar") as tar:
        png = tar.extractfile("00000001.png").read()
        label = tar.extractfile("00000001.cls").read()
    rgb = made["test_batch"][0][1].reshape(3, 32, 32).transpose(1, 2, 0)
    bgr = cv2.imdecode(np.frombuffer(png, np.uint8), cv2.IMREAD_COLOR)  # what any viewer shows
    assert np.array_equal(bgr[:, :, ::-1], rgb) and int(label) == made["test_batch"][1][1]
    assert order_of(tmp_path / "out" / "cifar10_test_wds") == "BGR"


@pytest.mark.parametrize("form", ["pickle", "binary"])
def test_cifar_labels_outside_the_classes_are_refused(invoke, tmp_path, form):
    folder = tmp_path / "c"
    made = cifar10_pickles(folder)
    if form == "pickle":
        data, labels = made["data_batch_2"]
        labels[1] = 10
        batch = {b"labels": labels, b"data": data}
        (folder / "data_batch_2").write_bytes(pickle.dumps(batch, protocol=2))
    else:
        for name, (data, labels) in made.items():
            records = np.concatenate([np.asarray(labels, np.uint8)[:, None], data], axis=1)
            if name == "data_batch_2":
                records[1, 0] = 12
            (folder / f"{name}.bin").write_bytes(records.tobytes())
            (folder / name).unlink()
    r = invoke("import", "cifar10", folder, tmp_path / "out", "--to", "lmdb")
    assert r.exit_code == 1, r.stderr
    assert "data_batch_2" in r.stderr and "image 1 has label 1" in r.stderr and "outside 0..9" in r.stderr
    assert not (tmp_path / "out").exists() or not list((tmp_path / "out").iterdir())
