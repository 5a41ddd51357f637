"""``dataprep resize``: modes against OpenCV, lists and folders, resume, safety, errors."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import cv2
import numpy as np
import pytest
from helpers import tree_bytes, write_images

from dataprep.errors import DataprepError
from dataprep.filejob import contained
from dataprep.gpu import gpu_available
from dataprep.listfile import read_list
from dataprep.resize import ResizeSpec, center_crop, resize_image, target_size


def photo(h=30, w=40, seed=0):
    rng = np.random.default_rng(seed)
    return cv2.GaussianBlur(rng.integers(0, 256, (h, w, 3), dtype=np.uint8), (5, 5), 0)


def test_modes_match_opencv():
    image = photo()
    exact = resize_image(image, ResizeSpec(size=(12, 20)))
    assert np.array_equal(exact, cv2.resize(image, (20, 12), interpolation=cv2.INTER_AREA))
    up = resize_image(image, ResizeSpec(size=(60, 90)))
    assert np.array_equal(up, cv2.resize(image, (90, 60), interpolation=cv2.INTER_CUBIC))
    shorter = resize_image(image, ResizeSpec(shorter=15))
    assert shorter.shape == (15, 20, 3)
    assert np.array_equal(shorter, cv2.resize(image, (20, 15), interpolation=cv2.INTER_AREA))
    cropped = resize_image(image, ResizeSpec(shorter=15, crop=(10, 10), interpolation="linear"))
    ref = cv2.resize(image, (20, 15), interpolation=cv2.INTER_LINEAR)[2:12, 5:15]
    assert np.array_equal(cropped, ref)
    assert target_size((40, 30, 3), ResizeSpec(shorter=15)) == (20, 15)
    assert center_crop(np.arange(25).reshape(5, 5), (3, 3))[0, 0] == 6


@pytest.mark.parametrize(
    "kw",
    [{}, {"size": (4, 4), "shorter": 4}, {"size": (4, 4), "crop": (2, 2)}, {"shorter": 4, "crop": (5, 5)}],
)
def test_bad_specs(kw):
    with pytest.raises(DataprepError):
        ResizeSpec(**kw)


def test_list_resize_rewrites_the_list(invoke, tmp_path):
    list_path, images = write_images(tmp_path, 8, shape=(30, 40, 3), labels="float", ext="bmp")
    r = invoke("resize", list_path, tmp_path / "out", "--size", "15x20", "--format", "png", "-j", 2)
    assert r.exit_code == 0, r.stderr
    out_list = read_list(tmp_path / "out/list.txt")
    assert [e.path for e in out_list.entries] == [f"{i:04d}.png" for i in range(8)]  # under img/
    assert [e.labels for e in out_list.entries] == [e.labels for e in read_list(list_path).entries]
    for i in (0, 3, 7):
        written = cv2.imread(str(tmp_path / f"out/{i:04d}.png"))
        assert np.array_equal(written, cv2.resize(images[i], (20, 15), interpolation=cv2.INTER_AREA))


def test_folder_is_mirrored_and_gray(invoke, tmp_path):
    (tmp_path / "src/a/b").mkdir(parents=True)
    cv2.imwrite(str(tmp_path / "src/a/b/x.png"), photo())
    cv2.imwrite(str(tmp_path / "src/y.png"), photo(seed=1))
    r = invoke("resize", tmp_path / "src", tmp_path / "out", "--shorter-side", 10, "--gray", "-j", 1)
    assert r.exit_code == 0, r.stderr
    x = cv2.imread(str(tmp_path / "out/a/b/x.png"), cv2.IMREAD_UNCHANGED)
    assert x.shape == (10, 13)
    assert (tmp_path / "out/y.png").is_file()


def test_same_bytes_for_any_worker_count(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 40, shape=(20, 24, 3))
    for j in (1, 2):
        assert invoke("resize", list_path, tmp_path / f"o{j}", "--size", "9x7", "-j", j).exit_code == 0
    assert tree_bytes(tmp_path / "o1") == tree_bytes(tmp_path / "o2")


def test_outputs_never_escape_out(invoke, tmp_path):
    (tmp_path / "lists").mkdir()
    cv2.imwrite(str(tmp_path / "evil.png"), photo())
    before = (tmp_path / "evil.png").read_bytes()
    (tmp_path / "lists/l.txt").write_text("../evil.png 1\n")
    # with --root lists/ the output would mirror ../evil.png: refused, nothing written
    r = invoke(
        "resize", tmp_path / "lists/l.txt", tmp_path / "out", "--size", "5x5", "--root", tmp_path / "lists"
    )
    assert r.exit_code == 1 and "l.txt:1: ../evil.png: output '../evil.png' would land outside" in r.stderr
    assert (tmp_path / "evil.png").read_bytes() == before and not (tmp_path / "out").exists()
    # without --root the list's own base folder is the image's: it lands inside OUT
    r = invoke("resize", tmp_path / "lists/l.txt", tmp_path / "out", "--size", "5x5")
    assert r.exit_code == 0, r.stderr
    assert cv2.imread(str(tmp_path / "out/evil.png")).shape == (5, 5, 3)
    assert (tmp_path / "evil.png").read_bytes() == before


@pytest.mark.parametrize("relative", ["../x.png", "a/../../x.png", "./../x.png", "/etc/x.png", ".."])
def test_escaping_outputs_are_refused(tmp_path, relative):
    with pytest.raises(DataprepError, match="would land outside"):
        contained(tmp_path, relative, "l.txt:3")


@pytest.mark.parametrize("relative", ["x.png", "a/b/x.png", "a/../x.png", "./x.png", "..x.png"])
def test_contained_outputs_pass(tmp_path, relative):
    contained(tmp_path, relative, "l.txt:3")


def test_bad_image_names_line_or_is_skipped(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 5)
    (tmp_path / "img/0002.png").write_bytes(b"junk")
    r = invoke("resize", list_path, tmp_path / "out", "--size", "5x5", "-j", 1)
    assert r.exit_code == 1 and "list.txt:3: img/0002.png: cannot decode image" in r.stderr
    assert not (tmp_path / "out/list.txt").exists()
    r = invoke("resize", list_path, tmp_path / "out", "--size", "5x5", "-j", 1, "--skip-bad")
    assert r.exit_code == 0 and "skipped 1 bad input" in r.stderr
    assert len(read_list(tmp_path / "out/list.txt")) == 4


def test_resume_skips_exactly_the_finished_files(tmp_path, invoke):
    list_path, _ = write_images(tmp_path, 600, shape=(48, 64, 3))
    args = ["resize", list_path, tmp_path / "out", "--size", "24x32", "--format", "jpg", "-j", "1"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    deadline = time.time() + 60
    while len(list((tmp_path / "out").glob("*.jpg")) if (tmp_path / "out").exists() else []) < 50:
        assert proc.poll() is None and time.time() < deadline, "finished before it could be killed"
        time.sleep(0.005)
    proc.kill()
    proc.wait()
    done_before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.jpg")}
    assert 0 < len(done_before) < 600
    r = invoke("resize", *map(str, args[1:]), "--json")
    assert r.exit_code == 0, r.stderr

    summary = json.loads(r.stdout)
    assert summary["already_done"] == len(done_before) and summary["written"] == 600 - len(done_before)
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "out").glob("*.jpg")}
    assert all(after[name] == mtime for name, mtime in done_before.items())  # untouched
    assert not list((tmp_path / "out").glob(".*partial*"))
    clean = ["resize", list_path, tmp_path / "clean", "--size", "24x32", "--format", "jpg", "-j", 1]
    assert invoke(*clean).exit_code == 0
    assert tree_bytes(tmp_path / "out") == tree_bytes(tmp_path / "clean")


@pytest.mark.skipif(gpu_available(), reason="checks the message given where there is no GPU")
def test_device_gpu_without_cupy_is_a_clear_error(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2)
    r = invoke("resize", list_path, tmp_path / "out", "--size", "4x4", "--device", "gpu")
    assert r.exit_code == 1 and "--device gpu needs CuPy and a CUDA GPU" in r.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
def test_gpu_resize_matches_cpu(invoke, tmp_path):
    list_path, images = write_images(tmp_path, 6, shape=(30, 40, 3))
    for device in ("cpu", "gpu"):
        r = invoke("resize", list_path, tmp_path / device, "--size", "15x20", "--device", device)
        assert r.exit_code == 0, r.stderr
    for i in range(6):
        a = cv2.imread(str(tmp_path / f"cpu/{i:04d}.png")).astype(int)
        b = cv2.imread(str(tmp_path / f"gpu/{i:04d}.png")).astype(int)
        assert np.abs(a - b).max() <= 1


def test_rerun_with_other_settings_stops_and_names_them(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 6, shape=(30, 40, 3))
    first = ["resize", list_path, tmp_path / "out", "--shorter-side", 20, "--center-crop", "16x16", "-j", 1]
    assert invoke(*first).exit_code == 0
    before = tree_bytes(tmp_path / "out")
    r = invoke("resize", list_path, tmp_path / "out", "--size", "8x8", "-j", 1)
    assert r.exit_code == 1 and "out was made with other settings" in r.stderr
    assert "--size unset then, 8x8 now" in r.stderr and "--center-crop 16x16 then, unset now" in r.stderr
    assert tree_bytes(tmp_path / "out") == before
    r = invoke(*first, "--json")  # the same settings resume (nothing left to do)
    assert r.exit_code == 0 and json.loads(r.stdout)["already_done"] == 6
    r = invoke("resize", list_path, tmp_path / "out", "--size", "8x8", "-j", 1, "--overwrite", "--json")
    assert r.exit_code == 0 and json.loads(r.stdout)["written"] == 6
    assert cv2.imread(str(tmp_path / "out/0003.png")).shape == (8, 8, 3)


def test_out_with_foreign_files_or_list_is_refused(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3)
    (tmp_path / "out").mkdir()
    (tmp_path / "out/notes.txt").write_text("mine")
    r = invoke("resize", list_path, tmp_path / "out", "--size", "4x4", "-j", 1)
    assert r.exit_code == 1 and "already holds files that this command did not make" in r.stderr
    # a second list of the same name, from elsewhere, would replace the first one's list
    assert invoke("resize", list_path, tmp_path / "out2", "--size", "4x4", "-j", 1).exit_code == 0
    other, _ = write_images(tmp_path / "other", 2, seed=3)
    r = invoke("resize", other, tmp_path / "out2", "--size", "4x4", "-j", 1)
    assert r.exit_code == 1 and "list.txt already exists" in r.stderr
    assert len(read_list(tmp_path / "out2/list.txt")) == 3


def test_lists_written_by_list_chain_into_resize(invoke, tmp_path):
    for cls in ("cat", "dog"):
        (tmp_path / "images" / cls).mkdir(parents=True)
        cv2.imwrite(str(tmp_path / "images" / cls / "a.jpg"), photo())
    assert invoke("list", tmp_path / "images", "--out", tmp_path / "lists/train.txt").exit_code == 0
    assert read_list(tmp_path / "lists/train.txt").entries[0].path == "../images/cat/a.jpg"
    r = invoke("resize", tmp_path / "lists/train.txt", tmp_path / "small", "--size", "16x16", "-j", 1)
    assert r.exit_code == 0, r.stderr
    out = read_list(tmp_path / "small/train.txt")
    assert [(e.path, e.labels) for e in out.entries] == [("cat/a.jpg", (0,)), ("dog/a.jpg", (1,))]
    assert all(cv2.imread(str(out.resolve(e))).shape == (16, 16, 3) for e in out.entries)


def test_repeated_lines_resize_once_and_stay_in_the_list(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3)
    lines = list_path.read_text().splitlines()
    list_path.write_text("\n".join([lines[0], lines[1], lines[0], lines[2]]) + "\n")
    r = invoke("resize", list_path, tmp_path / "out", "--size", "4x4", "-j", 2, "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["written"] == 3
    assert [e.path for e in read_list(tmp_path / "out/list.txt").entries] == [
        "0000.png",
        "0001.png",
        "0000.png",
        "0002.png",
    ]


def test_missing_inputs_and_conflicting_options_are_usage_errors(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2)
    r = invoke("resize", tmp_path / "nope", tmp_path / "out", "--size", "4x4")
    assert r.exit_code == 2 and "no such list file" in r.stderr
    r = invoke("resize", list_path, tmp_path / "out", "--size", "4x4", "--shorter-side", 3)
    assert r.exit_code == 2 and "give exactly one of --resize and --shorter-side" in r.stderr
    r = invoke("resize", list_path, tmp_path / "out", "--size", "256,256")
    assert r.exit_code == 2 and "--resize '256,256': give HxW" in r.stderr
    assert not (tmp_path / "out").exists()
