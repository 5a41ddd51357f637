"""Deconvolution: Caffe's convolution transpose (the backward pass of a convolution run
forward), for upsampling in fully convolutional nets."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .convolution import grouped_outputs, learned_kernel
from .geometry import padded_windows, scatter_windows, square, window


class Deconvolution(Layer):
    """y = the transpose of a convolution with these weights: weights (channels,
    num_output / group, k, k) as Caffe stores them, then the bias (num_output). Output size
    stride * (H - 1) + k - 2 * pad. Forward scatters each input pixel's k x k
    contribution (col2im: ``scatter_windows``); backward gathers windows (im2col:
    ``padded_windows``)."""

    type = "Deconvolution"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        ((n, c, h, w),) = shapes = [tuple(s) for s in shapes]
        self.win = window(self.p, self.name)
        if square(self.win) is None:
            raise UsageError(
                f"layer {self.name}: Deconvolution runs square windows only (kernel_h = kernel_w, ...)"
            )
        self.k, self.stride, self.pad = square(self.win)
        self.out, self.group = grouped_outputs(self, c)
        oh, ow = (self.stride * (size - 1) + self.k - 2 * self.pad for size in (h, w))
        if min(oh, ow) < 1:
            raise UsageError(f"layer {self.name}: pad {self.pad} leaves no output of its {h}x{w} input")
        learned_kernel(self, xp, rng, dtype, (c, self.out // self.group, self.k, self.k))
        return super().setup(shapes)

    def shapes(self, shapes):
        n, _, h, w = shapes[0]
        k, s, p = self.k, self.stride, self.pad
        return [(n, self.out, s * (h - 1) + k - 2 * p, s * (w - 1) + k - 2 * p)]

    def _weights(self):
        """(groups, C / groups, num_output / groups * k * k)."""
        c = self.params[0].shape[0]
        return self.params[0].reshape(self.group, c // self.group, -1)

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = self._x = bottoms[0]
        n, c, h, w = x.shape
        k, g = self.k, self.group
        o = self.out // g
        # columns (groups, O/g * k * k, N * H * W): each input pixel's k x k contribution
        xg = x.reshape(n, g, c // g, h * w).transpose(1, 2, 0, 3).reshape(g, c // g, n * h * w)
        cols = xp.matmul(self._weights().transpose(0, 2, 1), xg).reshape(g * o, k, k, n, h, w)
        # scattered as a convolution's input gradient: the windows are the input pixels
        (_, _, oh, ow) = self.shapes([x.shape])[0]
        y = scatter_windows(cols.transpose(3, 0, 4, 5, 1, 2), self.win, (n, self.out, oh, ow), (h, w))
        if len(self.params) > 1:
            y = y + self.params[1].reshape(1, -1, 1, 1)
        return [xp.ascontiguousarray(y)]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy = top_diffs[0]
        x = self._x
        n, c, h, w = x.shape
        k, g = self.k, self.group
        o = self.out // g
        # im2col of the output's gradient: (groups, O/g * k * k, N * H * W)
        view = padded_windows(dy, self.win, (h, w))  # (N, O, H, W, k, k)
        cols = view.transpose(1, 4, 5, 0, 2, 3).reshape(g, o * k * k, n * h * w)
        xg = x.reshape(n, g, c // g, h * w).transpose(1, 2, 0, 3).reshape(g, c // g, n * h * w)
        self.grads[0] = xp.matmul(xg, cols.transpose(0, 2, 1)).reshape(self.params[0].shape)
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=(0, 2, 3))
        if not self.propagate:
            return [None]
        dx = xp.matmul(self._weights(), cols).reshape(g, c // g, n, h, w).transpose(2, 0, 1, 3, 4)
        return [dx.reshape(n, c, h, w)]
