"""Caffe's layers, written once for NumPy and CuPy: each layer takes arrays of either module
(``xp``) and uses only that module's operations, so the CPU tests run the GPU's code.

A layer is set up from its bottom shapes (which gives its top shapes, Caffe's rules, and
creates its parameters), then ``forward(bottoms, train)`` returns its tops and
``backward(top_diffs)`` returns the bottom diffs (None for inputs without a gradient, such
as labels) and fills ``grads`` for its parameters. Arrays keep the dtype they come in
(float32 for training, float64 for the gradient checks). Parameter shapes and order are
Caffe's, so ``.caffemodel`` blobs map one to one.

One module per family; this one holds the registry (``LAYERS``) and builds layers from
recipe entries.
"""

from __future__ import annotations

from typing import Sequence

from ...errors import UsageError
from .activations import Dropout, ReLU, Sigmoid, TanH
from .base import Layer, Shape, fill
from .convolution import Convolution
from .geometry import conv_out, pool_out
from .inner_product import Flatten, InnerProduct
from .losses import Accuracy, EuclideanLoss, Loss, SmoothL1Loss, Softmax, SoftmaxWithLoss
from .normalization import LRN, BatchNorm, Scale
from .pooling import Pooling

LAYERS: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (
        Convolution,
        Pooling,
        InnerProduct,
        ReLU,
        Sigmoid,
        TanH,
        Dropout,
        LRN,
        BatchNorm,
        Flatten,
        Scale,
        Softmax,
        EuclideanLoss,
        SmoothL1Loss,
        SoftmaxWithLoss,
        Accuracy,
    )
}
LOSSES = ("EuclideanLoss", "SmoothL1Loss", "SoftmaxWithLoss")

__all__ = [
    "LAYERS",
    "LOSSES",
    "Layer",
    "Loss",
    "Shape",
    "all_params",
    "conv_out",
    "fill",
    "make_layer",
    "pool_out",
    *LAYERS,
]


def make_layer(spec: dict) -> Layer:
    """A layer from its recipe entry: ``{name, type, ...params}``."""
    kind = spec.get("type")
    if kind not in LAYERS:
        raise UsageError(
            f"layer {spec.get('name')!r}: type {kind!r}: choose from {', '.join(sorted(LAYERS))}"
        )
    params = {k: v for k, v in spec.items() if k not in ("name", "type", "bottom", "top")}
    return LAYERS[kind](str(spec.get("name", kind)), **params)


def all_params(layers: Sequence[Layer]) -> list[tuple[Layer, int]]:
    """Every (layer, parameter index), in net order: the order a solver and a snapshot use."""
    return [(layer, i) for layer in layers for i in range(len(layer.params))]
