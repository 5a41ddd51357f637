"""A trained model goes anywhere and gives the same answers (issue 28): snapshots and every
export carry the whole preparation by value (mean image, scale, crop, channel order,
resize, the task); ``predict`` applies it exactly once, from any folder, through the
snapshot, its ``.npz``, ``.caffemodel`` with the deploy prototxt and mean the export wrote,
and its ONNX graph in onnxruntime."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import yaml
from helpers import run_dataprep, write_images

from dataprep.stores import open_store

CLASSIFIER = [
    {"name": "conv1", "type": "Convolution", "num_output": 4, "kernel_size": 3},
    {"name": "pool1", "type": "Pooling", "pool": "MAX", "kernel_size": 2, "stride": 2},
    {"name": "fc", "type": "InnerProduct", "num_output": 5},
    {"name": "accuracy", "type": "Accuracy", "phase": "TEST"},
    {"name": "loss", "type": "SoftmaxWithLoss"},
]


def _run(*args, cwd: Path) -> subprocess.CompletedProcess:
    return run_dataprep(*map(str, args), cwd=cwd)


def _predictions(r) -> list[tuple[str, list[float], list[int] | None]]:
    assert r.returncode == 0, r.stderr
    return [(p["key"], p["values"], p["classes"]) for p in json.loads(r.stdout)["predictions"]]


@pytest.fixture(scope="module")
def crop_model(tmp_path_factory):
    """A crop-and-mean classifier (mean file and scale in data.transform, crop 8 of 12x16
    color images) trained in ``train/``, whose mean file and stores are then deleted; the
    images stay in ``images/``."""
    root = tmp_path_factory.mktemp("model_files")
    images = root / "images"
    listfile, _ = write_images(images, 30)
    train = root / "train"
    train.mkdir()
    for args in (
        ("lmdb", listfile, "train_lmdb"),
        ("mean", "train_lmdb", "-o", "mean.binaryproto"),
    ):
        r = _run(*args, "-j", 1, cwd=train)
        assert r.returncode == 0, r.stderr
    recipe = {
        "name": "cropnet",
        "data": {
            "train": "train_lmdb",
            "batch_size": 10,
            "transform": {"crop_size": 8, "mean_file": "mean.binaryproto", "scale": 0.00390625},
        },
        "net": CLASSIFIER,
        "solver": {"max_iter": 6, "snapshot": 4, "base_lr": 0.05, "snapshot_prefix": "cropnet"},
    }
    (train / "cropnet.yaml").write_text(yaml.safe_dump(recipe))
    r = _run("train", "cropnet.yaml", "-q", cwd=train)
    assert r.returncode == 0, r.stderr
    # the closing line names the final model, not the first snapshot (point 7)
    assert r.stdout.strip().endswith("; cropnet_iter_6.npz"), r.stdout
    r = _run("train", "cropnet.yaml", "-q", "--json", "--overwrite", cwd=train)
    assert json.loads(r.stdout)["final"] == "cropnet_iter_6.npz"
    elsewhere = root / "elsewhere"
    elsewhere.mkdir()
    shutil.copy(train / "cropnet_iter_6.npz", elsewhere / "model.npz")
    shutil.rmtree(train)  # the mean file and the stores are gone
    return elsewhere, listfile


def test_every_form_of_the_model_gives_the_same_answers_in_another_folder(crop_model):
    folder, listfile = crop_model
    want = _predictions(_run("predict", "model.npz", listfile, "--json", cwd=folder))
    assert len(want) == 30 and all(classes is not None for _, _, classes in want)
    for out in ("exported.npz", "exported.caffemodel", "exported.onnx"):
        r = _run("export", "model.npz", "-o", out, cwd=folder)
        assert r.returncode == 0, r.stderr
    assert (folder / "exported_deploy.prototxt").is_file() and (
        folder / "exported_mean.binaryproto"
    ).is_file()
    # the .npz export: a classifier still (point 1)
    assert _predictions(_run("predict", "exported.npz", listfile, "--json", cwd=folder)) == want
    # the deploy prototxt and the mean file the export wrote, from yet another folder
    other = folder.parent / "other"
    other.mkdir()
    r = _run(
        "predict",
        folder / "exported_deploy.prototxt",
        "--weights",
        folder / "exported.caffemodel",
        listfile,
        "--json",
        cwd=other,
    )
    got = _predictions(r)
    assert [(k, c) for k, _, c in got] == [(k, c) for k, _, c in want]
    assert np.allclose([v for _, v, _ in got], [v for _, v, _ in want], atol=1e-5)
    # the ONNX graph on pixels as OpenCV decodes them: crop, mean and scale are its own
    import onnxruntime as ort

    session = ort.InferenceSession(str(folder / "exported.onnx"), providers=["CPUExecutionProvider"])
    meta = json.loads(session.get_modelmeta().custom_metadata_map["dataprep.preparation"])
    assert meta["shape"] == [3, 12, 16] and meta["crop"] == 8 and meta["image_size"] == [12, 16]
    assert [o.name for o in session.get_outputs()] == ["fc", "prob"]  # logits, then prob (point 5)
    keys = [k for k, _, _ in want]
    pixels = np.stack([cv2.imread(str(listfile.parent / k)).transpose(2, 0, 1) for k in keys]).astype(
        np.float32
    )
    logits, prob = session.run(None, {meta["input"]: pixels})
    assert np.allclose(prob.max(axis=1), [v[0] for _, v, _ in want], atol=1e-5)
    assert prob.argmax(axis=1).tolist() == [c[0] for _, _, c in want]
    assert np.allclose(prob, np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True), atol=1e-6)


def _loaded(
    folder: Path, args: list[str], modules: tuple[str, ...]
) -> tuple[subprocess.CompletedProcess, list]:
    """The command run in a fresh interpreter, and which of ``modules`` it loaded."""
    code = (
        "import sys; from dataprep.cli.main import cli\n"
        "try: cli(sys.argv[1:])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        f"import json; print(json.dumps([m for m in {modules!r} if m in sys.modules]), file=sys.stderr)"
    )
    r = subprocess.run([sys.executable, "-c", code, *args], cwd=folder, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    return r, json.loads(r.stderr.strip().splitlines()[-1])


def test_native_predict_loads_no_numba(crop_model):
    """Numba (0.15 s and about 100 MB) loads where a net trains: inference's pooling runs
    the array code, so `predict` on the native engine never imports it."""
    folder, listfile = crop_model
    args = ["predict", "model.npz", str(listfile), "--json", "-q"]
    _, loaded = _loaded(folder, args, ("numba", "dataprep.train.layers.pooling"))
    assert loaded == ["dataprep.train.layers.pooling"]


def test_predict_and_extract_run_an_exported_onnx_graph_as_the_model(crop_model):
    """`predict exported.onnx` (issue 27): the graph as MODEL, on onnxruntime, its
    preparation read from its metadata: the snapshot's answers; extract writes the graph's
    output and records the engine; what an .onnx MODEL cannot take is refused in one line."""
    pytest.importorskip("onnxruntime")
    folder, listfile = crop_model
    want = _predictions(_run("predict", "model.npz", listfile, "--json", cwd=folder))
    r = _run("export", "model.npz", "-o", "graph.onnx", cwd=folder)
    assert r.returncode == 0, r.stderr
    for extra in ([], ["--batch-size", "7"], ["--engine", "onnxruntime"]):
        got = _predictions(_run("predict", "graph.onnx", listfile, "--json", *extra, cwd=folder))
        assert [(k, c) for k, _, c in got] == [(k, c) for k, _, c in want]
        assert np.allclose([v for _, v, _ in got], [v for _, v, _ in want], atol=1e-5)
    # start-up: the graph's metadata is read without the exporter, the layers or onnx; and
    # neither tar (WebDataset writers'), sockets (staging on shared folders) nor the caches of
    # prototxt models (hashlib's OpenSSL) are loaded
    heavy = ("dataprep.train.layers", "dataprep.train.onnx_export", "onnx", "tarfile", "socket")
    args = ["predict", "graph.onnx", str(listfile), "--json", "-q"]
    r, loaded = _loaded(folder, args, (*heavy, "dataprep.train.graph_cache"))
    assert _predictions(r) == got and loaded == [], r.stderr
    r = _run("extract", "graph.onnx", listfile, "feats", "--layer", "fc", "--json", cwd=folder)
    assert r.returncode == 0, r.stderr
    with open_store(folder / "feats") as store:
        assert store.manifest["features"]["engine"] == "onnxruntime"
        first = next(iter(store.iter_range(0, 1)))
        assert first.array.shape == (5, 1, 1)
    (folder / "foreign.onnx").write_bytes(b"\x08\x07")  # a ModelProto with an IR version only
    (folder / "broken.onnx").write_bytes(b"not a protobuf at all \xff\xff")
    for args, message in [
        (["graph.onnx", "--weights", "model.npz"], "holds its weights: leave out --weights"),
        (["graph.onnx", "--mean", "128"], "--mean: graph.onnx does its own preparation in the graph"),
        (["graph.onnx", "--engine", "native"], "an .onnx MODEL runs on onnxruntime"),
        (["foreign.onnx"], "no dataprep preparation in its metadata"),
        (["broken.onnx"], "broken.onnx: not an ONNX file"),
    ]:
        r = _run("predict", *args, listfile, cwd=folder)
        assert r.returncode in (1, 2) and message in r.stderr, r.stderr
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
    r = _run("extract", "graph.onnx", listfile, "feats2", "--layer", "conv1", cwd=folder)
    assert r.returncode != 0 and "no layer 'conv1' in the net (fc, prob)" in r.stderr


def test_the_deploy_prototxt_is_caffes_form_and_matches_the_caffemodel(crop_model):
    from google.protobuf import text_format

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.caffemodel import read_caffemodel

    folder, _ = crop_model
    r = _run("export", "model.npz", "-o", "deploy.prototxt", cwd=folder)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["deploy.prototxt", "deploy_mean.binaryproto"]
    net = text_format.Parse((folder / "deploy.prototxt").read_text(), NetParameter())  # Caffe's schema
    data = net.layer[0]
    assert data.type == "Input" and list(data.input_param.shape[0].dim) == [1, 3, 8, 8]
    assert data.transform_param.crop_size == 8 and data.transform_param.scale == pytest.approx(0.00390625)
    assert data.transform_param.mean_file == "deploy_mean.binaryproto"
    types = [layer.type for layer in net.layer]
    assert types == ["Input", "Convolution", "Pooling", "InnerProduct", "Softmax"]  # no loss, no data
    r = _run("export", "model.npz", "-o", "w.caffemodel", "--no-deploy", cwd=folder)
    assert r.returncode == 0 and not (folder / "w_deploy.prototxt").exists()
    blobs = read_caffemodel(folder / "w.caffemodel")
    assert [layer.name for layer in net.layer if layer.type in ("Convolution", "InnerProduct")] == list(blobs)
    # staged and refused like every output
    r = _run("export", "model.npz", "-o", "deploy.prototxt", cwd=folder)
    assert r.returncode != 0 and "exists" in r.stderr


def test_predict_applies_the_preparation_once_and_names_what_is_wrong(crop_model, tmp_path):
    folder, listfile = crop_model
    r = _run("predict", "model.npz", listfile, "--mean", "128", cwd=folder)
    assert (
        r.returncode == 2 and "has its own mean (12x16 image)" in r.stderr and "leave --mean out" in r.stderr
    )
    r = _run("predict", "model.npz", listfile, "--scale", "0.5", cwd=folder)
    assert r.returncode == 2 and "has its own scale (0.00390625)" in r.stderr
    r = _run("predict", "model.npz", listfile, "--crop", "6", cwd=folder)
    assert r.returncode == 2 and "has its own crop (8)" in r.stderr
    # the deploy prototxt's transform_param is applied, so --mean is refused there too (point 4)
    _run("export", "model.npz", "-o", "d.caffemodel", cwd=folder)
    r = _run("predict", "d_deploy.prototxt", "--weights", "d.caffemodel", listfile, "--mean", "1", cwd=folder)
    assert r.returncode == 2 and "has its own mean" in r.stderr
    # an image of another size: both sizes and the option that fixes it
    big = tmp_path / "big.png"
    cv2.imwrite(str(big), np.full((40, 42, 3), 90, np.uint8))
    r = _run("predict", "model.npz", big, cwd=folder)
    assert r.returncode == 1 and "the image is 40x42" in r.stderr and "give --resize 12x16" in r.stderr
    assert "internal error" not in r.stderr
    r = _run("predict", "model.npz", big, "--resize", "12x16", cwd=folder)
    assert r.returncode == 0 and r.stdout.startswith(f"Predicted class for {big.name} is ")


def test_predict_reads_an_image_a_folder_or_a_list_on_stdin(crop_model):
    folder, listfile = crop_model
    want = _predictions(_run("predict", "model.npz", listfile, "--json", cwd=folder))
    ((key, values, classes),) = _predictions(
        _run("predict", "model.npz", listfile.parent / want[3][0], "--json", cwd=folder)
    )
    assert key == Path(want[3][0]).name and classes == want[3][2] and np.allclose(values, want[3][1])
    tree = _predictions(_run("predict", "model.npz", listfile.parent / "img", "--json", cwd=folder))
    assert [(f"img/{k}", v, c) for k, v, c in tree] == want  # sorted, keyed below the folder
    piped = run_dataprep(
        "predict",
        "model.npz",
        "-",
        "--json",
        input=listfile.read_text().replace("img/", f"{listfile.parent}/img/"),
        cwd=folder,
    )
    assert [(v, c) for _, v, c in _predictions(piped)] == [(v, c) for _, v, c in want]


def test_an_rgb_trained_model_gets_rgb_from_image_files(tmp_path, invoke, monkeypatch):
    """A classifier trained on an ``import cifar10`` store (RGB planes) predicts the same
    for a record as for that record written as an image file (decoded BGR by OpenCV);
    ``mean`` names the store's channels R G B, and the ONNX metadata says RGB (point 9)."""
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "cifar10", ".", "--n", 60).exit_code == 0
    assert invoke("import", "cifar10", "cifar-10-binary.tar.gz", ".").exit_code == 0
    r = invoke("mean", "cifar10_train_lmdb", "-o", "mean.binaryproto")
    assert r.exit_code == 0 and r.stdout.split()[::2] == ["R", "G", "B"], r.stdout
    recipe = {
        "data": {
            "train": "cifar10_train_lmdb",
            "batch_size": 10,
            "transform": {"mean_file": "mean.binaryproto"},
        },
        "net": CLASSIFIER[:2] + [{**CLASSIFIER[2], "num_output": 10}] + CLASSIFIER[3:],
        "solver": {"max_iter": 4, "base_lr": 0.001, "snapshot_prefix": "rgb"},
    }
    Path("rgb.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("train", "rgb.yaml", "-q").exit_code == 0
    Path("photos").mkdir()
    with open_store("cifar10_test_lmdb") as store:
        for k, rec in zip(range(6), store):
            cv2.imwrite(f"photos/{k}.png", rec.array.transpose(1, 2, 0)[:, :, ::-1])  # RGB planes -> BGR file
    from_store = json.loads(invoke("predict", "rgb_iter_4.npz", "cifar10_test_lmdb", "--json").stdout)
    r = invoke("predict", "rgb_iter_4.npz", "photos", "--json", "--top-k", 3)
    assert r.exit_code == 0, r.stderr
    from_files = json.loads(r.stdout)["predictions"]
    for k, p in enumerate(from_files):
        stored = from_store["predictions"][k]
        assert p["classes"][0] == stored["classes"][0]
        assert p["values"][0] == pytest.approx(stored["values"][0], abs=1e-6)
    # the class names travel with the model
    r = invoke("predict", "rgb_iter_4.npz", "photos/0.png")
    names = Path("cifar10_classes.txt").read_text().split()
    assert any(f" is {name} (" in r.stdout for name in names), r.stdout
    r = invoke("predict", "rgb_iter_4.npz", "photos/0.png", "--channel-order", "BGR")
    assert r.exit_code == 2 and "records channel_order RGB" in r.stderr
    assert invoke("export", "rgb_iter_4.npz", "-o", "rgb.onnx").exit_code == 0
    import onnx

    props = {p.key: p.value for p in onnx.load("rgb.onnx").metadata_props}
    meta = json.loads(props["dataprep.preparation"])
    assert meta["model_channel_order"] == "RGB" and meta["channel_order"] == "BGR"


def test_an_old_snapshot_says_which_mean_file_it_lacks(tmp_path, invoke, monkeypatch):
    """Snapshots from before this change recorded mean files by path: they work where the
    path resolves, and elsewhere say so in one line; --mean stands in for the lost file."""
    monkeypatch.chdir(tmp_path)
    listfile, _ = write_images(tmp_path, 10)
    assert invoke("hdf5", listfile, "--mean", "128", "-o", "t.h5").exit_code == 0
    recipe = {
        "data": {"train": "t.h5", "batch_size": 5, "transform": {"scale": 0.5}},
        "net": CLASSIFIER[:3] + CLASSIFIER[4:],
        "solver": {"max_iter": 2, "snapshot_prefix": "old"},
    }
    Path("old.yaml").write_text(yaml.safe_dump(recipe))
    assert invoke("train", "old.yaml", "-q").exit_code == 0
    saved = dict(np.load("old_iter_2.npz"))
    want = json.loads(invoke("predict", "old_iter_2.npz", listfile, "--json").stdout)["predictions"]
    np.save("m.npy", np.full((3, 12, 16), 128, np.float32))
    legacy = {k: v for k, v in saved.items() if not k.startswith("preparation")}
    fields = {"channels": "color", "resize": None, "interpolation": "linear", "mean": "m.npy", "scale": 1.0}
    legacy["preparation"] = np.array(yaml.safe_dump(fields))
    np.savez("legacy.npz", **legacy)
    r = invoke("predict", "legacy.npz", listfile, "--json")  # its path resolves here
    assert r.exit_code == 0 and np.allclose(
        [p["values"] for p in json.loads(r.stdout)["predictions"]], [p["values"] for p in want]
    )
    os.rename("m.npy", "moved.npy")
    r = invoke("predict", "legacy.npz", listfile)
    assert r.exit_code == 1 and "names m.npy, which is not found from here: give --mean FILE" in r.stderr
    r = invoke("predict", "legacy.npz", listfile, "--mean", "moved.npy", "--json")
    assert r.exit_code == 0 and np.allclose(
        [p["values"] for p in json.loads(r.stdout)["predictions"]], [p["values"] for p in want]
    )


def test_info_grid_draws_an_rgb_store_in_true_colours(tmp_path, invoke, monkeypatch):
    """A CIFAR import keeps RGB planes; its montage must show red as red (issue 33)."""
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "cifar10", ".", "--n", 20).exit_code == 0
    assert invoke("import", "cifar10", "cifar-10-binary.tar.gz", ".").exit_code == 0
    with open_store("cifar10_train_lmdb") as store:
        first = next(iter(store)).array  # 3 x 32 x 32, R G B
    assert invoke("info", "cifar10_train_lmdb", "--grid", "g.png", "--count", 1).exit_code == 0
    grid = cv2.imread("g.png").astype(float)  # BGR
    drawn = grid[:48, :96].reshape(-1, 3).mean(axis=0)  # the cell's top half, clear of the label
    stored = first[:, :16, :].reshape(3, -1).mean(axis=1)  # R G B planes
    assert np.allclose(drawn, stored[::-1], atol=4), (drawn, stored)
    assert not np.allclose(drawn, stored, atol=4)  # the old drawing, red and blue swapped


def test_info_on_a_model_prints_caffes_net_summary(invoke, crop_model):
    """The blobs' and parameters' shapes a pycaffe user prints (issue 33), for a snapshot
    (its recorded input) and the zoo's CaffeNet (its Input layer)."""
    folder, _ = crop_model
    r = invoke("info", folder / "model.npz")
    assert r.exit_code == 0, r.stderr
    assert "  input data: 1 3 8 8 (192)" in r.stdout
    assert (
        "  conv1 (Convolution)  params 4x3x3x3, 4" in r.stdout
        and "    conv1: Top shape: 1 4 6 6 (144)" in r.stdout
    )
    assert "Memory required for data: " in r.stdout
    zoo = Path(__file__).parents[1] / "fixtures" / "zoo" / "bvlc_reference_caffenet_deploy.prototxt"
    r = invoke("info", zoo, "--json")
    summary = json.loads(r.stdout)
    fc6 = next(layer for layer in summary["layers"] if layer["name"] == "fc6")
    assert fc6["params"] == [[4096, 9216], [4096]] and fc6["tops"] == {"fc6": [1, 4096]}
    assert summary["parameters"] == 60965224  # CaffeNet's 61 M


def test_import_claims_its_class_file_before_writing_any_store(tmp_path, invoke, monkeypatch):
    """A second backend into the same folder is refused before it writes anything, not
    after its stores (issue 33, point 12)."""
    monkeypatch.chdir(tmp_path)
    assert invoke("example", "cifar10", ".", "--n", 20).exit_code == 0
    assert invoke("import", "cifar10", "cifar-10-binary.tar.gz", "out").exit_code == 0
    r = invoke("import", "cifar10", "cifar-10-binary.tar.gz", "out", "--to", "leveldb")
    assert r.exit_code == 1 and "cifar10_classes.txt already exists" in r.stderr
    assert sorted(p.name for p in Path("out").iterdir()) == [
        "cifar10_classes.txt",
        "cifar10_test_lmdb",
        "cifar10_train_lmdb",
    ]


def test_errors_grid_draws_each_misclassified_input_with_its_true_and_predicted_class(invoke, crop_model):
    """predict --errors-grid (issue 33, point 11): one cell per mistake, in input order."""
    import math

    folder, listfile = crop_model
    r = invoke("predict", folder / "model.npz", listfile, "--json")
    truth = [int(line.split()[1]) for line in Path(listfile).read_text().splitlines()]
    rows = json.loads(r.stdout)["predictions"]  # in list order
    mistakes = [row for row, label in zip(rows, truth) if row["classes"][0] != label]
    assert 0 < len(mistakes) < len(rows), "the six-iteration model should be partly right"
    grid = folder / "wrong.png"
    r = invoke("predict", folder / "model.npz", listfile, "--errors-grid", grid, "-v")
    assert r.exit_code == 0, r.stderr
    assert f"{len(mistakes)} misclassified inputs drawn" in r.stderr
    picture = cv2.imread(str(grid))
    cols = math.ceil(math.sqrt(len(mistakes)))
    assert picture.shape[1] == cols * 96 and picture.shape[0] == math.ceil(len(mistakes) / cols) * (96 + 14)
    first = cv2.imread(str(Path(listfile).parent / mistakes[0]["key"]))  # 12 x 16, drawn 6x
    assert np.array_equal(picture[:72, :96], cv2.resize(first, (96, 72), interpolation=cv2.INTER_NEAREST))
    r = invoke("predict", folder / "model.npz", folder / "wrong.png", "--errors-grid", grid)
    assert r.exit_code == 2 and "needs ground truth labels" in r.stderr


def test_visualize_plots_a_vector_layer_and_a_snapshots_class_probabilities(invoke, crop_model):
    """The notes' fc6 histogram and prob bars (issue 33, point 7): a vector layer is
    plotted (values, then the histogram of the positive ones), and `prob`, which a
    snapshot's net ends before, is its classifier's softmax drawn as bars."""
    folder, listfile = crop_model
    image = Path(listfile).parent / "img" / "0000.png"
    out = folder / "fc.png"
    r = invoke("visualize", folder / "model.npz", "--layer", "fc", "--image", image, "-o", out)
    assert r.exit_code == 0, r.stderr
    two_panels = cv2.imread(str(out))
    r = invoke("visualize", folder / "model.npz", "--layer", "prob", "--image", image, "-o", folder / "p.png")
    assert r.exit_code == 0, r.stderr
    bars = cv2.imread(str(folder / "p.png"))
    assert two_panels.shape == (560, 800, 3) and bars.shape == (280, 800, 3)
    r = invoke("visualize", folder / "model.npz", "--layer", "prob", "-o", folder / "q.png")
    assert r.exit_code == 2 and "no such layer" in r.stderr  # kernels of prob: there are none


def test_oversample_averages_the_probabilities_of_pycaffes_ten_crops(invoke, crop_model):
    """predict --oversample (issue 33, point 8): the four corner crops and the centre one,
    then the five mirrored, each with the mean image cut at its own place (Caffe's
    DataTransformer), the softmax of each averaged; computed here by hand."""
    from dataprep.train.engines import make_engine
    from dataprep.train.inference import load_model

    folder, listfile = crop_model
    image_path = Path(listfile).parent / "img" / "0003.png"
    r = invoke("predict", folder / "model.npz", image_path, "--oversample", "--top-k", 5, "--json")
    assert r.exit_code == 0, r.stderr
    (row,) = json.loads(r.stdout)["predictions"]
    got = dict(zip(row["classes"], row["values"]))
    model = load_model(folder / "model.npz")
    (step,) = [s for s in model.prepare.steps if s.mean is not None]
    image = cv2.imread(str(image_path)).astype(np.float32).transpose(2, 0, 1)  # 3 x 12 x 16, BGR
    crops = []
    for mirrored in (False, True):
        for top, left in ((0, 0), (0, 8), (4, 0), (4, 8), (2, 4)):
            x = (
                image[:, top : top + 8, left : left + 8] - step.mean[:, top : top + 8, left : left + 8]
            ) * step.scale
            crops.append(x[:, :, ::-1] if mirrored else x)
    scores = make_engine("native", model.folded(), [model.output]).run(np.stack(crops), [model.output])
    e = np.exp(scores[model.output] - scores[model.output].max(axis=1, keepdims=True))
    want = (e / e.sum(axis=1, keepdims=True)).mean(axis=0)
    assert np.allclose([got[c] for c in range(5)], want, atol=1e-6)
    centre = json.loads(invoke("predict", folder / "model.npz", image_path, "--top-k", 5, "--json").stdout)
    assert centre["predictions"][0]["values"] != row["values"]  # not the centre crop alone


def test_reshape_params_carries_a_classifier_across_net_surgery(invoke, crop_model, tmp_path):
    """Caffe's net-surgery example (issue 33, point 9): the classifier made fully
    convolutional (fc -> fc-conv, a 3 x 3 Convolution over pool1's 3 x 3 maps) takes fc's
    blobs with --reshape-params, and its class map at the original size is the classifier's
    output."""
    folder, listfile = crop_model
    assert invoke("export", folder / "model.npz", "-o", tmp_path / "deploy.prototxt").exit_code == 0
    text = (tmp_path / "deploy.prototxt").read_text()
    fc = 'name: "fc"\n  type: "InnerProduct"\n  bottom: "pool1"\n  top: "fc"\n  inner_product_param {'
    assert fc in text
    text = text.replace(
        fc,
        'name: "fc-conv"\n  type: "Convolution"\n  bottom: "pool1"\n  top: "fc-conv"\n  convolution_param {',
    )
    text = text.replace("num_output: 5\n", "num_output: 5\n    kernel_size: 3\n").replace(
        'bottom: "fc"\n', 'bottom: "fc-conv"\n'
    )
    (tmp_path / "fullconv.prototxt").write_text(text)
    conv = ["predict", tmp_path / "fullconv.prototxt", "--weights", folder / "model.npz", listfile]
    r = invoke(*conv)
    assert r.exit_code == 1 and "no blobs for layer(s) fc-conv (net surgery: --reshape-params" in r.stderr
    r = invoke(*conv, "--reshape-params", "--top-k", 5, "--json")
    assert r.exit_code == 0, r.stderr
    assert "layer fc-conv takes the blobs of fc (5x36, 5), reshaped as it needs" in r.stderr
    surgery = json.loads(r.stdout)["predictions"]
    plain = json.loads(invoke("predict", folder / "model.npz", listfile, "--top-k", 5, "--json").stdout)
    for a, b in zip(surgery, plain["predictions"]):
        assert a["classes"] == b["classes"] and np.allclose(a["values"], b["values"], atol=1e-6)


def test_an_onnx_model_rewritten_in_place_is_read_afresh_in_one_process(crop_model, invoke, tmp_path):
    """The session opened early for an .onnx MODEL is taken by that command's load and keyed
    by the file as it is: re-exporting other weights to the same path, then predicting again
    in the same process, gives the new graph's answers, never the old session's."""
    pytest.importorskip("onnxruntime")
    folder, listfile = crop_model
    graph = tmp_path / "g.onnx"
    assert invoke("export", folder / "model.npz", "-o", tmp_path / "m.caffemodel").exit_code == 0
    deploy = tmp_path / "m_deploy.prototxt"

    def answers(seed: int) -> list:
        r = invoke("export", deploy, "--random-init", seed, "-o", graph, "--overwrite")
        assert r.exit_code == 0, r.stderr
        r = invoke("predict", graph, listfile, "--json")
        assert r.exit_code == 0, r.stderr
        return [p["values"] for p in json.loads(r.stdout)["predictions"]]

    first, second, again = answers(1), answers(2), answers(1)
    assert first != second and np.allclose(first, again)
