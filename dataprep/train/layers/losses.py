"""Softmax, the losses (Euclidean, smooth L1, softmax log-loss) and Accuracy."""

from __future__ import annotations

import numpy as np

from ...errors import DataprepError, UsageError
from ...transforms import get_xp
from .base import Layer


def _softmax(x, axis: int = 1):
    xp = get_xp(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


class Softmax(Layer):
    """Softmax over ``axis`` (default 1, the channels)."""

    type = "Softmax"

    def shapes(self, shapes):
        ndim = len(shapes[0])
        self.axis = int(self.p.get("axis", 1))
        if not -ndim <= self.axis < ndim:
            raise UsageError(f"layer {self.name}: axis {self.axis} outside the {ndim} axes of its bottom")
        self.axis %= ndim
        return [tuple(shapes[0])]

    def forward(self, bottoms, train=True):
        self._y = _softmax(bottoms[0], self.axis)
        return [self._y]

    def backward(self, top_diffs):
        dy, y = top_diffs[0], self._y
        return [y * (dy - (dy * y).sum(axis=self.axis, keepdims=True))]


class Loss(Layer):
    """Two bottoms (prediction, target), one scalar top; the target gets no gradient."""

    n_bottoms = 2

    def shapes(self, shapes):
        return [()]


class ElementwiseLoss(Loss):
    """A loss over prediction and target element by element: both must hold as many values
    (Caffe's set-up check, naming the layer, not a failed reshape at the first batch)."""

    def shapes(self, shapes):
        pred, target = (tuple(s) for s in shapes)
        count = lambda shape: int(np.prod(shape[1:], dtype=np.int64))  # noqa: E731
        if count(pred) != count(target):
            raise UsageError(
                f"layer {self.name}: its prediction has {count(pred)} values per item {pred[1:]} and the "
                f"target {count(target)} {target[1:]}: they must match (num_output, or the label columns)"
            )
        return [()]


class EuclideanLoss(ElementwiseLoss):
    """sum((pred - target)^2) / (2 N), Caffe's."""

    type = "EuclideanLoss"

    def forward(self, bottoms, train=True):
        pred, target = bottoms
        self._diff = pred - target.reshape(pred.shape).astype(pred.dtype)
        return [(self._diff * self._diff).sum() / (2 * pred.shape[0])]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._diff / self._diff.shape[0], None]


class SmoothL1Loss(ElementwiseLoss):
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


class SigmoidCrossEntropyLoss(ElementwiseLoss):
    """-sum(t log sigmoid(x) + (1 - t) log(1 - sigmoid(x))) / N over targets in [0, 1] of
    the prediction's count, computed stably (Caffe's); the gradient (sigmoid(x) - t) / N."""

    type = "SigmoidCrossEntropyLoss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x, target = bottoms
        if target.size != x.size:
            raise UsageError(f"layer {self.name}: {target.size} targets for {x.size} predictions")
        t = target.reshape(x.shape).astype(x.dtype)
        positive = (x >= 0).astype(x.dtype)
        loss = -(x * (t - positive) - xp.log1p(xp.exp(x - 2 * x * positive))).sum()
        self._diff = 1 / (1 + xp.exp(-x)) - t
        return [loss / x.shape[0]]

    def backward(self, top_diffs):
        return [top_diffs[0] * self._diff / self._diff.shape[0], None]


class ContrastiveLoss(Loss):
    """Caffe's ContrastiveLoss over a pair of features (a, b) and a similarity label y
    (1: similar): sum(y d^2 + (1 - y) max(margin - d, 0)^2) / 2N with d the Euclidean
    distance; ``legacy_version`` takes max(margin - d^2, 0) for dissimilar pairs instead
    (Caffe's first form). The label gets no gradient."""

    type = "ContrastiveLoss"
    n_bottoms = 3

    def shapes(self, shapes):
        a, b, y = (tuple(s) for s in shapes)
        if a != b or int(np.prod(y)) != a[0]:
            raise UsageError(
                f"layer {self.name}: the pair's features {a[1:]} and {b[1:]} must match, with one "
                f"similarity label per pair ({y} for {a[0]})"
            )
        self.margin = float(self.p.get("margin", 1.0))
        self.legacy = bool(self.p.get("legacy_version", False))
        return [()]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        a, b, y = bottoms
        n = a.shape[0]
        diff = (a - b).reshape(n, -1)
        dist_sq = (diff * diff).sum(axis=1)
        similar = y.reshape(n).astype(a.dtype)
        if self.legacy:
            gap = xp.maximum(self.margin - dist_sq, 0)
            dissimilar = gap
        else:
            dist = xp.sqrt(dist_sq)
            gap = xp.maximum(self.margin - dist, 0)
            dissimilar = gap * gap
        self._saved = (diff, dist_sq, similar, gap, a.shape)
        return [(similar * dist_sq + (1 - similar) * dissimilar).sum() / (2 * n)]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        diff, dist_sq, similar, gap, shape = self._saved
        n = shape[0]
        alpha = top_diffs[0] / n
        if self.legacy:  # Caffe: -alpha * diff where the margin is not met
            pull = xp.where(gap > 0, -1.0, 0.0)
        else:  # Caffe: -alpha * mdist / (dist + 1e-4) * diff
            pull = -gap / (xp.sqrt(dist_sq) + 1e-4)
        factor = similar + (1 - similar) * pull
        da = (alpha * factor[:, None] * diff).astype(diff.dtype).reshape(shape)
        return [da, -da, None]


def class_labels(layer: Layer, labels, classes: int):
    """Labels as integer class indices; DataprepError naming the layer, the sample of the
    batch and the numbers for one outside the classifier's ``classes`` outputs."""
    xp = get_xp(labels)
    labels = labels.reshape(-1).astype(xp.int64)
    bad = xp.flatnonzero((labels < 0) | (labels >= classes))
    if len(bad):
        i = int(bad[0])
        raise DataprepError(
            f"layer {layer.name}: label {int(labels[i])} of sample {i} of the batch is not one of its "
            f"{classes} classes (0..{classes - 1}): check the labels, or give the classifier more outputs"
        )
    return labels


class SoftmaxWithLoss(Loss):
    """Softmax over axis 1 and the mean negative log-likelihood of the integer labels."""

    type = "SoftmaxWithLoss"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        logits, labels = bottoms
        self._p = _softmax(logits)
        self._labels = class_labels(self, labels, logits.shape[1])
        n = logits.shape[0]
        picked = self._p[xp.arange(n), self._labels]
        # Caffe's normalizer is at least 1: an empty batch (all filtered out) has loss 0
        return [-xp.log(xp.maximum(picked, xp.finfo(logits.dtype).tiny)).sum() / max(n, 1)]

    def backward(self, top_diffs):
        xp = get_xp(self._p)
        n = self._p.shape[0]
        d = self._p.copy()
        d[xp.arange(n), self._labels] -= 1
        return [top_diffs[0] * d / max(n, 1), None]


class Accuracy(Loss):
    """The share of samples whose top-1 (or ``top_k``) prediction is the label; no gradient."""

    type = "Accuracy"

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        scores, labels = bottoms
        k = int(self.p.get("top_k", 1))
        labels = class_labels(self, labels, scores.shape[1])
        top = xp.argsort(-scores.reshape(scores.shape[0], -1), axis=1)[:, :k]
        return [(top == labels[:, None]).any(axis=1).mean().astype(scores.dtype)]

    def backward(self, top_diffs):
        return [None, None]
