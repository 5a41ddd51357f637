"""Caffe's remaining everyday layers: Clip, Swish, Threshold (value by value), Tile, Split,
Reduction and MVN (over axes), Embed and Parameter (learned tables), and the losses
MultinomialLogisticLoss and HingeLoss; each as Caffe's layer defines it, forward and
backward."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .losses import Loss, class_labels


class Clip(Layer):
    """min(max(x, min), max); the gradient passes where min <= x <= max (Caffe's)."""

    type = "Clip"

    def shapes(self, shapes):
        if "min" not in self.p or "max" not in self.p:
            raise UsageError(f"layer {self.name}: Clip takes both min and max")
        self.low, self.high = float(self.p["min"]), float(self.p["max"])
        return [tuple(shapes[0])]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self._x = bottoms[0]
        return [xp.clip(self._x, self.low, self.high)]

    def backward(self, top_diffs):
        x = self._x
        return [top_diffs[0] * ((x >= self.low) & (x <= self.high))]


class Swish(Layer):
    """x * sigmoid(beta x); Caffe's gradient: dy * (beta * y + sigmoid(beta x) * (1 - beta * y))."""

    type = "Swish"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self.beta = float(self.p.get("beta", 1.0))
        self._s = 1 / (1 + xp.exp(-self.beta * bottoms[0]))
        self._y = bottoms[0] * self._s
        return [self._y]

    def backward(self, top_diffs):
        y, s, b = self._y, self._s, self.beta
        return [top_diffs[0] * (b * y + s * (1 - b * y))]


class Threshold(Layer):
    """1 where x > threshold, else 0; no gradient (Caffe's backward is not implemented)."""

    type = "Threshold"

    def forward(self, bottoms, train=True):
        x = bottoms[0]
        return [(x > float(self.p.get("threshold", 0.0))).astype(x.dtype)]

    def backward(self, top_diffs):
        return [None]


class Tile(Layer):
    """The bottom repeated ``tiles`` times along ``axis`` (Caffe's: whole blocks, as np.tile)."""

    type = "Tile"

    def shapes(self, shapes):
        shape = tuple(shapes[0])
        self.axis = int(self.p.get("axis", 1)) % len(shape)
        self.tiles = int(self.p.get("tiles", 0))
        if self.tiles < 1:
            raise UsageError(f"layer {self.name}: tiles {self.tiles}: give 1 or more")
        return [shape[: self.axis] + (shape[self.axis] * self.tiles,) + shape[self.axis + 1 :]]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        reps = [1] * bottoms[0].ndim
        reps[self.axis] = self.tiles
        self._shape = bottoms[0].shape
        return [xp.tile(bottoms[0], reps)]

    def backward(self, top_diffs):
        shape, a = self._shape, self.axis
        split = top_diffs[0].reshape(shape[:a] + (self.tiles,) + shape[a:])
        return [split.sum(axis=a)]


class Split(Layer):
    """The bottom to several tops (Caffe inserts it where a blob feeds several layers); the
    gradients of the tops are summed."""

    type = "Split"

    def shapes(self, shapes):
        self.count = self.n_tops
        return [tuple(shapes[0])] * self.count

    def forward(self, bottoms, train=True):
        return [bottoms[0]] * self.count

    def backward(self, top_diffs):
        present = [d for d in top_diffs if d is not None]
        return [sum(present[1:], present[0]) if present else None]


REDUCTIONS = ("SUM", "ASUM", "SUMSQ", "MEAN")


class Reduction(Layer):
    """Caffe's Reduction: every axis from ``axis`` on reduced by ``operation`` (SUM, ASUM,
    SUMSQ, MEAN), times ``coeff``; the top has the axes before ``axis`` (a scalar for 0)."""

    type = "Reduction"

    def shapes(self, shapes):
        shape = tuple(shapes[0])
        self.operation = str(self.p.get("operation", "SUM")).upper()
        if self.operation not in REDUCTIONS:
            raise UsageError(
                f"layer {self.name}: operation {self.operation!r}: choose {', '.join(REDUCTIONS)}"
            )
        self.axis = int(self.p.get("axis", 0)) % max(len(shape), 1)
        self.coeff = float(self.p.get("coeff", 1.0))
        return [shape[: self.axis]]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        self._x = x
        flat = x.reshape(x.shape[: self.axis] + (-1,))
        op = self.operation
        value = {
            "SUM": lambda: flat.sum(axis=-1),
            "ASUM": lambda: xp.abs(flat).sum(axis=-1),
            "SUMSQ": lambda: (flat * flat).sum(axis=-1),
            "MEAN": lambda: flat.mean(axis=-1),
        }[op]()
        return [(value * self.coeff).astype(x.dtype)]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        x = self._x
        dy = (top_diffs[0] * self.coeff).reshape(x.shape[: self.axis] + (1,) * (x.ndim - self.axis))
        grad = {
            "SUM": lambda: xp.ones_like(x),
            "ASUM": lambda: xp.sign(x),
            "SUMSQ": lambda: 2 * x,
            "MEAN": lambda: xp.full_like(x, 1.0 / max(1, int(np.prod(x.shape[self.axis :])))),
        }[self.operation]()
        return [(dy * grad).astype(x.dtype)]


class MVN(Layer):
    """Mean (and with ``normalize_variance``, variance) normalization over each map, or with
    ``across_channels`` over each sample: Caffe's (x - mean) / (std + eps)."""

    type = "MVN"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        axes = tuple(range(1 if self.p.get("across_channels", False) else 2, x.ndim))
        centred = x - x.mean(axis=axes, keepdims=True)
        self._saved = (axes, None, centred)
        if not self.p.get("normalize_variance", True):
            return [centred]
        std = xp.sqrt((centred * centred).mean(axis=axes, keepdims=True))
        inv = 1 / (std + float(self.p.get("eps", 1e-9)))
        y = centred * inv
        self._saved = (axes, inv, y)
        return [y]

    def backward(self, top_diffs):
        axes, inv, y = self._saved
        dy = top_diffs[0]
        dy = dy - dy.mean(axis=axes, keepdims=True)
        if inv is None:
            return [dy]
        return [inv * (dy - y * (dy * y).mean(axis=axes, keepdims=True))]


class Embed(Layer):
    """A lookup table: each integer of the bottom (0..input_dim - 1) picks a row of the
    input_dim x num_output weights (plus the bias); the gradient goes into the rows picked."""

    type = "Embed"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.out, self.rows = int(self.p.get("num_output", 0)), int(self.p.get("input_dim", 0))
        if self.out < 1 or self.rows < 1:
            raise UsageError(f"layer {self.name}: give num_output and input_dim (1 or more)")
        self._param(
            xp,
            rng,
            (self.rows, self.out),
            self.p.get("weight_filler", {"type": "gaussian", "std": 0.01}),
            dtype,
            0,
        )
        if self.p.get("bias_term", True):
            self._param(xp, rng, (self.out,), self.p.get("bias_filler", {"type": "constant"}), dtype, 1)
        return super().setup(shapes)

    def shapes(self, shapes):
        return [tuple(shapes[0]) + (self.out,)]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        index = bottoms[0].astype(xp.int64)
        if index.size and (int(index.min()) < 0 or int(index.max()) >= self.rows):
            raise UsageError(f"layer {self.name}: an index outside 0..{self.rows - 1}")
        self._index = index
        y = self.params[0][index]
        return [y + self.params[1] if len(self.params) > 1 else y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy = top_diffs[0].reshape(-1, self.out)
        grad = xp.zeros_like(self.params[0])
        xp.add.at(grad, self._index.ravel(), dy)
        self.grads[0] = grad
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=0)
        return [None]  # the indices get no gradient (Caffe's)


class Parameter(Layer):
    """A learned blob of ``shape`` as the top, with no bottom (Caffe's ParameterLayer)."""

    type = "Parameter"
    n_bottoms = 0

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shape = self.p.get("shape") or {}
        dims = shape.get("dim") if isinstance(shape, dict) else shape
        self.shape = tuple(int(d) for d in (dims or ()))
        if not self.shape:
            raise UsageError(f"layer {self.name}: give shape {{ dim: ... }}")
        self._param(xp, rng, self.shape, {"type": "constant"}, dtype, 0)
        return super().setup(shapes)

    def shapes(self, shapes):
        return [self.shape]

    def forward(self, bottoms, train=True):
        return [self.params[0]]

    def backward(self, top_diffs):
        self.grads[0] = top_diffs[0]
        return []


class MultinomialLogisticLoss(Loss):
    """-sum(log(max(p[label], 1e-20))) / N over probabilities (a Softmax before it)."""

    type = "MultinomialLogisticLoss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        p, labels = bottoms
        n = p.shape[0]
        flat = p.reshape(n, -1)
        index = class_labels(self, labels, flat.shape[1])
        picked = xp.maximum(flat[xp.arange(n), index], 1e-20)
        self._saved = (flat, index, picked, p.shape)
        return [-xp.log(picked).sum() / n]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        flat, index, picked, shape = self._saved
        n = flat.shape[0]
        dp = xp.zeros_like(flat)
        dp[xp.arange(n), index] = -top_diffs[0] / (n * picked)
        return [dp.reshape(shape), None]


class HingeLoss(Loss):
    """Caffe's HingeLoss: with t = +1 for the label's output and -1 elsewhere, the sum of
    max(0, 1 - t x) (``norm`` L1) or of its squares (L2), over N."""

    type = "HingeLoss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x, labels = bottoms
        n = x.shape[0]
        flat = x.reshape(n, -1)
        index = class_labels(self, labels, flat.shape[1])
        sign = -xp.ones_like(flat)
        sign[xp.arange(n), index] = 1
        margin = xp.maximum(0, 1 - sign * flat)
        self.norm = str(self.p.get("norm", "L1")).upper()
        self._saved = (sign, margin, x.shape)
        value = margin.sum() if self.norm == "L1" else (margin * margin).sum()
        return [value / n]

    def backward(self, top_diffs):
        sign, margin, shape = self._saved
        n = shape[0]
        active = margin if self.norm == "L2" else (margin > 0)
        factor = 2 if self.norm == "L2" else 1
        return [(-factor * sign * active * top_diffs[0] / n).reshape(shape).astype(sign.dtype), None]
