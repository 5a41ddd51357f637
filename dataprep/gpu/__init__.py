"""GPU glue: finding CuPy and a CUDA device. The array code itself lives in
``dataprep.transforms`` and runs unchanged on NumPy or CuPy arrays."""

from __future__ import annotations

from types import ModuleType

from ..errors import DataprepError

INSTALL = "CuPy is required for --device gpu; install dataprep[gpu] on a machine with a CUDA GPU"


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
    import numpy

    if device == "cpu" or (device == "auto" and not gpu_available()):
        return numpy
    if not gpu_available():
        raise DataprepError(INSTALL)
    import cupy

    return cupy
