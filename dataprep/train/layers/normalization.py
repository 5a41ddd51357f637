"""Normalization: LRN across channels, BatchNorm, Scale (its affine part) and Bias."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer
from .threads import compiled_loops, in_parts


class LRN(Layer):
    """Local response normalization, Caffe's two regions. ACROSS_CHANNELS:
    y = x / (k + alpha / n * sum of x^2 over n neighbouring channels) ^ beta. WITHIN_CHANNEL,
    as Caffe composes it: y = x * (1 + alpha * P) ^ -beta, P the average of x^2 over a
    size x size window of its own map (AVE pooling, stride 1, padding (size - 1) / 2,
    Caffe's divisors)."""

    type = "LRN"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.size = int(self.p.get("local_size", 5))
        self.alpha, self.beta = float(self.p.get("alpha", 1.0)), float(self.p.get("beta", 0.75))
        self.kconst = float(self.p.get("k", 1.0))
        region = str(self.p.get("norm_region", "ACROSS_CHANNELS")).upper()
        if region not in ("ACROSS_CHANNELS", "WITHIN_CHANNEL"):
            raise UsageError(
                f"layer {self.name}: norm_region {region!r}: choose ACROSS_CHANNELS or WITHIN_CHANNEL"
            )
        self.pool = None
        if region == "WITHIN_CHANNEL":
            from .pooling import Pooling

            pad = (self.size - 1) // 2
            self.pool = Pooling(f"{self.name}/pool", pool="AVE", kernel_size=self.size, stride=1, pad=pad)
            self.pool.setup([tuple(shapes[0])], xp, rng, dtype)
        return super().setup(shapes)

    def _channel_sums(self, a, out, lo: int, hi: int) -> None:
        """``out[:, c]`` = the sum of ``a[:, c + lo .. c + hi]`` (zero beyond the edges): one
        add of a shifted slice per offset (a cumulative sum and its difference took
        CaffeNet's norm1 11.4 of its 16 ms forward; this 1.7)."""
        out[...] = a if lo <= 0 <= hi else 0
        channels = a.shape[1]
        for d in range(lo, hi + 1):
            if d == 0 or abs(d) >= channels:
                continue
            if d > 0:
                out[:, :-d] += a[:, d:]
            else:
                out[:, -d:] += a[:, :d]

    def forward(self, bottoms, train=True):
        x = bottoms[0]
        if self.pool is not None:
            scale = 1 + self.alpha * self.pool.forward([x * x], train)[0]
            powered = scale ** (-self.beta)
            self._saved = (x, scale, powered)
            return [x * powered]
        xp = get_xp(x)
        half = (self.size - 1) // 2
        loops = compiled_loops(xp) if train else None  # inference loads no Numba
        if loops:  # the scale in one pass: CaffeNet's norm1 forward 5.2 -> 3.6 ms, alone
            x = xp.ascontiguousarray(x)
            factor, k = x.dtype.type(self.alpha / self.size), x.dtype.type(self.kconst)
        scale, powered, y = xp.empty_like(x), xp.empty_like(x), xp.empty_like(x)

        def normalize(_, part):
            if loops:
                loops.lrn_scale(x[part], -half, self.size - 1 - half, factor, k, scale[part])
            else:
                squares = x[part] * x[part]
                self._channel_sums(squares, scale[part], -half, self.size - 1 - half)
                scale[part] *= self.alpha / self.size
                scale[part] += self.kconst
            xp.power(scale[part], -self.beta, out=powered[part])
            xp.multiply(x[part], powered[part], out=y[part])

        in_parts(x, normalize)
        self._saved = (x, scale, powered)
        return [y]

    def backward(self, top_diffs):
        dy = top_diffs[0]
        x, scale, powered = self._saved
        if self.pool is not None:  # dP = -beta * alpha * dy * y / scale, back through the pooling
            (gathered,) = self.pool.backward([dy * x * powered / scale])
            return [dy * powered - 2 * self.alpha * self.beta * x * gathered]
        xp = get_xp(dy)
        half = (self.size - 1) // 2
        dx = xp.empty_like(dy)
        loops = compiled_loops(xp)
        if loops:  # one pass: CaffeNet's norm1 backward 5.3 -> 2.6 ms, alone
            dy, x = xp.ascontiguousarray(dy), xp.ascontiguousarray(x)
            factor = dy.dtype.type(-2 * self.alpha * self.beta / self.size)
            lo = -(self.size - 1 - half)

            def loop(_, part):
                loops.lrn_backward(dy[part], x[part], scale[part], powered[part], lo, half, factor, dx[part])

            in_parts(dy, loop)
            return [dx]

        def gather(_, part):  # dy * scale^-beta - 2 alpha beta / n * x * (sum of dy y / scale
            # over the channels whose window holds this one: the window mirrored)
            inner = dy[part] * x[part]
            inner *= powered[part]
            inner /= scale[part]
            gathered = xp.empty_like(inner)
            self._channel_sums(inner, gathered, -(self.size - 1 - half), half)
            gathered *= x[part]
            gathered *= -2 * self.alpha * self.beta / self.size
            xp.multiply(dy[part], powered[part], out=dx[part])
            dx[part] += gathered

        in_parts(dy, gather)
        return [dx]


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


class Bias(Layer):
    """y = x + b, b over axes ``axis`` .. ``axis + num_axes`` (default the channels),
    broadcast along the rest: learned (``filler``, default 0) with one bottom, or the
    second bottom."""

    type = "Bias"
    n_bottoms = None

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        shape = tuple(shapes[0])
        if len(shapes) not in (1, 2):
            raise UsageError(f"layer {self.name} (Bias) takes 1 or 2 bottoms, got {len(shapes)}")
        self.axis = int(self.p.get("axis", 1)) % len(shape)
        num = int(self.p.get("num_axes", 1))
        self.span = shape[self.axis :] if num == -1 else shape[self.axis : self.axis + num]
        if len(shapes) == 2:
            if tuple(shapes[1]) != self.span:
                raise UsageError(f"layer {self.name}: bias of shape {tuple(shapes[1])}, needs {self.span}")
        else:
            self._param(xp, rng, self.span, self.p.get("filler", {"type": "constant"}), dtype, 0)
        return [shape]

    def _view(self, x):
        return (1,) * self.axis + self.span + (1,) * (x.ndim - self.axis - len(self.span))

    def forward(self, bottoms, train=True):
        bias = bottoms[1] if len(bottoms) > 1 else self.params[0]
        self._two = len(bottoms) > 1
        return [bottoms[0] + bias.reshape(self._view(bottoms[0]))]

    def backward(self, top_diffs):
        dy = top_diffs[0]
        axes = tuple(range(self.axis)) + tuple(range(self.axis + len(self.span), dy.ndim))
        db = dy.sum(axis=axes)
        if self._two:
            return [dy, db]
        self.grads[0] = db
        return [dy]
