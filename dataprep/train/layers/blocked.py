"""Stride-1 convolutions with no im2col: each block of outputs summed in registers
(``microkernel.fma_block``) straight from a padded channels-last copy of one image.

Per image the input is copied once into (H + 2 pad, W + 2 pad, C), where a kernel row's
taps and channels are one contiguous run of k C floats, and the kernels are laid out
(k, k, C, O) to match; a block of P pixels of an output row and 16 or 32 outputs then sums
k runs of k C products each. The data gradient is the same sum over the top gradient,
padded by k - 1 - pad, with the turned kernels; the weight gradient per kernel tap sums
pixels, a block being P input channels by the outputs. Outputs (and the turned kernels'
outputs, the channels) are padded to a multiple of 16 with zeros.

Compiled for the CPU only, loaded at first use, as ``compiled`` is.
"""

from __future__ import annotations

import numpy as np

from .compiled import _loop
from .microkernel import LANES, PIXELS, VECTORS, fma_block


def lanes(count: int) -> int:
    """``count`` rounded up to whole vectors."""
    return -(-count // LANES) * LANES


def kernels(weights: np.ndarray) -> np.ndarray:
    """Caffe's weights (O, C, k, k) as the forward's (k, k, C, O rounded up to 16)."""
    out, c, k, _ = weights.shape
    laid = np.zeros((k, k, c, lanes(out)), weights.dtype)
    laid[..., :out] = weights.transpose(2, 3, 1, 0)
    return laid


def turned(weights: np.ndarray) -> np.ndarray:
    """The data gradient's kernels (k, k, O rounded up, C rounded up): each turned 180
    degrees, outputs and channels swapped."""
    out, c, k, _ = weights.shape
    laid = np.zeros((k, k, lanes(out), lanes(c)), weights.dtype)
    laid[:, :, :out, :c] = weights[:, :, ::-1, ::-1].transpose(2, 3, 0, 1)
    return laid


def bias_vector(bias: np.ndarray | None, out: int, dtype) -> np.ndarray:
    """The bias padded to whole vectors (zeros without one)."""
    padded = np.zeros(lanes(out), dtype)
    if bias is not None:
        padded[:out] = bias
    return padded


def weight_gradient(summed: np.ndarray, out: int) -> np.ndarray:
    """The weight gradient summed as (k, k, C, O rounded up) in Caffe's (O, C, k, k)."""
    return np.ascontiguousarray(summed[..., :out].transpose(3, 2, 0, 1))


@_loop(inline="always")
def _share(left, most):  # pragma: no cover - compiled
    """The next block's size: ``left`` in blocks of at most ``most``, as even as can be
    (8 pixels as 4 and 4, not 6 and 2)."""
    blocks = -(-left // most)
    return -(-left // blocks)


@_loop(nogil=True, boundscheck=False)
def _channels_last(image, pad, padded):  # pragma: no cover - compiled
    """One image (C, H, W) into ``padded`` (H + 2 pad, W + 2 pad, C' >= C), whose border
    and channels past C stay as they are (zeros)."""
    c, h, w = image.shape
    for r in range(h):
        for col in range(w):
            for ch in range(c):
                padded[pad + r, pad + col, ch] = image[ch, r, col]


@_loop(nogil=True, boundscheck=False)
def _rows(a, b, bias, k, init, rows):  # pragma: no cover - compiled
    """rows (OH, OW, O') = the convolution of the padded channels-last ``a`` (OH + k - 1,
    OW + k - 1, C) with ``b`` (k, k, C, O'), from ``bias`` (init 1) or zero (init 0)."""
    oh, ow, op = rows.shape
    wp, c = a.shape[1], a.shape[2]
    af, bf, yf = a.reshape(-1), b.reshape(-1), rows.reshape(-1)
    run = (k, wp * c, k * c * op), (k * c, 1, op), (1, 0, 0)  # kernel rows; taps and channels
    for r in range(oh):
        x0 = 0
        while x0 < ow:
            p = _share(ow - x0, PIXELS)
            o0 = 0
            while o0 < op:
                v = min(VECTORS, (op - o0) // LANES)
                at = (r * ow + x0) * op + o0
                fma_block(
                    p, v, af, (r * wp + x0) * c, bf, o0, yf, at, bias, o0, run[0], run[1], run[2], c, op, init
                )
                o0 += v * LANES
            x0 += p


@_loop(nogil=True, boundscheck=False)
def forward(x, wt, bias, pad, y):  # pragma: no cover - compiled
    """y (m, O, OH, OW) = x (m, C, H, W) convolved with ``wt`` (``kernels``), plus the
    padded ``bias``; stride 1."""
    m, c, h, w = x.shape
    k, op = wt.shape[0], wt.shape[3]
    out, oh, ow = y.shape[1], y.shape[2], y.shape[3]
    padded = np.zeros((h + 2 * pad, w + 2 * pad, c), x.dtype)
    rows = np.empty((oh, ow, op), x.dtype)
    for n in range(m):
        _channels_last(x[n], pad, padded)
        _rows(padded, wt, bias, k, 1, rows)
        for o in range(out):
            for r in range(oh):
                for col in range(ow):
                    y[n, o, r, col] = rows[r, col, o]


@_loop(nogil=True, boundscheck=False)
def backward(x, dy, wf, pad, dwt, dx):  # pragma: no cover - compiled
    """The weight gradient of some images summed onto ``dwt`` (k, k, C, O rounded up), and
    with ``dx`` (m, C, H, W; empty: none) the data gradient from the turned kernels ``wf``."""
    m, c, h, w = x.shape
    k, op = dwt.shape[0], dwt.shape[3]
    oh, ow = dy.shape[2], dy.shape[3]
    q = k - 1 - pad
    wp, wq = w + 2 * pad, ow + 2 * q
    padded = np.zeros((h + 2 * pad, wp, c), x.dtype)
    top = np.zeros((oh + 2 * q, wq, op), x.dtype)
    cp = wf.shape[3]
    rows = np.empty((h, w, cp), x.dtype)
    none = np.zeros(cp, x.dtype)
    xf, tf, dwf = padded.reshape(-1), top.reshape(-1), dwt.reshape(-1)
    pixels = (oh, wp * c, wq * op), (ow, c, op), (1, 0, 0)  # output rows; columns
    for n in range(m):
        _channels_last(x[n], pad, padded)
        _channels_last(dy[n], q, top)
        for i in range(k):
            for j in range(k):
                c0 = 0
                while c0 < c:  # a block: channels c0 ... by outputs
                    p = _share(c - c0, PIXELS)
                    o0 = 0
                    while o0 < op:
                        v = min(VECTORS, (op - o0) // LANES)
                        at = ((i * k + j) * c + c0) * op + o0
                        a_at, b_at = (i * wp + j) * c + c0, (q * wq + q) * op + o0
                        fma_block(
                            p,
                            v,
                            xf,
                            a_at,
                            tf,
                            b_at,
                            dwf,
                            at,
                            dwf,
                            0,
                            pixels[0],
                            pixels[1],
                            pixels[2],
                            1,
                            op,
                            2,
                        )
                        o0 += v * LANES
                    c0 += p
        if dx.size:
            _rows(top, wf, none, k, 0, rows)
            for ch in range(c):
                for r in range(h):
                    for col in range(w):
                        dx[n, ch, r, col] = rows[r, col, ch]
