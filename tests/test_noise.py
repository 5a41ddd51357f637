"""Noise samples: determinism per (seed, i), labels that match the content, names."""

from __future__ import annotations

import numpy as np
import pytest

from dataprep.errors import DataprepError
from dataprep.noise import NoiseSource, class_names


def test_sample_depends_only_on_seed_and_index():
    a, b = NoiseSource(50, seed=7), NoiseSource(5000, seed=7)
    assert np.array_equal(a.sample(42)[0], b.sample(42)[0])
    assert not np.array_equal(a.sample(42)[0], NoiseSource(50, seed=8).sample(42)[0])


def test_labels_are_the_drawn_frequencies():
    source = NoiseSource(100, size=(40, 60), seed=1)
    for i in range(100):
        image, h, w = source.sample(i)
        assert image.shape == (40, 60, 1) and image.dtype == np.uint8
        assert 1 <= h <= 39 and 1 <= w <= 59
        rec = source.record(i)
        assert rec.labels == (w / 60, h / 40)
        assert rec.key == f"{i:05d}_{w / 60:.2f}_{h / 40:.2f}.png"


def test_content_matches_the_frequency():
    """w = 1 column upscaled is constant along x; h = 1 is constant along y."""
    source = NoiseSource(400, size=(8, 8), seed=0)
    found = set()
    for i in range(400):
        image, h, w = source.sample(i)
        if w == 1:
            assert (image == image[:, :1]).all()
            found.add("w")
        if h == 1:
            assert (image == image[:1, :]).all()
            found.add("h")
        if h > 2 and w > 2:
            assert len(np.unique(image)) > 1
    assert found == {"w", "h"}


def test_more_zero_crossings_at_higher_frequency():
    source = NoiseSource(300, size=(100, 100), seed=0)
    low, high = [], []
    for i in range(300):
        image, h, w = source.sample(i)
        rows = image[:, :, 0].astype(float)
        crossings = np.mean(np.abs(np.diff(np.sign(np.diff(rows, axis=1)), axis=1)) > 0)
        (low if w < 20 else high if w > 80 else []).append(crossings)
    assert np.mean(high) > 2 * np.mean(low)


def test_index_widens_past_100000():
    assert NoiseSource(100000).name(7, 10, 10).startswith("00007_")
    assert NoiseSource(100001).name(7, 10, 10).startswith("000007_")


def test_classes_bin_fx():
    source = NoiseSource(200, size=(10, 100), seed=0, classes=4)
    for i in range(200):
        _, h, w = source.sample(i)
        assert source.record(i).labels == (min(int(w / 100 * 4), 3),)
    assert class_names(4)[1] == "fx[0.25,0.5)"


@pytest.mark.parametrize("kw", [{"n": 0}, {"n": 5, "size": (1, 10)}, {"n": 5, "classes": 0}])
def test_bad_parameters(kw):
    with pytest.raises(DataprepError):
        NoiseSource(**kw)


def test_noise_into_hdf5_loads_no_protobuf(tmp_path):
    """Start-up: an HDF5 store with a mean given as values needs none of Caffe's messages
    (protobuf's import was 2% of `noise --to hdf5` at N = 10000); a .binaryproto mean
    still reads through them."""
    import subprocess
    import sys

    code = (
        "import sys; from dataprep.cli.main import cli\n"
        "try: cli(sys.argv[1:])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "print('google.protobuf' in sys.modules)"
    )
    args = ["noise", "--n", "20", "--to", "hdf5", "--out", str(tmp_path / "h5"), "--mean", "128", "-q"]
    done = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().splitlines()[-1] == "False"
    assert (tmp_path / "h5" / "train.h5").is_file()

    from dataprep.stores.caffe_pb import blob_bytes
    from dataprep.stores.means import read_mean_file

    mean = np.arange(12, dtype=np.float32).reshape(3, 2, 2)
    (tmp_path / "m.binaryproto").write_bytes(blob_bytes(mean[None]))
    assert np.array_equal(read_mean_file(tmp_path / "m.binaryproto"), mean)
