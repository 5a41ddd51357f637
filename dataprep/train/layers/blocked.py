"""Convolutions with no im2col: each block of outputs summed in registers
(``microkernel.fma_block``) straight from a padded channels-last copy of one image; the
backward for stride 1.

Per image the input is copied once into (H + 2 pad, W + 2 pad, C), where a kernel row's
taps and channels are one contiguous run of k C floats (one group), and the kernels are
laid out (k, k, C, O) to match, a block's outputs apart (``kernels``); a block of P pixels
of an output row and 16 or 32 outputs then sums k runs of k C products each. The data
gradient is the same sum over the top gradient, padded by k - 1 - pad, with the turned
kernels; the weight gradient per kernel tap sums pixels, a block being P input channels by
the outputs. Each group's outputs (and the turned kernels' outputs, its channels) are
padded to a multiple of 16 with zeros.

Compiled for the CPU only, loaded at first use, as ``compiled`` is.
"""

from __future__ import annotations

import numpy as np

from .compiled import _loop
from .microkernel import LANES, VECTORS, fma_block, most_pixels


def lanes(count: int) -> int:
    """``count`` rounded up to whole vectors."""
    return -(-count // LANES) * LANES


def _by_blocks(laid: np.ndarray) -> np.ndarray:
    """Kernels (k, k, C, O') flat, a block's outputs (VECTORS x 16, or what is left) apart
    from the next's: the block's weights are read in order (with all outputs in a row, 384
    of them are 1.5 KB apart and the reads miss the cache: CaffeNet's conv3 ran at half the
    rate of its conv4)."""
    width = VECTORS * LANES
    return np.concatenate([laid[..., o : o + width].reshape(-1) for o in range(0, laid.shape[3], width)])


def _laid(weights: np.ndarray, group: int, turn: bool) -> np.ndarray:
    """Each group's kernels (k, k, channels, outputs rounded up) by blocks, the groups one
    after the other; ``turn``: the data gradient's (each kernel turned 180 degrees, outputs
    and channels swapped)."""
    out, per, k, _ = weights.shape
    groups = weights.reshape(group, out // group, per, k, k)
    if turn:
        groups = groups[..., ::-1, ::-1].transpose(0, 2, 1, 3, 4)
    laid = []
    for kernel in groups:  # (outputs, channels, k, k); turned, the channels are the top's, padded
        outputs, channels = kernel.shape[:2]
        padded = np.zeros((k, k, lanes(channels) if turn else channels, lanes(outputs)), weights.dtype)
        padded[:, :, :channels, :outputs] = kernel.transpose(2, 3, 1, 0)
        laid.append(_by_blocks(padded))
    return np.concatenate(laid)


def kernels(weights: np.ndarray, group: int = 1) -> np.ndarray:
    """Caffe's weights (O, C / groups, k, k) as the forward reads them."""
    return _laid(weights, group, turn=False)


def turned(weights: np.ndarray, group: int = 1) -> np.ndarray:
    """Caffe's weights as the data gradient reads them."""
    return _laid(weights, group, turn=True)


def bias_vector(bias: np.ndarray | None, out: int, group: int, dtype) -> np.ndarray:
    """The bias, each group's padded to whole vectors (zeros without one)."""
    padded = np.zeros((group, lanes(out // group)), dtype)
    if bias is not None:
        padded[:, : out // group] = bias.reshape(group, -1)
    return padded.reshape(-1)


def gradient_sums(n: int, channels: int, outputs: int, k: int, group: int, dtype) -> np.ndarray:
    """Zeros for ``n`` parts' weight gradients: per part and group (k, k, channels / groups,
    outputs / groups rounded up)."""
    return np.zeros((n, group, k, k, channels // group, lanes(outputs // group)), dtype)


def weight_gradient(summed: np.ndarray, outputs: int) -> np.ndarray:
    """The weight gradient summed as (groups, k, k, C / groups, O / groups rounded up) in
    Caffe's (O, C / groups, k, k)."""
    group = summed.shape[0]
    grad = summed[..., : outputs // group].transpose(0, 4, 3, 1, 2)
    return np.ascontiguousarray(grad).reshape(outputs, *grad.shape[2:])


TILE_ROWS = 4  # output rows a weight-gradient block sums before the next block


@_loop(inline="always")
def _share(left, most):  # pragma: no cover - compiled
    """The next block's size: ``left`` in blocks of at most ``most``, as even as can be
    (8 pixels as 4 and 4, not 6 and 2)."""
    blocks = -(-left // most)
    return -(-left // blocks)


@_loop(nogil=True, boundscheck=False)
def _channels_last(image, pad, per, padded):  # pragma: no cover - compiled
    """One image (C, H, W) into ``padded`` (H + 2 pad, W + 2 pad, C'), each ``per``
    channels (a group's) at the start of C' / groups; the border and the channels past each
    group's stay as they are (zeros)."""
    c, h, w = image.shape
    spaced = padded.shape[2] // (c // per)
    for r in range(h):
        for col in range(w):
            for ch in range(c):
                padded[pad + r, pad + col, ch // per * spaced + ch % per] = image[ch, r, col]


@_loop(nogil=True, boundscheck=False)
def _rows(a, group, b, bias, k, s, init, rows):  # pragma: no cover - compiled
    """rows (OH, OW, O') = the convolution (stride s) of the padded channels-last ``a`` with
    ``b`` (``kernels``' layout: each group's O' / groups outputs from its C / groups
    channels), from ``bias`` (init 1) or zero (init 0)."""
    oh, ow, op = rows.shape
    wp, c = a.shape[1], a.shape[2]
    af, yf = a.reshape(-1), rows.reshape(-1)
    per, outputs = c // group, op // group
    for g in range(group):
        o0 = 0
        while o0 < outputs:  # outputs outermost: their kernels stay in the cache over the image
            v = min(VECTORS, (outputs - o0) // LANES)
            width = v * LANES
            if group == 1:  # kernel rows; a kernel row's taps and channels: one run
                one, two, three = (k, wp * c, k * c * width), (k * c, 1, width), (1, 0, 0)
            else:  # kernel rows, taps, the group's channels
                one, two, three = (k, wp * c, k * per * width), (k, c, per * width), (per, 1, width)
            ba = k * k * per * (g * outputs + o0)  # the group's kernels, then the block's
            for r in range(oh):
                x0 = 0
                while x0 < ow:
                    p = _share(ow - x0, most_pixels(v))
                    at, aa = (r * ow + x0) * op + g * outputs + o0, (r * wp + x0) * s * c + g * per
                    fma_block(
                        p, v, af, aa, b, ba, yf, at, bias, g * outputs + o0, one, two, three, s * c, op, init
                    )
                    x0 += p
            o0 += width


@_loop(nogil=True, boundscheck=False)
def forward(x, wt, bias, k, pad, stride, group, y):  # pragma: no cover - compiled
    """y (m, O, OH, OW) = x (m, C, H, W) convolved with ``wt`` (``kernels``), plus the
    padded ``bias``."""
    m, c, h, w = x.shape
    out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    per = out // group
    spaced = -(-per // LANES) * LANES
    padded = np.zeros((h + 2 * pad, w + 2 * pad, c), x.dtype)
    rows = np.empty((oh, ow, group * spaced), x.dtype)
    for n in range(m):
        _channels_last(x[n], pad, c, padded)
        _rows(padded, group, wt, bias, k, stride, 1, rows)
        for o in range(out):
            at = o // per * spaced + o % per
            for r in range(oh):
                for col in range(ow):
                    y[n, o, r, col] = rows[r, col, at]


@_loop(nogil=True, boundscheck=False)
def backward(x, dy, wf, pad, dwt, dx):  # pragma: no cover - compiled
    """The weight gradient of some images summed onto ``dwt`` (``gradient_sums``' part),
    and with ``dx`` (m, C, H, W; empty: none) the data gradient from the turned kernels
    ``wf``; stride 1. With one group a kernel row's taps and channels are one run of
    the padded input, and a block takes P of them (CIFAR-10 quick's conv1: blocks of 8
    rather than of its 3 channels); with groups, P of a tap's channels."""
    m, c, h, w = x.shape
    group, k, per, spaced = dwt.shape[0], dwt.shape[1], dwt.shape[3], dwt.shape[4]
    out, oh, ow = dy.shape[1], dy.shape[2], dy.shape[3]
    q = k - 1 - pad
    wp, wq = w + 2 * pad, ow + 2 * q
    op = group * spaced
    padded = np.zeros((h + 2 * pad, wp, c), x.dtype)
    top = np.zeros((oh + 2 * q, wq, op), x.dtype)
    inputs = -(-per // LANES) * LANES  # the data gradient's outputs a group
    rows = np.empty((h, w, group * inputs), x.dtype)
    none = np.zeros(group * inputs, x.dtype)
    xf, tf, dwf = padded.reshape(-1), top.reshape(-1), dwt.reshape(-1)
    taps, run = (k, per) if group > 1 else (1, k * c)  # per kernel row: taps, and a block's span
    cols, one = (ow, c, op), (1, 0, 0)
    for n in range(m):
        _channels_last(x[n], pad, c, padded)
        _channels_last(dy[n], q, out // group, top)
        for g in range(group):
            o0 = 0
            while o0 < spaced:
                v = min(VECTORS, (spaced - o0) // LANES)
                r0 = 0
                while r0 < oh:  # rows of outputs whose top gradient and input stay in L1 over the taps
                    tile = (min(TILE_ROWS, oh - r0), wp * c, wq * op)
                    ta = ((r0 + q) * wq + q) * op + g * spaced + o0
                    for i in range(k):
                        for j in range(taps):
                            t0 = 0
                            while t0 < run:  # a block: P taps' channels (of the group) by outputs
                                p = _share(run - t0, most_pixels(v))
                                at = ((((g * k + i) * k + j) * per) + t0) * spaced + o0
                                xa = ((r0 + i) * wp + j) * c + g * per + t0
                                fma_block(
                                    p, v, xf, xa, tf, ta, dwf, at, dwf, 0, tile, cols, one, 1, spaced, 2
                                )
                                t0 += p
                    r0 += tile[0]
                o0 += v * LANES
        if dx.size:
            _rows(top, group, wf, none, k, 1, 0, rows)
            for ch in range(c):
                at = ch // per * inputs + ch % per
                for r in range(h):
                    for col in range(w):
                        dx[n, ch, r, col] = rows[r, col, at]
