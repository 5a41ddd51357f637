"""``dataprep augment``: variants, labels, determinism across workers, label safety."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import tree_bytes, write_images

from dataprep.gpu import gpu_available
from dataprep.listfile import read_list


def test_variants_and_list(invoke, tmp_path):
    list_path, images = write_images(tmp_path, 5, shape=(20, 24, 3))
    r = invoke(
        "augment",
        list_path,
        tmp_path / "out",
        "--copies",
        3,
        "--crop",
        "10x12",
        "--mirror",
        "--brightness",
        "0.2",
        "--format",
        "png",
        "-j",
        1,
    )
    assert r.exit_code == 0, r.stderr
    lf = read_list(tmp_path / "out/list.txt")
    assert [e.path for e in lf.entries][:3] == ["0000_aug0.png", "0000_aug1.png", "0000_aug2.png"]
    assert [e.labels[0] for e in lf.entries] == [i % 5 for i in range(5) for _ in range(3)]
    import cv2

    variants = [cv2.imread(str(tmp_path / "out" / e.path)) for e in lf.entries[:3]]
    assert all(v.shape == (10, 12, 3) for v in variants)
    assert len({v.tobytes() for v in variants}) == 3  # three different draws


def test_same_bytes_for_any_worker_count(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 30, shape=(16, 16, 3))
    args = "--copies 2 --crop-scale 0.3,1.0 --size 8x8 --rotate 10 --lighting 0.1 --noise 2 --seed 7".split()
    for j in (1, 2):
        assert invoke("augment", list_path, tmp_path / f"o{j}", *args, "-j", j).exit_code == 0
    assert tree_bytes(tmp_path / "o1") == tree_bytes(tmp_path / "o2")
    assert invoke("augment", list_path, tmp_path / "o3", *args, "--seed", 8, "-j", 1).exit_code == 0
    assert tree_bytes(tmp_path / "o1") != tree_bytes(tmp_path / "o3")


def test_float_labels_refuse_unsafe_transforms(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3, labels="float")
    r = invoke("augment", list_path, tmp_path / "out", "--rotate", 10)
    assert r.exit_code == 1 and "--rotate" in r.stderr and "--force" in r.stderr
    assert not (tmp_path / "out").exists()
    assert invoke("augment", list_path, tmp_path / "out", "--mirror", "-j", 1).exit_code == 0
    r = invoke("augment", list_path, tmp_path / "out2", "--rotate", 10, "--force", "-j", 1)
    assert r.exit_code == 0 and len(read_list(tmp_path / "out2/list.txt")) == 3
    out = read_list(tmp_path / "out/list.txt")
    assert np.allclose([e.labels for e in out.entries], [e.labels for e in read_list(list_path).entries])


def test_crop_larger_than_image_names_the_line(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2, shape=(8, 8, 3))
    r = invoke("augment", list_path, tmp_path / "out", "--crop", "9x9")
    assert r.exit_code == 1 and "list.txt:1: img/0000.png: --crop 9x9 is larger than the image" in r.stderr


@pytest.mark.skipif(gpu_available(), reason="checks the message given where there is no GPU")
def test_device_gpu_without_cupy_is_a_clear_error(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2)
    r = invoke("augment", list_path, tmp_path / "out", "--mirror", "--device", "gpu")
    assert r.exit_code == 1
    assert "--device gpu needs CuPy and a CUDA GPU (on a machine with one): pip install -e '" in r.stderr
    assert "[gpu]'" in r.stderr
    assert not (tmp_path / "out").exists()


def test_device_auto_uses_the_gpu_only_when_there_is_one(invoke, tmp_path):
    import cv2

    list_path, _ = write_images(tmp_path, 6)
    args = ["--copies", 2, "--crop", "8x8", "--mirror", "--lighting", 0.1, "-j", 1]
    assert invoke("augment", list_path, tmp_path / "cpu", *args, "--device", "cpu").exit_code == 0
    assert invoke("augment", list_path, tmp_path / "auto", *args, "--device", "auto").exit_code == 0
    settings = json.loads((tmp_path / "auto/dataprep-settings.json").read_text())["settings"]
    assert settings["device"] == ("gpu" if gpu_available() else "cpu")
    cpu, auto = tree_bytes(tmp_path / "cpu"), tree_bytes(tmp_path / "auto")
    assert sorted(cpu) == sorted(auto)
    for name in cpu:
        if name.endswith(".png"):  # identical on the CPU; within rounding when auto chose the GPU
            a = cv2.imread(str(tmp_path / "cpu" / name)).astype(int)
            b = cv2.imread(str(tmp_path / "auto" / name)).astype(int)
            assert np.abs(a - b).max() <= (1 if gpu_available() else 0)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="needs CuPy and a CUDA device")
def test_gpu_variants_match_cpu_within_rounding(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 6)
    args = "--copies 2 --crop-scale 0.3,1.0 --size 8x8 --rotate 10 --format png -j 1".split()
    assert invoke("augment", list_path, tmp_path / "cpu", *args, "--device", "cpu").exit_code == 0
    assert invoke("augment", list_path, tmp_path / "gpu", *args, "--device", "gpu").exit_code == 0
    import cv2

    for name in tree_bytes(tmp_path / "cpu"):
        if name.endswith(".png"):
            a = cv2.imread(str(tmp_path / "cpu" / name)).astype(int)
            b = cv2.imread(str(tmp_path / "gpu" / name)).astype(int)
            assert np.abs(a - b).max() <= 1


def test_repeated_lines_get_their_own_variants(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 2, shape=(12, 12, 3))
    lines = list_path.read_text().splitlines()
    list_path.write_text("\n".join([lines[0], lines[1], lines[0]]) + "\n")
    r = invoke("augment", list_path, tmp_path / "out", "--copies", 2, "--noise", 5, "-j", 2)
    assert r.exit_code == 0, r.stderr
    names = [e.path for e in read_list(tmp_path / "out/list.txt").entries]
    assert names == [
        "0000_aug0.png",
        "0000_aug1.png",
        "0001_aug0.png",
        "0001_aug1.png",
        "0000_aug2.png",
        "0000_aug3.png",
    ]
    files = tree_bytes(tmp_path / "out")
    assert all(name in files for name in names)
    assert len({files[n] for n in names if n.startswith("0000")}) == 4  # four different draws


def test_other_copies_stop_the_rerun_and_keep_the_list(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 3, shape=(12, 12, 3))
    assert invoke("augment", list_path, tmp_path / "out", "--copies", 2, "--mirror", "-j", 1).exit_code == 0
    before = tree_bytes(tmp_path / "out")
    r = invoke("augment", list_path, tmp_path / "out", "--copies", 3, "--mirror", "-j", 1)
    assert r.exit_code == 1 and "--copies 2 then, 3 now" in r.stderr
    r = invoke("augment", list_path, tmp_path / "out", "--copies", 2, "--crop", "6x6", "-j", 1)
    assert r.exit_code == 1 and "--crop unset then, 6x6 now" in r.stderr
    assert tree_bytes(tmp_path / "out") == before
    r = invoke("augment", list_path, tmp_path / "out", "--copies", 3, "--mirror", "-j", 1, "--overwrite")
    assert r.exit_code == 0 and len(read_list(tmp_path / "out/list.txt")) == 9
    r = invoke("augment", list_path, tmp_path / "out", "--copies", 1, "--mirror", "-j", 1, "--overwrite")
    assert r.exit_code == 0  # fewer copies: the old variants go, none is left orphaned
    assert sorted(tree_bytes(tmp_path / "out")) == [
        "0000_aug0.png",
        "0001_aug0.png",
        "0002_aug0.png",
        "dataprep-settings.json",
        "list.txt",
    ]


def test_pad_lets_crops_exceed_small_images(invoke, tmp_path):
    import cv2

    list_path, images = write_images(tmp_path, 2, shape=(6, 8, 3))
    r = invoke("augment", list_path, tmp_path / "out", "--crop", "10x12", "--pad", "--pad-value", 7, "-j", 1)
    assert r.exit_code == 0, r.stderr
    out = cv2.imread(str(tmp_path / "out/0000_aug0.png"))
    assert out.shape == (10, 12, 3)
    assert np.array_equal(out[2:8, 2:10], images[0])  # centred: the crop is the whole padded image
    assert (out[0] == 7).all() and (out[:, 0] == 7).all()
    r = invoke("augment", list_path, tmp_path / "out2", "--pad", "-j", 1)
    assert r.exit_code == 2 and "--pad goes with --crop" in r.stderr


def test_shift_is_label_safe_and_the_same_for_any_worker_count(invoke, tmp_path):
    list_path, _ = write_images(tmp_path, 6, shape=(16, 16, 3), labels="float")
    for j in (1, 2):
        r = invoke(
            "augment", list_path, tmp_path / f"o{j}", "--shift", 0.2, "--copies", 2, "--seed", 3, "-j", j
        )
        assert r.exit_code == 0, r.stderr  # float labels: a translation keeps what they describe
    assert tree_bytes(tmp_path / "o1") == tree_bytes(tmp_path / "o2")
    r = invoke("augment", list_path, tmp_path / "bad", "--shift", 1.5)
    assert r.exit_code == 2 and "--shift" in r.stderr
