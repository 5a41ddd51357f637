"""Deconvolution: Caffe's convolution transpose (the backward pass of a convolution run
forward), for upsampling in fully convolutional nets."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .convolution import grouped_outputs, learned_kernel
from .geometry import columns, spatial, uncolumns


class Deconvolution(Layer):
    """y = the transpose of a convolution with these weights: weights (channels,
    num_output / group, *kernel) as Caffe stores them, then the bias (num_output). Output
    size stride * (H - 1) + dilation * (k - 1) + 1 - 2 * pad per spatial axis, over any
    number of them and any channel ``axis`` as Caffe's BaseConvolutionLayer. Forward
    scatters each input pixel's kernel-sized contribution (col2im: ``uncolumns``);
    backward gathers the windows (im2col: ``columns``)."""

    type = "Deconvolution"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shapes = [tuple(s) for s in shapes]
        self.geo = geo = spatial(self.p, self.name, shapes[0])
        num, c, *sizes = geo.images(shapes[0])
        self.out, self.group = grouped_outputs(self, c)
        if min(self._out(sizes), default=1) < 1:
            raise UsageError(f"layer {self.name}: pad {geo.pad} leaves no output of its {sizes} input")
        learned_kernel(self, xp, rng, dtype, (c, self.out // self.group, *geo.kernel))
        return super().setup(shapes)

    def _out(self, sizes) -> tuple[int, ...]:
        geo = self.geo
        return tuple(s * (n - 1) + e - 2 * p for n, s, e, p in zip(sizes, geo.stride, geo.extents(), geo.pad))

    def shapes(self, shapes):
        shape, axis = tuple(shapes[0]), self.geo.axis
        return [(*shape[:axis], self.out, *self._out(shape[axis + 1 :]))]

    def _inputs(self, x):
        """x as (groups, C / groups, images * prod(sizes)), and its (images, C, *sizes)."""
        xp = get_xp(x)
        num, c, *sizes = dims = self.geo.images(x.shape)
        g = self.group
        xg = xp.ascontiguousarray(x.reshape(num, g, c // g, -1).transpose(1, 2, 0, 3))
        return xg.reshape(g, c // g, -1), dims

    def _weights(self):
        """(groups, C / groups, num_output / groups * prod(kernel))."""
        c = self.params[0].shape[0]
        return self.params[0].reshape(self.group, c // self.group, -1)

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = self._x = bottoms[0]
        xg, (num, _, *sizes) = self._inputs(x)
        # each input pixel's contribution (groups, O/g * prod(kernel), images * prod(sizes)),
        # scattered as a convolution's input gradient: the windows are the input pixels
        cols = xp.matmul(self._weights().transpose(0, 2, 1), xg)
        y = uncolumns(cols, self.geo, (num, self.out, *self._out(sizes)), tuple(sizes))
        if len(self.params) > 1:
            y += self.params[1].reshape(1, -1, *(1,) * len(sizes))
        return [xp.ascontiguousarray(y).reshape(self.shapes([x.shape])[0])]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        x = self._x
        xg, (num, c, *sizes) = self._inputs(x)
        dy = top_diffs[0].reshape(num, self.out, *self._out(sizes))
        cols = columns(dy, self.geo, tuple(sizes), self.group)  # im2col of the output's gradient
        self.grads[0] = xp.matmul(xg, cols.transpose(0, 2, 1)).reshape(self.params[0].shape)
        if len(self.params) > 1:
            self.grads[1] = dy.reshape(num, self.out, -1).sum(axis=(0, 2))
        if not self.propagate:
            return [None]
        dx = xp.matmul(self._weights(), cols).reshape(c, num, -1).transpose(1, 0, 2)
        return [xp.ascontiguousarray(dx).reshape(x.shape)]
