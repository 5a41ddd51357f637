"""Output sizes and window views, Caffe's rules, shared by convolution and pooling."""

from __future__ import annotations

import itertools
import math
from dataclasses import dataclass

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


@dataclass(frozen=True)
class Spatial:
    """Caffe's BaseConvolutionLayer geometry: the channel ``axis`` (the axes before it are
    the images), then per spatial axis after it the kernel, stride, pad and dilation."""

    axis: int
    kernel: tuple[int, ...]
    stride: tuple[int, ...]
    pad: tuple[int, ...]
    dilation: tuple[int, ...]

    def extents(self) -> tuple[int, ...]:
        """Each kernel's span over the input: dilation * (k - 1) + 1."""
        return tuple(d * (k - 1) + 1 for k, d in zip(self.kernel, self.dilation))

    def out(self, sizes: tuple[int, ...]) -> tuple[int, ...]:
        """A convolution's output size per spatial axis (rounds down; a dilated kernel spans
        its extent)."""
        return tuple(conv_out(n, e, s, p) for n, p, e, s in zip(sizes, self.pad, self.extents(), self.stride))

    def images(self, shape: tuple[int, ...]) -> tuple[int, ...]:
        """``shape`` as (images, channels, *spatial): the axes before ``axis`` as one."""
        return (math.prod(shape[: self.axis]), *shape[self.axis :])


def spatial(p: dict, name: str, shape: tuple[int, ...]) -> Spatial:
    """A convolution's geometry over a bottom of ``shape``, read as Caffe's LayerSetUp
    reads it: ``axis`` (default 1), then ``kernel_size``, ``stride``, ``pad`` and
    ``dilation`` given once or once per spatial axis (``kernel_h``/``kernel_w`` and the
    like for two axes only); UsageError naming the field where Caffe stops."""
    axis = int(p.get("axis", 1))
    if not -len(shape) <= axis < len(shape):
        raise UsageError(f"layer {name}: axis {axis} of a {len(shape)}-axis bottom {shape}")
    axis %= len(shape)
    axes = len(shape) - axis - 1

    def per_axis(field: str, default: int | None) -> tuple[int, ...]:
        h, w = p.get(f"{field}_h"), p.get(f"{field}_w")
        given = p.get("kernel_size" if field == "kernel" else field)
        if h is not None or w is not None:
            if axes != 2 or given is not None:
                raise UsageError(
                    f"layer {name}: {field}_h and {field}_w are for 2-D convolution, without "
                    f"{'kernel_size' if field == 'kernel' else field}"
                )
            if None in (h, w) and default is None:
                raise UsageError(f"layer {name}: give kernel_size, or kernel_h and kernel_w")
            return int(default if h is None else h), int(default if w is None else w)
        values = [int(v) for v in (given if isinstance(given, list) else [] if given is None else [given])]
        if not values and default is None:
            raise UsageError(f"layer {name}: give kernel_size, or kernel_h and kernel_w")
        if len(values) > 1 and len(values) != axes:
            raise UsageError(
                f"layer {name}: {field} given {len(values)} times for {axes} spatial axes: "
                "give it once or once per axis"
            )
        return tuple(values[i] if len(values) > 1 else values[0] if values else default for i in range(axes))

    geo = Spatial(
        axis, per_axis("kernel", None), per_axis("stride", 1), per_axis("pad", 0), per_axis("dilation", 1)
    )
    if min(geo.kernel + geo.stride + geo.dilation, default=1) < 1 or min(geo.pad, default=0) < 0:
        raise UsageError(
            f"layer {name}: kernel {geo.kernel}, stride {geo.stride}, dilation {geo.dilation}, "
            f"pad {geo.pad}: give kernel, stride and dilation 1 or more"
        )
    return geo


def columns(x, geo: Spatial, out: tuple[int, ...], groups: int):
    """Caffe's im2col over any number of spatial axes: x (N, C, *sizes) zero-padded, its
    windows as (groups, C / groups * prod(kernel), N * prod(out))."""
    xp = get_xp(x)
    n, c, *sizes = x.shape
    padded = x
    if any(geo.pad):
        padded = xp.zeros((n, c, *(s + 2 * q for s, q in zip(sizes, geo.pad))), x.dtype)
        padded[(slice(None), slice(None), *(slice(q, q + s) for s, q in zip(sizes, geo.pad)))] = x
    st = padded.strides
    view = xp.lib.stride_tricks.as_strided(
        padded,
        (c, *geo.kernel, n, *out),
        (
            st[1],
            *(t * dl for t, dl in zip(st[2:], geo.dilation)),
            st[0],
            *(t * s for t, s in zip(st[2:], geo.stride)),
        ),
    )
    cols = xp.empty(view.shape, x.dtype)
    cols[...] = view
    return cols.reshape(groups, -1, n * math.prod(out))


def uncolumns(dcols, geo: Spatial, shape: tuple[int, ...], out: tuple[int, ...]):
    """Caffe's col2im, the adjoint of ``columns``: column diffs (any grouping of C *
    prod(kernel) x N * prod(out)) added back onto an (N, C, *sizes) gradient."""
    xp = get_xp(dcols)
    n, c, *sizes = shape
    diffs = dcols.reshape(c, *geo.kernel, n, *out)
    dx = xp.zeros((n, c, *(s + 2 * q for s, q in zip(sizes, geo.pad))), dcols.dtype)
    for offsets in itertools.product(*(range(k) for k in geo.kernel)):
        at = tuple(
            slice(o * dl, o * dl + s * (m - 1) + 1, s)
            for o, dl, s, m in zip(offsets, geo.dilation, geo.stride, out)
        )
        dx[(slice(None), slice(None), *at)] += xp.moveaxis(diffs[(slice(None), *offsets)], 1, 0)
    return dx[(slice(None), slice(None), *(slice(q, q + s) for s, q in zip(sizes, geo.pad)))]
