"""Max and average pooling with Caffe's output sizes and padding rules."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .geometry import check_window, padded_windows, pool_out, scatter_windows, square, window
from .threads import compiled_loops, in_parts


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
        self.method = str(self.p.get("pool", "MAX")).upper()
        if self.method not in ("MAX", "AVE"):
            raise UsageError(f"layer {self.name}: pool {self.method!r}: choose MAX or AVE")
        self.whole = bool(self.p.get("global_pooling", False))  # one window: the whole map
        if self.whole:
            if "kernel_size" in self.p:
                raise UsageError(f"layer {self.name}: global_pooling takes no kernel_size")
            return super().setup([tuple(s) for s in shapes])
        self.win = window(self.p, self.name)
        self.rect = square(self.win) is None  # kernel_h != kernel_w and the like: the plain path
        check_window(self.name, *tuple(shapes[0])[2:], self.win)
        if not self.rect:
            self.k, self.stride, self.pad = square(self.win)
        return super().setup([tuple(s) for s in shapes])

    def shapes(self, shapes):
        n, c, h, w = shapes[0]
        if self.whole:
            return [(n, c, 1, 1)]
        (kh, kw), (sh, sw), (ph, pw) = self.win
        return [(n, c, pool_out(h, kh, sh, ph), pool_out(w, kw, sw, pw))]

    def _areas(self, h: int, w: int, oh: int, ow: int) -> np.ndarray:
        """Caffe's AVE divisors: each window's area inside the padded input (its part past
        the padding left out)."""
        (kh, kw), (sh, sw), (ph, pw) = self.win
        hs, ws = np.arange(oh) * sh - ph, np.arange(ow) * sw - pw
        return np.outer(np.minimum(hs + kh, h + ph) - hs, np.minimum(ws + kw, w + pw) - ws)

    def _forward_rect(self, x):
        """Windows that are not square, over a strided view of the padded input: MAX keeps
        the first maximum in scan order (Caffe's), AVE divides by Caffe's areas."""
        xp = get_xp(x)
        n, c, h, w = x.shape
        _, _, oh, ow = self.shapes([x.shape])[0]
        fill = -xp.inf if self.method == "MAX" else 0.0
        view = padded_windows(x, self.win, (oh, ow), fill)
        flat = view.reshape(n, c, oh, ow, -1)
        if self.method == "MAX":
            arg = flat.argmax(axis=4)
            self._saved = (arg, x.shape)
            return [xp.take_along_axis(flat, arg[..., None], 4)[..., 0]]
        self._saved = (None, x.shape)
        areas = xp.asarray(self._areas(h, w, oh, ow), dtype=x.dtype)
        return [flat.sum(axis=4) / areas]

    def _backward_rect(self, dy):
        xp = get_xp(dy)
        arg, (n, c, h, w) = self._saved
        (kh, kw), _, _ = self.win
        _, _, oh, ow = dy.shape
        if arg is None:
            share = dy / xp.asarray(self._areas(h, w, oh, ow), dtype=dy.dtype)
            diffs = xp.broadcast_to(share[..., None, None], (n, c, oh, ow, kh, kw))
        else:
            diffs = xp.zeros((n, c, oh, ow, kh * kw), dy.dtype)
            xp.put_along_axis(diffs, arg[..., None], dy[..., None], 4)
            diffs = diffs.reshape(n, c, oh, ow, kh, kw)
        return [scatter_windows(diffs, self.win, (n, c, h, w), (oh, ow))]

    def _forward_whole(self, x):
        """Global pooling: the maximum (its first position in scan order kept for the
        backward pass) or the mean of each whole map."""
        xp = get_xp(x)
        n, c, h, w = x.shape
        flat = x.reshape(n, c, h * w)
        if self.method == "AVE":
            self._saved = (None, x.shape)
            return [flat.mean(axis=2, dtype=x.dtype).reshape(n, c, 1, 1)]
        arg = flat.argmax(axis=2)
        self._saved = (arg, x.shape)
        return [xp.take_along_axis(flat, arg[:, :, None], 2).reshape(n, c, 1, 1)]

    def _backward_whole(self, dy):
        xp = get_xp(dy)
        arg, (n, c, h, w) = self._saved
        if arg is None:
            return [xp.broadcast_to(dy / (h * w), (n, c, h, w)).copy()]
        dx = xp.zeros((n, c, h * w), dy.dtype)
        xp.put_along_axis(dx, arg[:, :, None], dy.reshape(n, c, 1), 2)
        return [dx.reshape(n, c, h, w)]

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

    def _taps(self, size: int, out: int) -> list[tuple[int, int, int]]:
        """Per kernel offset along one axis: the outputs (first, past the last) whose window
        holds it inside the input, and the input index the first of them reads (Caffe's
        windows are clipped to the input; the padding is never a maximum)."""
        k, s, p = self.k, self.stride, self.pad
        taps = []
        for i in range(k):
            lo, hi = max(0, -(-(p - i) // s)), min(out, (size - 1 - i + p) // s + 1)
            if lo < hi:
                taps.append((lo, hi, s * lo + i - p))
        return taps

    def _forward_max_separable(self, x):
        """MAX without the argmax a backward needs (inference): the maximum over each
        window's rows, then over its columns, 2 k strided passes where the phases take a
        copy and k * k passes (SqueezeNet's pool1 at batch 32: 39 -> 21 ms)."""
        xp = get_xp(x)
        n, c, h, w = x.shape
        s = self.stride
        oh, ow = self.shapes([x.shape])[0][2:]
        y = xp.empty((n, c, oh, ow), x.dtype)

        def reduce(src, dst, taps, axis: int) -> None:
            cover = [t for t in taps if t[:2] == (0, dst.shape[axis])]
            if cover:  # an offset inside every window starts the maximum
                taps = [cover[0]] + [t for t in taps if t is not cover[0]]
            else:
                dst[...] = -xp.inf
            for index, (lo, hi, start) in enumerate(taps):
                at = [slice(None)] * 4
                at[axis] = slice(start, start + s * (hi - lo - 1) + 1, s)
                into = [slice(None)] * 4
                into[axis] = slice(lo, hi)
                if index == 0 and cover:
                    dst[...] = src[tuple(at)]
                else:
                    xp.maximum(dst[tuple(into)], src[tuple(at)], out=dst[tuple(into)])

        row_taps, col_taps = self._taps(h, oh), self._taps(w, ow)

        def pool(_, part):
            rows = xp.empty((part.stop - part.start, c, oh, w), x.dtype)
            reduce(x[part], rows, row_taps, 2)
            reduce(rows, y[part], col_taps, 3)

        in_parts(x, pool)
        self._saved = (None, x.shape, None)
        return [y]

    def _offsets(self):
        """The type of the kernel offsets MAX keeps for the backward pass: one byte up to
        16 x 16 windows."""
        return np.uint8 if self.k * self.k <= 256 else np.uint16

    def _forward_compiled(self, x, loops):
        """Training's pooling as one compiled loop per plane (``compiled``): MAX keeps the
        offset of each output's maximum (N, C, OH, OW) for the backward pass."""
        x = np.ascontiguousarray(x)
        n, c, h, w = x.shape
        y = np.empty(self.shapes([x.shape])[0], x.dtype)
        k, s, p = self.k, self.stride, self.pad
        ave = self.method == "AVE"
        areas = self._areas(h, w, *y.shape[2:]).astype(x.dtype)
        arg = np.empty((len(x), 0, 0, 0) if ave else y.shape, self._offsets())  # AVE keeps none
        if not p:  # each window where it lies
            in_parts(x, lambda _, part: loops.pool_windows(x[part], ave, k, s, areas, y[part], arg[part]))
        else:
            in_parts(x, lambda _, part: loops.pool(x[part], ave, k, s, p, areas, y[part], arg[part]))
        self._saved = (None if ave else arg, x.shape, loops)
        return [y]

    def _backward_compiled(self, dy, arg, shape, loops):
        """The compiled forward's backward (``compiled.unpool``): MAX's gradients to their
        maxima, AVE's over each window."""
        dy = np.ascontiguousarray(dy)
        dx = np.empty(shape, dy.dtype)
        k, s, p = self.k, self.stride, self.pad
        ave = arg is None
        areas = self._areas(*shape[2:], *dy.shape[2:]).astype(dy.dtype)
        arg = np.empty((len(dy), 0, 0, 0), np.uint8) if ave else arg  # AVE reads none
        in_parts(dx, lambda _, part: loops.unpool(dy[part], ave, arg[part], areas, k, s, p, dx[part]))
        return [dx]

    def forward(self, bottoms, train=True):
        if self.whole:
            return self._forward_whole(bottoms[0])
        if self.rect:
            return self._forward_rect(bottoms[0])
        if self.method == "MAX" and not train:
            return self._forward_max_separable(bottoms[0])
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        loops = compiled_loops(xp) if train else None  # inference loads no Numba
        if loops:
            return self._forward_compiled(x, loops)
        n, c, h, w = x.shape
        s = self.stride
        oh, ow, hq, wq = self._geometry(h, w)
        fill = -xp.inf if self.method == "MAX" else 0.0
        phases = xp.empty((s * s, n, c, hq, wq), x.dtype)
        flat = phases.reshape(s * s, -1)
        grid = xp.empty(n * c * hq * wq, x.dtype)
        arg = xp.zeros(grid.shape, self._offsets()) if self.method == "MAX" and train else None
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
                        arg[lo : lo + len(values)], better * arg.dtype.type(o), out=arg[lo : lo + len(values)]
                    )
                xp.maximum(head, values, out=head)
            y[part] = grid[lo:hi].reshape(-1, c, hq, wq)[:, :, :oh, :ow]

        in_parts(x, pool)
        if self.method == "AVE":
            y /= xp.asarray(self._areas(h, w, oh, ow), dtype=x.dtype)
        self._saved = (arg, x.shape, None)
        return [y]

    def backward(self, top_diffs):
        if self.whole:
            return self._backward_whole(top_diffs[0])
        if self.rect:
            return self._backward_rect(top_diffs[0])
        xp = get_xp(top_diffs[0])
        dy = top_diffs[0]
        arg, (n, c, h, w), loops = self._saved
        if loops:
            return self._backward_compiled(dy, arg, (n, c, h, w), loops)
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

        in_parts(dx, scatter)
        return [dx]
