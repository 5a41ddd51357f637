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
from .activations import ELU, AbsVal, Dropout, Exp, Log, Power, PReLU, ReLU, Sigmoid, TanH
from .base import Layer, Shape, fill
from .convolution import Convolution
from .deconvolution import Deconvolution
from .extra import (
    MVN,
    SPP,
    Clip,
    DummyData,
    Embed,
    HingeLoss,
    InfogainLoss,
    MultinomialLogisticLoss,
    Parameter,
    Reduction,
    Split,
    Swish,
    Threshold,
    Tile,
)
from .geometry import conv_out, pool_out
from .inner_product import Flatten, InnerProduct
from .losses import (
    Accuracy,
    ContrastiveLoss,
    EuclideanLoss,
    Loss,
    SigmoidCrossEntropyLoss,
    SmoothL1Loss,
    Softmax,
    SoftmaxWithLoss,
)
from .normalization import LRN, BatchNorm, Bias, Scale
from .pooling import Pooling
from .structure import ArgMax, Concat, Crop, Eltwise, Filter, Reshape, Silence, Slice

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
        Deconvolution,
        PReLU,
        ELU,
        AbsVal,
        Exp,
        Log,
        Power,
        Bias,
        SigmoidCrossEntropyLoss,
        ContrastiveLoss,
        Clip,
        Swish,
        Threshold,
        Tile,
        Split,
        Reduction,
        MVN,
        Embed,
        Parameter,
        MultinomialLogisticLoss,
        HingeLoss,
        InfogainLoss,
        SPP,
        DummyData,
        Concat,
        Slice,
        Eltwise,
        Filter,
        Reshape,
        Crop,
        Silence,
        ArgMax,
    )
}

__all__ = [
    "LAYERS",
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
    layer = LAYERS[kind](str(spec.get("name", kind)), **params)
    layer.n_tops = len(spec.get("top") or [None])  # Slice cuts its bottom into this many
    return layer


def all_params(layers: Sequence[Layer]) -> list[tuple[Layer, int]]:
    """Every (layer, parameter index), in net order: the order a solver and a snapshot use."""
    return [(layer, i) for layer in layers for i in range(len(layer.params))]
