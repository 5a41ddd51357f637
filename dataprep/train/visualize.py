"""Pictures of a trained net: a layer's kernels, or its activation maps for one image,
normalized together and tiled in a square grid (the tutorial's ``vis_square``); a vector
layer's values as the notes plot them."""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass

import cv2
import numpy as np

from ..errors import DataprepError, UsageError

MIN_SIDE = 512  # pixels: small grids are enlarged (nearest neighbour) to at least this
MIN_TILE = 24  # pixels: each tile at least this high, so a 3 x 3 kernel can be read
MAX_TILES = 256  # tiles drawn by default: more are unreadable in one picture

log = logging.getLogger("dataprep")


@dataclass(frozen=True)
class Layout:
    """Which tiles and how: at most ``most`` (the first ones), one input ``channel`` of a
    layer's kernels, ``cols`` columns (a square grid by default)."""

    most: int = MAX_TILES
    channel: int | None = None
    cols: int | None = None


def tile(maps: np.ndarray, pad: int = 1, cols: int | None = None) -> np.ndarray:
    """N maps (N x H x W, or N x H x W x 3 in color) scaled together to 0..255 and laid out
    in ``cols`` columns (a ceil(sqrt(N)) square by default) with ``pad`` pixels between
    them; each tile enlarged to at least MIN_TILE pixels high; uint8."""
    maps = np.asarray(maps, np.float64)
    low, high = float(maps.min()), float(maps.max())
    maps = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    n = len(maps)
    h, w = maps.shape[1:3]
    grow = max(1, -(-MIN_TILE // h))
    if grow > 1:
        maps = maps.repeat(grow, axis=1).repeat(grow, axis=2)
        h, w = h * grow, w * grow
    side = cols or int(math.ceil(math.sqrt(n)))
    rows = -(-n // side)
    grid = np.ones((rows * (h + pad) - pad, side * (w + pad) - pad) + maps.shape[3:])  # white gaps
    for k, image in enumerate(maps):
        r, c = divmod(k, side)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    grid = np.rint(grid * 255).astype(np.uint8)
    factor = max(1, MIN_SIDE // max(grid.shape[:2]))
    if factor > 1:
        grid = cv2.resize(grid, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return grid


def _first(maps: np.ndarray, layout: Layout, what: str) -> np.ndarray:
    if len(maps) > layout.most:
        log.info("showing the first %d of %d %s (--max N, --channel C)", layout.most, len(maps), what)
    return maps[: layout.most]


def kernel_grid(weights: np.ndarray, layout: Layout = Layout()) -> np.ndarray:
    """A convolution's kernels (O x C x k x k): in color when C is 3 (BGR, as the images
    the net saw) and no channel is asked for, else one gray tile per (output, input
    channel) pair, or per output for ``layout.channel``."""
    if weights.ndim != 4:
        raise DataprepError(f"weights of shape {weights.shape} are not convolution kernels")
    if layout.channel is not None:
        if not 0 <= layout.channel < weights.shape[1]:
            raise UsageError(
                f"--channel {layout.channel}: the kernels have {weights.shape[1]} input channels"
            )
        return tile(_first(weights[:, layout.channel], layout, "kernels"), cols=layout.cols)
    if weights.shape[1] == 3:
        return tile(_first(weights.transpose(0, 2, 3, 1), layout, "kernels"), cols=layout.cols)
    return tile(_first(weights.reshape(-1, *weights.shape[2:]), layout, "kernels"), cols=layout.cols)


def activation_grid(blob: np.ndarray, layout: Layout = Layout()) -> np.ndarray:
    """One image's activations (C x H x W): one gray tile per channel."""
    if blob.ndim != 3:
        raise DataprepError(
            f"activations of shape {blob.shape} are no maps: choose a convolution or pooling layer"
        )
    if layout.channel is not None:
        return tile(blob[layout.channel : layout.channel + 1], cols=1)
    return tile(_first(blob, layout, "maps"), cols=layout.cols)


def vector_plot(values: np.ndarray, probabilities: bool, title: str) -> np.ndarray:
    """A vector layer for one image as pycaffe's notes draw it (BGR): class probabilities
    as bars; other values plotted by index above the histogram of the positive ones."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = 1 if probabilities else 2
    fig, axes = plt.subplots(rows, 1, squeeze=False, figsize=(8, 2.8 * rows), dpi=100)
    if probabilities:
        axes[0, 0].bar(np.arange(values.size), values, width=1.0)
        axes[0, 0].set_xlabel("class")
        axes[0, 0].set_ylabel("probability")
    else:
        axes[0, 0].plot(values)
        axes[0, 0].set_xlabel("unit")
        positive = values[values > 0]
        axes[1, 0].hist(positive if positive.size else values, bins=100)
        axes[1, 0].set_xlabel("value (positive ones)" if positive.size else "value")
    fig.suptitle(title)
    fig.tight_layout()
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    return cv2.cvtColor(rgba, cv2.COLOR_RGBA2BGR)


def picture(model, layer: str, image: str | None = None, layout: Layout = Layout()) -> np.ndarray:
    """The kernels of ``layer`` of ``model`` (an ``inference.Model``), or with ``image``
    that layer's activation maps for the image: tiles for maps, a plot for a vector (a
    classifier's ``prob``, which a snapshot's net ends before, as bars)."""
    from .inference import image_inputs, run_batches

    names = [s["name"] for s in model.specs]
    if layer == "prob" and layer not in names and model.classifier and image is not None:
        _, found = next(run_batches(model, image_inputs(image, model), [model.output]))
        scores = np.asarray(found[model.output][0], np.float64).ravel()
        e = np.exp(scores - scores.max())
        return vector_plot(e / e.sum(), True, f"prob ({model.output} softmax) for {image}")
    if layer not in names:
        raise UsageError(f"--layer {layer}: no such layer; the net has {', '.join(names)}")
    if image is None:
        blobs = model.weights.get(layer)
        if not blobs:
            learned = ", ".join(name for name, b in model.weights.items() if b and b[0].ndim == 4)
            raise DataprepError(f"layer {layer!r} has no weights; layers with kernels: {learned or 'none'}")
        return kernel_grid(blobs[0], layout)
    spec = model.specs[names.index(layer)]
    blob = spec["top"][0]
    _, found = next(run_batches(model, image_inputs(image, model), [blob]))
    value = np.asarray(found[blob][0])
    if value.ndim == 1 or value.shape[1:] == (1, 1):  # fc6, fc7, prob: a vector, not maps
        return vector_plot(value.ravel(), spec["type"] == "Softmax", f"{layer} for {image}")
    return activation_grid(value, layout)
