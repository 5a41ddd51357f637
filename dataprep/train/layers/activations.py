"""Layers that change values one by one: ReLU (leaky with ``negative_slope``), PReLU, ELU,
Sigmoid, TanH, AbsVal, Exp, Log, Power, and Dropout."""

from __future__ import annotations

import math

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .threads import compiled_loops, in_parts


class ReLU(Layer):
    """max(x, 0); the gradient passes where the output is positive. Threaded by chunks: on
    the first layers it is a pass over the largest blobs. In inference an in-place ReLU
    (Caffe's usual ``top: "conv1"`` over ``bottom: "conv1"``) writes over its bottom."""

    type = "ReLU"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        self.slope = float(self.p.get("negative_slope", 0.0))
        if self.slope:  # leaky: x where positive, slope * x elsewhere
            self._x = x
            return [xp.where(x > 0, x, x * self.slope)]
        y = x if self.in_place and not train else xp.empty_like(x)
        in_parts(x, lambda _, part: xp.maximum(x[part], 0, out=y[part]))
        self._y = y
        return [y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy = top_diffs[0]
        if self.slope:
            return [dy * xp.where(self._x > 0, 1, self.slope).astype(dy.dtype)]
        y = self._y
        dx = xp.empty_like(dy)
        loops = compiled_loops(xp)
        if loops:  # one pass: a 118 MB blob on one core 38 -> 23 ms
            dy, y = xp.ascontiguousarray(dy), xp.ascontiguousarray(y)
            in_parts(dy, lambda _, part: loops.relu_backward(dy[part], y[part], dx[part]))
        else:
            in_parts(dy, lambda _, part: xp.multiply(dy[part], y[part] > 0, out=dx[part]))
        return [dx]


class Sigmoid(Layer):
    type = "Sigmoid"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self._y = 1 / (1 + xp.exp(-bottoms[0]))
        return [self._y]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._y * (1 - self._y)]


class TanH(Layer):
    type = "TanH"

    def forward(self, bottoms, train=True):
        self._y = get_xp(bottoms[0]).tanh(bottoms[0])
        return [self._y]

    def backward(self, top_diffs):
        return [top_diffs[0] * (1 - self._y * self._y)]


class Dropout(Layer):
    """Caffe's inverted dropout: in training, zero with probability ``dropout_ratio`` and
    scale the rest by 1 / (1 - ratio); identity in testing. The mask comes from the layer's
    own generator (seeded by the net), drawn on the CPU."""

    type = "Dropout"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.ratio = float(self.p.get("dropout_ratio", 0.5))
        self.rng = rng or np.random.default_rng(0)
        return super().setup(shapes)

    def forward(self, bottoms, train=True):
        x = bottoms[0]
        if not train or not self.ratio:
            self._mask = None
            return [x]
        xp = get_xp(x)
        keep = self.rng.random(x.shape) >= self.ratio
        self._mask = xp.asarray(keep.astype(x.dtype) / (1 - self.ratio))
        return [x * self._mask]

    def backward(self, top_diffs):
        return [top_diffs[0] if self._mask is None else top_diffs[0] * self._mask]


class PReLU(Layer):
    """max(x, 0) + a * min(x, 0) with ``a`` learned per channel (one value with
    ``channel_shared``); ``filler`` default constant 0.25, as Caffe's."""

    type = "PReLU"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shape = tuple(shapes[0])
        self.shared = bool(self.p.get("channel_shared", False))
        size = 1 if self.shared else (shape[1] if len(shape) > 1 else 1)
        self._param(xp, rng, (size,), self.p.get("filler", {"type": "constant", "value": 0.25}), dtype, 0)
        return super().setup(shapes)

    def _slope(self, x):
        return self.params[0].reshape((1, -1) + (1,) * (x.ndim - 2)) if not self.shared else self.params[0][0]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = self._x = bottoms[0]
        return [xp.maximum(x, 0) + self._slope(x) * xp.minimum(x, 0)]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy, x = top_diffs[0], self._x
        negative = xp.minimum(x, 0)
        axes = tuple(k for k in range(dy.ndim) if self.shared or k != 1)
        self.grads[0] = (dy * negative).sum(axis=axes).reshape(self.params[0].shape)
        return [dy * xp.where(x > 0, 1, self._slope(x)).astype(dy.dtype)]


class ELU(Layer):
    """x where x > 0, else alpha * (exp(x) - 1)."""

    type = "ELU"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self.alpha = float(self.p.get("alpha", 1.0))
        x = self._x = bottoms[0]
        self._y = xp.where(x > 0, x, self.alpha * (xp.exp(xp.minimum(x, 0)) - 1))
        return [self._y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        return [top_diffs[0] * xp.where(self._x > 0, 1, self._y + self.alpha)]


class AbsVal(Layer):
    type = "AbsVal"

    def forward(self, bottoms, train=True):
        self._x = bottoms[0]
        return [get_xp(bottoms[0]).abs(bottoms[0])]

    def backward(self, top_diffs):
        return [top_diffs[0] * get_xp(self._x).sign(self._x)]


def _base(layer: Layer) -> float:
    """Exp's and Log's ``base``: -1 (the default) is e."""
    base = float(layer.p.get("base", -1.0))
    if base != -1 and base <= 0:
        raise UsageError(f"layer {layer.name}: base {base}: give a positive base, or -1 for e")
    return math.e if base == -1 else base


class Exp(Layer):
    """base ^ (shift + scale * x)."""

    type = "Exp"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self.ln_base = math.log(_base(self))
        self.scale, shift = float(self.p.get("scale", 1.0)), float(self.p.get("shift", 0.0))
        self._y = xp.exp(self.ln_base * (shift + self.scale * bottoms[0]))
        return [self._y]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._y * (self.ln_base * self.scale)]


class Log(Layer):
    """log_base(shift + scale * x)."""

    type = "Log"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self.ln_base = math.log(_base(self))
        self.scale, shift = float(self.p.get("scale", 1.0)), float(self.p.get("shift", 0.0))
        self._inner = shift + self.scale * bottoms[0]
        return [xp.log(self._inner) / self.ln_base]

    def backward(self, top_diffs):
        return [top_diffs[0] * self.scale / (self._inner * self.ln_base)]


class Power(Layer):
    """(shift + scale * x) ^ power."""

    type = "Power"

    def forward(self, bottoms, train=True):
        self.power = float(self.p.get("power", 1.0))
        self.scale, shift = float(self.p.get("scale", 1.0)), float(self.p.get("shift", 0.0))
        self._inner = shift + self.scale * bottoms[0]
        return [self._inner**self.power]

    def backward(self, top_diffs):
        if self.power == 1:
            return [top_diffs[0] * self.scale]
        return [top_diffs[0] * (self.power * self.scale) * self._inner ** (self.power - 1)]
