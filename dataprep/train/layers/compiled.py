"""Loops compiled by Numba for the passes NumPy would make many times over memory.

In array code, max pooling for training (the position of each maximum kept for the
backward pass) is a pass per kernel offset over the whole blob (compare, record, keep the
larger), and its backward a pass per offset more; inside a net the blobs come from memory,
not the caches (CaffeNet's pool1 took 67 to 71 ms so, 16 to 17 ms as one loop per plane).
The same holds for ReLU's backward, col2im, LRN and the SGD updates: here each is one loop
per plane, image or parameter, the arithmetic in the array code's order, so the bytes are
the same.

Only the CPU runs these (``threads.compiled_loops``); CuPy runs the array code, which the
tests also run on NumPy against these loops, byte for byte. Each loop is compiled once per
install (Numba's cache beside this file, or its user cache where that is read-only, about
4 s in all) and loaded at its first use, so commands that train no net never import Numba
(0.15 s and about 100 MB).
"""

from __future__ import annotations

import numpy as np
from numba import njit


def _loop(**options):
    """``njit`` with the compiled code kept in Numba's cache (beside this file, or in the
    user's cache folder), or, where neither can be written (Numba refuses the function
    then), compiled afresh in each process that uses it."""

    def compile_(func):
        try:
            return njit(cache=True, **options)(func)
        except RuntimeError:  # "no locator available": nowhere to keep it
            return njit(**options)(func)

    return compile_


@_loop(nogil=True, boundscheck=False)
def _split(plane, s, p, wq, phases):  # pragma: no cover - compiled
    """A plane (H, W) into its s * s phases (rows and columns by their remainder after the
    padding), each laid out flat with rows of ``wq``; what ``phases`` held elsewhere stays."""
    h, w = plane.shape
    for u in range(s):
        y0 = (u - p) % s  # the first image row in phase row u
        r0, rows = (y0 + p) // s, (h - y0 + s - 1) // s
        for v in range(s):
            x0 = (v - p) % s
            c0, cols = (x0 + p) // s, (w - x0 + s - 1) // s
            into = phases[u * s + v]
            for t in range(rows):
                base = (r0 + t) * wq + c0
                for z in range(cols):
                    into[base + z] = plane[y0 + t * s, x0 + z * s]


@_loop()
def _phases(x, k, s, p, y):  # pragma: no cover - compiled
    """For pooling x into y: a buffer for a plane's phases, each a row more than the padded
    plane needs (the last offsets read past it), their row width WQ, and the span of the
    outputs laid out on that grid (WQ - OW columns of each row are dropped)."""
    h, w, oh, ow = x.shape[2], x.shape[3], y.shape[2], y.shape[3]
    hq = -(-max(s * (oh - 1) + k, p + h) // s)  # as Pooling._geometry
    wq = -(-max(s * (ow - 1) + k, p + w) // s)
    return np.empty((s * s, hq * wq + wq), x.dtype), wq, oh * wq


@_loop()
def _tap(phases, i, j, s, wq):  # pragma: no cover - compiled
    """Kernel offset (i, j): the phase it reads, and where the outputs' run starts in it."""
    return phases[(i % s) * s + j % s], (i // s) * wq + j // s


@_loop(nogil=True, boundscheck=False)
def pool(x, ave, k, s, p, areas, y, arg):  # pragma: no cover - compiled
    """Pooling of x (N, C, H, W) into y (N, C, OH, OW). MAX keeps each maximum's kernel
    offset (i * k + j, the first in scan order: Caffe's rule) in ``arg``; AVE (``ave``;
    ``arg`` unwritten) sums each window in scan order and divides by Caffe's ``areas``
    (OH, OW): the array code's values, bit for bit. Per plane, over the phases (``_split``)
    each offset reads one contiguous run for every output at once (``_tap``); the padding
    and the windows past the input (Caffe's sizes round up) read -inf for MAX, 0 for AVE."""
    n, c, oh, ow = y.shape
    phases, wq, span = _phases(x, k, s, p, y)
    best = np.empty(span, x.dtype)  # the maxima, or the sums
    at = np.empty(span, arg.dtype)
    for a in range(n):
        for b in range(c):
            phases[...] = 0 if ave else -np.inf
            _split(x[a, b], s, p, wq, phases)
            for i in range(k):
                for j in range(k):
                    read, shift = _tap(phases, i, j, s, wq)
                    if i == 0 and j == 0:
                        for e in range(span):
                            best[e] = read[shift + e]
                            at[e] = 0
                    elif ave:
                        for e in range(span):
                            best[e] += read[shift + e]
                    else:
                        offset = i * k + j  # stored as arg's type
                        for e in range(span):
                            value = read[shift + e]
                            old = best[e]
                            larger = value > old  # strict: the first maximum stays
                            at[e] = offset if larger else at[e]
                            best[e] = np.maximum(old, value)  # NaN spreads, as np.maximum
            for r in range(oh):
                for q in range(ow):
                    if ave:
                        y[a, b, r, q] = best[r * wq + q] / areas[r, q]
                    else:
                        y[a, b, r, q] = best[r * wq + q]
                        arg[a, b, r, q] = at[r * wq + q]


@_loop(nogil=True)
def _step(best, at, value, offset, ave):  # pragma: no cover - compiled
    """A window's running sum (AVE), or its maximum and that maximum's offset: the first in
    scan order stays (strict), and NaN spreads (np.maximum's values), as ``pool``'s runs do.
    Selects without branches (a 3 x 3 row loop over CIFAR-10 quick's pool1, half the batch on
    one core: 6.6 ms with ``or``, which branches, 2.2 without; ``pool_windows`` there 3.9 ms
    with np.maximum, 3.1 with these selects)."""
    if ave:
        return best + value, at
    larger = value > best
    return (value if larger | (value != value) else best), (offset if larger else at)


@_loop(nogil=True, boundscheck=False)
def _window(x, a, b, r0, c0, k, ave):  # pragma: no cover - compiled
    """One window from (r0, c0), the part inside the plane (Caffe's sizes round up: the
    last windows may reach past it), in scan order: the sum, or the maximum and its offset."""
    h, w = x.shape[2], x.shape[3]
    best, at = x[a, b, r0, c0], 0
    for i in range(min(k, h - r0)):
        for j in range(1 if i == 0 else 0, min(k, w - c0)):
            best, at = _step(best, at, x[a, b, r0 + i, c0 + j], i * k + j, ave)
    return best, at


@_loop(nogil=True, boundscheck=False, inline="always")
def _windows(x, a, b, k, s, ave, areas, y, arg, inside_h, inside_w):  # pragma: no cover - compiled
    """``pool_windows`` of plane (a, b); inlined where ``ave`` is a constant, so each
    method's runs have no branch on it (CIFAR-10 quick's pool1, half the batch on one core:
    3.4 ms with the flag tested per window, 2.9 without)."""
    oh, ow = y.shape[2], y.shape[3]
    for r in range(oh):
        first = 0
        if r < inside_h and k == 2:  # unrolled apart: one loop for both ran 2 to 6 times slower
            r0 = r * s
            for q in range(inside_w):
                col = q * s
                best, at = x[a, b, r0, col], 0
                best, at = _step(best, at, x[a, b, r0, col + 1], 1, ave)
                best, at = _step(best, at, x[a, b, r0 + 1, col], 2, ave)
                best, at = _step(best, at, x[a, b, r0 + 1, col + 1], 3, ave)
                _put(y, arg, a, b, r, q, best, at, areas, ave)
            first = inside_w
        elif r < inside_h and k == 3:
            r0 = r * s
            for q in range(inside_w):
                col = q * s
                best, at = x[a, b, r0, col], 0
                best, at = _step(best, at, x[a, b, r0, col + 1], 1, ave)
                best, at = _step(best, at, x[a, b, r0, col + 2], 2, ave)
                best, at = _step(best, at, x[a, b, r0 + 1, col], 3, ave)
                best, at = _step(best, at, x[a, b, r0 + 1, col + 1], 4, ave)
                best, at = _step(best, at, x[a, b, r0 + 1, col + 2], 5, ave)
                best, at = _step(best, at, x[a, b, r0 + 2, col], 6, ave)
                best, at = _step(best, at, x[a, b, r0 + 2, col + 1], 7, ave)
                best, at = _step(best, at, x[a, b, r0 + 2, col + 2], 8, ave)
                _put(y, arg, a, b, r, q, best, at, areas, ave)
            first = inside_w
        for q in range(first, ow):  # any other kernel, and the windows past the plane
            best, at = _window(x, a, b, r * s, q * s, k, ave)
            _put(y, arg, a, b, r, q, best, at, areas, ave)


@_loop(nogil=True, inline="always")
def _put(y, arg, a, b, r, q, best, at, areas, ave):  # pragma: no cover - compiled
    """An output: the window's mean, or its maximum and that maximum's offset."""
    if ave:
        y[a, b, r, q] = best / areas[r, q]
    else:
        y[a, b, r, q] = best
        arg[a, b, r, q] = at


@_loop(nogil=True, boundscheck=False)
def pool_windows(x, ave, k, s, areas, y, arg):  # pragma: no cover - compiled
    """``pool`` without padding: each window read where it lies, with no phases to lay out
    and fill per plane. A row's windows that lie inside the plane go in one run (2 x 2 and
    3 x 3 unrolled), then the few that reach past it (Caffe's sizes round up). The same
    scan order and rules, so the same bytes. Indexed from the blob, not through views of
    planes and rows: each view costs reference counts (LeNet's pool2, 8 x 8 planes, half
    its batch on one core: 0.26 ms with views, 0.10 without). MAX forward ms, the layer on
    two cores, ``pool`` -> this: CIFAR-10 quick's pool1 4.5 -> 3.0, CaffeNet's pool1 12.1
    -> 7.0 and pool2 8.4 -> 4.8, the tutorial net's pool1 12.5 -> 9.8, LeNet's pool1
    (whose 2 x 2 tiles had a loop of their own) 0.50 -> 0.41."""
    n, c, oh, ow = y.shape
    h, w = x.shape[2], x.shape[3]
    inside = min(oh, (h - k) // s + 1), min(ow, (w - k) // s + 1)  # rows, columns of whole windows
    for a in range(n):
        for b in range(c):
            if ave:
                _windows(x, a, b, k, s, True, areas, y, arg, inside[0], inside[1])
            else:
                _windows(x, a, b, k, s, False, areas, y, arg, inside[0], inside[1])


@_loop(nogil=True, boundscheck=False)
def unpool(dy, ave, arg, areas, k, s, p, dx):  # pragma: no cover - compiled
    """Pooling's backward: MAX (``arg``: the maxima's offsets) adds each output's gradient
    to the input its maximum came from; AVE (``ave``; ``arg`` unread) adds it over the
    window's area (``areas``) to every input of its window. Outputs are taken last to
    first, so each input sums its gradients in the order of their kernel offsets, as the
    array code does (float sums depend on the order). Offsets to rows and columns by table,
    not division (MAX backward, two cores: CIFAR-10 quick's pool1 2.2 -> 1.9 ms, CaffeNet's
    pool1 5.8 -> 4.6)."""
    n, c, h, w = dx.shape
    oh, ow = dy.shape[2], dy.shape[3]
    # an offset's row and column, by table: no division per output
    down, across = np.arange(k * k) // k, np.arange(k * k) % k
    for a in range(n):
        for b in range(c):
            dx[a, b] = 0
            for r in range(oh - 1, -1, -1):
                for q in range(ow - 1, -1, -1):
                    if not ave:
                        o = arg[a, b, r, q]
                        row, col = r * s - p + down[o], q * s - p + across[o]
                        if 0 <= row < h and 0 <= col < w:
                            dx[a, b, row, col] += dy[a, b, r, q]
                    else:
                        share = dy[a, b, r, q] / areas[r, q]
                        for i in range(k):
                            for j in range(k):
                                row, col = r * s - p + i, q * s - p + j
                                if 0 <= row < h and 0 <= col < w:
                                    dx[a, b, row, col] += share


@_loop(nogil=True, boundscheck=False)
def col2im(dcols, s, dx):  # pragma: no cover - compiled
    """Convolution's col2im: column gradients (C, k, k, m, OH, OW) added onto the padded
    images' gradient (m, C, H + 2 pad, W + 2 pad), per image and channel while its plane
    sits in the caches; each input sums its terms in kernel-offset order, as the array
    code's k * k strided adds do (CaffeNet's conv2, a group of one image: 0.80 -> 0.54 ms)."""
    c, k = dcols.shape[0], dcols.shape[1]
    m, oh, ow = dcols.shape[3], dcols.shape[4], dcols.shape[5]
    for n in range(m):
        for ch in range(c):
            plane = dx[n, ch]
            for i in range(k):
                for j in range(k):
                    terms = dcols[ch, i, j, n]
                    for y in range(oh):
                        row, src = plane[y * s + i], terms[y]
                        for x in range(ow):
                            row[x * s + j] += src[x]


LANES = 16  # a sum's partial sums kept apart, so its adds run as vectors


@_loop(nogil=True, boundscheck=False)
def _sum(values, lanes):  # pragma: no cover - compiled
    """The sum of ``values`` in a fixed order: LANES partial sums over runs of LANES (as
    vectors: a run of scalar adds per tap cost LeNet's conv1 a third of its backward), then
    they and the tail in turn."""
    lanes[:] = 0
    whole = len(values) // LANES * LANES
    for start in range(0, whole, LANES):
        for lane in range(LANES):
            lanes[lane] += values[start + lane]
    total = values.dtype.type(0)
    for lane in range(LANES):
        total += lanes[lane]
    for e in range(whole, len(values)):
        total += values[e]
    return total


@_loop(nogil=True, boundscheck=False)
def _flat_planes(x, pad, k, planes):  # pragma: no cover - compiled
    """Images (m, C, H, W) into ``planes`` (m, C, (H + 2 pad) (W + 2 pad) + k), each its
    padded plane laid out flat (the zeros around it, and k past its end, left as they are):
    a stride-1 kernel tap is then one run over the flat plane, shifted."""
    m, c, h, w = x.shape
    wp = w + 2 * pad
    for n in range(m):
        for ch in range(c):
            for r in range(h):
                base = (r + pad) * wp + pad
                for col in range(w):
                    planes[n, ch, base + col] = x[n, ch, r, col]


@_loop(nogil=True, boundscheck=False)
def convolve_direct(x, w, bias, pad, y):  # pragma: no cover - compiled
    """A stride-1 convolution of few input channels, direct: each output plane summed over
    the flat padded planes (runs of OH x (W + 2 pad), whose last 2 pad - k + 1 columns of
    each row are dropped), then the bias added. A kernel row's taps go three at a time (two
    or one at its end), one pass over the sums for three products (on one core, LeNet's
    conv1 forward 1.48 -> 1.17 ms, CIFAR-10 quick's 17.8 -> 14.1). Where C k k is small,
    im2col's product has K = C k k (LeNet's conv1: 25) and runs far below BLAS's rate."""
    m, c, h, wd = x.shape
    out, _, k, _ = w.shape
    oh, ow = y.shape[2], y.shape[3]
    wp = wd + 2 * pad
    run = oh * wp
    planes = np.zeros((1, c, (h + 2 * pad) * wp + k), x.dtype)
    acc = np.empty(run, x.dtype)
    for n in range(m):
        _flat_planes(x[n : n + 1], pad, k, planes)
        for o in range(out):
            acc[:] = 0
            for ch in range(c):
                plane = planes[0, ch]
                for i in range(k):
                    j = 0
                    while j + 2 < k:
                        at = i * wp + j
                        a, b, t = w[o, ch, i, j], w[o, ch, i, j + 1], w[o, ch, i, j + 2]
                        one, two = plane[at : at + run], plane[at + 1 : at + 1 + run]
                        three = plane[at + 2 : at + 2 + run]
                        for e in range(run):
                            acc[e] += a * one[e] + b * two[e] + t * three[e]
                        j += 3
                    if j + 1 < k:  # two left
                        at = i * wp + j
                        a, b = w[o, ch, i, j], w[o, ch, i, j + 1]
                        one, two = plane[at : at + run], plane[at + 1 : at + 1 + run]
                        for e in range(run):
                            acc[e] += a * one[e] + b * two[e]
                    elif j < k:  # one left
                        at = i * wp + j
                        a, one = w[o, ch, i, j], plane[at : at + run]
                        for e in range(run):
                            acc[e] += a * one[e]
            bias_o = bias[o]
            for r in range(oh):
                for col in range(ow):
                    y[n, o, r, col] = acc[r * wp + col] + bias_o


@_loop(nogil=True, boundscheck=False)
def convolve_weights(x, dy, pad, dw):  # pragma: no cover - compiled
    """The weight gradient of ``convolve_direct`` (O, C, k, k), over some images: per tap a
    run of partial sums over the images' flat planes (the top gradient laid out as the
    forward's runs, zeros in the dropped columns), summed last."""
    m, c, h, wd = x.shape
    out, _, k, _ = dw.shape
    oh, ow = dy.shape[2], dy.shape[3]
    wp = wd + 2 * pad
    run = oh * wp
    planes = np.zeros((m, c, (h + 2 * pad) * wp + k), x.dtype)
    _flat_planes(x, pad, k, planes)
    grads = np.zeros((m, out, run), dy.dtype)
    for n in range(m):
        for o in range(out):
            for r in range(oh):
                for col in range(ow):
                    grads[n, o, r * wp + col] = dy[n, o, r, col]
    acc, lanes = np.empty(run, dy.dtype), np.empty(LANES, dy.dtype)
    for o in range(out):
        for ch in range(c):
            for i in range(k):
                for j in range(k):
                    acc[:] = 0
                    for n in range(m):
                        g, src = grads[n, o], planes[n, ch, i * wp + j : i * wp + j + run]
                        for e in range(run):
                            acc[e] += g[e] * src[e]
                    dw[o, ch, i, j] = _sum(acc, lanes)


@_loop(nogil=True, boundscheck=False)
def lrn_scale(x, lo, hi, factor, k, scale):  # pragma: no cover - compiled
    """LRN's scale across channels, k + factor * (the sum of x^2 over channels c + lo ..
    c + hi), per image while its channels sit in the caches; each sum starts at the
    channel's own square and adds the others in the array code's order (its pass per
    offset over the whole blob made nine)."""
    n, c = x.shape[0], x.shape[1]
    for a in range(n):
        planes, out = x[a].reshape(c, -1), scale[a].reshape(c, -1)
        for ch in range(c):
            own, into = planes[ch], out[ch]
            for e in range(own.size):
                into[e] = own[e] * own[e]
            for d in range(lo, hi + 1):
                if d != 0 and 0 <= ch + d < c:
                    other = planes[ch + d]
                    for e in range(own.size):
                        into[e] += other[e] * other[e]
            for e in range(own.size):
                into[e] = into[e] * factor + k


@_loop(nogil=True, boundscheck=False)
def lrn_backward(dy, x, scale, powered, lo, hi, factor, dx):  # pragma: no cover - compiled
    """LRN's data gradient across channels: dy * powered + factor * x * (the sum over
    channels c + lo .. c + hi of dy x powered / scale), per image in the caches, in the
    array code's order."""
    n, c = x.shape[0], x.shape[1]
    inner = np.empty((c, x[0, 0].size), x.dtype)
    for a in range(n):
        top, bottom = dy[a].reshape(c, -1), x[a].reshape(c, -1)
        sc, pw, into = scale[a].reshape(c, -1), powered[a].reshape(c, -1), dx[a].reshape(c, -1)
        for ch in range(c):
            for e in range(inner.shape[1]):
                inner[ch, e] = top[ch, e] * bottom[ch, e] * pw[ch, e] / sc[ch, e]
        for ch in range(c):
            out = into[ch]
            out[:] = inner[ch]
            for d in range(lo, hi + 1):
                if d != 0 and 0 <= ch + d < c:
                    other = inner[ch + d]
                    for e in range(out.size):
                        out[e] += other[e]
            for e in range(out.size):
                out[e] = top[ch, e] * pw[ch, e] + out[e] * bottom[ch, e] * factor


@_loop(nogil=True, boundscheck=False)
def relu_backward(dy, y, dx):  # pragma: no cover - compiled
    """ReLU's backward in one pass: the gradient times whether the output is positive (the
    array code's compare and product make two, the product casting the mask), the same
    bytes: -0.0 for a negative gradient masked, NaN for an infinite one."""
    top, out, into = dy.reshape(-1), y.reshape(-1), dx.reshape(-1)
    for e in range(top.size):
        into[e] = top[e] * (out[e] > 0)


@_loop(nogil=True, boundscheck=False)
def sgd_update(w, grad, history, scale, decay, l1, local, momentum, nesterov):  # pragma: no cover - compiled
    """Caffe's SGD or Nesterov update of one parameter in one pass: normalize (``scale``: 1
    / iter_size, or 1), regularize (``decay`` times the weight, or its sign with ``l1``),
    history = momentum * history + local * gradient; w -= history, or for Nesterov w -=
    (1 + momentum) * history - momentum * the old history (``nesterov``: 1 + momentum, else
    0). The scalars come in the arrays' type and every operation rounds as the array code's
    (no fused multiply-adds), so the bytes are the array code's; it made seven to nine
    passes over each parameter."""
    w, grad, history = w.reshape(-1), grad.reshape(-1), history.reshape(-1)
    for e in range(w.size):
        g = grad[e]
        if scale != 1:
            g = g * scale
        if decay != 0:
            g = g + decay * (np.sign(w[e]) if l1 else w[e])
        previous = history[e] * momentum
        h = previous + g * local
        history[e] = h
        w[e] = w[e] - (h * nesterov - previous if nesterov != 0 else h)
