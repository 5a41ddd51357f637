"""What every layer shares: the ``Layer`` interface, parameters with their multipliers, and
Caffe's fillers."""

from __future__ import annotations

import contextvars
import math
from types import ModuleType
from typing import Any

import numpy as np

from ...errors import UsageError
from ..memory import charge

Shape = tuple[int, ...]


FILLING: contextvars.ContextVar[bool] = contextvars.ContextVar("filling", default=True)


def fill(xp: ModuleType, rng: np.random.Generator, shape: Shape, filler: dict, dtype) -> Any:
    """A parameter drawn on the CPU from ``rng`` (so CPU and GPU runs start alike) and moved
    to ``xp``. Fillers as Caffe's: constant(value), gaussian(std), uniform(min, max), xavier
    and msra (fan-in);
    and two Caffe lacks, for fixed kernels: range(start, step) and values([...])."""
    kind = filler.get("type", "constant")
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if kind == "constant":
        values = np.full(shape, filler.get("value", 0.0))
    elif kind == "gaussian":
        values = rng.normal(filler.get("mean", 0.0), filler.get("std", 1.0), shape)
    elif kind == "uniform":
        values = rng.uniform(filler.get("min", 0.0), filler.get("max", 1.0), shape)
    elif kind == "xavier":
        limit = math.sqrt(3.0 / fan_in)
        values = rng.uniform(-limit, limit, shape)
    elif kind == "msra":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    elif kind == "range":  # start, start + step, ... in the blob's order: a fixed kernel 0..99
        values = filler.get("start", 0.0) + filler.get("step", 1.0) * np.arange(int(np.prod(shape)))
        values = values.reshape(shape)
    elif kind == "values":
        values = np.asarray(filler.get("values") or [], np.float64)
        if values.size != int(np.prod(shape)):
            raise UsageError(f"filler values: {values.size} given for a blob of shape {shape}")
        values = values.reshape(shape)
    else:
        raise UsageError(
            f"filler type {kind!r}: choose from constant, gaussian, uniform, xavier, msra, range, values"
        )
    return xp.asarray(values.astype(dtype))


class Layer:
    """The common part: name, parameters with their lr/decay multipliers, gradients."""

    type = ""
    n_bottoms: int | None = 1  # None: any number
    n_tops = 1  # the tops the net gives it (make_layer sets it from the entry)
    propagate = True  # the net turns it off where the bottom is an input: no diff to compute
    in_place = False  # the net sets it where the top is its bottom: inference may write over it

    def __init__(self, name: str, **params: Any) -> None:
        self.name = name
        self.p = params
        self.params: list[Any] = []
        self.grads: list[Any] = []
        self.lr_mult: list[float] = []
        self.decay_mult: list[float] = []

    def setup(
        self,
        shapes: list[Shape],
        xp: ModuleType = np,
        rng: np.random.Generator | None = None,
        dtype=np.float32,
    ) -> list[Shape]:
        """Check the bottoms, create the parameters; returns the top shapes."""
        if self.n_bottoms is not None and len(shapes) != self.n_bottoms:
            raise UsageError(
                f"layer {self.name} ({self.type}) takes {self.n_bottoms} bottom(s), got {len(shapes)}"
            )
        return self.shapes(shapes)

    def shapes(self, shapes: list[Shape]) -> list[Shape]:
        return [shapes[0]]

    def _param(self, xp, rng, shape: Shape, filler: dict, dtype, index: int) -> None:
        mults = self.p.get("param") or []
        mult = mults[index] if index < len(mults) else {}
        charge(self.name, int(np.prod(shape, dtype=np.float64)) * np.dtype(dtype).itemsize, "param")
        if FILLING.get():
            self.params.append(fill(xp, rng or np.random.default_rng(0), shape, filler, dtype))
        else:  # weights are loaded next: drawing 61 M gaussians first took CaffeNet 1.9 s
            self.params.append(xp.zeros(shape, dtype))
        self.grads.append(None)
        self.lr_mult.append(float(mult.get("lr_mult", 1.0)))
        self.decay_mult.append(float(mult.get("decay_mult", 1.0)))

    def forward(self, bottoms: list, train: bool = True) -> list:
        raise NotImplementedError

    # where forward passes keep what their backward needs (blobs among it)
    STATE = (
        "_saved",
        "_x",
        "_y",
        "_mask",
        "_p",
        "_s",
        "_bottoms",
        "_inner",
        "_diff",
        "_grad",
        "_items",
        "_index",
    )

    def forget(self) -> None:
        """Drop what the last forward pass kept for a backward one (``STATE``): a
        forward-only pass frees each blob after its last reader."""
        for name in self.STATE:
            if name in self.__dict__:
                setattr(self, name, None)

    def backward(self, top_diffs: list) -> list:
        raise NotImplementedError


def positive_outputs(layer: Layer) -> int:
    """A layer's ``num_output``; UsageError naming the layer when it is under 1."""
    out = int(layer.p["num_output"])
    if out < 1:
        raise UsageError(f"layer {layer.name}: num_output {out}: give 1 or more")
    return out
