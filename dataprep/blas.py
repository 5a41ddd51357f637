"""OpenBLAS's kernels for this CPU, chosen before NumPy loads them.

On AMD's Zen 4, which runs AVX-512 as two 256-bit halves, OpenBLAS picks its AVX-512
(SkylakeX) kernels; its AVX2 kernels for Zen run the products the layers make faster
there. One core, OpenBLAS 0.3.31 (NumPy's): sgemm of 32 x 800 by 800 x 2048 at 80 to 92
GFLOP/s against 60, with 64 rows 102 against 80, large square products 108 against 100;
CIFAR-10 quick's `time` took 0.92 of the wall time (docs/performance.md).
"""

from __future__ import annotations

import os
import sys

KERNELS_VAR = "OPENBLAS_CORETYPE"


def choose_kernels(cpuinfo: str = "/proc/cpuinfo") -> None:
    """OpenBLAS's Zen kernels on an AMD CPU with AVX-512, unless the user chose others; no
    effect once NumPy is loaded (its BLAS has chosen then) or under another BLAS. Processes
    this one starts (workers, Dask) inherit the choice, so every part of a run computes alike."""
    if KERNELS_VAR in os.environ or "numpy" in sys.modules:
        return
    try:
        with open(cpuinfo) as f:
            first = f.read(1 << 14)  # the first processor's entry says it for all
    except OSError:  # not Linux
        return
    if "AuthenticAMD" in first and " avx512f" in first:
        os.environ[KERNELS_VAR] = "Zen"
