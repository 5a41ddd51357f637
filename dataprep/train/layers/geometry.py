"""Output sizes and window views, Caffe's rules, shared by convolution and pooling."""

from __future__ import annotations

import math

from ...errors import UsageError
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


def kernel(p: dict, name: str) -> tuple[int, int, int]:
    """A layer's square kernel size, stride and padding; UsageError naming the layer for a
    kernel or stride under 1 or a negative padding."""
    k, s, pad = int(p["kernel_size"]), int(p.get("stride", 1)), int(p.get("pad", 0))
    if k < 1 or s < 1 or pad < 0:
        raise UsageError(
            f"layer {name}: kernel_size {k}, stride {s}, pad {pad}: give kernel and stride 1 or more"
        )
    return k, s, pad


def check_window(name: str, h: int, w: int, k: int, pad: int) -> None:
    """UsageError when a k x k window does not fit the layer's (padded) h x w input."""
    if min(h, w) + 2 * pad < k:
        padded = f" (padded by {pad})" if pad else ""
        raise UsageError(f"layer {name}: kernel {k} larger than its {h}x{w} input{padded}")
