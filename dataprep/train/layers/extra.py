"""Caffe's remaining everyday layers: Clip, Swish, Threshold (value by value), Tile, Split,
Reduction and MVN (over axes), Embed and Parameter (learned tables), DummyData (filled
tops), SPP (a pyramid of poolings), and the losses MultinomialLogisticLoss, HingeLoss and
InfogainLoss; each as Caffe's layer defines it, forward and backward."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer, fill
from .losses import Loss, _softmax, class_labels
from .pooling import Pooling


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


class DummyData(Layer):
    """Caffe's DummyData: tops of the given shapes (``shape``, or the legacy ``num``,
    ``channels``, ``height``, ``width``) filled by ``data_filler`` (none: zeros; one: for
    every top). Constant tops are filled once; others are drawn again at every forward, as
    Caffe refills them, from the net's generator (the run's seed; a snapshot records its
    state, so a resumed run draws what the uninterrupted one drew)."""

    type = "DummyData"
    n_bottoms = 0

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        self.shapes_ = self._shapes()
        fillers = _listed(self.p.get("data_filler")) or [{"type": "constant"}]
        if len(fillers) not in (1, len(self.shapes_)):
            raise UsageError(
                f"layer {self.name}: {len(fillers)} data_filler for {len(self.shapes_)} tops: "
                "give none, one, or one per top"
            )
        self.fillers = fillers * len(self.shapes_) if len(fillers) == 1 else fillers
        self.rng = rng if rng is not None else np.random.default_rng(0)
        self.xp, self.dtype = xp, dtype
        self.tops = [fill(xp, self.rng, s, f, dtype) for s, f in zip(self.shapes_, self.fillers)]
        return super().setup(shapes)

    def _shapes(self) -> list[tuple[int, ...]]:
        given = [tuple(int(d) for d in (s.get("dim") or ())) for s in _listed(self.p.get("shape"))]
        legacy = [_listed(self.p.get(k)) for k in ("num", "channels", "height", "width")]
        if given and any(legacy) or not given and not all(legacy):
            raise UsageError(
                f"layer {self.name}: give shape {{ dim: ... }} per top, or num, channels, height and width"
            )
        if not given:
            count = max(len(values) for values in legacy)
            if any(len(values) not in (1, count) for values in legacy):
                raise UsageError(
                    f"layer {self.name}: num, channels, height and width: one value or one per top"
                )
            given = [tuple(int(v[i if len(v) > 1 else 0]) for v in legacy) for i in range(count)]
        if len(given) != self.n_tops or any(not s or min(s) < 1 for s in given):
            raise UsageError(f"layer {self.name}: {len(given)} shapes {given} for {self.n_tops} tops")
        return given

    def shapes(self, shapes):
        return list(self.shapes_)

    def forward(self, bottoms, train=True):
        for i, (shape, filler) in enumerate(zip(self.shapes_, self.fillers)):
            if filler.get("type", "constant") != "constant":
                self.tops[i] = fill(self.xp, self.rng, shape, filler, self.dtype)
        return list(self.tops)

    def backward(self, top_diffs):
        return []


def _listed(value) -> list:
    """A prototxt's repeated field as a list (a recipe may give one value as it is)."""
    return [] if value is None else list(value) if isinstance(value, (list, tuple)) else [value]


def _per_sample(layer: Loss, scores, labels) -> tuple:
    """(N, the scores as N x K, each sample's class index): the classifier losses' start."""
    n = scores.shape[0]
    flat = scores.reshape(n, -1)
    return n, flat, class_labels(layer, labels, flat.shape[1])


class MultinomialLogisticLoss(Loss):
    """-sum(log(max(p[label], 1e-20))) / N over probabilities (a Softmax before it)."""

    type = "MultinomialLogisticLoss"

    def forward(self, bottoms, train=True):
        xp, p = get_xp(bottoms[0]), bottoms[0]
        n, flat, index = _per_sample(self, *bottoms)
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
        xp, x = get_xp(bottoms[0]), bottoms[0]
        n, flat, index = _per_sample(self, *bottoms)
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


class SPP(Layer):
    """Caffe's spatial pyramid pooling: level i pools the map into 2^i x 2^i bins (kernel
    ceil(H / bins), stride the kernel, padding half the remainder rounded up), each level
    flattened and all concatenated along the channels; one level gives the pooling itself."""

    type = "SPP"

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        n, c, h, w = shapes[0]
        height = int(self.p.get("pyramid_height", 0))
        if height < 1:
            raise UsageError(f"layer {self.name}: give pyramid_height 1 or more")
        self.levels = []
        for level in range(height):
            bins = 2**level
            kh, kw = -(-h // bins), -(-w // bins)
            ph, pw = (kh * bins - h + 1) // 2, (kw * bins - w + 1) // 2
            if ph >= kh or pw >= kw:
                raise UsageError(
                    f"layer {self.name}: a {h} x {w} map is too small for pyramid_height {height} "
                    f"(level {level}: padding {max(ph, pw)} around a kernel of {min(kh, kw)}; Caffe refuses)"
                )
            pool = Pooling(
                f"{self.name}/level{level}", pool=self.p.get("pool", "MAX"),
                kernel_h=kh, kernel_w=kw, stride_h=kh, stride_w=kw, pad_h=ph, pad_w=pw,
            )  # fmt: skip
            pool.setup([tuple(shapes[0])], xp, rng, dtype)
            self.levels.append(pool)
        return super().setup([tuple(s) for s in shapes])

    def shapes(self, shapes):
        n, c = shapes[0][:2]
        if len(self.levels) == 1:
            return [(n, c, 1, 1)]
        return [(n, sum(c * 4**level for level in range(len(self.levels))))]

    def forward(self, bottoms, train=True):
        pooled = [pool.forward(bottoms, train)[0] for pool in self.levels]
        if len(pooled) == 1:
            return pooled
        xp = get_xp(bottoms[0])
        self._pooled = [p.shape for p in pooled]
        return [xp.concatenate([p.reshape(p.shape[0], -1) for p in pooled], axis=1)]

    def backward(self, top_diffs):
        if len(self.levels) == 1:
            return self.levels[0].backward(top_diffs)
        dy, start, dx = top_diffs[0], 0, None
        for pool, shape in zip(self.levels, self._pooled):
            width = int(np.prod(shape[1:]))
            part = pool.backward([dy[:, start : start + width].reshape(shape)])[0]
            dx = part if dx is None else dx + part
            start += width
        return [dx]


class InfogainLoss(Loss):
    """Caffe's InfogainLoss over raw scores (it takes the softmax itself, along ``axis``):
    -sum_k H[label, k] log p_k over the samples, divided by their count. H is the K x K
    matrix of a third bottom or of the BlobProto file ``source``; the identity makes it
    the softmax log-loss."""

    type = "InfogainLoss"
    n_bottoms = None

    def setup(self, shapes, xp=np, rng=None, dtype=np.float32):
        if len(shapes) not in (2, 3):
            raise UsageError(f"layer {self.name} (InfogainLoss) takes 2 or 3 bottoms, got {len(shapes)}")
        self.axis = int(self.p.get("axis", 1)) % len(shapes[0])
        classes = shapes[0][self.axis]
        if len(shapes) == 3:
            given = int(np.prod(shapes[2], dtype=np.int64))
            self.matrix = None
        else:
            self.matrix = xp.asarray(_infogain_matrix(self.name, self.p.get("source")), dtype=dtype)
            given = self.matrix.size
        if given != classes * classes:
            raise UsageError(
                f"layer {self.name}: its infogain matrix holds {given} values; {classes} classes need "
                f"{classes} x {classes}"
            )
        if self.matrix is not None:
            self.matrix = self.matrix.reshape(classes, classes)
        return super().setup([tuple(s) for s in shapes])

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        scores, labels = bottoms[:2]
        classes = scores.shape[self.axis]
        flat = xp.moveaxis(scores, self.axis, -1).reshape(-1, classes)
        matrix = self.matrix if len(bottoms) == 2 else bottoms[2].reshape(classes, classes)
        p = _softmax(flat)
        index = class_labels(self, labels.reshape(-1), classes)
        rows = matrix[index]  # H[label, :] per sample
        log_p = xp.log(xp.maximum(p, xp.finfo(p.dtype).tiny))
        self._saved = (p, rows, scores.shape, len(bottoms))
        return [-(rows * log_p).sum() / len(index)]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        p, rows, shape, count = self._saved
        d = (p * rows.sum(axis=1, keepdims=True) - rows) * (top_diffs[0] / len(p))
        moved = list(shape[: self.axis]) + list(shape[self.axis + 1 :]) + [shape[self.axis]]
        d = xp.moveaxis(d.reshape(moved), -1, self.axis)
        return [xp.ascontiguousarray(d).astype(p.dtype)] + [None] * (count - 1)  # no label or H gradient


def _infogain_matrix(name: str, source) -> np.ndarray:
    """The H matrix of an InfogainLoss from its BlobProto file (Caffe's ``source``)."""
    if not source:
        raise UsageError(f"layer {name}: InfogainLoss needs a third bottom or infogain_loss_param source")
    from ...stores.caffe_pb import blob_array  # the stores' protobuf: only where a net reads a file

    try:
        data = Path(source).read_bytes()
    except OSError as exc:
        raise UsageError(f"layer {name}: infogain source {source}: {exc.strerror or exc}") from None
    try:
        return blob_array(data)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError or a size mismatch
        raise UsageError(f"layer {name}: infogain source {source} is not a BlobProto file") from None
