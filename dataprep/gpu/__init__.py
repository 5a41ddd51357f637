"""GPU glue: finding CuPy and a CUDA device. The array code itself lives in
``dataprep.transforms`` and runs unchanged on NumPy or CuPy arrays."""

from __future__ import annotations

from types import ModuleType

import numpy as np

from ..errors import MissingPackage
from ..transforms import get_xp


def gpu_available() -> bool:
    """True when CuPy imports and sees at least one CUDA device."""
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:  # ImportError, or CUDA driver/runtime errors
        return False


def array_module(device: str) -> ModuleType:
    """``numpy`` for cpu; ``cupy`` for gpu (error if unusable, never a silent fallback);
    auto picks the GPU only when usable."""
    if device == "cpu" or (device == "auto" and not gpu_available()):
        return np
    if not gpu_available():
        raise MissingPackage("--device gpu", "gpu", "CuPy and a CUDA GPU (on a machine with one)")
    import cupy

    return cupy


def resolve_device(device: str) -> str:
    """``cpu`` or ``gpu`` for a ``--device`` choice (cpu, gpu, auto): gpu without CuPy and a
    GPU is an error, never a silent fallback; auto picks the GPU only when usable."""
    return "cpu" if array_module(device) is np else "gpu"


def to_device(images: list[np.ndarray], xp: ModuleType) -> list:
    """Arrays on ``xp``'s device, moved in one transfer: the images are packed into one
    (pinned, for CuPy) host buffer and uploaded together, then split into views."""
    if xp is np:
        return list(images)
    sizes = [im.nbytes for im in images]
    pinned = xp.cuda.alloc_pinned_memory(max(1, sum(sizes)))
    host = np.frombuffer(pinned, np.uint8, sum(sizes))
    offsets = np.cumsum([0, *sizes])
    for im, a, b in zip(images, offsets[:-1], offsets[1:]):
        host[a:b] = im.reshape(-1).view(np.uint8)
    device = xp.asarray(host)
    return [
        device[a:b].view(im.dtype).reshape(im.shape) for im, a, b in zip(images, offsets[:-1], offsets[1:])
    ]


def host(array) -> np.ndarray:
    """A NumPy array of a NumPy or CuPy array (copied from the device for CuPy)."""
    return array.get() if get_xp(array) is not np else np.asarray(array)


def to_host(arrays: list) -> list[np.ndarray]:
    """NumPy copies of device arrays, moved in one transfer (concatenated on the device)."""
    if not arrays or isinstance(arrays[0], np.ndarray):
        return [np.asarray(a) for a in arrays]
    xp = get_xp(arrays[0])
    flat = xp.concatenate([a.reshape(-1).view(xp.uint8) for a in arrays]).get()
    out, start = [], 0
    for a in arrays:
        n = a.size * a.dtype.itemsize
        out.append(flat[start : start + n].view(a.dtype).reshape(a.shape))
        start += n
    return out
