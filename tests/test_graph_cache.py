"""The onnxruntime engine's kept graphs (graph_cache): a later command with the same model
opens the kept file without reading the weights or building anything; a changed weights
file, a damaged kept file or DATAPREP_CACHE=off never give a stale answer."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

TINY = """name: "tiny"
input: "data"
input_shape { dim: 1 dim: 3 dim: 12 dim: 12 }
layer { name: "conv1" type: "Convolution" bottom: "data" top: "conv1"
        convolution_param { num_output: 4 kernel_size: 3 } }
layer { name: "fc" type: "InnerProduct" bottom: "conv1" top: "fc" inner_product_param { num_output: 5 } }
layer { name: "prob" type: "Softmax" bottom: "fc" top: "prob" }
"""


@pytest.fixture
def tiny(invoke, tmp_path):
    """A deploy prototxt, two .caffemodel files of different weights, and 6 images."""
    from helpers import write_images

    (tmp_path / "tiny.prototxt").write_text(TINY)
    for seed in (0, 1):
        out = tmp_path / f"w{seed}.caffemodel"
        assert invoke("export", tmp_path / "tiny.prototxt", "--random-init", seed, "-o", out).exit_code == 0
    list_path, _ = write_images(tmp_path / "img", 6, shape=(12, 12, 3))
    return tmp_path, list_path


def _predict(invoke, folder: Path, images: Path, engine: str = "onnxruntime") -> list[list[float]]:
    r = invoke(
        "predict", folder / "tiny.prototxt", "--weights", folder / "m.caffemodel", images,
        "--json", "--engine", engine, "--top-k", 5, "--scale", 0.004,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    return [p["values"] for p in json.loads(r.stdout)["predictions"]]


def _kept() -> list[Path]:
    return sorted((Path(os.environ["DATAPREP_CACHE"]) / "onnx").glob("*.onnx"))


def test_a_kept_graph_serves_the_next_command_without_weights_or_building(invoke, tiny, monkeypatch):
    from dataprep.train import caffemodel, engines

    folder, images = tiny
    (folder / "m.caffemodel").write_bytes((folder / "w0.caffemodel").read_bytes())
    first = _predict(invoke, folder, images)
    assert len(_kept()) == 1
    assert np.allclose(first, _predict(invoke, folder, images, "native"), atol=1e-5)

    def refuse(*args, **kwargs):
        raise AssertionError("built or read again")

    with monkeypatch.context() as m:
        m.setattr(engines.OnnxEngine, "_graph", refuse)
        m.setattr(caffemodel, "read_caffemodel", refuse)
        assert _predict(invoke, folder, images) == first  # the kept graph, weights unread
    assert len(_kept()) == 1


def test_changed_weights_build_a_new_graph(invoke, tiny):
    folder, images = tiny
    weights = folder / "m.caffemodel"
    weights.write_bytes((folder / "w0.caffemodel").read_bytes())
    first = _predict(invoke, folder, images)
    os.replace(folder / "w1.caffemodel", weights)  # the same path, other weights
    second = _predict(invoke, folder, images)
    assert not np.allclose(first, second, atol=1e-4)
    assert np.allclose(second, _predict(invoke, folder, images, "native"), atol=1e-5)
    assert len(_kept()) == 2


def test_a_damaged_kept_graph_is_built_again(invoke, tiny):
    folder, images = tiny
    (folder / "m.caffemodel").write_bytes((folder / "w0.caffemodel").read_bytes())
    first = _predict(invoke, folder, images)
    (kept,) = _kept()
    kept.write_bytes(b"not a graph")
    assert np.allclose(_predict(invoke, folder, images), first, atol=1e-6)
    assert _kept() == [kept] and kept.stat().st_size > 100  # dropped, built again and kept
    assert np.allclose(_predict(invoke, folder, images), first, atol=1e-6)


def test_off_or_unwritable_keeps_nothing_and_still_answers(invoke, tiny, monkeypatch, tmp_path):
    folder, images = tiny
    (folder / "m.caffemodel").write_bytes((folder / "w0.caffemodel").read_bytes())
    want = _predict(invoke, folder, images, "native")
    monkeypatch.setenv("DATAPREP_CACHE", "off")
    assert np.allclose(_predict(invoke, folder, images), want, atol=1e-5)
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    monkeypatch.setenv("DATAPREP_CACHE", str(blocker))  # onnx/ cannot be made under a file
    assert np.allclose(_predict(invoke, folder, images), want, atol=1e-5)
    assert not (blocker.parent / "onnx").exists()


def test_the_least_recently_used_graphs_go_past_the_limit(invoke, tiny, monkeypatch):
    from dataprep.train import graph_cache

    folder, images = tiny
    weights = folder / "m.caffemodel"
    weights.write_bytes((folder / "w0.caffemodel").read_bytes())
    _predict(invoke, folder, images)
    (old,) = _kept()
    size = old.stat().st_size
    monkeypatch.setattr(graph_cache, "KEEP_BYTES", size)  # room for one
    os.replace(folder / "w1.caffemodel", weights)
    _predict(invoke, folder, images)
    (new,) = _kept()
    assert new != old
    # the dropped graph's hint went with it
    assert [h.read_text().strip() for h in _hints()] == [new.name]


def _hints() -> list[Path]:
    return sorted((Path(os.environ["DATAPREP_CACHE"]) / "onnx").glob("*.hint"))


def test_the_next_command_opens_its_kept_graph_from_its_command_line(invoke, tiny, monkeypatch):
    """The kept graph's key needs the model's layers; the hint left by the last command with
    the same files and options starts onnxruntime on the graph before the model is read."""
    from dataprep.train import engines, inference

    folder, images = tiny
    (folder / "m.caffemodel").write_bytes((folder / "w0.caffemodel").read_bytes())
    first = _predict(invoke, folder, images)
    (kept,) = _kept()
    opening_at_load = []
    load_model = inference.load_model

    def watched(*args, **kwargs):
        opening_at_load.append([key[0] for key in engines._OPENING])
        return load_model(*args, **kwargs)

    monkeypatch.setattr(inference, "load_model", watched)
    assert _predict(invoke, folder, images) == first
    assert opening_at_load == [[str(kept)]]
    assert not engines._OPENING  # the engine took the session opened for it
    # another command line (another option) has no hint yet: nothing opens before the model
    r = invoke(
        "predict", folder / "tiny.prototxt", "--weights", folder / "m.caffemodel", images,
        "--json", "--engine", "onnxruntime", "--scale", 0.005,
    )  # fmt: skip
    assert r.exit_code == 0, r.stderr
    assert opening_at_load[-1] == []


def test_a_wrong_hint_costs_an_opening_not_an_answer(invoke, tiny):
    from dataprep.train import engines

    folder, images = tiny
    weights = folder / "m.caffemodel"
    weights.write_bytes((folder / "w0.caffemodel").read_bytes())
    _predict(invoke, folder, images)
    (graph0,) = _kept()
    os.replace(folder / "w1.caffemodel", weights)  # other weights: another graph, another hint
    second = _predict(invoke, folder, images)
    (graph1,) = set(_kept()) - {graph0}
    (hint1,) = [h for h in _hints() if h.read_text().strip() == graph1.name]
    hint1.write_text(graph0.name + "\n")  # names the other weights' graph
    assert _predict(invoke, folder, images) == second
    assert hint1.read_text().strip() == graph1.name  # set right for the next command
    assert not engines._OPENING  # the session opened for nothing is not kept
    for damage in ("../../elsewhere.onnx", "", "\x00"):  # a damaged hint names nothing
        hint1.write_text(damage)
        assert _predict(invoke, folder, images) == second


def test_a_kept_graph_runs_without_importing_the_layers(invoke, tiny):
    """Start-up: the onnxruntime engine on a kept graph loads neither the layers nor the
    export (their imports were a tenth of SqueezeNet's whole `predict`), nor, with the
    prototxt's sections kept too, protobuf's parser and Caffe's messages."""
    import subprocess
    import sys

    folder, images = tiny
    (folder / "m.caffemodel").write_bytes((folder / "w0.caffemodel").read_bytes())
    first = _predict(invoke, folder, images)  # builds and keeps the graph
    code = (
        "import sys; from dataprep.cli.main import cli\n"
        "try: cli(sys.argv[1:])\n"
        "except SystemExit as e: assert not e.code, e.code\n"
        "heavy = ('dataprep.train.layers', 'dataprep.train.onnx_export', 'onnx', 'google.protobuf')\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    args = [folder / "tiny.prototxt", "--weights", folder / "m.caffemodel", images, "-q"]
    args += ["--engine", "onnxruntime", "--top-k", "5", "--scale", "0.004", "--json"]
    done = subprocess.run(
        [sys.executable, "-c", code, "predict", *map(str, args)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    *answer, imported = done.stdout.strip().splitlines()
    assert imported == "[]"
    assert [p["values"] for p in json.loads("\n".join(answer))["predictions"]] == first


def test_the_process_waits_for_a_session_being_opened_before_it_exits(tmp_path):
    """A command that stops (a usage error, Ctrl-C) while onnxruntime still creates a session
    in its thread must not end under it: onnxruntime then aborts the process (SIGABRT, exit
    134, seen for SqueezeNet's `predict m.onnx --mean 128`, which must exit 2). The thread is
    waited for: its task finishes after the main thread is done."""
    import subprocess
    import sys

    done = tmp_path / "done"
    code = (
        "import sys, time; from dataprep.train.engines import in_thread\n"
        "def slow():\n"
        "    time.sleep(0.5)\n"
        "    open(sys.argv[1], 'w').write('opened')\n"
        "in_thread(slow)\n"
        "sys.exit(2)"
    )
    r = subprocess.run([sys.executable, "-c", code, str(done)], capture_output=True, text=True)
    assert r.returncode == 2, r.stderr
    assert done.read_text() == "opened"
