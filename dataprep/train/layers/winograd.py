"""Winograd's F(2x2, 3x3): a stride-1 3 x 3 convolution as 16 products of 4 x 4 transformed
tiles, each two outputs square, with 16 multiplies where im2col makes 36 (Lavin and Gray,
2016). The transforms use only 0.5 and +-1, so float32 keeps im2col's accuracy (relative
error under 1e-6 on unit-scale data).

Every function takes NumPy or CuPy arrays (``xp`` from the arrays) and works on whole
arrays: the input and output transforms are eight and twelve array passes in place, the
products one batched matmul over the 16 tile positions.
"""

from __future__ import annotations

import functools

from ...transforms import get_xp

# Winograd's G for F(2, 3): a 3-tap kernel to its 4 transformed taps
G = ((1.0, 0.0, 0.0), (0.5, 0.5, 0.5), (0.5, -0.5, 0.5), (0.0, 0.0, 1.0))


def tiles(size: int, pad: int) -> tuple[int, int]:
    """The output size of a stride-1 3-tap convolution over ``size`` padded by ``pad``,
    and the tiles of two outputs that cover it."""
    out = size + 2 * pad - 2
    return out, -(-out // 2)


def pays(channels: int, side: int, tiles: int) -> bool:
    """Whether F(2x2, 3x3) beats im2col on a layer, from A/B runs of single layers here
    (forward and backward, batches of 10 and 32): outputs 12 or more a side (7 x 7 maps
    waste 31% of their tiles: 1.1 to 1.6x slower), 192 tiles or more per product, and the
    fewer of ``channels`` and outputs (per group) 96 or more, or 64 on maps of 28 or more
    (the transforms' rows are short on small maps: 64 channels ran 1.1x slower at 13 x 13
    and 1.6x faster at 56 x 56; 16 to 48 channels never gained)."""
    return side >= 12 and tiles >= 192 and channels >= (64 if side >= 28 else 96)


FULL_WIDTH = ("SkylakeX", "Cooperlake", "SapphireRapids")  # OpenBLAS's full-width AVX-512 kernels


@functools.lru_cache(maxsize=1)
def transformed_backward() -> bool:
    """Whether the backward runs in the transformed domain as well as the forward. Not where
    OpenBLAS runs its full-width AVX-512 kernels (Intel's cores): there im2col's products
    run fast enough that its backward beats the transforms' passes (backward ms in the
    net, Winograd -> im2col: CaffeNet's conv4 88 -> 72 and conv5 67 -> 50, the tutorial
    net's conv2 62 -> 57 and conv3 30 -> 23.5), while Winograd's forward still wins (the
    tutorial net's conv2 33.4 -> 26.7). On AMD's Zen 4 with the Zen kernels Winograd's
    backward won (im2col -> Winograd: CaffeNet's conv3 113.5 -> 81.5, conv4 92.7 -> 71.5);
    other BLAS libraries and kernels keep it too."""
    from threadpoolctl import threadpool_info

    return not any(
        info.get("internal_api") == "openblas" and info.get("architecture") in FULL_WIDTH
        for info in threadpool_info()
    )


def kernels(w, group: int = 1):
    """Caffe's weights (K, C / group, 3, 3) as G w G^T, (16, group, K / group, C / group):
    the tile position first, each a (outputs x channels) matrix of one group's product."""
    xp = get_xp(w)
    k, c = w.shape[:2]
    g = xp.asarray(G, dtype=w.dtype)
    right = xp.matmul(w.reshape(-1, 3), g.T).reshape(k * c, 3, 4)  # w G^T
    both = xp.matmul(g, right.transpose(1, 0, 2).reshape(3, -1)).reshape(4, k * c, 4)  # G w G^T
    return xp.ascontiguousarray(both.transpose(0, 2, 1)).reshape(16, group, k // group, c)


def _b_t(d) -> None:
    """B^T along the first axis of ``d`` (4, ...), in place: d0-d2, d1+d2, d2-d1, d1-d3."""
    xp = get_xp(d)
    xp.subtract(d[0], d[2], out=d[0])
    xp.subtract(d[1], d[3], out=d[3])
    diff = d[2] - d[1]
    d[1] += d[2]
    d[2] = diff


def inputs(x, pad: int, group: int = 1):
    """Some images (m, C, H, W) as B^T d B over their 4 x 4 tiles (stride 2), zero-padded
    by ``pad`` (and one more row or column past an odd output): (16, group, C / group,
    m * tiles), the tiles of one image side by side."""
    xp = get_xp(x)
    m, c, h, w = x.shape
    _, th = tiles(h, pad)
    _, tw = tiles(w, pad)
    padded = xp.zeros((m, c, 2 * th + 2, 2 * tw + 2), x.dtype)
    padded[:, :, pad : pad + h, pad : pad + w] = x
    s = padded.strides
    view = xp.lib.stride_tricks.as_strided(
        padded, (4, 4, c, m, th, tw), (s[2], s[3], s[1], s[0], 2 * s[2], 2 * s[3])
    )
    d = xp.empty(view.shape, x.dtype)
    d[...] = view
    _b_t(d)  # along the tile's rows
    _b_t(d.transpose(1, 0, 2, 3, 4, 5))  # and its columns
    return d.reshape(16, group, c // group, -1)


def _a_t(s) -> None:
    """A^T along the first axis of ``s`` (4, ...), into its first two: s0+s1+s2, s1-s2-s3."""
    xp = get_xp(s)
    s[0] += s[1]
    s[0] += s[2]
    xp.subtract(s[1], s[2], out=s[1])
    s[1] -= s[3]


def outputs(products, y, bias=None) -> None:
    """The products (16, K, m * tiles) as A^T M A, written into ``y`` (m, K, OH, OW) with
    ``bias`` (K,) added; the products are overwritten."""
    xp = get_xp(products)
    m, k, oh, ow = y.shape
    th, tw = -(-oh // 2), -(-ow // 2)
    t = products.reshape(4, 4, k, m, th, tw)
    _a_t(t)
    _a_t(t[:2].transpose(1, 0, 2, 3, 4, 5))
    for a in range(2):
        for b in range(2):
            dst = y[:, :, a::2, b::2]
            src = t[a, b, :, :, : dst.shape[2], : dst.shape[3]].transpose(1, 0, 2, 3)
            if bias is None:
                dst[...] = src
            else:
                xp.add(src, bias.reshape(1, -1, 1, 1), out=dst)


def _a(d, out) -> None:
    """A along the first axis of ``d`` (2, ...) into ``out`` (4, ...): d0, d0+d1, d0-d1, -d1."""
    xp = get_xp(d)
    out[0] = d[0]
    xp.add(d[0], d[1], out=out[1])
    xp.subtract(d[0], d[1], out=out[2])
    xp.negative(d[1], out=out[3])


def top_gradients(dy, group: int = 1):
    """Some images' top gradients (m, K, OH, OW) as A dy A^T over their 2 x 2 output
    tiles: (16, group, K / group, m * tiles), the adjoint of ``outputs``."""
    xp = get_xp(dy)
    m, k, oh, ow = dy.shape
    th, tw = -(-oh // 2), -(-ow // 2)
    padded = dy
    if (oh % 2, ow % 2) != (0, 0):
        padded = xp.zeros((m, k, 2 * th, 2 * tw), dy.dtype)
        padded[:, :, :oh, :ow] = dy
    s = padded.strides
    view = xp.lib.stride_tricks.as_strided(
        padded, (2, 2, k, m, th, tw), (s[2], s[3], s[1], s[0], 2 * s[2], 2 * s[3])
    )
    rows = xp.empty((4, 2, k, m, th, tw), dy.dtype)
    _a(view, rows)
    both = xp.empty((4, 4, k, m, th, tw), dy.dtype)
    _a(rows.transpose(1, 0, 2, 3, 4, 5), both.transpose(1, 0, 2, 3, 4, 5))
    return both.reshape(16, group, k // group, -1)


def kernel_gradients(du):
    """The gradient of Caffe's weights (K, C / group, 3, 3) from that of ``kernels``'s
    (16, group, K / group, C / group): G^T dU G."""
    xp = get_xp(du)
    g = xp.asarray(G, dtype=du.dtype)
    k = du.shape[1] * du.shape[2]
    rows = xp.matmul(g.T, du.reshape(4, -1)).reshape(3, 4, -1)  # G^T dU, (3, 4, K C)
    both = xp.matmul(g.T, rows)  # (3, 3, K C)
    return xp.ascontiguousarray(both.reshape(9, -1).T).reshape(k, -1, 3, 3)


def convolve(x, u, pad: int, y, bias=None) -> None:
    """``y`` (m, K, OH, OW) = the stride-1 3 x 3 convolution of ``x`` (m, C, H, W) padded by
    ``pad``, with kernels ``u`` from ``kernels`` (their groups), plus ``bias``."""
    xp = get_xp(x)
    group = u.shape[1]
    products = xp.matmul(u, inputs(x, pad, group))  # (16, group, K / group, m * tiles)
    outputs(products.reshape(16, y.shape[1], -1), y, bias)
