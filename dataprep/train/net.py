"""A net: layers wired by named blobs, as Caffe's NetParameter does, run forward and backward.

Each layer entry names its ``bottom`` and ``top`` blobs; left out, the bottom is the previous
layer's top (a loss or metric also takes the target blob) and the top is the layer's name.
``phase: TRAIN`` or ``TEST`` keeps a layer to one phase (Caffe's ``include``). Loss layers
(EuclideanLoss, SmoothL1Loss, SoftmaxWithLoss) start the backward pass with their
``loss_weight`` (default 1); a blob read by several layers sums their diffs.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable, Collection

import numpy as np

from ..errors import UsageError
from ..heap import fault_in, keep_freed_memory
from .layers import Layer, Loss, Shape, all_params, make_layer
from .layers.base import FILLING
from .layers.threads import one_blas_thread
from .memory import budget, charge
from .wiring import LOSSES, wire

PHASES = ("TRAIN", "TEST")
Timer = Callable[[Layer, str, float], object]


@dataclass
class Node:
    """One layer of the net with the blobs it reads and writes."""

    layer: Layer
    bottoms: list[str]
    tops: list[str]
    phase: str | None
    loss_weight: float


class Net:
    """The layers of a recipe's ``net`` over input blobs of the given shapes.

    ``inputs`` maps each input blob (``data``, ``label``, ``freq``, ...) to its batch shape;
    ``target`` is the blob losses and metrics compare with when their bottoms are not given.
    Parameters are created on ``xp``'s device from ``rng`` in layer order.
    """

    def __init__(
        self,
        specs: list[dict],
        inputs: dict[str, Shape],
        target: str = "label",
        xp: ModuleType = np,
        rng: np.random.Generator | None = None,
        dtype=np.float32,
        train: bool = True,
        fill: bool = True,
    ) -> None:
        """``train``: the memory estimate counts gradients and solver histories too;
        ``fill``: parameters from their fillers (else zeros, for weights loaded next)."""
        # the process runs a net from now on: its passes reuse the heap's pages
        kept = xp is np and keep_freed_memory(nets=True)
        self.xp = xp
        self.inputs = dict(inputs)
        token = FILLING.set(fill)
        try:
            with budget(train) as memory:
                for name, shape in inputs.items():
                    charge(name, _nbytes(shape, dtype), "input")
                self._build(specs, inputs, target, xp, rng, dtype)
        finally:
            FILLING.reset(token)
        memory.warn_available()
        if kept and train:  # a pass's blobs, their gradients and the weights' gradients
            blobs = sum(_nbytes(shape, dtype) for shape in self.shapes.values())
            fault_in(2 * blobs + sum(layer.params[i].nbytes for layer, i in self.params()))

    def _build(self, specs, inputs, target, xp, rng, dtype) -> None:
        self.links: list[tuple[Layer, int, Layer, int]] = []  # (user, index, owner, index)
        owners: dict[str, tuple[Layer, int]] = {}
        rng = rng or np.random.default_rng(0)
        shapes: dict[str, Shape] = dict(inputs)
        self.nodes: list[Node] = []
        learned: set[str] = set()  # names of layers with parameters: weights are matched by name
        for k, spec in enumerate(wire(specs, next(iter(inputs), "data"), target)):
            name, bottoms, tops = spec["name"], spec["bottom"], spec["top"]
            layer = make_layer(spec)
            phase = spec.get("phase")
            if phase is not None and phase not in PHASES:
                raise UsageError(f"net[{k}] ({name}): phase {phase!r}: choose TRAIN or TEST")
            missing = [b for b in bottoms if b not in shapes]
            if missing:
                known = ", ".join(sorted(shapes))
                raise UsageError(
                    f"net[{k}] ({name}): bottom {missing[0]!r} is no input or earlier top ({known})"
                )
            top_shapes = layer.setup([shapes[b] for b in bottoms], xp, rng, dtype)
            if layer.params:  # Caffe allows a name twice; weights by layer name do not
                if name in learned:
                    raise UsageError(f"net[{k}]: layer name {name!r} is used twice by layers with parameters")
                learned.add(name)
            for top, shape in zip(tops, top_shapes):
                if top not in bottoms:  # an in-place layer writes over its bottom
                    charge(name, _nbytes(shape, dtype), "blob")
            layer.propagate = any(b not in inputs for b in bottoms)
            layer.in_place = tops == bottoms and layer.propagate
            shapes.update(zip(tops, top_shapes))
            weight = float(spec.get("loss_weight", 1.0 if layer.type in LOSSES else 0.0))
            self.nodes.append(Node(layer, bottoms, tops, phase, weight))
            self._share(layer, spec, owners)
        self.shapes = shapes
        self.blobs: dict[str, Any] = {}

    def _share(self, layer: Layer, spec: dict, owners: dict[str, tuple[Layer, int]]) -> None:
        """Caffe's weight sharing: a parameter named (``param { name: "conv1_w" }``) as an
        earlier one is that blob; shapes must agree, and lr_mult where both give it."""
        for i, entry in enumerate(spec.get("param") or []):
            name = entry.get("name") if isinstance(entry, dict) else None
            if not name or i >= len(layer.params):
                continue
            if name not in owners:
                owners[name] = (layer, i)
                continue
            owner, j = owners[name]
            if tuple(owner.params[j].shape) != tuple(layer.params[i].shape):
                mine, theirs = tuple(layer.params[i].shape), tuple(owner.params[j].shape)
                raise UsageError(
                    f"layer {layer.name}: shared parameter {name!r} has shape {mine}, "
                    f"layer {owner.name}'s {theirs}"
                )
            if owner.lr_mult[j] != layer.lr_mult[i]:
                raise UsageError(
                    f"layer {layer.name}: shared parameter {name!r} has lr_mult {layer.lr_mult[i]:g}, "
                    f"layer {owner.name}'s {owner.lr_mult[j]:g} (Caffe refuses mismatched lr_mult)"
                )
            self.links.append((layer, i, owner, j))
            layer.params[i] = owner.params[j]

    def relink(self) -> None:
        """Shared parameters back to their owner's array (after weights were loaded into
        either one's place)."""
        for layer, i, owner, j in self.links:
            layer.params[i] = owner.params[j]

    @property
    def layers(self) -> list[Layer]:
        return [node.layer for node in self.nodes]

    def params(self) -> list[tuple[Layer, int]]:
        """Every learnable (layer, index) in net order; a shared parameter once, at its
        owner (its gradient the sum of every user's)."""
        shared = {(id(layer), i) for layer, i, _, _ in self.links}
        return [(layer, i) for layer, i in all_params(self.layers) if (id(layer), i) not in shared]

    def _active(self, train: bool) -> list[Node]:
        phase = "TRAIN" if train else "TEST"
        return [node for node in self.nodes if node.phase in (None, phase)]

    @staticmethod
    def _needed(nodes: list[Node], keep: Collection[str]) -> list[Node]:
        """The nodes the blobs ``keep`` depend on, in order: each that writes a needed blob
        (an in-place layer after its producer included), whose bottoms are then needed."""
        needed, chosen = set(keep), []
        for node in reversed(nodes):
            if needed & set(node.tops):
                chosen.append(node)
                needed |= set(node.bottoms)
        return chosen[::-1]

    def forward(
        self,
        batch: dict[str, Any],
        train: bool = True,
        timer: Timer | None = None,
        keep: Collection[str] | None = None,
    ) -> dict[str, float]:
        """Run the net on a batch (input blob name -> array); returns every loss and metric
        (scalar tops) by top name. ``timer(layer, "forward", seconds)`` sees each layer's time.

        With ``keep`` (the blobs wanted afterwards) the pass is forward only: only the
        layers those blobs depend on run (features of an early layer need none after it),
        every other blob is dropped after its last reader and each layer forgets what it
        kept for a backward pass, so the pass reuses its own freed memory. New memory costs
        this machine about 1.6 ms a MB: ResNet-50's predict on 32 photos in one batch
        touched 2.5 GB and spent 3 to 6 s in the kernel."""
        self.relink()
        self.blobs = {name: self.xp.asarray(batch[name]) for name in self.inputs}
        outputs: dict[str, float] = {}
        active = self._active(train) if keep is None else self._needed(self._active(train), keep)
        last = {b: i for i, node in enumerate(active) for b in node.bottoms} if keep is not None else {}
        with one_blas_thread(self.xp):
            for i, node in enumerate(active):
                started = self.clock(timer)
                tops = node.layer.forward([self.blobs[b] for b in node.bottoms], train)
                if timer:
                    timer(node.layer, "forward", self.clock(timer) - started)
                for name, value in zip(node.tops, tops):
                    self.blobs[name] = value
                    if isinstance(node.layer, Loss):
                        outputs[name] = float(value)
                if keep is not None:
                    node.layer.forget()
                    for b in node.bottoms:  # a blob read twice by one layer is dropped once
                        if last[b] == i and b not in keep and b not in node.tops:
                            self.blobs.pop(b, None)
        self._train = train
        return outputs

    def absolute_errors(self) -> dict[str, float]:
        """For each regression loss of the last forward pass, the mean absolute error of
        its prediction per target column (``loss_mae0``, ``loss_mae1``, ...): the number a
        regression is judged by, which Caffe's losses do not print."""
        errors: dict[str, float] = {}
        for node in self._active(self._train):
            if node.layer.type not in ("EuclideanLoss", "SmoothL1Loss"):
                continue
            pred = self.blobs[node.bottoms[0]]
            target = self.blobs[node.bottoms[1]].reshape(pred.shape)
            columns = self.xp.abs(pred - target).reshape(pred.shape[0], -1).mean(axis=0)
            for k, value in enumerate(columns.tolist()):
                errors[f"{node.tops[0]}_mae{k}"] = float(value)
        return errors

    def loss_weights(self) -> dict[str, float]:
        """Each loss top's weight (metrics have none)."""
        return {node.tops[0]: node.loss_weight for node in self.nodes if node.loss_weight}

    def loss(self, outputs: dict[str, float]) -> float:
        """The weighted sum of the losses a forward pass returned (what the solver lowers)."""
        return sum(
            node.loss_weight * outputs[node.tops[0]] for node in self._active(True) if node.loss_weight
        )

    def backward(
        self, timer: Timer | None = None, seed: dict[str, Any] | None = None, watch: Callable | None = None
    ) -> None:
        """Gradients of the weighted losses of the last (training) forward pass, into every
        layer's ``grads``; ``timer(layer, "backward", seconds)`` sees each layer's time.
        ``seed`` gives diffs of blobs to start from besides the losses (a net without a
        loss, timed as ``caffe time`` does); ``watch(node, bottom_diffs)`` sees each layer's
        result (Caffe's debug_info)."""
        diffs: dict[str, Any] = dict(seed or {})
        for node in self.nodes:  # a layer no loss depends on gets no gradient (not a stale one)
            node.layer.grads = [None] * len(node.layer.params)
        with one_blas_thread(self.xp):
            for node in reversed(self._active(self._train)):
                if isinstance(node.layer, Loss):
                    if not node.loss_weight:
                        continue
                    top_diffs = [self.xp.asarray(node.loss_weight, dtype=self.blobs[node.bottoms[0]].dtype)]
                else:
                    top_diffs = [diffs.pop(t, None) for t in node.tops]
                    if all(d is None for d in top_diffs):
                        continue  # nothing below a loss reads this layer
                    top_diffs = [
                        self.xp.zeros_like(self.blobs[t]) if d is None else d
                        for t, d in zip(node.tops, top_diffs)
                    ]
                started = self.clock(timer)
                bottom_diffs = node.layer.backward(top_diffs)
                if timer:
                    timer(node.layer, "backward", self.clock(timer) - started)
                if watch is not None:
                    watch(node, bottom_diffs)
                for name, diff in zip(node.bottoms, bottom_diffs):
                    if diff is not None and name not in self.inputs:
                        diffs[name] = diff if name not in diffs else diffs[name] + diff
        for layer, i, owner, j in self.links:  # each user's gradient adds into its owner's
            if layer.grads[i] is not None:
                owner.grads[j] = layer.grads[i] if owner.grads[j] is None else owner.grads[j] + layer.grads[i]

    def clock(self, timer: Timer | None) -> float:
        """Seconds for a layer timer, after the device finished its queued work (GPU)."""
        if timer is None:
            return 0.0
        if self.xp is not np:
            self.xp.cuda.Device().synchronize()
        return time.perf_counter()


def _nbytes(shape, dtype) -> int:
    return int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize
