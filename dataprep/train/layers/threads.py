"""The one pool of threads the layers share. Work is split over fixed parts of the batch
(their bounds follow from the shapes alone, never from the core count), each part's result
is kept apart and summed in part order, so the bytes do not depend on the thread count.

NumPy releases the GIL in its copies, ufuncs and GEMMs, so threads over parts keep every
core busy in the passes BLAS does not cover (im2col, col2im, pooling) as well; BLAS runs
one thread per part meanwhile. On a GPU a part is the whole batch: the device queues it.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from types import ModuleType
from typing import Any, Callable, Iterator

import numpy as np

from ...transforms import get_xp

CHUNK = 8  # images per part of convolution work: fixed, so sums do not depend on the core count
PART = 1 << 20  # elements per part of elementwise work (4 MB of float32): NumPy's per-call cost
# dominates smaller parts (LeNet's pool1 in parts of 8 images: 1.2 ms for a 0.07 ms pass)
CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
_POOL: list[tuple[ThreadPoolExecutor, Any]] = []
COMPILED = True  # False: the array code on the CPU too (the tests' second path)


def chunks(xp: ModuleType, n: int, size: int) -> list[slice]:
    """The batch of ``n`` in parts of ``size`` images on the CPU; whole on a GPU."""
    if xp is not np:
        return [slice(0, n)]
    return [slice(a, min(a + size, n)) for a in range(0, n, size)]


def compiled_loops(xp: ModuleType) -> ModuleType | None:
    """The loops Numba compiles (``compiled``) for NumPy arrays, imported at their first use
    (commands that train nothing never load Numba); None on a GPU, whose kernels are the
    array code, or where they are switched off."""
    if xp is not np or not COMPILED:
        return None
    from . import compiled

    return compiled


def _pool() -> tuple[ThreadPoolExecutor, Any]:
    if not _POOL:
        from threadpoolctl import ThreadpoolController

        # no thread starts before a submit: with one core, none does
        threads = ThreadPoolExecutor(max(1, CORES - 1), thread_name_prefix="dataprep-layers")
        _POOL.append((threads, ThreadpoolController()))
    return _POOL[0]


@contextmanager
def one_blas_thread(xp: ModuleType) -> Iterator[None]:
    """BLAS limited to one thread on the CPU, for a whole pass of a net: the layers split
    their products over the layer threads themselves. A multi-threaded BLAS call between
    them would leave OpenBLAS's threads spinning on the cores the layer threads need
    (LeNet ran at 24 ms per iteration with one BLAS thread, 34 ms without). With one core
    too: a product's bytes may depend on BLAS's thread count (OpenBLAS's Haswell kernels)."""
    if xp is not np:
        yield
        return
    with _pool()[1].limit(limits=1, user_api="blas"):
        yield


def run_parts(parts: list[slice], work: Callable[[int, slice], object]) -> None:
    """``work(index, part)`` for every part; on the CPU the calling thread and the pool's
    threads take the parts in turn from one queue (one dispatch per call, not per part),
    with a one-thread BLAS each."""
    if len(parts) < 2:
        for index, part in enumerate(parts):
            work(index, part)
        return
    pool, blas = _pool()
    todo = enumerate(parts)  # next() on it is atomic under the GIL: each part is taken once

    def drain() -> None:
        for index, part in todo:
            work(index, part)

    # one BLAS thread per part whatever the core count: a product's bytes may depend on
    # BLAS's threads (OpenBLAS's Haswell kernels), and must not on the cores
    with blas.limit(limits=1, user_api="blas"):
        helpers = [pool.submit(drain) for _ in range(min(CORES, len(parts)) - 1)]
        try:
            drain()
        finally:
            for helper in helpers:
                helper.result()


def batch_parts(x) -> list[slice]:
    """Parts of the batch (first axis) of ``x`` for elementwise work: about PART elements
    each, an even number of them (two cores share them evenly); one part for an array too
    small to be worth a thread's hand-over (about 50 us), and on a GPU."""
    xp, n = get_xp(x), len(x)
    if xp is not np or n < 2 or x.size < PART // 4:
        return [slice(0, n)]
    count = max(2, -(-x.size // PART))
    return chunks(xp, n, -(-n // min(n, count + count % 2)))


def in_parts(x, work: Callable[[int, slice], object]) -> None:
    """``work(index, part)`` over the ``batch_parts`` of ``x``."""
    run_parts(batch_parts(x), work)


def copy_in_parts(dst, src) -> None:
    """``dst[...] = src`` split over the batch (first) axis."""
    in_parts(dst, lambda _, part: dst.__setitem__(part, src[part]))
