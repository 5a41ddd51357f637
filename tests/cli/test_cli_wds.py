"""WebDataset shards: tar members named as WebDataset groups them (KEY.png + KEY.cls or
KEY.json), the files' own bytes passed through, shards cut by records or bytes, an index
manifest that open_store, info, verify, mean and train read, corruption found, nothing
left behind by a failed run."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import numpy as np
import pytest
import yaml

from dataprep.images import decode
from dataprep.stores import open_store


@pytest.fixture
def noise_list(invoke, tmp_path):
    r = invoke(
        "noise", "--n", 30, "--size", "12x12", "--out", tmp_path / "samples", "--format", "png", "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    return tmp_path / "train.txt"


def members(shard: Path) -> list[tuple[str, bytes]]:
    with tarfile.open(shard) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


def test_list_to_shards_grouped_as_webdataset_reads_them(invoke, noise_list, tmp_path):
    r = invoke("wds", noise_list, tmp_path / "shards" / "train", "--shard-size", 10, "-j", 2)
    assert r.exit_code == 0, r.stderr
    shards = sorted((tmp_path / "shards").glob("train-*.tar"))
    assert [s.name for s in shards] == ["train-000000.tar", "train-000001.tar", "train-000002.tar"]
    lines = noise_list.read_text().splitlines()
    samples: dict[str, dict[str, bytes]] = {}
    for shard in shards:  # WebDataset's rule: the key is the name up to the first dot
        for name, data in members(shard):
            key, ext = name.split(".", 1)
            samples.setdefault(key, {})[ext] = data
    assert list(samples) == [f"{i:08d}" for i in range(len(lines))]
    for i, line in enumerate(lines):
        path, fx, fy = line.split()
        sample = samples[f"{i:08d}"]
        assert set(sample) == {"png", "json"}
        assert sample["png"] == (noise_list.parent / path).read_bytes()  # the file's own bytes
        assert json.loads(sample["json"]) == {"labels": [float(fx), float(fy)], "path": path}
    store = open_store(tmp_path / "shards" / "train")  # by prefix, or by its manifest
    same = open_store(tmp_path / "shards" / "train.manifest.json")
    assert len(store) == len(same) == len(lines)
    array, labels = store[7]
    want = decode((noise_list.parent / lines[7].split()[0]).read_bytes(), "gray").transpose(2, 0, 1)
    assert np.array_equal(array, want) and labels.tolist() == [float(v) for v in lines[7].split()[1:]]
    store.close()
    same.close()
    for command in ("info", "verify", "mean"):
        r = invoke(
            command,
            tmp_path / "shards" / "train",
            *(["-o", tmp_path / "m.binaryproto"] if command == "mean" else []),
        )
        assert r.exit_code == 0, r.stderr


def test_integer_labels_byte_shards_and_corruption(invoke, tmp_path):
    r = invoke(
        "noise", "--n", 40, "--size", "12x12", "--classes", 3, "--to", "wds", "--out", tmp_path / "w", "-j", 1
    )
    assert r.exit_code == 0, r.stderr
    names = dict(members(tmp_path / "w" / "train-000000.tar"))
    assert names["00000000.cls"] in (b"0", b"1", b"2")
    with open_store(tmp_path / "w" / "train") as store:
        assert int(store[0][1][0]) == int(names["00000000.cls"])
    shard = tmp_path / "w" / "train-000000.tar"
    data = bytearray(shard.read_bytes())
    data[600] ^= 0xFF  # inside the first image's bytes
    shard.write_bytes(bytes(data))
    r = invoke("verify", tmp_path / "w" / "train")
    assert r.exit_code == 1


def test_a_bad_image_leaves_no_shards(invoke, noise_list, tmp_path):
    first = noise_list.read_text().split()[0]
    (noise_list.parent / first).write_bytes(b"not a png")
    r = invoke("wds", noise_list, tmp_path / "out" / "train", "-j", 1)
    assert r.exit_code == 1 and first in r.stderr
    assert not (tmp_path / "out").exists() or not [p for p in (tmp_path / "out").iterdir()]


def test_the_trainer_reads_shards(invoke, tmp_path):
    from test_cli_train import SMALL_NET

    r = invoke("noise", "--n", 60, "--size", "16x16", "--to", "wds", "--out", tmp_path / "w", "-j", 1)
    assert r.exit_code == 0, r.stderr
    recipe = {
        "data": {
            "train": str(tmp_path / "w" / "train"),
            "val": str(tmp_path / "w" / "val"),
            "batch_size": 8,
            "target": "freq",
            "transform": {"mean_value": 128, "scale": 0.01},
        },
        "net": SMALL_NET,
        "solver": {"max_iter": 4, "display": 2, "snapshot_prefix": str(tmp_path / "s")},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    r = invoke("train", tmp_path / "r.yaml", "--json")
    assert r.exit_code == 0, r.stderr
    assert json.loads(r.stdout)["iterations"] == 4
