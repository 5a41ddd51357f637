"""``caffe time`` for dataprep's engine: a net's forward and backward passes on random inputs
of its input shapes, timed layer by layer after a warm-up.

As in Caffe, the backward pass computes every parameter gradient and a bottom gradient only
where a layer below needs it; a net without a loss (a deploy net) starts its backward pass
from random diffs of its outputs, so its parameter gradients are all computed too.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType

import numpy as np

from ..errors import DataprepError, UsageError
from .net import Net
from .wiring import HEADS, wire


@dataclass
class LayerTime:
    name: str
    type: str
    forward_ms: float = 0.0
    backward_ms: float = 0.0


@dataclass
class Timing:
    """Average milliseconds per iteration, by layer (net order) and in all."""

    model: str
    phase: str
    batch: int
    iterations: int
    layers: list[LayerTime] = field(default_factory=list)
    forward_ms: float = 0.0
    backward_ms: float = 0.0
    forward_backward_ms: float = 0.0
    total_ms: float = 0.0
    iteration_ms: list[float] = field(default_factory=list)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


@dataclass
class Bench:
    """A net to time with its random inputs: ``batch`` maps every input blob to an array."""

    name: str
    net: Net
    batch: dict[str, np.ndarray]
    train: bool


def bench_net(
    path: str | Path,
    batch: int | None = None,
    phase: str = "train",
    shape: tuple[int, ...] | None = None,
    xp: ModuleType = np,
    seed: int = 0,
) -> Bench:
    """MODEL (recipe, net prototxt or snapshot) as a net over random inputs. The input's
    C x H x W comes from a deploy net's Input layer, else from ``shape``, else from the
    model's training (or validation) store after its crop (a net whose DummyData layers
    make its inputs needs none); ``batch`` defaults to the
    model's own. Labels are drawn within the classifier's range; regression targets match
    the prediction's shape."""
    from .inference import model_sections

    train = phase == "train"
    sections, _ = model_sections(path)
    data = sections.get("data") or {}
    inputs = {k: tuple(v) for k, v in (sections.get("inputs") or {}).items()}
    input_name = data.get("input") or (next(iter(inputs)) if inputs else "data")
    target = data.get("target", "label")
    if not data and not inputs and any(s.get("type") == "DummyData" for s in sections["net"]):
        # Caffe's benchmark form: DummyData layers make every input; nothing to draw
        net = Net(sections["net"], {}, target=target, xp=xp, rng=np.random.default_rng(seed), train=train)
        return Bench(str(sections.get("name") or Path(path).stem), net, {}, train)
    if input_name in inputs:
        default_batch, chw = inputs[input_name][0], shape or inputs[input_name][1:]
    else:
        default_batch = (
            data.get("batch_size", 50) if train else data.get("val_batch_size") or data.get("batch_size", 50)
        )
        chw = shape or store_shape(path, data, train)
    n = int(batch or default_batch)
    specs = wire(sections["net"], input_name, target)
    heads = [s for s in specs if s["type"] in HEADS and s.get("phase") != ("TEST" if train else "TRAIN")]
    shapes = {name: (n, *s[1:]) for name, s in inputs.items()}
    shapes[input_name] = (n, *chw)
    if heads:
        shapes.setdefault(target, _target_shape(specs, heads, shapes, target, n))
    net = Net(sections["net"], shapes, target=target, xp=xp, rng=np.random.default_rng(seed))
    rng = np.random.default_rng(seed)
    arrays = {name: _normal(rng, s) for name, s in shapes.items() if name != target}
    if target in shapes:
        arrays[target] = _targets(net, heads, target, n, rng)
    return Bench(str(sections.get("name") or Path(path).stem), net, arrays, train)


def store_shape(path, data: dict, train: bool = True) -> tuple[int, ...]:
    """C x H x W of the model's training (or validation) records after the crop."""
    from .loader import open_samples
    from .recipe import Source, build, parse_source

    key = "train" if train or not data.get("val") else "val"
    if not data.get(key):
        raise UsageError(f"{path}: the model names no input shape: give --shape CxHxW")
    source = build(Source, parse_source(data[key], f"data.{key}"), f"data.{key}")
    try:
        samples = open_samples(source)
    except DataprepError as exc:
        raise UsageError(f"{path}: no input shape: {exc} (give --shape CxHxW)") from None
    try:
        image = samples.read([0])[0][0]
    finally:
        samples.close()
    h, w, c = image.shape
    crop = int((data.get("transform") or {}).get("crop_size") or 0)
    return (c, crop, crop) if crop else (c, h, w)


def _target_shape(specs, heads, shapes, target: str, n: int) -> tuple[int, ...]:
    """The target's shape: one label per input for a classifier, the prediction's shape
    for a regression (its loss checks them against each other at set-up), found from the
    net without its heads."""
    regression = [
        h for h in heads if target in h["bottom"] and h["type"] not in ("SoftmaxWithLoss", "Accuracy")
    ]
    if not regression:
        return (n,)
    trunk = Net(
        [s for s in specs if s not in heads], {k: v for k, v in shapes.items() if k != target}, train=False
    )
    return tuple(trunk.shapes[regression[0]["bottom"][0]])


def _targets(net: Net, heads: list[dict], target: str, n: int, rng) -> np.ndarray:
    """Random targets a net's heads accept: class labels within the classifier's outputs,
    or values of the prediction's shape for a regression."""
    for spec in heads:
        if target not in spec["bottom"]:
            continue
        prediction = net.shapes[spec["bottom"][0]]
        if spec["type"] in ("SoftmaxWithLoss", "Accuracy"):
            return rng.integers(0, int(np.prod(prediction[1:2])), n).astype(np.float32)
        return rng.random(prediction, dtype=np.float32)
    return np.zeros(n, np.float32)


def time_net(bench: Bench, iterations: int = 50, warmup: int = 1) -> Timing:
    """Average forward and backward milliseconds of each layer over ``iterations``, after
    ``warmup`` untimed iterations; ``Total Time`` covers every timed iteration."""
    net, xp = bench.net, bench.net.xp
    nodes = [node for node in net.nodes if node.phase in (None, "TRAIN" if bench.train else "TEST")]
    spent = {id(node.layer): [0.0, 0.0] for node in nodes}

    def timer(layer, direction: str, seconds: float) -> None:
        spent[id(layer)][direction == "backward"] += seconds

    has_loss = any(node.loss_weight for node in nodes)
    outputs = _outputs(nodes)
    seed_rng = np.random.default_rng(1)
    forward = backward = 0.0
    per_iteration = []
    total_start = 0.0
    for it in range(warmup + iterations):
        if it == warmup:
            for value in spent.values():
                value[:] = [0.0, 0.0]
            forward = backward = 0.0
            per_iteration = []
            total_start = time.perf_counter()
        started = time.perf_counter()
        net.forward(bench.batch, bench.train, timer)
        middle = net.clock(timer)
        seed = None
        if not has_loss:
            seed = {
                name: xp.asarray(seed_rng.standard_normal(net.blobs[name].shape).astype(np.float32))
                for name in outputs
            }
        net.backward(timer, seed)
        done = net.clock(timer)
        forward += middle - started
        backward += done - middle
        per_iteration.append((done - started) * 1e3)
    total = (time.perf_counter() - total_start) * 1e3
    return Timing(
        model=bench.name,
        phase="train" if bench.train else "test",
        batch=len(next(iter((bench.batch or net.blobs).values()))),  # DummyData's tops, if no input
        iterations=iterations,
        layers=[
            LayerTime(
                node.layer.name, node.layer.type, *(1e3 * s / iterations for s in spent[id(node.layer)])
            )
            for node in nodes
        ],
        forward_ms=1e3 * forward / iterations,
        backward_ms=1e3 * backward / iterations,
        forward_backward_ms=total / iterations,
        total_ms=total,
        iteration_ms=per_iteration,
    )


def _normal(rng: np.random.Generator, shape) -> np.ndarray:
    return rng.standard_normal(shape, dtype=np.float32)


def _outputs(nodes) -> list[str]:
    """The blobs no later layer reads (in-place layers write their bottom's name)."""
    read = {b for node in nodes for b in node.bottoms}
    last: dict[str, None] = {}
    for node in nodes:
        for top in node.tops:
            if top not in node.bottoms and top not in read:
                last[top] = None
    return list(last)


def caffe_lines(timing: Timing) -> list[str]:
    """Caffe's ``caffe time`` report, line for line (without the log prefix)."""
    lines = [
        "*** Benchmark begins ***",
        f"Testing for {timing.iterations} iterations.",
    ]
    lines += [
        f"Iteration: {k + 1} forward-backward time: {ms:.5g} ms." for k, ms in enumerate(timing.iteration_ms)
    ]
    lines.append("Average time per layer: ")
    for layer in timing.layers:
        lines.append(f"{layer.name:>10}\tforward: {layer.forward_ms:.5g} ms.")
        lines.append(f"{layer.name:>10}\tbackward: {layer.backward_ms:.5g} ms.")
    lines += [
        f"Average Forward pass: {timing.forward_ms:.5g} ms.",
        f"Average Backward pass: {timing.backward_ms:.5g} ms.",
        f"Average Forward-Backward: {timing.forward_backward_ms:.5g} ms.",
        f"Total Time: {timing.total_ms:.5g} ms.",
        "*** Benchmark ends ***",
    ]
    return lines
