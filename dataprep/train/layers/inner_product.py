"""InnerProduct and the layers that only reshape: Flatten."""

from __future__ import annotations

import numpy as np

from ...transforms import get_xp
from .base import Layer, positive_outputs
from .threads import chunks, run_parts

ROWS = 16  # the least rows of a product part: fewer and BLAS runs far below its rate
SMALL = 1 << 20  # multiply-adds below which a product runs whole in the calling thread


def _parts(xp, n: int, work: int) -> list[slice]:
    """Up to four fixed parts of ``n`` rows (from the shape alone, not the core count); one
    when the product's ``work`` (multiply-adds) is too small for a thread's hand-over."""
    return chunks(xp, n, max(ROWS, -(-n // 4)) if work >= SMALL else n)


def _halves(xp, n: int, work: int) -> list[slice]:
    """Two fixed halves of ``n`` columns of a product's result (one when the ``work`` is too
    small for a hand-over). Split by the batch's rows, every part read all the weights with
    few rows to use them on; by the outputs' columns each reads half (CaffeNet's fc6 at
    batch 32, ms: forward 30.4 -> 20.8, data gradient 30.4 -> 23.6; LeNet's ip1 1.2 -> 0.6)."""
    return chunks(xp, n, -(-n // 2) if work >= SMALL else n)


class InnerProduct(Layer):
    """y = x W^T + b over the flattened bottom; weights (num_output, inputs), bias (num_output)."""

    type = "InnerProduct"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shape = tuple(shapes[0])
        self.out = positive_outputs(self)
        self.axis = int(self.p.get("axis", 1)) % len(shape)  # flattened from here on
        self._param(
            xp,
            rng,
            (self.out, int(np.prod(shape[self.axis :]))),
            self.p.get("weight_filler", {"type": "gaussian", "std": 0.005}),
            dtype,
            0,
        )
        if self.p.get("bias_term", True):
            self._param(xp, rng, (self.out,), self.p.get("bias_filler", {"type": "constant"}), dtype, 1)
        return super().setup([shape])

    def shapes(self, shapes):
        return [tuple(shapes[0][: self.axis]) + (self.out,)]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0].reshape(int(np.prod(bottoms[0].shape[: self.axis])), -1)
        self._saved = (x, bottoms[0].shape)
        w = self.params[0]
        y = xp.empty((len(x), self.out), x.dtype)

        def product(_, cols):  # the outputs in halves; the bias added in place
            xp.matmul(x, w[cols].T, out=y[:, cols])
            if len(self.params) > 1:
                y[:, cols] += self.params[1][cols]

        run_parts(_halves(xp, self.out, w.size * len(x)), product)
        return [y.reshape(bottoms[0].shape[: self.axis] + (self.out,))]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        x, shape = self._saved
        dy = top_diffs[0].reshape(len(x), self.out)
        w = self.params[0]
        dw = xp.empty_like(w)
        dx = xp.empty((len(x), w.shape[1]), dy.dtype) if self.propagate else None
        work = w.size * len(x)
        weight_parts, input_halves = _parts(xp, self.out, work), _halves(xp, w.shape[1], work)

        def product(index, part):  # dW by parts of its rows (each a whole sum), then dx by halves
            if index < len(weight_parts):
                xp.matmul(dy[:, part].T, x, out=dw[part])
            else:
                xp.matmul(dy, w[:, part], out=dx[:, part])

        run_parts(weight_parts + (input_halves if dx is not None else []), product)
        self.grads[0] = dw
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=0)
        return [None if dx is None else dx.reshape(shape)]


class Flatten(Layer):
    """Axes ``axis`` (default 1) to ``end_axis`` (default the last) made one."""

    type = "Flatten"

    def shapes(self, shapes):
        shape = tuple(shapes[0])
        self.start = int(self.p.get("axis", 1)) % len(shape)
        self.end = int(self.p.get("end_axis", -1)) % len(shape)
        return [self._flat(shape)]

    def _flat(self, shape):
        return shape[: self.start] + (int(np.prod(shape[self.start : self.end + 1])),) + shape[self.end + 1 :]

    def forward(self, bottoms, train=True):
        self._shape = bottoms[0].shape
        return [bottoms[0].reshape(self._flat(self._shape))]

    def backward(self, top_diffs):
        return [top_diffs[0].reshape(self._shape)]
