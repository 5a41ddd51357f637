"""How a net's layer entries are wired by named blobs (Caffe's NetParameter): the layer
kinds that change the wiring and ``wire``. Apart from the layers themselves, so reading a
model's wiring (predict's start-up on a kept graph) imports none of them."""

from __future__ import annotations

from typing import Any

LOSSES = (
    "EuclideanLoss",
    "SmoothL1Loss",
    "SoftmaxWithLoss",
    "SigmoidCrossEntropyLoss",
    "ContrastiveLoss",
    "MultinomialLogisticLoss",
    "HingeLoss",
    "InfogainLoss",
)
SOURCES = ("Parameter", "DummyData")  # layers with no bottom
SINKS = ("Silence",)  # layers with no top
HEADS = (*LOSSES, "Accuracy")  # layers that compare with the target: losses and metrics


def wire(specs: list[dict], first: str, target: str) -> list[dict]:
    """Each layer entry with its name, bottoms and tops made explicit: left out, the name is
    the type and position, the bottom is the previous layer's top (a loss or metric also
    takes ``target``) and the top is the name; ``first`` is what the first layer reads."""
    wired, previous = [], first
    for k, spec in enumerate(specs):
        name = str(spec.get("name") or f"{spec.get('type', 'layer')}{k}")
        head = spec.get("type") in HEADS
        bottoms = _names(spec.get("bottom")) or ([previous, target] if head else [previous])
        if spec.get("type") in SOURCES:  # a layer that makes its top from nothing
            bottoms = []
        tops = _names(spec.get("top")) or ([] if spec.get("type") in SINKS else [name])
        wired.append({**spec, "name": name, "bottom": bottoms, "top": tops})
        if not head and tops:
            previous = tops[0]
    return wired


def _names(value: Any) -> list[str]:
    if value is None:
        return []
    return [str(v) for v in value] if isinstance(value, (list, tuple)) else [str(value)]
