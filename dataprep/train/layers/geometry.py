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


def windows(x, kh: int, kw: int, stride: int | tuple[int, int], oh: int, ow: int):
    """A strided view (N, C, OH, OW, kh, kw) of the windows of a padded N x C x H x W array
    (``stride`` one for both axes, or (sh, sw))."""
    xp = get_xp(x)
    n, c = x.shape[:2]
    sh, sw = stride if isinstance(stride, tuple) else (stride, stride)
    s = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (s[0], s[1], s[2] * sh, s[3] * sw, s[2], s[3])
    )


Window = tuple[tuple[int, int], tuple[int, int], tuple[int, int]]  # (kh, kw), (sh, sw), (ph, pw)


def window(p: dict, name: str) -> Window:
    """A layer's kernel, stride and padding per axis: ``kernel_h``/``kernel_w`` (and
    ``stride_``, ``pad_``) where given, else the square ``kernel_size``, ``stride``, ``pad``."""

    def pair(field: str, default: int | None) -> tuple[int, int]:
        square = p.get("kernel_size" if field == "kernel" else field, default)
        h, w = p.get(f"{field}_h", square), p.get(f"{field}_w", square)
        if h is None or w is None:
            raise UsageError(f"layer {name}: give kernel_size, or kernel_h and kernel_w")
        return int(h), int(w)

    k, s, pad = pair("kernel", None), pair("stride", 1), pair("pad", 0)
    if min(k + s) < 1 or min(pad) < 0:
        raise UsageError(f"layer {name}: kernel {k}, stride {s}, pad {pad}: give kernel and stride 1 or more")
    return k, s, pad


def square(win: Window) -> tuple[int, int, int] | None:
    """(k, stride, pad) when every pair is equal: the layers' tuned square paths."""
    (kh, kw), (sh, sw), (ph, pw) = win
    return (kh, sh, ph) if (kh, sh, ph) == (kw, sw, pw) else None


def padded_windows(x, win: Window, out: tuple[int, int], fill: float = 0.0):
    """A view (N, C, OH, OW, kh, kw) of the windows of ``x`` padded by (ph, pw) with
    ``fill``, and far enough past its end for every window (Caffe's pooling rounds up)."""
    xp = get_xp(x)
    (kh, kw), (sh, sw), (ph, pw) = win
    n, c, h, w = x.shape
    oh, ow = out
    full = (max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))
    padded = xp.full((n, c, *full), fill, x.dtype)
    padded[:, :, ph : ph + h, pw : pw + w] = x
    return windows(padded, kh, kw, (sh, sw), oh, ow)


def scatter_windows(diffs, win: Window, shape: tuple[int, ...], out: tuple[int, int]):
    """The adjoint of ``padded_windows``: (N, C, OH, OW, kh, kw) window diffs added back
    onto an N x C x H x W gradient (the padding dropped)."""
    xp = get_xp(diffs)
    (kh, kw), (sh, sw), (ph, pw) = win
    n, c, h, w = shape
    oh, ow = out
    full = (max(h + 2 * ph, (oh - 1) * sh + kh), max(w + 2 * pw, (ow - 1) * sw + kw))
    dx = xp.zeros((n, c, *full), diffs.dtype)
    for i in range(kh):
        for j in range(kw):
            dx[:, :, i : i + sh * oh : sh, j : j + sw * ow : sw] += diffs[:, :, :, :, i, j]
    return dx[:, :, ph : ph + h, pw : pw + w]


def check_window(name: str, h: int, w: int, win: Window) -> None:
    """UsageError when the window does not fit the layer's (padded) h x w input."""
    (kh, kw), _, (ph, pw) = win
    if h + 2 * ph < kh or w + 2 * pw < kw:
        kernel = f"{kh}" if kh == kw else f"{kh}x{kw}"
        padded = "" if not (ph or pw) else f" (padded by {ph})" if ph == pw else f" (padded by {ph}x{pw})"
        raise UsageError(f"layer {name}: kernel {kernel} larger than its {h}x{w} input{padded}")
