"""Hostile input, round two (issue 29): one claim per training run, damaged LMDB pages,
bombs past the old guards, special files, exact resume after any interrupt, non-finite
training, and the named errors. Every hostile input is built here, small (a bomb is a
header, not gigabytes)."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import struct
import subprocess
import sys
import tarfile
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from helpers import damage_lmdb, mnist_files, run_dataprep, write_images
from test_cli_faults import small_disk  # noqa: F401  (a fixture)
from test_cli_train import write_recipe

CLI = [sys.executable, "-m", "dataprep.cli.main"]


# 1. one claim per training run


def test_a_second_run_on_a_snapshot_prefix_is_refused_naming_the_first(tmp_path):
    recipe = write_recipe(tmp_path, solver__max_iter=100000, solver__display=1)
    first = subprocess.Popen([*CLI, "train", str(recipe)], stderr=subprocess.PIPE, text=True)
    try:
        while ", lr = " not in first.stderr.readline():  # training, the claim held
            assert first.poll() is None
        second = run_dataprep("train", recipe, "--overwrite", "--set", "solver.base_lr=0.1")
        assert second.returncode == 1, second.stderr
        assert f"another training run (process {first.pid} on " in second.stderr
        assert not list(tmp_path.glob("tiny_iter_*"))  # the second wrote nothing
    finally:
        first.kill()
        first.wait()
    # a dead run's claim is stale: the next run takes it
    third = run_dataprep("train", recipe, "--set", "solver.max_iter=2", "--overwrite")
    assert third.returncode == 0, third.stderr
    assert not list(tmp_path.glob(".tiny.claim"))


# 2. a damaged LMDB page is one line, never a signal


@pytest.fixture(scope="module")
def lmdb_store(tmp_path_factory):
    """An LMDB of 300 records of 40x40x3: branch, leaf and overflow pages."""
    folder = tmp_path_factory.mktemp("damaged")
    write_images(folder, 300, shape=(40, 40, 3))
    assert run_dataprep("lmdb", "list.txt", "db", cwd=folder).returncode == 0
    return folder


@pytest.mark.parametrize("where", ["meta", "branch", "leaf", "overflow"])
@pytest.mark.parametrize(
    "command",
    [
        ["verify", "c"],
        ["info", "c"],
        ["convert", "c", "out.h5", "--to", "hdf5"],
        ["mean", "c", "-o", "m.binaryproto"],
        ["mean", "c", "-o", "m.binaryproto", "--skip-bad"],  # a damaged page is no damaged record
        ["train", "RECIPE"],
    ],
    ids=lambda c: "-".join(c[:1] + c[-1:]) if isinstance(c, list) else c,
)
def test_a_damaged_lmdb_page_is_one_line_not_a_signal(lmdb_store, tmp_path, where, command):
    shutil.copytree(lmdb_store / "db", tmp_path / "c")
    data = bytearray((tmp_path / "c" / "data.mdb").read_bytes())
    damage_lmdb(data, where)
    (tmp_path / "c" / "data.mdb").write_bytes(bytes(data))  # the same size
    recipe = {
        "data": {"train": "c", "batch_size": 10},
        "net": [
            {"name": "fc", "type": "InnerProduct", "num_output": 5},
            {"name": "l", "type": "SoftmaxWithLoss"},
        ],
        "solver": {"max_iter": 2, "snapshot_prefix": "r"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    result = run_dataprep(*["r.yaml" if a == "RECIPE" else a for a in command], cwd=tmp_path)
    assert result.returncode == 1, (result.returncode, result.stderr)  # not 135 (SIGBUS)
    said = result.stdout + result.stderr  # verify reports its problems on stdout
    assert "c: damaged (" in said and "internal error" not in said, said
    assert not (tmp_path / "out.h5").exists() and not (tmp_path / "m.binaryproto").exists()


# 3. nets too big for the memory


def test_a_net_too_big_is_refused_naming_the_estimate_and_its_largest_layers(tmp_path, invoke):
    recipe = write_recipe(tmp_path)
    raw = yaml.safe_load(recipe.read_text())
    raw["net"][3]["num_output"] = 2_000_000_000  # fc2
    recipe.write_text(yaml.safe_dump(raw))
    r = invoke("train", recipe)
    assert r.exit_code == 1 and "the net needs at least" in r.stderr and "largest: fc2 " in r.stderr
    assert "MemoryError" not in r.stderr
    r = invoke("time", recipe, "--max-memory", "1M", "--batch", 2)
    assert r.exit_code == 1 and "over 1.0 MiB, --max-memory" in r.stderr


def test_a_net_over_the_address_space_limit_is_refused_not_killed(tmp_path):
    import resource

    caffenet = Path(__file__).parents[1] / "fixtures" / "zoo" / "bvlc_reference_caffenet_deploy.prototxt"

    def limit():
        resource.setrlimit(resource.RLIMIT_AS, (1_500_000_000, resource.RLIM_INFINITY))

    done = subprocess.run(
        [*CLI, "time", str(caffenet), "--shape", "3x3000x3000", "--batch", "1", "--iterations", "1"],
        capture_output=True,
        text=True,
        preexec_fn=limit,
    )
    assert done.returncode == 1, done.stderr
    assert "the address-space limit (ulimit -v)" in done.stderr and "conv1" in done.stderr


# 4, 5. every decoder guarded


def _jpeg_declaring(height: int, width: int, padding: int) -> bytes:
    """A small JPEG whose frame header declares ``height`` x ``width``, behind ``padding``
    bytes of comment segments."""
    ok, buf = cv2.imencode(".jpg", np.zeros((8, 8, 3), np.uint8))
    data = bytearray(buf.tobytes())
    comments = b""
    while len(comments) < padding:
        comments += b"\xff\xfe" + struct.pack(">H", 65535) + b"x" * 65533
    data = data[:2] + comments + data[2:]
    at = data.index(b"\xff\xc0")
    struct.pack_into(">HH", data, at + 5, height, width)
    return bytes(data)


def _tiff_declaring(height: int, width: int) -> bytes:
    ok, buf = cv2.imencode(".tif", np.zeros((8, 8), np.uint8))
    data = bytearray(buf.tobytes())
    ifd = struct.unpack_from("<I", data, 4)[0]
    for k in range(struct.unpack_from("<H", data, ifd)[0]):
        at = ifd + 2 + 12 * k
        tag, kind = struct.unpack_from("<HH", data, at)
        if tag in (256, 257):
            value = width if tag == 256 else height
            struct.pack_into("<H" if kind == 3 else "<I", data, at + 8, value)
    return bytes(data)


def _webp_declaring(height: int, width: int) -> bytes:
    ok, buf = cv2.imencode(".webp", np.zeros((8, 8, 3), np.uint8), [cv2.IMWRITE_WEBP_QUALITY, 80])
    data = bytearray(buf.tobytes())
    assert data[12:16] == b"VP8 "
    struct.pack_into("<HH", data, 26, width, height)
    return bytes(data)


@pytest.mark.parametrize(
    "name, data",
    [
        ("far.jpg", _jpeg_declaring(15000, 15000, 70_000)),  # the frame header past 64 KB
        ("big.tif", _tiff_declaring(15000, 15000)),
        ("big.webp", _webp_declaring(15000, 15000)),
    ],
)
def test_a_declared_bomb_is_refused_from_its_header(tmp_path, name, data):
    (tmp_path / name).write_bytes(data)
    (tmp_path / "l.txt").write_text(f"{name} 0\n")
    result = run_dataprep("lmdb", "l.txt", "db", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    assert "15000x15000 (HxW) is 225 megapixels, over --max-pixels" in result.stderr
    assert not (tmp_path / "db").exists()


# 6. bounded parsing


def test_a_yaml_alias_bomb_is_refused_at_once(tmp_path):
    lines, previous = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]'], "a"
    for name in "bcdefghij":
        lines.append(f"{name}: &{name} [" + ",".join(["*" + previous] * 9) + "]")
        previous = name
    (tmp_path / "bomb.yaml").write_text("\n".join(lines) + "\nname: *j\n")
    started = time.perf_counter()
    result = run_dataprep("train", "bomb.yaml", "--print-recipe", cwd=tmp_path, timeout=60)
    assert result.returncode == 2 and "anchors and aliases (&, *) are not allowed" in result.stderr
    assert time.perf_counter() - started < 30


# 7. tar members checked before they are read


def test_a_huge_tar_member_is_refused_before_it_is_read(tmp_path):
    class Zeros(io.RawIOBase):
        def __init__(self, n):
            self.left = n

        def readable(self):
            return True

        def readinto(self, buffer):
            n = min(len(buffer), self.left)
            buffer[:n] = bytes(n)
            self.left -= n
            return n

    size = 300 << 20
    with tarfile.open(tmp_path / "cifar-10-binary.tar.gz", "w:gz", compresslevel=1) as archive:
        member = tarfile.TarInfo("cifar-10-batches-bin/data_batch_1.bin")
        member.size = size
        archive.addfile(member, io.BufferedReader(Zeros(size)))
    assert (tmp_path / "cifar-10-binary.tar.gz").stat().st_size < 2 << 20
    result = run_dataprep("import", "cifar10", "cifar-10-binary.tar.gz", "out", cwd=tmp_path)
    assert result.returncode == 1
    assert "data_batch_1.bin is 315 MB, larger than any file of the dataset" in result.stderr
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.*"))


# 8. special files


def test_fifo_device_and_folder_entries_are_one_line_each(tmp_path):
    os.mkfifo(tmp_path / "fifo")
    (tmp_path / "folder").mkdir()
    (tmp_path / "l.txt").write_text("fifo 0\n/dev/zero 1\nfolder 2\n")
    result = run_dataprep("lmdb", "l.txt", "db", "--skip-bad", cwd=tmp_path, timeout=60)
    assert "l.txt:1: fifo: a FIFO, not an image file" in result.stderr
    assert "l.txt:2: /dev/zero: a device, not an image file" in result.stderr
    assert "l.txt:3: folder: a folder, not an image file" in result.stderr
    result = run_dataprep("lmdb", "/dev/zero", "db", cwd=tmp_path, timeout=60)
    assert result.returncode == 1 and "/dev/zero: a device, not a list file" in result.stderr
    write_images(tmp_path, 3)  # a process substitution still reads: a pipe
    done = subprocess.run(
        ["bash", "-c", f"{' '.join(CLI)} lmdb <(cat list.txt) piped_db"], cwd=tmp_path, capture_output=True
    )
    assert done.returncode == 0, done.stderr


# 9. exact resume after an interrupt at any point


@pytest.mark.parametrize(
    "point, sig",
    [
        ("before-test:20", "INT"),
        ("during-test:20", "TERM"),
        ("after-test:20", "INT"),
        ("after-snapshot:30", "TERM"),
    ],
)
def test_resume_after_an_interrupt_at_a_named_point_equals_an_uninterrupted_run(tmp_path, point, sig):
    from dataprep.train.runner import SIGNAL_HOOK

    changes = dict(solver__max_iter=40, solver__test_interval=10, solver__snapshot=15, solver__display=5)
    (tmp_path / "straight").mkdir()
    straight = write_recipe(tmp_path / "straight", **changes)
    assert run_dataprep("train", straight).returncode == 0
    recipe = write_recipe(tmp_path, **changes)
    stopped = run_dataprep("train", recipe, env={**os.environ, SIGNAL_HOOK: f"{point}:{sig}"})
    assert stopped.returncode == (130 if sig == "INT" else 143), stopped.stderr
    snapshot = max(tmp_path.glob("tiny_iter_*.npz"), key=lambda p: int(p.stem.rsplit("_", 1)[1]))
    resumed = run_dataprep("train", recipe, "--resume", snapshot)
    assert resumed.returncode == 0, resumed.stderr
    want = json.loads((tmp_path / "straight" / "tiny_metrics.json").read_text())
    got = json.loads((tmp_path / "tiny_metrics.json").read_text())
    assert got["tests"] == want["tests"]  # every test output, at every iteration, once
    a, b = np.load(tmp_path / "straight" / "tiny_iter_40.npz"), np.load(tmp_path / "tiny_iter_40.npz")
    assert all(np.array_equal(a[k], b[k]) for k in a.files if k.startswith("param/"))


# 10. non-finite training stops


def test_a_diverging_run_stops_naming_the_iteration_and_keeps_the_last_finite_snapshot(tmp_path):
    recipe = write_recipe(tmp_path, solver__base_lr=1e6, solver__snapshot=1, solver__display=1)
    raw = yaml.safe_load(recipe.read_text())
    raw["net"] = [  # a linear regression: nothing bounds it
        {"name": "fc1", "type": "InnerProduct", "num_output": 8},
        {"name": "pred", "type": "InnerProduct", "num_output": 2},
        {"name": "loss", "type": "EuclideanLoss", "bottom": ["pred", "freq"]},
    ]
    recipe.write_text(yaml.safe_dump(raw))
    result = run_dataprep("train", recipe)
    assert result.returncode == 1, result.stderr
    line = result.stderr.strip().splitlines()[-1]
    assert line.startswith("Error: iteration ") and "went non-finite (first non-finite: layer " in line
    assert "the last finite one: " in line
    assert "RuntimeWarning" not in result.stderr and ".py:" not in result.stderr
    snapshots = list(tmp_path.glob("tiny_iter_*.npz"))
    params = [np.load(p)[k] for p in snapshots for k in np.load(p).files if k.startswith("param/")]
    assert snapshots and all(np.isfinite(v).all() for v in params)
    keep_on = run_dataprep("train", recipe, "--overwrite", "--set", "solver.on_nan=continue")
    assert keep_on.returncode == 0 and "RuntimeWarning" not in keep_on.stderr


def test_nan_labels_stop_the_run(tmp_path):
    import h5py

    with h5py.File(tmp_path / "t.h5", "w") as f:
        f["data"] = np.random.default_rng(0).normal(size=(20, 1, 4, 4)).astype(np.float32)
        f["label"] = np.full((20, 1), np.nan, np.float32)
    recipe = {
        "data": {"train": "t.h5", "batch_size": 5},
        "net": [
            {"name": "fc", "type": "InnerProduct", "num_output": 1},
            {"name": "l", "type": "EuclideanLoss"},
        ],
        "solver": {"max_iter": 5, "snapshot_prefix": "n"},
    }
    (tmp_path / "n.yaml").write_text(yaml.safe_dump(recipe))
    result = run_dataprep("train", "n.yaml", cwd=tmp_path)
    assert result.returncode == 1 and "iteration 0: the loss (nan) went non-finite" in result.stderr
    assert not list(tmp_path.glob("n_iter_*"))


# 11. resume compares the net


def test_resume_from_another_nets_snapshot_is_refused(tmp_path, invoke):
    recipe = write_recipe(tmp_path, solver__max_iter=2)
    assert invoke("train", recipe).exit_code == 0
    raw = yaml.safe_load(recipe.read_text())
    raw["net"][1]["type"] = "Sigmoid"  # relu1: the same shapes, another net
    recipe.write_text(yaml.safe_dump(raw))
    r = invoke("train", recipe, "--resume", tmp_path / "tiny_iter_2.npz", "--set", "solver.max_iter=4")
    assert r.exit_code == 2 and "a snapshot of another net (('relu1', 'Sigmoid') against" in r.stderr


# 12. import: unpacked beside OUT, a full disk named


def test_a_killed_import_leaves_its_unpacked_partial_beside_out_and_the_next_run_removes_it(tmp_path):
    from dataprep.progress import KILL_HOOK

    archive = tmp_path / "cifar-10-binary.tar.gz"
    assert run_dataprep("example", "cifar10", tmp_path, "--n", 60).returncode == 0
    killed = run_dataprep(
        "import", "cifar10", archive, "out", cwd=tmp_path, env={**os.environ, KILL_HOOK: "5"}
    )
    assert killed.returncode == -9
    left = list(tmp_path.glob(".out.partial-*"))
    assert left and (left[0] / "cifar-10-batches-bin").is_dir()  # beside OUT, not in /tmp
    again = run_dataprep("import", "cifar10", archive, "out", cwd=tmp_path)
    assert again.returncode == 0, again.stderr
    assert not list(tmp_path.glob(".out.partial-*")) and "left by an interrupted run" in again.stderr


def test_an_import_onto_a_full_disk_is_one_line_and_leaves_no_folder(tmp_path, small_disk):  # noqa: F811
    mnist_files(tmp_path / "mnist", n=2000)
    (small_disk / "fill").write_bytes(bytes(3_000_000 - 8192))
    result = run_dataprep("import", "mnist", tmp_path / "mnist", small_disk / "out")
    assert result.returncode == 1, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "internal error" not in lines[0] and str(small_disk) in lines[0], lines
    assert sorted(os.listdir(small_disk)) == ["fill"]


# 13. named errors


def test_a_target_narrower_than_the_prediction_is_a_set_up_error(tmp_path, invoke):
    recipe = write_recipe(tmp_path)
    raw = yaml.safe_load(recipe.read_text())
    raw["net"][-3]["num_output"] = 3  # fc2: the regression predicts 3 values of 2 labels
    recipe.write_text(yaml.safe_dump(raw))
    r = invoke("train", recipe)
    assert r.exit_code == 2 and "its prediction has 3 values per item (3,) and the target 2" in r.stderr


def test_a_caffemodel_blob_claiming_more_values_than_it_holds_is_named(tmp_path, invoke):
    from dataprep.stores.caffe_pb import NetParameter

    net = NetParameter(name="n")
    layer = net.layer.add(name="fc", type="InnerProduct")
    blob = layer.blobs.add()
    blob.shape.dim.extend([100_000_000, 100_000_000])
    blob.data.extend([1.0, 2.0, 3.0, 4.0])
    (tmp_path / "w.caffemodel").write_bytes(net.SerializeToString())
    recipe = write_recipe(tmp_path)
    images, _ = write_images(tmp_path, 2, shape=(16, 16))  # the weights are read at the first batch
    r = invoke("predict", recipe, "--weights", tmp_path / "w.caffemodel", images)
    assert r.exit_code == 1 and "layer fc: a blob of shape (100000000, 100000000)" in r.stderr
    assert "holds 4 values: a damaged .caffemodel" in r.stderr


def test_overwrite_on_a_symlink_to_a_folder_replaces_the_link_not_its_target(tmp_path):
    write_images(tmp_path, 3)
    (tmp_path / "real").mkdir()
    (tmp_path / "real" / "keep.txt").write_text("mine")
    (tmp_path / "link").symlink_to("real")
    result = run_dataprep("lmdb", "list.txt", "link", "--overwrite", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "link" / "data.mdb").is_file() and not (tmp_path / "link").is_symlink()
    assert (tmp_path / "real" / "keep.txt").read_text() == "mine"


# 14. hdf5 writes what fits


def test_hdf5_fills_a_small_disk_with_what_fits(tmp_path, small_disk):  # noqa: F811
    write_images(tmp_path, 2000, shape=(16, 16))  # gray 16 x 16: 1 KB of float32 each
    result = run_dataprep("hdf5", "list.txt", "-o", small_disk / "db.h5", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (small_disk / "db.h5").stat().st_size > 2_000_000


# 15. the smaller ones


def test_a_utf16_list_is_named_by_its_encoding(tmp_path):
    (tmp_path / "l.txt").write_bytes("a.png 1\nb.png 2\n".encode("utf-16"))
    result = run_dataprep("lmdb", "l.txt", "db", cwd=tmp_path)
    assert result.returncode == 1 and "l.txt: UTF-16 text: save the list as UTF-8" in result.stderr


def test_a_damaged_image_is_dataprep_line_alone(tmp_path):
    ok, buf = cv2.imencode(".png", np.random.default_rng(0).integers(0, 255, (32, 32, 3), np.uint8))
    data = bytearray(buf.tobytes())
    data[60:90] = bytes(30)  # a CRC error in IDAT: libpng says so itself
    (tmp_path / "bad.png").write_bytes(bytes(data))
    (tmp_path / "l.txt").write_text("bad.png 0\n")
    result = run_dataprep("lmdb", "l.txt", "db", cwd=tmp_path)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == ["Error: l.txt:1: bad.png: cannot decode image"]


def test_sigterm_exits_143_and_ctrl_c_130(tmp_path):
    recipe = write_recipe(tmp_path, solver__max_iter=100000, solver__display=1)
    for sig, code in ((signal.SIGTERM, 143), (signal.SIGINT, 130)):
        proc = subprocess.Popen(
            [*CLI, "train", str(recipe), "--overwrite"], stderr=subprocess.PIPE, text=True
        )
        while ", lr = " not in proc.stderr.readline():
            assert proc.poll() is None
        proc.send_signal(sig)
        proc.communicate(timeout=60)
        assert proc.returncode == code


def test_resume_between_two_test_nets_runs_only_the_one_not_done(tmp_path):
    """An interrupt after test net #0 at an iteration: the resumed run tests net #1 there
    (not #0 again), and every test output equals an uninterrupted run's."""
    from dataprep.train.runner import SIGNAL_HOOK

    changes = dict(solver__max_iter=30, solver__test_interval=10, solver__display=5)
    more = [
        {
            "source": {"noise": {"n": 30, "offset": 500, "size": "16x16", "seed": 3}},
            "stage": "other",
            "test_iter": 2,
        }
    ]
    (tmp_path / "straight").mkdir()
    for folder in (tmp_path / "straight", tmp_path):
        recipe = write_recipe(folder, **changes)
        raw = yaml.safe_load(recipe.read_text())
        raw["data"]["tests"] = more
        recipe.write_text(yaml.safe_dump(raw))
    assert run_dataprep("train", tmp_path / "straight" / "tiny.yaml").returncode == 0
    stopped = run_dataprep("train", recipe, env={**os.environ, SIGNAL_HOOK: "after-test:10:INT"})
    assert stopped.returncode == 130, stopped.stderr
    resumed = run_dataprep("train", recipe, "--resume", tmp_path / "tiny_iter_10.npz")
    assert resumed.returncode == 0, resumed.stderr
    assert "Iteration 10, Testing net (#0)" not in resumed.stderr  # done before the interrupt
    assert "Iteration 10, Testing net (#1)" in resumed.stderr
    want = json.loads((tmp_path / "straight" / "tiny_metrics.json").read_text())
    got = json.loads((tmp_path / "tiny_metrics.json").read_text())
    assert got["tests"] == want["tests"] and got["more_tests"] == want["more_tests"]
