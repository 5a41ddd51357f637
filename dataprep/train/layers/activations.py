"""Layers that change values one by one: ReLU, Sigmoid, TanH, and Dropout."""

from __future__ import annotations

import numpy as np

from ...transforms import get_xp
from .base import Layer
from .threads import in_parts


class ReLU(Layer):
    """max(x, 0); the gradient passes where the output is positive. Threaded by chunks: on
    the first layers it is a pass over the largest blobs."""

    type = "ReLU"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        y = xp.empty_like(x)
        in_parts(x, lambda _, part: xp.maximum(x[part], 0, out=y[part]))
        self._y = y
        return [y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy, y = top_diffs[0], self._y
        dx = xp.empty_like(dy)
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
