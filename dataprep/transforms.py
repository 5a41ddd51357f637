"""Image transforms written once for NumPy and CuPy: every function takes arrays of either
module and uses only that module's operations (``xp``), so the CPU tests run the code the
GPU runs. Images are H x W x C, channels BGR; float32 in [0, 255] unless said otherwise.

Random parameters are drawn on the CPU by ``sample_params`` from a NumPy Generator, and
``apply`` is deterministic: the same (seed, image, copy) gives the same output anywhere.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from types import ModuleType
from typing import Any

import numpy as np

# AlexNet's PCA of ImageNet RGB pixels (Krizhevsky et al. 2012), as used by fb.resnet.torch
_EIGVAL = np.array([0.2175, 0.0188, 0.0045], np.float32) * 255
_EIGVEC_RGB = np.array(
    [[-0.5675, 0.7192, 0.4009], [-0.5808, -0.0045, -0.8140], [-0.5836, -0.6948, 0.4203]], np.float32
)
_GRAY_BGR = (0.114, 0.587, 0.299)


def get_xp(array: Any) -> ModuleType:
    """``cupy`` for CuPy arrays, else ``numpy``, without importing CuPy."""
    if type(array).__module__.split(".")[0] == "cupy":
        import cupy

        return cupy
    return np


def affine_sample(image, matrix: np.ndarray, out_hw: tuple[int, int]):
    """Bilinear resampling: output pixel (y, x) reads the input at ``matrix @ (x, y, 1)``;
    points outside the input read 0. The one kernel behind rotate, resize and crops."""
    xp = get_xp(image)
    h, w = image.shape[:2]
    ys, xs = xp.meshgrid(
        xp.arange(out_hw[0], dtype=xp.float32), xp.arange(out_hw[1], dtype=xp.float32), indexing="ij"
    )
    m = [float(v) for v in np.asarray(matrix, np.float64).ravel()]
    sx = m[0] * xs + m[1] * ys + m[2]
    sy = m[3] * xs + m[4] * ys + m[5]
    x0, y0 = xp.floor(sx), xp.floor(sy)
    fx, fy = (sx - x0)[..., None], (sy - y0)[..., None]
    src = image.astype(xp.float32)
    out = xp.zeros((*out_hw, image.shape[2]), xp.float32)
    for dy, dx, weight in (
        (0, 0, (1 - fy) * (1 - fx)),
        (0, 1, (1 - fy) * fx),
        (1, 0, fy * (1 - fx)),
        (1, 1, fy * fx),
    ):
        yi, xi = (y0 + dy).astype(xp.int64), (x0 + dx).astype(xp.int64)
        inside = ((yi >= 0) & (yi < h) & (xi >= 0) & (xi < w))[..., None]
        pixel = src[xp.clip(yi, 0, h - 1), xp.clip(xi, 0, w - 1)]
        out += xp.where(inside, pixel, 0) * weight
    return out


def crop_resize_matrix(top: float, left: float, h: float, w: float, out_hw: tuple[int, int]) -> np.ndarray:
    """The affine map from an output grid to the (top, left, h, w) window it shows
    (pixel centres aligned, as cv2.resize does)."""
    sy, sx = h / out_hw[0], w / out_hw[1]
    return np.array([[sx, 0, left + 0.5 * sx - 0.5], [0, sy, top + 0.5 * sy - 0.5]], np.float64)


def rotation_matrix(degrees: float, hw: tuple[int, int]) -> np.ndarray:
    """The map from output to input coordinates for a rotation about the image centre."""
    a = math.radians(degrees)
    cy, cx = (hw[0] - 1) / 2, (hw[1] - 1) / 2
    c, s = math.cos(a), math.sin(a)
    return np.array([[c, -s, cx - c * cx + s * cy], [s, c, cy - s * cx - c * cy]], np.float64)


def resize_weights(xp: ModuleType, n_in: int, n_out: int, interpolation: str):
    """The (n_out, n_in) matrix that resamples one axis, pixel centres aligned as OpenCV's.

    ``area`` averages the input pixels each output pixel covers, weighted by overlap
    (cv2.INTER_AREA when shrinking; when enlarging it falls back to ``linear``);
    ``linear`` interpolates between the two nearest pixels, replicating the border."""
    scale = n_in / n_out
    out = xp.arange(n_out, dtype=xp.float64)[:, None]
    src = xp.arange(n_in, dtype=xp.float64)[None, :]
    if interpolation == "area" and scale >= 1:
        lo, hi = out * scale, (out + 1) * scale
        overlap = xp.clip(xp.minimum(hi, src + 1) - xp.maximum(lo, src), 0, None)
        return (overlap / scale).astype(xp.float32)
    if interpolation not in ("area", "linear"):
        raise ValueError(f"interpolation {interpolation!r} has no weight matrix; use area or linear")
    pos = xp.clip((out + 0.5) * scale - 0.5, 0, n_in - 1)
    left = xp.floor(pos)
    frac = pos - left
    right = xp.minimum(left + 1, n_in - 1)
    weights = (src == left) * (1 - frac) + (src == right) * frac
    return weights.astype(xp.float32)


def resize(image, hw: tuple[int, int], interpolation: str = "linear"):
    """Resize an H x W x C image to ``hw`` with separable weight matrices: two matrix
    products, which a GPU runs fast, and the same code on the CPU for the tests."""
    xp = get_xp(image)
    wy = resize_weights(xp, image.shape[0], hw[0], interpolation)
    wx = resize_weights(xp, image.shape[1], hw[1], interpolation)
    rows = xp.einsum("oh,hwc->owc", wy, image.astype(xp.float32))
    return xp.einsum("pw,owc->opc", wx, rows)


def mirror(image):
    """Flip left-right."""
    return image[:, ::-1]


def crop(image, top: int, left: int, h: int, w: int):
    """The (h, w) window at (top, left)."""
    return image[top : top + h, left : left + w]


def pad_to(image, hw: tuple[int, int], value: float = 0.0):
    """Pad an image smaller than ``hw`` to at least ``hw``, centred, with a constant
    (torchvision's ``pad_if_needed``); larger sides are left alone."""
    xp = get_xp(image)
    dy, dx = max(0, hw[0] - image.shape[0]), max(0, hw[1] - image.shape[1])
    if not dy and not dx:
        return image
    return xp.pad(image, ((dy // 2, dy - dy // 2), (dx // 2, dx - dx // 2), (0, 0)), constant_values=value)


def gray_of(image):
    """Luma of a BGR image (H x W x 1), the weights OpenCV uses."""
    if image.shape[2] == 1:
        return image
    b, g, r = _GRAY_BGR
    return image[..., 0:1] * b + image[..., 1:2] * g + image[..., 2:3] * r


def brightness(image, factor: float):
    return image * factor


def contrast(image, factor: float):
    """Blend with the image's mean luma."""
    mean = gray_of(image).mean()
    return (image - mean) * factor + mean


def saturation(image, factor: float):
    """Blend with the image's own luma."""
    g = gray_of(image)
    return (image - g) * factor + g


def lighting(image, alphas: np.ndarray):
    """AlexNet's PCA lighting noise: add eigvec @ (alpha * eigval) to every pixel (BGR order)."""
    xp = get_xp(image)
    if image.shape[2] != 3:
        return image
    shift_rgb = _EIGVEC_RGB @ (np.asarray(alphas, np.float32) * _EIGVAL)
    return image + xp.asarray(shift_rgb[::-1].copy(), dtype=xp.float32)


def to_uint8(image):
    """Round and clip to 0..255."""
    xp = get_xp(image)
    return xp.clip(xp.rint(image), 0, 255).astype(xp.uint8)


def caffe_transform(
    image,
    crop_size: int = 0,
    mirror_flag: bool = False,
    mean=None,
    scale: float = 1.0,
    train: bool = False,
    rng: np.random.Generator | None = None,
):
    """Caffe's DataTransformer on one H x W x C image: crop (random in training, centred in
    testing), mirror (a coin flip per image in training), then (pixel - mean) * scale, as
    C x H x W float32. ``mean`` is a C x H x W image (cropped alike) or per-channel values.
    A batch (N x H x W x C, to N x C x H x W) where nothing is cropped or drawn: the same
    values as image by image, in one pass (LeNet's loader: 64 calls an iteration)."""
    xp = get_xp(image)
    if image.ndim == 4 and (crop_size or (mirror_flag and train)):
        raise ValueError("a batch is transformed whole only without crops and mirrors")
    h, w = image.shape[-3:-1]
    top = left = 0
    if crop_size:
        if train:
            top, left = int(rng.integers(0, h - crop_size + 1)), int(rng.integers(0, w - crop_size + 1))
        else:
            top, left = (h - crop_size) // 2, (w - crop_size) // 2
        image = crop(image, top, left, crop_size, crop_size)
    flip = bool(mirror_flag and train and rng.integers(0, 2))
    out = xp.moveaxis(image.astype(xp.float32), -1, -3)  # (N x) C x H x W
    if mean is not None:
        m = xp.asarray(mean, dtype=xp.float32)
        if m.ndim == 3:
            m = m[:, top : top + out.shape[-2], left : left + out.shape[-1]]
        else:
            m = m.reshape(-1, 1, 1)
        out = out - m
    if flip:
        out = out[:, :, ::-1]
    return out * scale if scale != 1.0 else out


def parse_area_range(text: str, option: str = "--crop-scale") -> tuple[float, float]:
    """``MIN,MAX`` with 0 < MIN <= MAX <= 1: the share of the image area a random-resized
    crop covers."""
    from .errors import UsageError

    try:
        lo, hi = (float(v) for v in text.split(","))
    except ValueError:
        raise UsageError(f"{option} {text!r}: give two numbers, e.g. 0.08,1.0") from None
    if not 0 < lo <= hi <= 1:
        raise UsageError(f"{option} {text!r}: needs 0 < MIN <= MAX <= 1")
    return lo, hi


@dataclass(frozen=True)
class AugmentSpec:
    """Which random transforms ``augment`` applies, and how strongly."""

    crop: tuple[int, int] | None = None  # random (h, w) window
    pad: bool = False  # pad images smaller than the crop (constant pad_value)
    pad_value: float = 0.0
    crop_scale: tuple[float, float] | None = None  # random-resized-crop area range
    out_size: tuple[int, int] | None = None  # output size of random-resized-crop
    mirror: bool = False
    rotate: float = 0.0  # max degrees either way
    shift: float = 0.0  # max translation either way, a share of the height and of the width
    brightness: float = 0.0  # factor drawn from [1 - b, 1 + b]
    contrast: float = 0.0
    saturation: float = 0.0
    lighting: float = 0.0  # std of the PCA alphas
    noise: float = 0.0  # std of additive Gaussian noise, grey levels

    # transforms that change what regression labels describe (scale, orientation)
    LABEL_UNSAFE = ("crop_scale", "rotate")

    # transforms that only mean something for color images
    COLOR_ONLY = ("saturation", "lighting")

    def unsafe_for_float_labels(self) -> list[str]:
        return [name for name in self.LABEL_UNSAFE if getattr(self, name)]

    def color_only(self) -> list[str]:
        return [name for name in self.COLOR_ONLY if getattr(self, name)]

    def settings(self) -> dict:
        """Every field by name: what augmented outputs depend on."""
        return asdict(self)


@dataclass(frozen=True)
class AugmentParams:
    """Every random choice for one augmented output (identity values where a transform is off)."""

    window: tuple[int, int, int, int] | None = None  # random-resized-crop: top, left, h, w
    out: tuple[int, int] | None = None  # its output size
    crop: tuple[int, int, int, int] | None = None  # plain crop: top, left, h, w (in the padded image)
    mirror: bool = False
    rotate: float = 0.0  # degrees
    shift: tuple[float, float] = (0.0, 0.0)  # (down, right) in pixels
    brightness: float = 1.0
    contrast: float = 1.0
    saturation: float = 1.0
    lighting: np.ndarray | None = None  # PCA alphas
    noise_seed: int | None = None


def sample_params(rng: np.random.Generator, hw: tuple[int, int], spec: AugmentSpec) -> AugmentParams:
    """Every random choice for one output, drawn on the CPU in a fixed order."""
    h, w = hw
    drawn: dict[str, Any] = {}
    if spec.crop_scale:
        out_h, out_w = spec.out_size or hw
        for _ in range(10):  # torchvision's RandomResizedCrop: area share and aspect ratio
            area = h * w * rng.uniform(*spec.crop_scale)
            ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
            ch, cw = int(round(math.sqrt(area / ratio))), int(round(math.sqrt(area * ratio)))
            if 0 < ch <= h and 0 < cw <= w:
                break
        else:
            ch, cw = min(h, w), min(h, w)
        drawn["window"] = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
        drawn["out"] = (out_h, out_w)
    elif spec.crop:
        ch, cw = spec.crop
        if spec.pad:  # the window is drawn in the padded image
            h, w = max(h, ch), max(w, cw)
        drawn["crop"] = (int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1)), ch, cw)
    drawn["mirror"] = bool(spec.mirror and rng.integers(0, 2))
    drawn["rotate"] = float(rng.uniform(-spec.rotate, spec.rotate)) if spec.rotate else 0.0
    if spec.shift:  # Keras' height/width_shift_range, of the image as cropped so far
        sh, sw = drawn["out"] if "window" in drawn else drawn["crop"][2:] if "crop" in drawn else (h, w)
        drawn["shift"] = (
            float(rng.uniform(-1, 1) * spec.shift * sh),
            float(rng.uniform(-1, 1) * spec.shift * sw),
        )
    for name in ("brightness", "contrast", "saturation"):
        amount = getattr(spec, name)
        drawn[name] = float(rng.uniform(1 - amount, 1 + amount)) if amount else 1.0
    drawn["lighting"] = rng.normal(0, spec.lighting, 3).astype(np.float32) if spec.lighting else None
    drawn["noise_seed"] = int(rng.integers(0, 2**63)) if spec.noise else None
    return AugmentParams(**drawn)


def apply(image, params: AugmentParams, spec: AugmentSpec):
    """Apply one output's drawn parameters to an H x W x C image: uint8 comes back rounded
    and clipped to uint8; float (an HDF5 store's values) stays float32."""
    xp = get_xp(image)
    out = image.astype(xp.float32)
    if params.window is not None:
        top, left, ch, cw = params.window
        out = affine_sample(out, crop_resize_matrix(top, left, ch, cw, params.out), params.out)
    elif params.crop is not None:
        if spec.pad:
            out = pad_to(out, params.crop[2:], spec.pad_value)
        out = crop(out, *params.crop)
    if params.rotate:
        out = affine_sample(out, rotation_matrix(params.rotate, out.shape[:2]), out.shape[:2])
    if params.shift != (0.0, 0.0):  # content moves down and right; uncovered pixels read 0, as rotate's
        down, right = params.shift
        out = affine_sample(out, np.array([[1, 0, -right], [0, 1, -down]], np.float64), out.shape[:2])
    if params.mirror:
        out = mirror(out)
    if params.brightness != 1.0:
        out = brightness(out, params.brightness)
    if params.contrast != 1.0:
        out = contrast(out, params.contrast)
    if params.saturation != 1.0:
        out = saturation(out, params.saturation)
    if params.lighting is not None:
        out = lighting(out, params.lighting)
    if params.noise_seed is not None:
        noise = np.random.default_rng(params.noise_seed).normal(0, spec.noise, out.shape)
        out = out + xp.asarray(noise.astype(np.float32))
    return to_uint8(out) if image.dtype == xp.uint8 else out
