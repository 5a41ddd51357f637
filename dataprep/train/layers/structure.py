"""Layers that route blobs rather than compute on them, with Caffe's semantics: Concat,
Slice, Eltwise, Reshape, Crop, Silence and ArgMax."""

from __future__ import annotations

import numpy as np

from ...errors import UsageError
from ...transforms import get_xp
from .base import Layer, Shape


def _axis(layer: Layer, ndim: int, default: int = 1) -> int:
    """The layer's ``axis`` (negative counts from the end); UsageError when out of range."""
    axis = int(layer.p.get("axis", default))
    if not -ndim <= axis < ndim:
        raise UsageError(f"layer {layer.name}: axis {axis} outside the {ndim} axes of its bottom")
    return axis % ndim


class Concat(Layer):
    """Its bottoms joined along ``axis`` (default 1, the channels); the other axes agree."""

    type = "Concat"
    n_bottoms = None

    def shapes(self, shapes):
        first = shapes[0]
        self.axis = _axis(self, len(first))
        for shape in shapes[1:]:
            if len(shape) != len(first) or any(
                a != b for k, (a, b) in enumerate(zip(shape, first)) if k != self.axis
            ):
                raise UsageError(
                    f"layer {self.name}: bottoms {first} and {shape} differ off axis {self.axis}"
                )
        self.sizes = [s[self.axis] for s in shapes]
        return [first[: self.axis] + (sum(self.sizes),) + first[self.axis + 1 :]]

    def forward(self, bottoms, train=True):
        return [get_xp(bottoms[0]).concatenate(bottoms, axis=self.axis)]

    def backward(self, top_diffs):
        bounds = np.cumsum(self.sizes)[:-1].tolist()
        return get_xp(top_diffs[0]).split(top_diffs[0], bounds, axis=self.axis)


class Slice(Layer):
    """Its bottom cut along ``axis`` at ``slice_point``s (or into equal parts, one per top)."""

    type = "Slice"

    def shapes(self, shapes):
        shape = shapes[0]
        self.axis = _axis(self, len(shape), int(self.p.get("slice_dim", 1)))
        size, tops = shape[self.axis], self.n_tops
        points = [int(v) for v in self.p.get("slice_point") or []]
        if points:
            if len(points) != tops - 1 or points != sorted(points) or not 0 < points[0] or points[-1] >= size:
                raise UsageError(
                    f"layer {self.name}: slice_point {points}: give {tops - 1} increasing points "
                    f"inside 1..{size - 1}"
                )
        elif size % tops:
            raise UsageError(
                f"layer {self.name}: axis {self.axis} of size {size} does not split into {tops} tops"
            )
        else:
            points = [size // tops * k for k in range(1, tops)]
        self.points = points
        edges = [0, *points, size]
        return [shape[: self.axis] + (b - a,) + shape[self.axis + 1 :] for a, b in zip(edges, edges[1:])]

    def forward(self, bottoms, train=True):
        return get_xp(bottoms[0]).split(bottoms[0], self.points, axis=self.axis)

    def backward(self, top_diffs):
        return [get_xp(top_diffs[0]).concatenate(top_diffs, axis=self.axis)]


class Filter(Layer):
    """Caffe's Filter: the items (first axis) of each bottom but the last where the last
    bottom, the selector (N or N x 1 x ...), is non-zero, in their order; the tops' first
    axis changes from batch to batch. The gradient goes back to the items kept, zeros to
    the rest; none to the selector, as in Caffe."""

    type = "Filter"
    n_bottoms = None

    def shapes(self, shapes):
        shapes = [tuple(s) for s in shapes]
        if len(shapes) < 2 or self.n_tops != len(shapes) - 1:
            raise UsageError(
                f"layer {self.name}: Filter takes the bottoms to filter, then the selector, "
                "and one top per bottom filtered"
            )
        *kept, selector = shapes
        if any(d != 1 for d in selector[1:]):
            raise UsageError(
                f"layer {self.name}: selector of shape {selector}: its axes past the first must be 1"
            )
        if any(s[:1] != selector[:1] for s in kept):
            raise UsageError(
                f"layer {self.name}: each bottom's first axis must be the selector's {selector[0]}"
            )
        return kept  # as Caffe's first reshape: every item, until a selector is seen

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        *kept, selector = bottoms
        self._items = xp.flatnonzero(selector.reshape(len(selector), -1)[:, 0])
        self._shapes = [b.shape for b in kept]
        return [b[self._items] for b in kept]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        diffs = []
        for shape, d in zip(self._shapes, top_diffs):
            full = xp.zeros(shape, d.dtype)
            full[self._items] = d
            diffs.append(full)
        return [*diffs, None]


class Eltwise(Layer):
    """Element by element over bottoms of one shape: SUM (with ``coeff`` per bottom), PROD
    or MAX (the gradient to the bottom Caffe's mask picks)."""

    type = "Eltwise"
    n_bottoms = None

    def shapes(self, shapes):
        if len(shapes) < 2:
            raise UsageError(f"layer {self.name}: Eltwise takes two or more bottoms")
        if any(tuple(s) != tuple(shapes[0]) for s in shapes[1:]):
            raise UsageError(f"layer {self.name}: bottoms of different shapes {[tuple(s) for s in shapes]}")
        self.operation = str(self.p.get("operation", "SUM")).upper()
        if self.operation not in ("SUM", "PROD", "MAX"):
            raise UsageError(f"layer {self.name}: operation {self.operation!r}: choose SUM, PROD or MAX")
        coeff = [float(c) for c in self.p.get("coeff") or []]
        if coeff and (self.operation != "SUM" or len(coeff) != len(shapes)):
            raise UsageError(f"layer {self.name}: coeff takes one value per bottom, with SUM only")
        self.coeff = coeff or [1.0] * len(shapes)
        return [tuple(shapes[0])]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        self._bottoms = bottoms
        if self.operation == "SUM":
            y = bottoms[0] * self.coeff[0] if self.coeff[0] != 1 else bottoms[0].copy()
            for c, b in zip(self.coeff[1:], bottoms[1:]):
                y += b * c if c != 1 else b
            return [y]
        if self.operation == "PROD":
            y = bottoms[0].copy()
            for b in bottoms[1:]:
                y *= b
            return [y]
        # Caffe's order: of the first two the first only when strictly greater, then each
        # later bottom only when strictly greater than the maximum so far
        first = bottoms[0] > bottoms[1]
        y = xp.where(first, bottoms[0], bottoms[1])
        self._mask = xp.where(first, 0, 1).astype(np.int32)
        for k, b in enumerate(bottoms[2:], 2):
            greater = b > y
            y = xp.where(greater, b, y)
            self._mask[greater] = k
        return [y]

    def backward(self, top_diffs):
        dy = top_diffs[0]
        bottoms = self._bottoms
        if self.operation == "SUM":
            return [dy * c if c != 1 else dy for c in self.coeff]
        if self.operation == "PROD":
            diffs = []
            for k in range(len(bottoms)):
                others = dy.copy()
                for j, b in enumerate(bottoms):
                    if j != k:
                        others *= b
                diffs.append(others)
            return diffs
        return [dy * (self._mask == k) for k in range(len(bottoms))]


class Reshape(Layer):
    """Caffe's Reshape: ``shape {dim: ...}`` replaces axes ``axis`` .. ``axis + num_axes``
    (all, with the defaults); a dim of 0 copies the bottom's, one -1 is inferred."""

    type = "Reshape"

    def shapes(self, shapes):
        return [self._target(tuple(shapes[0]))]

    def _target(self, shape: Shape) -> Shape:
        dims = [int(d) for d in ((self.p.get("shape") or {}).get("dim") or [])]
        start = int(self.p.get("axis", 0))
        start = start if start >= 0 else len(shape) + 1 + start
        num = int(self.p.get("num_axes", -1))
        end = len(shape) if num == -1 else start + num
        if not 0 <= start <= end <= len(shape):
            raise UsageError(f"layer {self.name}: axis {start} and num_axes {num} outside {len(shape)} axes")
        if sum(d == -1 for d in dims) > 1:
            raise UsageError(f"layer {self.name}: shape {dims}: at most one -1")
        new = [shape[start + k] if d == 0 else d for k, d in enumerate(dims)]
        out = list(shape[:start]) + new + list(shape[end:])
        total = int(np.prod(shape))
        if -1 in out:
            known = int(np.prod([d for d in out if d != -1]))
            if known == 0 or total % known:
                raise UsageError(f"layer {self.name}: shape {dims} does not fit {shape}")
            out[out.index(-1)] = total // known
        if int(np.prod(out)) != total:
            raise UsageError(
                f"layer {self.name}: shape {dims} gives {tuple(out)}, {shape} has {total} values"
            )
        return tuple(out)

    def forward(self, bottoms, train=True):
        self._shape = bottoms[0].shape
        return [bottoms[0].reshape(self._target(self._shape))]

    def backward(self, top_diffs):
        return [top_diffs[0].reshape(self._shape)]


class Crop(Layer):
    """The first bottom cut to the second's size on axes ``axis`` (default 2) onward, from
    ``offset`` (one for every such axis, or one each); the second bottom only gives the size."""

    type = "Crop"
    n_bottoms = 2

    def shapes(self, shapes):
        big, small = tuple(shapes[0]), tuple(shapes[1])
        self.axis = _axis(self, len(big), 2)
        axes = len(big) - self.axis
        offsets = [int(v) for v in self.p.get("offset") or [0]]
        if len(offsets) not in (1, axes):
            raise UsageError(f"layer {self.name}: offset takes 1 or {axes} values, got {len(offsets)}")
        offsets = offsets * axes if len(offsets) == 1 else offsets
        out = list(big)
        self.index = [slice(None)] * self.axis
        for k, off in enumerate(offsets):
            a = self.axis + k
            if off < 0 or off + small[a] > big[a]:
                raise UsageError(
                    f"layer {self.name}: offset {off} + size {small[a]} beyond {big[a]} on axis {a}"
                )
            out[a] = small[a]
            self.index.append(slice(off, off + small[a]))
        self.index = tuple(self.index)
        return [tuple(out)]

    def forward(self, bottoms, train=True):
        self._big = bottoms[0].shape
        return [bottoms[0][self.index]]

    def backward(self, top_diffs):
        xp = get_xp(top_diffs[0])
        dx = xp.zeros(self._big, top_diffs[0].dtype)
        dx[self.index] = top_diffs[0]
        return [dx, None]


class Silence(Layer):
    """Takes its bottoms and gives nothing (so unused tops are not outputs)."""

    type = "Silence"
    n_bottoms = None

    def shapes(self, shapes):
        self._shapes = [tuple(s) for s in shapes]
        return []

    def forward(self, bottoms, train=True):
        return []

    def backward(self, top_diffs):
        return [None] * len(self._shapes)


class ArgMax(Layer):
    """The indices of the ``top_k`` largest values (with ``out_max_val``, the values too)
    per sample, or along ``axis``; deploy nets only: no gradient."""

    type = "ArgMax"

    def shapes(self, shapes):
        shape: Shape = tuple(shapes[0])
        self.k = int(self.p.get("top_k", 1))
        self.with_values = bool(self.p.get("out_max_val", False))
        self.axis = _axis(self, len(shape)) if "axis" in self.p else None
        size = shape[self.axis] if self.axis is not None else int(np.prod(shape[1:]))
        if not 1 <= self.k <= size:
            raise UsageError(f"layer {self.name}: top_k {self.k} outside 1..{size}")
        if self.axis is not None:
            return [shape[: self.axis] + (self.k,) + shape[self.axis + 1 :]]
        return [(shape[0], 2 if self.with_values else 1, self.k)]

    def forward(self, bottoms, train=True):
        xp = get_xp(bottoms[0])
        x = bottoms[0]
        if self.axis is not None:  # the values with out_max_val, else the indices
            order = xp.argsort(-x, axis=self.axis, kind="stable")
            top = xp.take(order, xp.arange(self.k), axis=self.axis)
            return [xp.take_along_axis(x, top, self.axis) if self.with_values else top.astype(x.dtype)]
        flat = x.reshape(len(x), -1)
        top = xp.argsort(-flat, axis=1, kind="stable")[:, : self.k]
        rows = [top.astype(x.dtype)]
        if self.with_values:
            rows.append(xp.take_along_axis(flat, top, 1))
        return [xp.stack(rows, axis=1)]

    def backward(self, top_diffs):
        return [None]
