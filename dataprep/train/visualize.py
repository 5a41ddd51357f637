"""Pictures of a trained net: a layer's kernels, or its activation maps for one image,
normalized together and tiled in a square grid (the tutorial's ``vis_square``)."""

from __future__ import annotations

import math

import cv2
import numpy as np

from ..errors import DataprepError, UsageError

MIN_SIDE = 512  # pixels: small kernels are enlarged (nearest neighbour) to at least this


def tile(maps: np.ndarray, pad: int = 1) -> np.ndarray:
    """N maps (N x H x W, or N x H x W x 3 in color) scaled together to 0..255 and laid out
    in a ceil(sqrt(N)) square grid with ``pad`` pixels between them; uint8."""
    maps = np.asarray(maps, np.float64)
    low, high = float(maps.min()), float(maps.max())
    maps = (maps - low) / (high - low) if high > low else np.zeros_like(maps)
    n = len(maps)
    side = int(math.ceil(math.sqrt(n)))
    h, w = maps.shape[1:3]
    grid = np.ones((side * (h + pad) - pad, side * (w + pad) - pad) + maps.shape[3:])  # white gaps
    for k, image in enumerate(maps):
        r, c = divmod(k, side)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    grid = np.rint(grid * 255).astype(np.uint8)
    factor = max(1, MIN_SIDE // max(grid.shape[:2]))
    if factor > 1:
        grid = cv2.resize(grid, None, fx=factor, fy=factor, interpolation=cv2.INTER_NEAREST)
    return grid


def kernel_grid(weights: np.ndarray) -> np.ndarray:
    """A convolution's kernels (O x C x k x k): in color when C is 3 (BGR, as the images
    the net saw), else one gray tile per (output, input channel) pair."""
    if weights.ndim != 4:
        raise DataprepError(f"weights of shape {weights.shape} are not convolution kernels")
    if weights.shape[1] == 3:
        return tile(weights.transpose(0, 2, 3, 1))
    return tile(weights.reshape(-1, *weights.shape[2:]))


def activation_grid(blob: np.ndarray) -> np.ndarray:
    """One image's activations (C x H x W): one gray tile per channel."""
    if blob.ndim != 3:
        raise DataprepError(
            f"activations of shape {blob.shape} are no maps: choose a convolution or pooling layer"
        )
    return tile(blob)


def picture(model, layer: str, image: str | None = None) -> np.ndarray:
    """The kernels of ``layer`` of ``model`` (an ``inference.Model``), or with ``image``
    that layer's activation maps for the image."""
    from ..gpu import host
    from .inference import image_inputs, run_batches

    names = [s["name"] for s in model.specs]
    if layer not in names:
        raise UsageError(f"--layer {layer}: no such layer; the net has {', '.join(names)}")
    if image is None:
        blobs = model.weights.get(layer)
        if not blobs:
            learned = ", ".join(name for name, b in model.weights.items() if b and b[0].ndim == 4)
            raise DataprepError(f"layer {layer!r} has no weights; layers with kernels: {learned or 'none'}")
        return kernel_grid(blobs[0])
    spec = model.specs[names.index(layer)]
    _, net = next(run_batches(model, image_inputs(image, model)))
    return activation_grid(host(net.blobs[spec["top"][0]])[0])
