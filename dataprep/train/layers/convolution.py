"""Convolution as im2col and one matrix product per group, with the way of building the
columns chosen per layer from its shapes at setup (see ``Convolution``)."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from . import threads, winograd
from .base import Layer, positive_outputs
from .geometry import columns, spatial, uncolumns, windows
from .threads import CHUNK, compiled_loops, copy_in_parts, run_parts

COLUMNS = 2048  # a product needs about this many columns to run near BLAS's rate here
KEEP_BYTES = 16 << 20  # a batch's columns up to this size are kept for the backward pass (LeNet's conv2)
COLUMN_BYTES = 4 << 20  # and its columns should stay in the caches (CaffeNet conv2 slowed past)
TILES = 384  # a Winograd product needs about this many tiles (88 GFLOP/s at 196, 94 at 392)
LAST_WIDTH = 16  # channels-last columns for outputs this narrow or narrower (see ``channels_last``)
LAST_DEPTH = 1024  # and columns this deep or shallower (C k k)
# a first layer's weight-gradient product wants more columns: its result (C k k x outputs)
# is small, so BLAS's packing weighs on each product (CIFAR-10 quick's conv1 backward, ms:
# 2 images a product 9.5 to 10.0, 8 images 7.7 to 7.8, 13 8.2 to 8.5, 25 9.4 to 9.7)
WEIGHT_COLUMNS = 8192
DIRECT_DEPTH = 25  # a stride-1 layer's columns this shallow (C k k): direct on the CPU (``direct``)
BLOCKED_KERNEL = 5  # kernels this wide or wider: ``blocked`` on the CPU where the outputs fill vectors


def images_per_product(n: int, columns: int, nbytes: int, cpu: bool = True, target: int | None = None) -> int:
    """How many images one product covers: one when an image's ``columns`` are enough,
    else enough images for about ``target`` (COLUMNS) columns but not past COLUMN_BYTES of columns
    (``nbytes`` per image), the batch split into an even number of equal groups, at least
    two (two cores share them evenly: as one product, ResNet-50's 7 x 7 layers ran on one
    core at batch 32). A GPU takes the whole batch at once. The count follows from the
    shapes alone, so sums do not depend on the core count."""
    if not cpu:
        return n
    m = min(n, -(-(target or COLUMNS) // columns), max(1, COLUMN_BYTES // nbytes))
    if m == 1:
        return 1
    groups = -(-n // m)
    groups += groups % 2
    return -(-n // groups)


def channels_last(channels: int, k: int, ow: int, group: int) -> bool:
    """Whether a layer's im2col copies pixels with their channels (N H W, k, k C) rather than
    rows of output width (C, k, k, N H W): the runs copied are k C floats long instead of
    OW. Chosen where k C is at least four times OW, on narrow maps and shallow columns, from
    single-core A/B runs here (forward of 8 images, ms, NCHW -> NHWC): CIFAR-10 quick's conv2
    (32 -> 32, 16 x 16) 1.98 -> 1.64, its conv3 (8 x 8) 0.80 -> 0.59, LeNet's conv2 (20 -> 50,
    8 x 8) 0.46 -> 0.34; a loss with three channels (CIFAR-10 quick's conv1, 0.59 -> 0.74),
    and none that holds on 3 x 3 kernels (SqueezeNet's 13 x 13 layers 2.57 -> 2.43 and 2.66
    -> 2.66, GoogLeNet's 96 -> 208 at 14 x 14 6.1 -> 6.8): there the product's other
    orientation costs what the longer runs save. ``setup`` takes it only with the backward
    that shares the top gradient's columns."""
    return (
        group == 1
        and k >= 5
        and ow <= LAST_WIDTH
        and k * channels >= 4 * ow
        and k * k * channels <= LAST_DEPTH
    )


def direct(xp, depth: int, stride: int, group: int) -> bool:
    """Whether a layer's forward is direct (``compiled.convolve_direct``): on the CPU with
    the compiled loops on, stride 1, one group, and columns ``depth`` (C k k) of at most
    DIRECT_DEPTH. Decided from the shapes, so the bytes do not depend on the core count."""
    return xp is np and threads.COMPILED and stride == 1 and group == 1 and depth <= DIRECT_DEPTH


def blocked(xp, dtype, outputs: int, k: int, pad: int, group: int) -> bool:
    """Whether a layer trains by ``blocked.py`` (register blocks, no im2col): on the CPU with
    the compiled loops on, float32, padding below the kernel (the data gradient pads the
    top gradient by k - 1 - pad), a kernel of BLOCKED_KERNEL or wider and each group's
    outputs in whole vectors of 16 (a padded vector's lanes are work thrown away: LeNet's
    conv2, 50 outputs, backward 3.8 -> 4.3 to 4.8 ms). A strided layer's backward is
    im2col's (blocked, CaffeNet's conv1, 11 x 11 stride 4, took 51 ms against 46, the
    tutorial net's, 5 x 5 stride 2, 17.7 against 12.5). From the shapes alone, so the bytes
    do not depend on the core count."""
    return (
        xp is np
        and threads.COMPILED
        and np.dtype(dtype) == np.float32
        and pad < k
        and k >= BLOCKED_KERNEL
        and outputs // group % 16 == 0
    )


def _sizes(values: tuple[int, ...]) -> str:
    """A kernel's (or padding's) sizes as users write them: ``5`` when all equal, ``5x3``."""
    return str(values[0]) if len(set(values)) == 1 else "x".join(map(str, values))


def grouped_outputs(layer: Layer, channels: int) -> tuple[int, int]:
    """A convolution's (num_output, group); UsageError when either does not divide by group."""
    out, group = positive_outputs(layer), int(layer.p.get("group", 1))
    if channels % group or out % group:
        raise UsageError(f"layer {layer.name}: channels {channels} and num_output {out} must divide by group")
    return out, group


def learned_kernel(layer: Layer, xp, rng, dtype, shape: tuple[int, ...]) -> None:
    """A convolution's weights of ``shape`` (Caffe's layout), then its bias unless
    ``bias_term`` is false; Caffe's default fillers."""
    layer._param(xp, rng, shape, layer.p.get("weight_filler", {"type": "gaussian", "std": 0.01}), dtype, 0)
    if layer.p.get("bias_term", True):
        layer._param(xp, rng, (layer.out,), layer.p.get("bias_filler", {"type": "constant"}), dtype, 1)


class Convolution(Layer):
    """Caffe's convolution: weights (num_output, channels / group, *kernel), then the bias.

    Each product is W (groups x outputs x C k k / groups) times the im2col columns of some
    images. How the columns are made is chosen at setup (``strategy``):

    * ``image``: one image's columns per product, when they are many (100 x 100 inputs);
      the columns stay in the cache while BLAS reads them.
    * ``batch of M``: the columns of M images side by side, when one image's are few
      (LeNet's 8 x 8 maps: 64 columns, far too few for BLAS to run well).
    * ``pointwise``: a 1 x 1 kernel with stride 1 and no padding is a product on the
      input itself, with no im2col.
    * ``channels last`` (with ``image`` or ``batch of M``): the columns as a row per output
      pixel, (i, j, c) along it, copied from a pixels-major (N, H, W, C) padded input in
      runs of k C floats rather than rows of OW, for 5 x 5 kernels over narrow maps
      (``channels_last``), where the backward takes the top gradient's columns too; the
      products are oriented with the pixels as their rows.
      CIFAR-10 quick's conv2 and conv3, forward/backward ms: 13.2/21.4 -> 9.9/18.0 and
      6.4/13.8 -> 4.4/11.2 in its `time`.
    * ``winograd``: a stride-1 3 x 3 kernel where ``winograd.pays`` (many channels, maps
      of 12 x 12 or more): the forward, the data gradient and the weight gradient as
      Winograd's F(2x2, 3x3) (``winograd.py``), 16 multiplies per two-by-two outputs where
      im2col makes 36; the backward im2col's where OpenBLAS's products run at full AVX-512
      width (``winograd.transformed_backward``: the strategy then names both).
    * ``direct``: a stride-1 layer whose columns would be DIRECT_DEPTH deep or shallower
      (C k k: LeNet's conv1, one channel, 5 x 5), on the CPU in training: im2col's products
      there have K = 25 and run far below BLAS's rate, so the forward sums tap by tap over
      the flat padded planes in a compiled loop (``compiled.convolve_direct``), and so does
      a first layer's weight gradient (``compiled.convolve_weights``; with a data gradient
      the backward is im2col's). LeNet's conv1 at batch 64, forward and backward ms: 1.4 to
      1.6 and 2.1 to 2.3 -> 0.8 to 1.0 and 1.5 to 1.6. Not for CIFAR-10 quick's conv1 (C k k
      75): its forward 9.1 -> 7.5 ms, but its weight gradient direct 9.5 -> 16.6, and
      im2col's after a direct forward makes the padded input again (the forward-backward
      no faster). Inference keeps im2col's, as it keeps pooling's array code: `predict`
      loads no Numba.
    * ``blocked``: a layer with a 5 x 5 or wider kernel whose outputs per group fill
      vectors of 16 (``blocked``: CIFAR-10 quick's three layers, CaffeNet's conv1 and
      conv2), float32 on the CPU in training: no im2col; each block of 8 pixels by 32
      outputs is summed in registers straight from a padded channels-last copy of the image
      (``blocked.py``), the data and weight gradients likewise for stride 1 (a strided
      layer's backward is im2col's). CIFAR-10 quick's layers, forward and backward ms (two
      cores, 15 interleaved rounds): conv1 8.9/7.2 -> 3.7/3.7, conv2 12.0/20.4 -> 5.2/10.5,
      conv3 4.4/10.5 -> 2.5-2.7/5.3-5.4; its forward-backward 85 -> 57 ms. Inference keeps
      im2col's, as for ``direct``.
    * ``general``: every other geometry Caffe's BaseConvolutionLayer takes (unequal
      kernel_h and kernel_w, dilation, one or three spatial axes, a channel ``axis`` other
      than 1) as one im2col of the whole batch; ``no spatial axes`` (an N x C bottom, the
      age Q&A's design 2 over ``prob``) is its empty-kernel case, a product.

    The backward of a stride-1 layer whose output is as large as its input (and whose
    outputs are at most twice its channels) makes one im2col, of the padded top gradient:
    times the flipped kernels it is the data gradient, times the input's channels the
    weight gradient (``_top_columns``), so the input's columns are not made again. Other
    layers add the data gradient's columns back by col2im: on the CPU a compiled loop
    (``compiled.col2im``; LeNet's conv2, backward of the layer alone, 4.0 to 4.5 ms with
    the array code's adds over whole padded rows, since removed, 3.4 to 3.75 ms with it),
    on a GPU k * k strided adds.

    The columns are the exact windows, as Caffe's im2col makes them (reading whole padded
    rows instead, and dropping the extra columns after the product, cost 15% more product
    on CaffeNet's 27 x 27 and 13 x 13 maps than the shorter copies save). The products run
    on the layer threads, over fixed parts of the batch; weight gradients are summed part
    by part. A first layer (no data gradient) whose forward kept no columns makes its
    weight gradient's in larger products (``m_weights``: WEIGHT_COLUMNS columns).
    """

    type = "Convolution"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shapes = [tuple(s) for s in shapes]
        self.geo = geo = spatial(self.p, self.name, shapes[0])
        num, c, *sizes = geo.images(shapes[0])
        if min(geo.out(tuple(sizes)), default=1) < 1:
            padded = f" (padded by {_sizes(geo.pad)})" if any(geo.pad) else ""
            raise UsageError(
                f"layer {self.name}: kernel {_sizes(geo.kernel)} larger than its "
                f"{'x'.join(map(str, sizes))} input{padded}"
            )
        self.out, self.group = grouped_outputs(self, c)
        learned_kernel(self, xp, rng, dtype, (self.out, c // self.group, *geo.kernel))
        tops = super().setup(shapes)
        tuned = geo.axis == 1 and len(geo.kernel) == 2 and geo.dilation == (1, 1)
        if not tuned or len({*zip(geo.kernel, geo.stride, geo.pad)}) != 1:
            # kernel_h != kernel_w, dilation, 1-D or 3-D, axis: im2col of the batch at once
            self.general, self.strategy = True, "general" if geo.kernel else "no spatial axes"
            return tops
        self.general = False
        self.k, self.stride, self.pad = geo.kernel[0], geo.stride[0], geo.pad[0]
        self.pointwise = (self.k, self.stride, self.pad) == (1, 1, 0)
        _, _, oh, ow = tops[0]
        h, w = sizes
        per_image = oh * ow * c * self.k * self.k * np.dtype(dtype).itemsize
        self.m = images_per_product(num, oh * ow, per_image, xp is np)
        self.m_weights = images_per_product(num, oh * ow, per_image, xp is np, WEIGHT_COLUMNS)
        self.keep = num * per_image <= KEEP_BYTES  # the forward's columns serve the backward too
        self.strategy = "pointwise" if self.pointwise else ("image" if self.m == 1 else f"batch of {self.m}")
        self.winograd = self.tiled_backward = False
        self.direct = not self.pointwise and direct(xp, c * self.k * self.k, self.stride, self.group)
        self.blocked = not self.direct and blocked(xp, dtype, self.out, self.k, self.pad, self.group)
        if self.direct or self.blocked:
            self.strategy, self.keep = "direct" if self.direct else "blocked", False
        elif (self.k, self.stride) == (3, 1) and self.pad <= 2:
            tiles = winograd.tiles(h, self.pad)[1] * winograd.tiles(w, self.pad)[1]
            m = images_per_product(num, tiles, 1, xp is np, TILES)  # tiles side by side, whatever their bytes
            self.winograd = winograd.pays(min(c, self.out) // self.group, min(oh, ow), m * tiles)
            if self.winograd:
                # the backward in Winograd's domain too, or im2col's (``transformed_backward``)
                self.tiled_backward = xp is not np or winograd.transformed_backward()
                self.tiles_m, self.keep = m, False
                backward = "" if self.tiled_backward else f"; backward {self.strategy}"
                self.strategy = f"winograd, batch of {m}{backward}"
        # the data gradient of a stride-1 layer whose output is as large as its input ("same"
        # padding) as a convolution of the padded top gradient with the flipped kernels: one
        # im2col copy and one product, where col2im takes one product and k*k scatter-adds
        # (CIFAR-10 quick's forward-backward 131.6 -> 106.4 ms). An unpadded layer would
        # multiply over the zeros around its smaller output (LeNet's conv2: 2.25x the
        # products, 20.6 -> 25.4 ms), so it keeps col2im; so does a layer with more than twice
        # as many outputs as channels, whose top gradient's columns outweigh col2im's adds
        # (the im2col writes and the product reads O k k rows, col2im's product writes and
        # its adds read and write C k k: CaffeNet's conv2, 128 over 48 per group, backward
        # 222 -> 192 ms by col2im; at twice, a wash: CIFAR-10 quick's conv3, 32 -> 64, 12.5
        # against 13.9 ms by col2im, GoogLeNet's 5 x 5, 16 -> 32, 5.4 against 4.8)
        self.full = (
            not self.pointwise
            and self.stride == 1
            and self.pad <= self.k - 1
            and oh * ow >= h * w
            and self.out <= 2 * c
        )
        # Its weight gradient comes from the same columns, times the input's channels, with no
        # im2col of the input (backward: CIFAR-10 quick's conv2 26 -> 22 ms, its conv3 14.6 ->
        # 13.8 ms, ResNet-50's 512 -> 512 at 7 x 7 60 -> 48 ms).
        # Channels-last columns only with that backward: LeNet's unpadded conv2, whose data
        # gradient is col2im, ran its backward 5.1 -> 5.5 ms with them, its forward the same.
        self.last = (
            self.full and not self.winograd and not self.direct and channels_last(c, self.k, ow, self.group)
        )  # k >= 5
        if self.last and not self.blocked:  # in training; inference takes these columns
            self.strategy += ", channels last"
        return tops

    def shapes(self, shapes):
        shape, axis = tuple(shapes[0]), self.geo.axis
        return [(*shape[:axis], self.out, *self.geo.out(shape[axis + 1 :]))]

    def _forward_general(self, x):
        """Any geometry (Caffe's BaseConvolutionLayer): the images before ``axis`` as one
        batch, its im2col over every spatial axis, one product per group."""
        xp = get_xp(x)
        geo, g = self.geo, self.group
        num, c, *sizes = geo.images(x.shape)
        cols = columns(x.reshape(num, c, *sizes), geo, geo.out(tuple(sizes)), g)
        y = xp.matmul(self.params[0].reshape(g, self.out // g, -1), cols).reshape(self.out, num, -1)
        if len(self.params) > 1:
            y += self.params[1].reshape(-1, 1, 1)
        self._saved = (cols, x.shape)
        return [xp.ascontiguousarray(y.transpose(1, 0, 2)).reshape(self.shapes([x.shape])[0])]

    def _backward_general(self, dy):
        xp = get_xp(dy)
        cols, shape = self._saved
        geo, g = self.geo, self.group
        num, c, *sizes = geo.images(shape)
        d = xp.ascontiguousarray(dy.reshape(num, self.out, -1).transpose(1, 0, 2)).reshape(
            g, self.out // g, -1
        )
        self.grads[0] = xp.matmul(d, cols.transpose(0, 2, 1)).reshape(self.params[0].shape)
        if len(self.params) > 1:
            self.grads[1] = d.reshape(self.out, -1).sum(axis=1)
        if not self.propagate:
            return [None]
        dcols = xp.matmul(self.params[0].reshape(g, self.out // g, -1).transpose(0, 2, 1), d)
        return [uncolumns(dcols, geo, (num, c, *sizes), geo.out(tuple(sizes))).reshape(shape)]

    def _parts(self, n: int, per: int | None = None) -> tuple[list[slice], int]:
        """Fixed parts of the batch for the threads (whole products, about CHUNK images, an
        even number of parts of about equal size: a batch of 10 in parts of 8 and 2 kept one
        core idle most of a layer), and the images per product (``per``: Winograd's, else
        im2col's)."""
        m = min(per or self.m, n)
        products = -(-n // m)
        count = -(-products // max(1, CHUNK // m))
        count = min(products, count + count % 2)
        size = m * -(-products // count)
        return [slice(a, min(a + size, n)) for a in range(0, n, size)], m

    def _view(self, x):
        """A view (N, C, k, k, OH, OW) of the padded input whose copy over some images is
        their im2col matrix; the input itself for a pointwise layer."""
        xp = get_xp(x)
        n, c, h, w = x.shape
        k, s, p = self.k, self.stride, self.pad
        if self.pointwise:
            return x
        _, _, oh, ow = self.shapes([x.shape])[0]
        if self.last:  # (N, OH, OW, k, k C): a window's row of pixels with their channels
            padded = xp.zeros((n, h + 2 * p, w + 2 * p, c), x.dtype)
            copy_in_parts(padded[:, p : p + h, p : p + w], x.transpose(0, 2, 3, 1))
            st = padded.strides
            return xp.lib.stride_tricks.as_strided(
                padded, (n, oh, ow, k, k * c), (st[0], st[1] * s, st[2] * s, st[1], st[3])
            )
        padded = x
        if p:
            padded = xp.zeros((n, c, h + 2 * p, w + 2 * p), x.dtype)
            copy_in_parts(padded[:, :, p : p + h, p : p + w], x)
        return windows(padded, k, k, s, oh, ow).transpose(0, 1, 4, 5, 2, 3)

    def _columns(self, view, images: slice):
        """The im2col matrix of some images: (groups, C / groups * k * k, images * OH * OW),
        the images' columns side by side (a view of the input for one pointwise image); for
        a channels-last layer (1, images * OH * OW, k * k * C), a row per output pixel, its
        (i, j, c) ordered as ``_kernels`` orders the weights."""
        xp = get_xp(view)
        part = view[images]
        m = len(part)
        if self.last:
            cols = xp.empty(part.shape, part.dtype)
            cols[...] = part
            return cols.reshape(1, -1, part.shape[3] * part.shape[4])
        if self.pointwise and m == 1:
            return part.reshape(self.group, -1, part[0, 0].size)
        if self.pointwise:  # (m, C, H, W) -> (C, m, H, W)
            cols = xp.empty((part.shape[1], m) + part.shape[2:], part.dtype)
            cols[...] = part.transpose(1, 0, 2, 3)
        else:  # (m, C, k, k, OH, OW) -> (C, k, k, m, OH, OW)
            cols = xp.empty(part.shape[1:4] + (m,) + part.shape[4:], part.dtype)
            cols[...] = xp.moveaxis(part, 0, 3)
        return cols.reshape(self.group, cols.shape[0] // self.group * self.k * self.k, -1)

    def forward(self, bottoms, train=True):
        if self.general:
            return self._forward_general(bottoms[0])
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        n, _, oh, ow = self.shapes([x.shape])[0]
        y = xp.empty((n, self.out, oh, ow), x.dtype)
        if self.winograd:
            parts, m = self._parts(n, self.tiles_m)
            u = winograd.kernels(self.params[0], self.group)
            bias = self.params[1] if len(self.params) > 1 else None

            def tiled(_, part):
                for a in range(part.start, part.stop, m):
                    images = slice(a, min(a + m, part.stop))
                    winograd.convolve(x[images], u, self.pad, y[images], bias)

            run_parts(parts, tiled)
            self._saved = (x, None, {})  # the backward transforms the tiles again, or makes columns
            return [y]
        if self.blocked and train:  # inference: im2col's
            return [self._forward_blocked(x, y)]
        loops = compiled_loops(xp) if self.direct and train else None  # inference: im2col's
        if loops is not None:
            parts, _ = self._parts(n, 1)
            w = self.params[0]
            bias = self.params[1] if len(self.params) > 1 else xp.zeros(self.out, x.dtype)
            run_parts(parts, lambda _, part: loops.convolve_direct(x[part], w, bias, self.pad, y[part]))
            self._saved = (x, None, {})  # the backward makes its own columns, if it needs them
            return [y]
        parts, m = self._parts(n)
        view = self._view(x)
        weights = self._kernels(self.params[0])
        bias = self.params[1].reshape(1, -1, 1, 1) if len(self.params) > 1 else 0
        kept: dict[int, object] = {}
        keep = train and self.keep and not (self.full and self.propagate)  # the backward makes its own

        def convolve(_, part):
            for a in range(part.start, part.stop, m):
                images = slice(a, min(a + m, part.stop))
                cols = self._columns(view, images)
                if keep:
                    kept[a] = cols
                if self.last:  # a row per pixel times the kernels: (m OH OW, O), oriented as
                    # BLAS runs it fastest (the kernels' side as the rows: 1.4x the time)
                    out = xp.matmul(cols[0], weights[0].T)
                    xp.add(out.reshape(-1, oh, ow, self.out).transpose(0, 3, 1, 2), bias, out=y[images])
                    continue
                full = xp.matmul(weights, cols)
                xp.add(full.reshape(self.out, -1, oh, ow).transpose(1, 0, 2, 3), bias, out=y[images])

        run_parts(parts, convolve)
        self._saved = (x, view, kept)
        return [y]

    def backward(self, top_diffs):
        if self.general:
            return self._backward_general(top_diffs[0])
        if self.tiled_backward:
            return self._backward_winograd(top_diffs[0])
        if self.blocked and self.stride == 1:  # a strided layer's backward is im2col's
            return self._backward_blocked(top_diffs[0])
        xp = get_xp(top_diffs[0])
        loops = compiled_loops(xp) if self.direct and not self.propagate else None
        if loops is not None:
            return self._backward_direct(top_diffs[0], loops)
        x, view, kept = self._saved
        n, c, h, w = x.shape
        p, g = self.pad, self.group
        dy = top_diffs[0]
        weights = self._kernels(self.params[0])
        # a first layer whose columns were not kept: larger products for its weight gradient
        parts, m = self._parts(n, self.m_weights if not (self.propagate or kept) else None)
        full = self.full and self.propagate
        if view is None and not full:  # after Winograd's forward: the input's columns
            view = self._view(x)
        # per part, dW transposed (groups, C / groups * k * k, outputs / groups): the product
        # cols @ dy^T runs 1.15 to 1.45x faster here than dy @ cols^T (outputs are few); or,
        # from the top gradient's columns, turned (groups, outputs / groups * k * k, C / groups)
        rows, across = (weights.shape[1] * self.k * self.k, c // g) if full else weights.shape[:0:-1]
        dw = xp.empty((len(parts), g, rows, across), dy.dtype)
        db = xp.empty((len(parts), self.out), dy.dtype)
        if full:  # written whole, image by image: no padding, no zeroing
            dx = xp.empty((n, c, h, w), dy.dtype)
            flipped = self._kernels(self._turned(self.params[0]), c)
        else:  # padded
            dx = xp.empty((n, c, h + 2 * p, w + 2 * p), dy.dtype) if self.propagate else None

        def back(index, part):
            dw[index] = 0
            db[index] = dy[part].sum(axis=(0, 2, 3))
            if dx is not None and not self.pointwise and not full:
                dx[part] = 0
            for a in range(part.start, part.stop, m):
                images = slice(a, min(a + m, part.stop))
                if full and self.last:  # (m H W, k k O): rows of pixels, as the forward's
                    dcols = self._top_columns(dy[images], (h, w))[0]
                    dx[images] = xp.matmul(dcols, flipped[0].T).reshape(-1, h, w, c).transpose(0, 3, 1, 2)
                    dw[index, 0] += xp.matmul(dcols.T, self._channels(x[images])[0])
                    continue
                d = xp.empty((self.out, images.stop - a) + dy.shape[2:], dy.dtype)
                d[...] = dy[images].transpose(1, 0, 2, 3)
                if full:
                    dcols = self._top_columns(d, (h, w))
                    dx[images] = xp.matmul(flipped, dcols).reshape(c, -1, h, w).transpose(1, 0, 2, 3)
                    dw[index] += xp.matmul(dcols, self._channels(x[images]))
                    continue
                d = d.reshape(g, self.out // g, -1)
                # dW[g]^T += cols[g] @ dy[g]^T, summed part by part
                cols = kept.pop(a) if a in kept else self._columns(view, images)
                if self.last:  # (k k C, m OH OW) times the top gradient's pixels' rows
                    pixels = xp.empty((images.stop - a,) + dy.shape[2:] + (self.out,), dy.dtype)
                    pixels[...] = dy[images].transpose(0, 2, 3, 1)
                    dw[index, 0] += xp.matmul(cols[0].T, pixels.reshape(-1, self.out))
                else:
                    dw[index] += xp.matmul(cols, d.transpose(0, 2, 1))
                if dx is not None:
                    self._col2im(dx, images, xp.matmul(weights.transpose(0, 2, 1), d))

        run_parts(parts, back)
        k = self.k
        if full and self.last:  # (k - 1 - i, k - 1 - j, O, C) -> Caffe's (O, C, i, j)
            grad = dw.sum(axis=0).reshape(k, k, self.out, c)[::-1, ::-1].transpose(2, 3, 0, 1)
        elif full:  # (g, O/g, k - 1 - i, k - 1 - j, C/g) -> Caffe's (O, C/g, i, j)
            turned = dw.sum(axis=0).reshape(g, self.out // g, k, k, c // g)[:, :, ::-1, ::-1]
            grad = turned.transpose(0, 1, 4, 2, 3)
        elif self.last:  # (i, j, C) x O -> (O, C, i, j)
            grad = dw.sum(axis=0).reshape(k, k, c, self.out).transpose(3, 2, 0, 1)
        else:
            grad = dw.sum(axis=0).transpose(0, 2, 1)
        self.grads[0] = xp.ascontiguousarray(grad).reshape(self.params[0].shape)
        if len(self.params) > 1:
            self.grads[1] = db.sum(axis=0)
        if dx is None or full:
            return [dx]
        return [dx[:, :, p : p + h, p : p + w]]

    def _backward_winograd(self, dy):
        """Winograd's backward, part by part: the weight gradient G^T (sum of A dy A^T times
        (B^T x B)^T) G, 16 products with the images' tiles as the inner dimension; the data
        gradient a Winograd convolution of the top gradient, padded by 2 - pad, with the
        turned kernels."""
        xp = get_xp(dy)
        x = self._saved[0]
        n, c = x.shape[:2]
        g, p = self.group, self.pad
        parts, m = self._parts(n, self.tiles_m)
        du = xp.empty((len(parts), 16, g, self.out // g, c // g), dy.dtype)
        db = xp.empty((len(parts), self.out), dy.dtype)
        dx = xp.empty_like(x) if self.propagate else None
        turned = winograd.kernels(self._turned(self.params[0]), g) if self.propagate else None

        def back(index, part):
            db[index] = dy[part].sum(axis=(0, 2, 3))
            for a in range(part.start, part.stop, m):
                images = slice(a, min(a + m, part.stop))
                tiles = winograd.inputs(x[images], p, g).transpose(0, 1, 3, 2)
                product = xp.matmul(winograd.top_gradients(dy[images], g), tiles)
                if a == part.start:
                    du[index] = product
                else:
                    du[index] += product
                if dx is not None:
                    winograd.convolve(dy[images], turned, 2 - p, dx[images])

        run_parts(parts, back)
        self.grads[0] = winograd.kernel_gradients(du.sum(axis=0))
        if len(self.params) > 1:
            self.grads[1] = db.sum(axis=0)
        return [dx]

    def _backward_direct(self, dy, loops):
        """A first layer's weight gradient, direct (``compiled.convolve_weights``), part by
        part, the parts' sums added in part order."""
        xp = get_xp(dy)
        x = self._saved[0]
        n, _, _, w = x.shape
        # parts as large as the top gradient's flat copy allows (COLUMN_BYTES), at most
        # halves: each part's per-tap sums cost a pass (LeNet's conv1 in eighths 2.0 ms, in halves 1.8)
        flat = self.out * dy.shape[2] * (w + 2 * self.pad) * dy.itemsize
        parts, _ = self._parts(n, max(1, min(-(-n // 2), COLUMN_BYTES // flat)))
        dw = xp.empty((len(parts), *self.params[0].shape), dy.dtype)
        db = xp.empty((len(parts), self.out), dy.dtype)

        def back(index, part):
            db[index] = dy[part].sum(axis=(0, 2, 3))
            loops.convolve_weights(x[part], dy[part], self.pad, dw[index])

        run_parts(parts, back)
        self.grads[0] = dw.sum(axis=0)
        if len(self.params) > 1:
            self.grads[1] = db.sum(axis=0)
        return [None]

    def _forward_blocked(self, x, y):
        """The forward by register blocks (``blocked.forward``), CHUNK images a part."""
        from . import blocked as blocks

        parts, _ = self._parts(len(x), 1)
        kernels = blocks.kernels(self.params[0], self.group)
        bias = self.params[1] if len(self.params) > 1 else None
        bias = blocks.bias_vector(bias, self.out, self.group, x.dtype)
        geometry = self.k, self.pad, self.stride, self.group
        run_parts(parts, lambda _, part: blocks.forward(x[part], kernels, bias, *geometry, y[part]))
        self._saved = (x, None, {})
        return y

    def _backward_blocked(self, dy):
        """The backward by register blocks (``blocked.backward``), part by part, the parts'
        weight gradients summed in part order."""
        from . import blocked as blocks

        x = self._saved[0]
        parts, _ = self._parts(len(x), 1)
        dw = blocks.gradient_sums(len(parts), x.shape[1], self.out, self.k, self.group, dy.dtype)
        db = np.empty((len(parts), self.out), dy.dtype)
        dx = np.empty_like(x) if self.propagate else np.empty((0,) * 4, dy.dtype)
        turned = blocks.turned(self.params[0], self.group) if self.propagate else np.empty(0, dy.dtype)

        def back(index, part):
            db[index] = dy[part].sum(axis=(0, 2, 3))
            blocks.backward(x[part], dy[part], turned, self.pad, dw[index], dx[part])  # empty: none

        run_parts(parts, back)
        self.grads[0] = blocks.weight_gradient(dw.sum(axis=0), self.out)
        if len(self.params) > 1:
            self.grads[1] = db.sum(axis=0)
        return [dx if self.propagate else None]

    def _turned(self, weights):
        """The kernels of the data gradient as a convolution's weights (C, outputs / groups,
        k, k): each kernel turned 180 degrees, outputs and channels swapped in each group."""
        xp = get_xp(weights)
        g, k = self.group, self.k
        per = weights.reshape(g, self.out // g, -1, k, k)[:, :, :, ::-1, ::-1]
        return xp.ascontiguousarray(per.transpose(0, 2, 1, 3, 4)).reshape(-1, self.out // g, k, k)

    def _kernels(self, weights, rows: int | None = None):
        """Weights (rows, C / groups, k, k) as each product's left-hand side: (groups, rows /
        groups, C / groups * k * k), or for channels-last columns (1, rows, k * k * C) in
        their (i, j, c) order. ``rows``: the outputs, or the channels of turned kernels."""
        xp = get_xp(weights)
        rows = rows or self.out
        if self.last:
            return xp.ascontiguousarray(weights.transpose(0, 2, 3, 1)).reshape(1, rows, -1)
        return weights.reshape(self.group, rows // self.group, -1)

    def _top_columns(self, d, hw: tuple[int, int]):
        """The columns a stride-1 backward needs (groups, outputs / groups * k * k, m * H * W)
        from some images' top gradient ``d`` (O x m x OH x OW): the im2col of ``d`` padded
        by k - 1 - pad. Times the flipped kernels they are the data gradient (Caffe's col2im
        sums the same terms); times the input's channels, the weight gradient with its
        kernel offsets turned, so no im2col of the input is made again (dW[o, c, i, j] sums
        dy[o, y, x] x[c, y + i - pad, x + j - pad], and column (o, a, b) of the padded
        gradient holds dy[o, Y + a - q, X + b - q] at input (Y, X): i = k - 1 - a). For a
        channels-last layer ``d`` is the images' own (m, O, OH, OW) and the columns are (1,
        m * H * W, k * k * O), a row per pixel, (a, b, o) along it."""
        xp = get_xp(d)
        k, q, g = self.k, self.k - 1 - self.pad, self.group
        h, w = hw
        if self.last:  # from (m, O, OH, OW): rows (a, b, o), as _columns makes them
            m, o, oh, ow = d.shape
            padded = xp.zeros((m, oh + 2 * q, ow + 2 * q, o), d.dtype)
            padded[:, q : q + oh, q : q + ow] = d.transpose(0, 2, 3, 1)
            s = padded.strides
            view = xp.lib.stride_tricks.as_strided(
                padded, (m, h, w, k, k * o), (s[0], s[1], s[2], s[1], s[3])
            )
            cols = xp.empty(view.shape, d.dtype)
            cols[...] = view
            return cols.reshape(1, -1, k * k * o)
        o, m, oh, ow = d.shape
        padded = xp.zeros((o, m, oh + 2 * q, ow + 2 * q), d.dtype)
        padded[:, :, q : q + oh, q : q + ow] = d
        s = padded.strides
        view = xp.lib.stride_tricks.as_strided(
            padded, (o, k, k, m, h, w), (s[0], s[2], s[3], s[1], s[2], s[3])
        )
        cols = xp.empty((o, k, k, m, h, w), d.dtype)
        cols[...] = view
        return cols.reshape(g, o // g * k * k, m * h * w)

    def _channels(self, x):
        """Some images (m, C, H, W) as (groups, m * H * W, C / groups): a weight gradient's
        right-hand side in a full backward (channels last: rows of pixels, contiguous)."""
        xp = get_xp(x)
        m, c = x.shape[:2]
        if self.last:
            flat = xp.empty((m,) + x.shape[2:] + (c,), x.dtype)
            flat[...] = x.transpose(0, 2, 3, 1)
            return flat.reshape(1, -1, c)
        flat = xp.empty((c, m) + x.shape[2:], x.dtype)
        flat[...] = x.transpose(1, 0, 2, 3)
        return flat.reshape(self.group, c // self.group, -1).transpose(0, 2, 1)

    def _col2im(self, dx, images: slice, dcols) -> None:
        """Add some images' column gradients (groups, C / groups * k * k, images * OH * OW)
        back onto their padded images: one add per kernel offset, never one per pixel; a
        pointwise layer's columns are the gradient itself."""
        k, s = self.k, self.stride
        c = dx.shape[1]
        m = images.stop - images.start
        if self.pointwise:
            dx[images] = dcols.reshape(c, m, *dx.shape[2:]).transpose(1, 0, 2, 3)
            return
        _, _, oh, ow = self.shapes([(m, c, dx.shape[2] - 2 * self.pad, dx.shape[3] - 2 * self.pad)])[0]
        dcols = dcols.reshape(c, k, k, m, oh, ow)
        loops = compiled_loops(get_xp(dx))
        if loops:
            loops.col2im(dcols, s, dx[images])
            return
        for i in range(k):
            for j in range(k):
                dx[images, :, i : i + s * oh : s, j : j + s * ow : s] += dcols[:, i, j].transpose(1, 0, 2, 3)
