"""The model zoo's deploy nets (unchanged copies in tests/fixtures/zoo): each builds from
its prototxt, runs forward and backward at batch 1, and has the published shapes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from dataprep.train.net import Net
from dataprep.train.prototxt import layer_message, net_sections

ZOO = Path(__file__).parent / "fixtures" / "zoo"


def zoo_net(name: str, size: int | None = None) -> Net:
    """The net of a zoo prototxt at batch 1 (``size``: another input side), BatchNorm's
    statistics set to mean 0, variance 1 (zeros would divide by sqrt(eps) in every block)."""
    sections = net_sections(ZOO / name)
    inputs = {k: (1, v[1], size or v[2], size or v[3]) for k, v in sections["inputs"].items()}
    net = Net(sections["net"], inputs, rng=np.random.default_rng(0))
    for layer in net.layers:
        if layer.type == "BatchNorm":
            for blob, value in zip(layer.params, (0.0, 1.0, 1.0)):
                blob[...] = value
    return net


@pytest.mark.parametrize(
    "name, blob, shape, size",
    [
        ("bvlc_reference_caffenet_deploy.prototxt", "pool5", (1, 256, 6, 6), None),
        ("bvlc_alexnet_deploy.prototxt", "pool5", (1, 256, 6, 6), None),
        ("bvlc_googlenet_deploy.prototxt", "inception_5b/output", (1, 1024, 7, 7), None),
        ("resnet50_deploy.prototxt", "res5c", (1, 2048, 7, 7), None),
        # v1.1's file says 227: Caffe's rounding-up pools give 113 -> 56 -> 28 -> 14; the
        # published 13 x 13 is at 224 (111 -> 55 -> 27 -> 13)
        ("squeezenet_v1.1_deploy.prototxt", "conv10", (1, 1000, 14, 14), None),
        ("squeezenet_v1.1_deploy.prototxt", "conv10", (1, 1000, 13, 13), 224),
        # dataprep's own small FCN: 64 -> 32 -> Deconvolution to 66 -> Crop to 64
        ("fcn_small_deploy.prototxt", "score_crop", (1, 5, 64, 64), None),
    ],
)
def test_zoo_nets_build_run_forward_and_backward_with_the_published_shapes(name, blob, shape, size):
    net = zoo_net(name, size)
    assert net.shapes[blob] == shape
    x = np.random.default_rng(1).normal(size=net.inputs["data"]).astype(np.float32)
    net.forward({"data": x}, train=True)
    assert net.blobs[blob].shape == shape and np.isfinite(net.blobs[blob]).all()
    last = net.nodes[-1].tops[0]
    sums = net.blobs[last].sum(axis=1)  # the Softmax: over the classes, at every position
    assert np.allclose(sums, 1, atol=1e-4)
    net.backward(seed={last: np.random.default_rng(2).normal(size=net.blobs[last].shape).astype(np.float32)})
    first = next(layer for layer in net.layers if layer.params)
    assert first.grads[0] is not None and np.abs(first.grads[0]).sum() > 0  # reached the first layer


def _arrays(value):
    """The NumPy arrays in a layer attribute's value (tuples, lists and dicts opened)."""
    if isinstance(value, np.ndarray):
        yield value
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _arrays(item)
    elif isinstance(value, dict):
        for item in value.values():
            yield from _arrays(item)


@pytest.mark.parametrize(
    "name",
    ["bvlc_reference_caffenet_deploy.prototxt", "bvlc_googlenet_deploy.prototxt", "resnet50_deploy.prototxt"],
)
def test_a_forward_only_pass_leaves_no_blob_held_by_a_layer(name):
    """After ``forward(keep=...)`` no layer holds an array of the batch's blobs (its state
    for a backward pass forgotten, ``Layer.STATE``): each blob is freed after its reader."""
    net = zoo_net(name)
    x = np.random.default_rng(1).normal(size=net.inputs["data"]).astype(np.float32)
    last = net.nodes[-1].tops[0]
    net.forward({"data": x}, train=False, keep=[last])
    assert set(net.blobs) == {last}
    for layer in net.layers:
        params = {id(p) for p in layer.params}
        held = [
            a.shape for v in vars(layer).values() for a in _arrays(v) if id(a) not in params and a.size > 64
        ]
        assert not held, f"{layer.name} ({layer.type}) holds arrays of shapes {held}"


@pytest.mark.parametrize("name", sorted(p.name for p in ZOO.glob("*.prototxt")))
def test_zoo_layers_write_back_as_the_prototxt_had_them(name):
    """Each layer read from the file and written again by to-prototxt's writer reads back
    to the same entry: the new layers' fields go both ways."""
    from google.protobuf import text_format

    from dataprep.stores.caffe_pb import NetParameter
    from dataprep.train.prototxt import _layer_entry, _Where

    sections = net_sections(ZOO / name)
    where = _Where(ZOO / name, "")
    for entry in sections["net"]:
        message = layer_message(entry, entry["bottom"], entry["top"])
        again = NetParameter()
        text_format.Parse(text_format.MessageToString(NetParameter(layer=[message])), again)
        assert _layer_entry(again.layer[0], where) == entry, entry["name"]
