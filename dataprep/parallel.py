"""The one executor every command uses: an ordered, chunked map over an indexed source.

A *task* is a picklable callable ``task(start, stop) -> list`` that computes the results
of items ``start..stop-1``. Chunk boundaries depend only on ``n`` and ``chunk_size``, and
results come back in index order, so output never depends on scheduling or worker count.
The task is shipped to each worker once (not with every chunk), and at most a few chunks
per worker are in flight, so memory stays bounded however slowly the consumer writes.
"""

from __future__ import annotations

import logging
import math
import multiprocessing
import os
import signal
from abc import ABC, abstractmethod
from collections import deque
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any, Callable, Iterator, Protocol

from .errors import DataprepError

log = logging.getLogger(__name__)


class Task(Protocol):
    def __call__(self, start: int, stop: int) -> list[Any]: ...


def default_workers() -> int:
    """All cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """Fixed ``[start, stop)`` ranges covering ``0..n``."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def default_chunk_size(n: int, workers: int, cap: int = 256) -> int:
    """Enough chunks to balance the workers, few enough to amortize messaging."""
    return max(1, min(cap, math.ceil(n / max(1, workers * 8))))


class Executor(ABC):
    """Runs a task over chunks and yields each chunk's result list in chunk order."""

    workers: int = 1

    @abstractmethod
    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]: ...


class InlineExecutor(Executor):
    """Runs every chunk in this process: the reference behaviour, and the fastest for tiny jobs."""

    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
        for start, stop in bounds:
            yield task(start, stop)


_worker_task: Task | None = None


def _init_worker(task: Task) -> None:
    global _worker_task
    # The parent owns Ctrl-C: it stops the pool itself, so workers never die mid-message.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    import cv2

    cv2.setNumThreads(1)  # one OpenCV thread per worker process: no oversubscription
    _worker_task = task


def _run_chunk(start: int, stop: int) -> list[Any]:
    assert _worker_task is not None
    return _worker_task(start, stop)


class ProcessExecutor(Executor):
    """A spawn-context process pool with a bounded window of chunks in flight."""

    def __init__(self, workers: int, window: int = 3) -> None:
        self.workers = workers
        self.window = window

    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
        pool = ProcessPoolExecutor(
            max_workers=self.workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_init_worker,
            initargs=(task,),
        )
        pending = iter(bounds)
        in_flight: deque[Future] = deque()
        try:
            for start, stop in pending:
                in_flight.append(pool.submit(_run_chunk, start, stop))
                if len(in_flight) >= self.workers * self.window:
                    break
            while in_flight:
                result = in_flight.popleft().result()
                nxt = next(pending, None)
                if nxt is not None:
                    in_flight.append(pool.submit(_run_chunk, *nxt))
                yield result
        except BrokenProcessPool:
            raise DataprepError("a worker process died unexpectedly (out of memory or killed?)") from None
        finally:
            _stop_pool(pool, in_flight)


def _stop_pool(pool: ProcessPoolExecutor, in_flight: deque[Future]) -> None:
    # Queued chunks are cancelled; chunks already running finish (workers ignore Ctrl-C and a
    # chunk is short). Killing a worker mid-reply could corrupt the result pipe and hang.
    for future in in_flight:
        future.cancel()
    pool.shutdown(wait=True, cancel_futures=True)


def make_executor(workers: int | None = None, n: int | None = None) -> Executor:
    """A process pool for ``workers > 1`` (default: all cores), inline otherwise or for tiny jobs."""
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise DataprepError(f"--workers must be at least 1, got {workers}")
    if workers == 1 or (n is not None and n <= 1):
        return InlineExecutor()
    return ProcessExecutor(workers)


def ordered_map(
    task: Task,
    n: int,
    executor: Executor,
    chunk_size: int | None = None,
    progress: Callable[[int], Any] | None = None,
) -> Iterator[Any]:
    """Yield ``task``'s results for items ``0..n-1`` in order; ``progress(k)`` after each chunk."""
    size = chunk_size or default_chunk_size(n, executor.workers)
    for results in executor.map_chunks(task, chunk_bounds(n, size)):
        yield from results
        if progress is not None:
            progress(len(results))
