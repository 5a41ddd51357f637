"""Output sizes and window views, Caffe's rules, shared by convolution and pooling."""

from __future__ import annotations

import math

from ...transforms import get_xp


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


def windows(x, kh: int, kw: int, stride: int, oh: int, ow: int):
    """A strided view (N, C, OH, OW, kh, kw) of the windows of a padded N x C x H x W array."""
    xp = get_xp(x)
    n, c = x.shape[:2]
    s = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * stride, s[3] * stride, s[2], s[3])
    )


def kernel(p: dict) -> tuple[int, int, int]:
    """A layer's square kernel size, stride and padding."""
    return int(p["kernel_size"]), int(p.get("stride", 1)), int(p.get("pad", 0))
