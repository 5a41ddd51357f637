"""Caffe's layers, written once for NumPy and CuPy: each layer takes arrays of either module
(``xp``) and uses only that module's operations, so the CPU tests run the GPU's code.

A layer is set up from its bottom shapes (which gives its top shapes, Caffe's rules, and
creates its parameters), then ``forward(bottoms, train)`` returns its tops and
``backward(top_diffs)`` returns the bottom diffs (None for inputs without a gradient, such
as labels) and fills ``grads`` for its parameters. Arrays keep the dtype they come in
(float32 for training, float64 for the gradient checks). Parameter shapes and order are
Caffe's, so ``.caffemodel`` blobs map one to one.
"""

from __future__ import annotations

import math
import os
from concurrent.futures import ThreadPoolExecutor
from types import ModuleType
from typing import Any, Callable, Sequence

import numpy as np

from ..errors import UsageError
from ..transforms import get_xp

Shape = tuple[int, ...]


def _fill(xp: ModuleType, rng: np.random.Generator, shape: Shape, filler: dict, dtype) -> Any:
    """A parameter drawn on the CPU from ``rng`` (so CPU and GPU runs start alike) and moved
    to ``xp``. Fillers as Caffe's: constant(value), gaussian(std), xavier and msra (fan-in)."""
    kind = filler.get("type", "constant")
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    if kind == "constant":
        values = np.full(shape, filler.get("value", 0.0))
    elif kind == "gaussian":
        values = rng.normal(filler.get("mean", 0.0), filler.get("std", 1.0), shape)
    elif kind == "xavier":
        limit = math.sqrt(3.0 / fan_in)
        values = rng.uniform(-limit, limit, shape)
    elif kind == "msra":
        values = rng.normal(0.0, math.sqrt(2.0 / fan_in), shape)
    else:
        raise UsageError(f"filler type {kind!r}: choose from constant, gaussian, xavier, msra")
    return xp.asarray(values.astype(dtype))


class Layer:
    """The common part: name, parameters with their lr/decay multipliers, gradients."""

    type = ""
    n_bottoms: int | None = 1  # None: any number
    propagate = True  # the net turns it off where the bottom is an input: no diff to compute

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
        self.params.append(_fill(xp, rng or np.random.default_rng(0), shape, filler, dtype))
        self.grads.append(None)
        self.lr_mult.append(float(mult.get("lr_mult", 1.0)))
        self.decay_mult.append(float(mult.get("decay_mult", 1.0)))

    def forward(self, bottoms: list, train: bool = True) -> list:
        raise NotImplementedError

    def backward(self, top_diffs: list) -> list:
        raise NotImplementedError


def conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Convolution output size: rounds down (Caffe)."""
    return (size + 2 * pad - kernel) // stride + 1


def pool_out(size: int, kernel: int, stride: int, pad: int) -> int:
    """Pooling output size: rounds up, then the last window must start inside the input
    (or its padding's first half), as Caffe clips it."""
    out = int(math.ceil((size + 2 * pad - kernel) / stride)) + 1
    if pad and (out - 1) * stride >= size + pad:
        out -= 1
    return out


def _windows(x, kh: int, kw: int, stride: int, oh: int, ow: int):
    """A strided view (N, C, OH, OW, kh, kw) of the windows of a padded N x C x H x W array."""
    xp = get_xp(x)
    n, c = x.shape[:2]
    s = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3])
    )


def _pad(x, top: int, bottom: int, left: int, right: int, value: float = 0.0):
    xp = get_xp(x)
    if not (top or bottom or left or right):
        return x
    return xp.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)), constant_values=value)


CHUNK = 8  # images per chunk of threaded work: fixed, so sums do not depend on the core count
_THREADS: list[ThreadPoolExecutor] = []
_BLAS: list[Any] = []


def _chunks(xp: ModuleType, n: int) -> list[slice]:
    """The batch in chunks of CHUNK images on the CPU; whole on a GPU, which queues it."""
    if xp is not np:
        return [slice(0, n)]
    return [slice(a, min(a + CHUNK, n)) for a in range(0, n, CHUNK)]


def _images(xp: ModuleType, chunk: slice) -> list[slice]:
    """A chunk image by image on the CPU, so each image's im2col stays in the cache while
    its GEMM reads it (Caffe's order); whole on a GPU."""
    if xp is not np:
        return [chunk]
    return [slice(m, m + 1) for m in range(chunk.start, chunk.stop)]


def _in_chunks(xp: ModuleType, n: int, work: Callable[[int, slice], object]) -> None:
    """Run ``work(index, chunk)`` over the batch's chunks, on the CPU in one thread per core
    with a one-thread BLAS: NumPy releases the GIL in its copies, ufuncs and GEMMs, so the
    passes BLAS does not cover (im2col, col2im, pooling) use every core too. Chunks are
    disjoint and fixed, so results do not depend on the core count."""
    chunks = _chunks(xp, n)
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    if len(chunks) < 2 or cores < 2:
        for index, chunk in enumerate(chunks):
            work(index, chunk)
        return
    if not _THREADS:
        from threadpoolctl import ThreadpoolController

        _THREADS.append(ThreadPoolExecutor(cores, thread_name_prefix="dataprep-layers"))
        _BLAS.append(ThreadpoolController())
    with _BLAS[0].limit(limits=1, user_api="blas"):
        jobs = [_THREADS[0].submit(work, index, chunk) for index, chunk in enumerate(chunks)]
        for job in jobs:
            job.result()


def _copy_in_chunks(dst, src) -> None:
    """``dst[...] = src`` split over the batch (first) axis."""
    _in_chunks(get_xp(dst), dst.shape[0], lambda _, part: dst.__setitem__(part, src[part]))


def _kernel(p: dict) -> tuple[int, int, int]:
    k = p["kernel_size"]
    return int(k), int(p.get("stride", 1)), int(p.get("pad", 0))


class Convolution(Layer):
    """im2col with strided views and one matrix product per group (the time goes to BLAS).
    Weights (num_output, channels / group, k, k), then the bias (num_output)."""

    type = "Convolution"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        ((n, c, h, w),) = shapes = [tuple(s) for s in shapes]
        self.k, self.stride, self.pad = _kernel(self.p)
        self.out = int(self.p["num_output"])
        self.group = int(self.p.get("group", 1))
        if c % self.group or self.out % self.group:
            raise UsageError(
                f"layer {self.name}: channels {c} and num_output {self.out} must divide by group"
            )
        self._param(
            xp,
            rng,
            (self.out, c // self.group, self.k, self.k),
            self.p.get("weight_filler", {"type": "gaussian", "std": 0.01}),
            dtype,
            0,
        )
        if self.p.get("bias_term", True):
            self._param(xp, rng, (self.out,), self.p.get("bias_filler", {"type": "constant"}), dtype, 1)
        return super().setup(shapes)

    def shapes(self, shapes):
        n, c, h, w = shapes[0]
        return [
            (
                n,
                self.out,
                conv_out(h, self.k, self.stride, self.pad),
                conv_out(w, self.k, self.stride, self.pad),
            )
        ]

    def _geometry(self, shape: Shape):
        """Output size, and a view (N, C, k, k, OH * width) whose copy is the im2col matrix,
        with its row width. For stride 1 each output row is read whole from the flattened
        padded image (width = padded width; the extra columns are dropped afterwards), so
        the copy runs over long contiguous spans; other strides gather windows (width = OW)."""
        n, c, h, w = shape
        k, s, p = self.k, self.stride, self.pad
        oh, ow = conv_out(h, k, s, p), conv_out(w, k, s, p)
        width = w + 2 * p if s == 1 else ow
        return oh, ow, width

    def _view(self, x, oh: int, ow: int):
        xp = get_xp(x)
        n, c, h, w = x.shape
        k, s, p = self.k, self.stride, self.pad
        if s != 1:
            return _windows(_pad(x, p, p, p, p), k, k, s, oh, ow).transpose(0, 1, 4, 5, 2, 3)
        hp, wp = h + 2 * p + 1, w + 2 * p  # one spare row: the last window's row runs over
        padded = xp.zeros((n, c, hp, wp), x.dtype)
        _copy_in_chunks(padded[:, :, p : p + h, p : p + w], x)
        flat = padded.reshape(n, c, hp * wp)
        st = flat.strides
        return xp.lib.stride_tricks.as_strided(
            flat, (n, c, k, k, oh * wp), (st[0], st[1], wp * st[2], st[2], st[2])
        )

    def _columns(self, view, image: slice):
        """The im2col matrix of some images: (images, G, C/G * k * k, OH * width)."""
        xp = get_xp(view)
        part = view[image]
        cols = xp.empty(part.shape, part.dtype)
        cols[...] = part
        return cols.reshape(len(cols), self.group, -1, int(np.prod(part.shape[4:])))

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        n = x.shape[0]
        oh, ow, width = self._geometry(x.shape)
        view = self._view(x, oh, ow)
        weights = self.params[0].reshape(self.group, self.out // self.group, -1)[None]
        bias = self.params[1].reshape(1, -1, 1, 1) if len(self.params) > 1 else 0
        y = xp.empty((n, self.out, oh, ow), x.dtype)

        def convolve(_, chunk):
            for image in _images(xp, chunk):
                full = xp.matmul(weights, self._columns(view, image)).reshape(-1, self.out, oh, width)
                xp.add(full[..., :ow], bias, out=y[image])

        _in_chunks(xp, n, convolve)
        self._saved = (view, x.shape)
        return [y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        view, (n, c, h, w) = self._saved
        k, s, p, g = self.k, self.stride, self.pad, self.group
        oh, ow, width = self._geometry((n, c, h, w))
        dy = top_diffs[0]
        weights = self.params[0].reshape(g, self.out // g, -1)
        chunks = _chunks(xp, n)
        dw = xp.zeros((len(chunks),) + weights.shape, dy.dtype)
        # col2im target: the padded image (stride 1: flat rows, as im2col read them)
        hp, wp = (h + 2 * p + 1, w + 2 * p) if s == 1 else (h + 2 * p + s, w + 2 * p + s)
        dx = xp.zeros((n, c, hp, wp), dy.dtype) if self.propagate else None

        def back(index, chunk):
            for image in _images(xp, chunk):
                d = xp.zeros((len(dy[image]), self.out, oh, width), dy.dtype)
                d[..., :ow] = dy[image]  # zeros under the dropped columns: no gradient there
                d = d.reshape(-1, g, self.out // g, oh * width)
                # dW[g] = sum over images of dy[g] @ cols[g]^T, summed chunk by chunk
                dw[index] += xp.matmul(d, self._columns(view, image).transpose(0, 1, 3, 2)).sum(axis=0)
                if dx is not None:
                    dcols = xp.matmul(weights.transpose(0, 2, 1)[None], d).reshape(-1, c, k, k, oh * width)
                    self._col2im(dx[image], dcols, oh, ow)

        _in_chunks(xp, n, back)
        self.grads[0] = dw.sum(axis=0).reshape(self.params[0].shape)
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=(0, 2, 3))
        return [None if dx is None else dx[:, :, p : p + h, p : p + w]]

    def _col2im(self, dx, dcols, oh: int, ow: int) -> None:
        """Add the columns' gradients back onto the padded images: one add per kernel offset
        (stride 1: of whole flat rows), never one per pixel."""
        k, s = self.k, self.stride
        if s == 1:
            wp = dx.shape[3]
            flat = dx.reshape(dx.shape[0], dx.shape[1], -1)
            for i in range(k):
                for j in range(k):
                    flat[:, :, i * wp + j : i * wp + j + oh * wp] += dcols[:, :, i, j]
            return
        dcols = dcols.reshape(dcols.shape[:4] + (oh, ow))
        for i in range(k):
            for j in range(k):
                dx[:, :, i : i + s * oh : s, j : j + s * ow : s] += dcols[:, :, i, j]


class Pooling(Layer):
    """MAX or AVE pooling with Caffe's output size (rounds up) and its padding rules: MAX
    windows ignore the padding; AVE divides by the window's area inside the padded input.

    The padded input is split into stride x stride phases (rows and columns by their
    remainder), each laid out flat. A kernel offset then reads, for every output at once,
    one contiguous slice of one phase: k * k long vectorized passes instead of strided
    passes over short rows (NumPy's cost is per row and per stride). Each phase row has
    a point or two beyond the last window; those are dropped."""

    type = "Pooling"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.k, self.stride, self.pad = _kernel(self.p)
        self.method = str(self.p.get("pool", "MAX")).upper()
        if self.method not in ("MAX", "AVE"):
            raise UsageError(f"layer {self.name}: pool {self.method!r}: choose MAX or AVE")
        return super().setup([tuple(s) for s in shapes])

    def shapes(self, shapes):
        n, c, h, w = shapes[0]
        return [
            (n, c, pool_out(h, self.k, self.stride, self.pad), pool_out(w, self.k, self.stride, self.pad))
        ]

    def _geometry(self, h: int, w: int) -> tuple[int, int, int, int]:
        """Output size and a phase's size (HQ, WQ): the padded plane, holding the image
        after the top/left padding and every window, is (HQ * stride, WQ * stride)."""
        k, s, p = self.k, self.stride, self.pad
        oh, ow = pool_out(h, k, s, p), pool_out(w, k, s, p)
        return oh, ow, -(-max(s * (oh - 1) + k, p + h) // s), -(-max(s * (ow - 1) + k, p + w) // s)

    def _phase_views(self, phases, h: int, w: int):
        """Pairs (phase view, image view) for moving pixels between an N x C x H x W image
        array and the phases (stride * stride, N, C, HQ, WQ): padded row r = y + pad is
        phase row r // stride of phase r % stride."""
        s, p = self.stride, self.pad
        for u in range(s):
            for v in range(s):
                y0, x0 = (u - p) % s, (v - p) % s
                rows, cols = len(range(y0, h, s)), len(range(x0, w, s))
                r0, c0 = (y0 + p) // s, (x0 + p) // s
                yield phases[u * s + v, :, :, r0 : r0 + rows, c0 : c0 + cols], (y0, x0)

    def _reads(self, n: int, c: int, hq: int, wq: int, part: slice):
        """For a part of the batch: its grid range and, per kernel offset in scan order,
        the index (phase, slice) of the flat phases its points read, cut at the part's end
        (which drops only points beyond the windows: no thread touches another's memory)."""
        s = self.stride
        a, b, _ = part.indices(n)
        lo, hi = a * c * hq * wq, b * c * hq * wq
        reads = []
        for i in range(self.k):
            for j in range(self.k):
                shift = (i // s) * wq + j // s
                count = min(hi - lo, hi - lo - shift)
                reads.append(((i % s) * s + j % s, slice(lo + shift, lo + shift + count)))
        return lo, hi, reads

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        n, c, h, w = x.shape
        s = self.stride
        oh, ow, hq, wq = self._geometry(h, w)
        fill = -xp.inf if self.method == "MAX" else 0.0
        phases = xp.empty((s * s, n, c, hq, wq), x.dtype)
        flat = phases.reshape(s * s, -1)
        grid = xp.empty(n * c * hq * wq, x.dtype)
        arg = xp.zeros(grid.shape, xp.uint8) if self.method == "MAX" and train else None
        y = xp.empty((n, c, oh, ow), x.dtype)

        def pool(_, part):
            phases[:, part] = fill
            for view, (y0, x0) in self._phase_views(phases[:, part], h, w):
                view[...] = x[part, :, y0::s, x0::s]
            lo, hi, reads = self._reads(n, c, hq, wq, part)
            out = grid[lo:hi]
            out[...] = flat[reads[0]]
            for o, read in enumerate(reads[1:], 1):
                values = flat[read]
                head = out[: len(values)]
                if self.method == "AVE":
                    head += values
                    continue
                if arg is not None:  # the last strict improvement is the first maximum in
                    # scan order (Caffe's rule, which matters for a ReLU's many zeros)
                    better = (values > head).view(xp.uint8)
                    xp.maximum(
                        arg[lo : lo + len(values)], better * xp.uint8(o), out=arg[lo : lo + len(values)]
                    )
                xp.maximum(head, values, out=head)
            y[part] = grid[lo:hi].reshape(-1, c, hq, wq)[:, :, :oh, :ow]

        _in_chunks(xp, n, pool)
        if self.method == "AVE":
            y /= xp.asarray(self._areas(h, w, oh, ow), dtype=x.dtype)
        self._saved = (arg, x.shape)
        return [y]

    def _areas(self, h: int, w: int, oh: int, ow: int) -> np.ndarray:
        k, s, p = self.k, self.stride, self.pad
        hs = np.arange(oh) * s - p
        ws = np.arange(ow) * s - p
        dh = np.minimum(hs + k, h + p) - hs
        dw = np.minimum(ws + k, w + p) - ws
        return np.outer(dh, dw)

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy = top_diffs[0]
        arg, (n, c, h, w) = self._saved
        s = self.stride
        oh, ow, hq, wq = self._geometry(h, w)
        if self.method == "AVE":
            dy = dy / xp.asarray(self._areas(h, w, oh, ow), dtype=dy.dtype)
        grid = xp.empty(n * c * hq * wq, dy.dtype)
        phases = xp.empty((s * s, n, c, hq, wq), dy.dtype)
        flat = phases.reshape(s * s, -1)
        dx = xp.empty((n, c, h, w), dy.dtype)

        def scatter(_, part):  # each output's gradient to where its maximum came from, or all
            lo, hi, reads = self._reads(n, c, hq, wq, part)
            here = grid[lo:hi].reshape(-1, c, hq, wq)
            here[...] = 0  # zero beyond the windows
            here[:, :, :oh, :ow] = dy[part]
            phases[:, part] = 0
            for o, read in enumerate(reads):
                diff = grid[lo : lo + read[1].stop - read[1].start]
                if arg is not None:
                    diff = diff * (arg[lo : lo + len(diff)] == o)
                flat[read] += diff
            for view, (y0, x0) in self._phase_views(phases[:, part], h, w):
                dx[part, :, y0::s, x0::s] = view

        _in_chunks(xp, n, scatter)
        return [dx]


class InnerProduct(Layer):
    """y = x W^T + b over the flattened bottom; weights (num_output, inputs), bias (num_output)."""

    type = "InnerProduct"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shape = tuple(shapes[0])
        self.out = int(self.p["num_output"])
        self._param(
            xp,
            rng,
            (self.out, int(np.prod(shape[1:]))),
            self.p.get("weight_filler", {"type": "gaussian", "std": 0.005}),
            dtype,
            0,
        )
        if self.p.get("bias_term", True):
            self._param(xp, rng, (self.out,), self.p.get("bias_filler", {"type": "constant"}), dtype, 1)
        return super().setup([shape])

    def shapes(self, shapes):
        return [(shapes[0][0], self.out)]

    def forward(self, bottoms, train=True):
        x = bottoms[0].reshape(bottoms[0].shape[0], -1)
        self._saved = (x, bottoms[0].shape)
        y = x @ self.params[0].T
        return [y + self.params[1] if len(self.params) > 1 else y]

    def backward(self, top_diffs):
        x, shape = self._saved
        dy = top_diffs[0]
        self.grads[0] = dy.T @ x
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=0)
        return [(dy @ self.params[0]).reshape(shape)]


class ReLU(Layer):
    """max(x, 0); the gradient passes where the output is positive. Threaded by chunks: on
    the first layers it is a pass over the largest blobs."""

    type = "ReLU"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        y = xp.empty_like(x)
        _in_chunks(xp, len(x), lambda _, part: xp.maximum(x[part], 0, out=y[part]))
        self._y = y
        return [y]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dy, y = top_diffs[0], self._y
        dx = xp.empty_like(dy)
        _in_chunks(xp, len(dy), lambda _, part: xp.multiply(dy[part], y[part] > 0, out=dx[part]))
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


class LRN(Layer):
    """Local response normalization across channels (Caffe's ACROSS_CHANNELS):
    y = x / (k + alpha / n * sum of x^2 over n neighbouring channels) ^ beta."""

    type = "LRN"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.size = int(self.p.get("local_size", 5))
        self.alpha, self.beta = float(self.p.get("alpha", 1.0)), float(self.p.get("beta", 0.75))
        self.kconst = float(self.p.get("k", 1.0))
        return super().setup(shapes)

    def _window_sum(self, a):
        """Sum over the ``size`` channels centred on each channel (zero beyond the edges)."""
        xp = get_xp(a)
        half = (self.size - 1) // 2
        padded = xp.pad(a, ((0, 0), (half, self.size - 1 - half), (0, 0), (0, 0)))
        csum = xp.cumsum(padded, axis=1)
        csum = xp.concatenate([xp.zeros_like(csum[:, :1]), csum], axis=1)
        return csum[:, self.size :] - csum[:, : -self.size]

    def forward(self, bottoms, train=True):
        x = bottoms[0]
        scale = self.kconst + self.alpha / self.size * self._window_sum(x * x)
        y = x * scale ** (-self.beta)
        self._saved = (x, scale, y)
        return [y]

    def backward(self, top_diffs):
        x, scale, y = self._saved
        dy = top_diffs[0]
        # the window is symmetric, so the same sum gathers each channel's influence back
        back = self.size - 1 - (self.size - 1) // 2
        inner = dy * y / scale
        if back != (self.size - 1) // 2:  # an even size: the window is mirrored going back
            inner = inner[:, ::-1]
            gathered = self._window_sum(inner)[:, ::-1]
        else:
            gathered = self._window_sum(inner)
        return [dy * scale ** (-self.beta) - 2 * self.alpha * self.beta / self.size * x * gathered]


class BatchNorm(Layer):
    """Caffe's BatchNorm: normalize each channel by the batch's mean and variance in
    training (and update the moving averages), by the stored averages in testing. Three
    blobs as Caffe stores them: mean sum, variance sum and their scale factor; no affine
    part (a Scale layer follows in Caffe nets). Its blobs are not learned (lr_mult 0)."""

    type = "BatchNorm"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        c = tuple(shapes[0])[1]
        self.eps = float(self.p.get("eps", 1e-5))
        self.momentum = float(self.p.get("moving_average_fraction", 0.999))
        for shape in ((c,), (c,), (1,)):
            self._param(xp, rng, shape, {"type": "constant"}, dtype, len(self.params))
        self.lr_mult = [0.0, 0.0, 0.0]
        self.decay_mult = [0.0, 0.0, 0.0]
        return super().setup(shapes)

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        axes = (0,) + tuple(range(2, x.ndim))
        view = (1, -1) + (1,) * (x.ndim - 2)
        self._global = bool(self.p.get("use_global_stats", not train))  # Caffe: global in TEST
        if not self._global:
            mean, var = x.mean(axis=axes), x.var(axis=axes)
            m = x.size // x.shape[1]
            self.params[2][...] = self.params[2] * self.momentum + 1
            self.params[0][...] = self.params[0] * self.momentum + mean
            self.params[1][...] = self.params[1] * self.momentum + var * (m / max(m - 1, 1))
        else:
            factor = self.params[2][0]
            factor = 1 / factor if float(factor) else 0.0
            mean, var = self.params[0] * factor, self.params[1] * factor
        inv = 1 / xp.sqrt(var + self.eps)
        xhat = (x - mean.reshape(view)) * inv.reshape(view)
        self._saved = (xhat, inv, axes, view)
        return [xhat]

    def backward(self, top_diffs):
        xhat, inv, axes, view = self._saved
        dy = top_diffs[0]
        self.grads = [None, None, None]  # statistics, not learned
        if self._global:
            return [dy * inv.reshape(view)]
        mean_dy = dy.mean(axis=axes).reshape(view)
        mean_dy_xhat = (dy * xhat).mean(axis=axes).reshape(view)
        return [(dy - mean_dy - xhat * mean_dy_xhat) * inv.reshape(view)]


class Flatten(Layer):
    type = "Flatten"

    def shapes(self, shapes):
        return [(shapes[0][0], int(np.prod(shapes[0][1:])))]

    def forward(self, bottoms, train=True):
        self._shape = bottoms[0].shape
        return [bottoms[0].reshape(bottoms[0].shape[0], -1)]

    def backward(self, top_diffs):
        return [top_diffs[0].reshape(self._shape)]


class Scale(Layer):
    """Caffe's Scale over the channel axis: y = x * gamma[c] (+ beta[c] with ``bias_term``),
    gamma and beta learned (fillers ``filler``, default 1, and ``bias_filler``, default 0).
    With ``scale: F`` instead, a fixed factor and nothing learned (e.g. a Sigmoid output
    to [0, 99]; Caffe writes that as a Power layer)."""

    type = "Scale"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.factor = float(self.p["scale"]) if "scale" in self.p else None
        if self.factor is None:
            channels = (tuple(shapes[0])[1],)
            self._param(xp, rng, channels, self.p.get("filler", {"type": "constant", "value": 1}), dtype, 0)
            if self.p.get("bias_term", False):
                self._param(xp, rng, channels, self.p.get("bias_filler", {"type": "constant"}), dtype, 1)
        return super().setup(shapes)

    def _view(self, x) -> tuple[int, ...]:
        return (1, -1) + (1,) * (x.ndim - 2)

    def forward(self, bottoms, train=True):
        x = bottoms[0]
        if self.factor is not None:
            return [x * self.factor]
        self._x = x
        y = x * self.params[0].reshape(self._view(x))
        return [y + self.params[1].reshape(self._view(x)) if len(self.params) > 1 else y]

    def backward(self, top_diffs):
        dy = top_diffs[0]
        if self.factor is not None:
            return [dy * self.factor]
        axes = (0,) + tuple(range(2, dy.ndim))
        self.grads[0] = (dy * self._x).sum(axis=axes)
        if len(self.params) > 1:
            self.grads[1] = dy.sum(axis=axes)
        return [dy * self.params[0].reshape(self._view(dy))]


def _softmax(x):
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


class Softmax(Layer):
    """Softmax over the channel axis (axis 1)."""

    type = "Softmax"

    def forward(self, bottoms, train=True):
        self._y = _softmax(bottoms[0])
        return [self._y]

    def backward(self, top_diffs):
        dy, y = top_diffs[0], self._y
        return [y * (dy - (dy * y).sum(axis=1, keepdims=True))]


class _Loss(Layer):
    """Two bottoms (prediction, target), one scalar top; the target gets no gradient."""

    n_bottoms = 2

    def shapes(self, shapes):
        return [()]


class EuclideanLoss(_Loss):
    """sum((pred - target)^2) / (2 N), Caffe's."""

    type = "EuclideanLoss"

    def forward(self, bottoms, train=True):
        pred, target = bottoms
        self._diff = pred - target.reshape(pred.shape).astype(pred.dtype)
        return [(self._diff * self._diff).sum() / (2 * pred.shape[0])]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._diff / self._diff.shape[0], None]


class SmoothL1Loss(_Loss):
    """Caffe's (Fast R-CNN) smooth L1 with sigma 1: 0.5 d^2 where |d| < 1, else |d| - 0.5;
    summed and divided by N."""

    type = "SmoothL1Loss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        pred, target = bottoms
        d = pred - target.reshape(pred.shape).astype(pred.dtype)
        small = xp.abs(d) < 1
        self._grad = xp.where(small, d, xp.sign(d))
        return [xp.where(small, 0.5 * d * d, xp.abs(d) - 0.5).sum() / pred.shape[0]]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._grad / self._grad.shape[0], None]


class SoftmaxWithLoss(_Loss):
    """Softmax over axis 1 and the mean negative log-likelihood of the integer labels."""

    type = "SoftmaxWithLoss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        logits, labels = bottoms
        self._p = _softmax(logits)
        self._labels = labels.reshape(-1).astype(xp.int64)
        n = logits.shape[0]
        picked = self._p[xp.arange(n), self._labels]
        return [-xp.log(xp.maximum(picked, xp.finfo(logits.dtype).tiny)).sum() / n]

    def backward(self, top_diffs):
        xp = get_xp(self._p)
        n = self._p.shape[0]
        d = self._p.copy()
        d[xp.arange(n), self._labels] -= 1
        return [top_diffs[0] * d / n, None]


class Accuracy(_Loss):
    """The share of samples whose top-1 (or ``top_k``) prediction is the label; no gradient."""

    type = "Accuracy"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        scores, labels = bottoms
        k = int(self.p.get("top_k", 1))
        labels = labels.reshape(-1).astype(xp.int64)
        top = xp.argsort(-scores.reshape(scores.shape[0], -1), axis=1)[:, :k]
        return [(top == labels[:, None]).any(axis=1).mean().astype(scores.dtype)]

    def backward(self, top_diffs):
        return [None, None]


LAYERS: dict[str, type[Layer]] = {
    cls.type: cls
    for cls in (
        Convolution,
        Pooling,
        InnerProduct,
        ReLU,
        Sigmoid,
        TanH,
        Dropout,
        LRN,
        BatchNorm,
        Flatten,
        Scale,
        Softmax,
        EuclideanLoss,
        SmoothL1Loss,
        SoftmaxWithLoss,
        Accuracy,
    )
}
LOSSES = ("EuclideanLoss", "SmoothL1Loss", "SoftmaxWithLoss")


def make_layer(spec: dict) -> Layer:
    """A layer from its recipe entry: ``{name, type, ...params}``."""
    kind = spec.get("type")
    if kind not in LAYERS:
        raise UsageError(
            f"layer {spec.get('name')!r}: type {kind!r}: choose from {', '.join(sorted(LAYERS))}"
        )
    params = {k: v for k, v in spec.items() if k not in ("name", "type", "bottom", "top")}
    return LAYERS[kind](str(spec.get("name", kind)), **params)


def all_params(layers: Sequence[Layer]) -> list[tuple[Layer, int]]:
    """Every (layer, parameter index), in net order: the order a solver and a snapshot use."""
    return [(layer, i) for layer in layers for i in range(len(layer.params))]
