"""The one executor every command uses: an ordered, chunked map over an indexed source.

A *task* is a picklable callable ``task(start, stop) -> list`` that computes the results
of items ``start..stop-1``. Chunk boundaries depend only on ``n`` and ``chunk_size``, and
results come back in index order, so output never depends on scheduling or worker count.
The task is shipped to each worker once (not with every chunk). Only chunk bounds wait in
a worker's queue; its results wait in its pipe, and it blocks while the pipe is full, so
memory stays bounded however slowly the consumer writes.
A task names files by absolute paths: on a Dask cluster it runs in a worker process whose
working directory is not the client's.
Workers are forked from this process when that is safe (Linux, no other Python thread, no
CUDA context), so they start at once with everything imported; otherwise they come from a
fork server, since fork and CUDA (the GPU commands) or running threads do not mix.
"""

from __future__ import annotations

import contextlib
import logging
import math
import multiprocessing
import os
import pickle
import queue
import signal
import sys
import threading
import time
import traceback
import warnings
from abc import ABC, abstractmethod
from collections import deque
from multiprocessing.connection import Connection, wait
from typing import Any, Callable, Iterable, Iterator, Protocol

try:
    import fcntl
except ImportError:  # not on Windows
    fcntl = None

from .errors import DataprepError, MissingPackage, UsageError
from .staging import INTERRUPTED, interrupts_deferred, signals_held


class Task(Protocol):
    def __call__(self, start: int, stop: int) -> list[Any]: ...


def default_workers() -> int:
    """All cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def chunk_bounds(n: int, chunk_size: int) -> list[tuple[int, int]]:
    """Fixed ``[start, stop)`` ranges covering ``0..n``."""
    return [(s, min(s + chunk_size, n)) for s in range(0, n, chunk_size)]


def default_chunk_size(n: int, workers: int, cap: int = 16) -> int:
    """Enough chunks to balance the workers, few enough to amortize messaging."""
    return max(1, min(cap, math.ceil(n / max(1, workers * 8))))


class Executor(ABC):
    """Runs a task over chunks and yields each chunk's result list in chunk order."""

    workers: int = 1
    chunk_cap: int = 16  # most items per chunk: chunk bounds never change the output

    @abstractmethod
    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]: ...


class InlineExecutor(Executor):
    """Runs every chunk in this process: the reference behaviour, and the fastest for tiny jobs."""

    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
        for start, stop in bounds:
            yield task(start, stop)


# Imported once by the fork server, so its workers start without importing anything.
PRELOAD = ["numpy", "cv2", "dataprep.convert", "dataprep.stores"]


def fork_safe() -> bool:
    """Whether workers may be plain forks of this process: on Linux, while no other Python
    thread runs and CuPy (a CUDA context) is not loaded. A fork starts at once with everything
    imported; a fork server pays its own start-up and imports (docs/performance.md)."""
    return sys.platform == "linux" and threading.active_count() == 1 and "cupy" not in sys.modules


def _context(method: str | None = None) -> multiprocessing.context.BaseContext:
    """``method`` if given, else plain fork where :func:`fork_safe`, else a fork server where
    there is one, else spawn."""
    if method is not None:
        ctx = multiprocessing.get_context(method)
        if method == "forkserver":
            ctx.set_forkserver_preload(PRELOAD)
        return ctx
    if fork_safe():
        return multiprocessing.get_context("fork")
    if "forkserver" not in multiprocessing.get_all_start_methods():
        return multiprocessing.get_context("spawn")
    ctx = multiprocessing.get_context("forkserver")
    ctx.set_forkserver_preload(PRELOAD)
    return ctx


def warm_up() -> None:
    """Start the fork server now, so its imports overlap with this process's own work."""
    ctx = _context()
    if ctx.get_start_method() == "forkserver":
        from multiprocessing import forkserver

        forkserver.ensure_running()


def _grow_pipe(conn: Connection, size: int = 1 << 20) -> None:
    """Raise a result pipe's buffer from 64 KiB: results are large, and a pipe with the
    default buffer moves them at a third of the speed (docs/performance.md)."""
    setpipe = getattr(fcntl, "F_SETPIPE_SZ", 1031) if fcntl else None
    if setpipe is None:
        return
    with contextlib.suppress(OSError):  # the limit in /proc/sys/fs/pipe-max-size may be lower
        fcntl.fcntl(conn.fileno(), setpipe, size)


def settings() -> dict:
    """What a command set for this process that its workers need too: a fork server's
    children and Dask's workers did not see it set (``--max-pixels``)."""
    from . import images

    return {"max_pixels": images.MAX_PIXELS}


def _take_settings(given: dict) -> None:
    from . import images

    images.MAX_PIXELS = given["max_pixels"]


def one_opencv_thread() -> None:
    """One OpenCV thread in this process, now or (through OpenCV's own variable) when it is
    first imported: a command that never decodes an image never pays OpenCV's import."""
    cv2 = sys.modules.get("cv2")
    if cv2 is not None:
        cv2.setNumThreads(1)
    else:
        os.environ["OPENCV_FOR_THREADS_NUM"] = "1"


def _worker_main(
    task: Task, jobs: Connection, results: Connection, inherited: list[Connection], given: dict
) -> None:
    # The parent owns Ctrl-C and stops workers itself (SIGTERM); a forked worker must not
    # run the parent's handlers, which clean up the parent's partial outputs. It starts with
    # both signals blocked (see map_chunks) and takes them only once its own are set.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT, signal.SIGTERM})
    for conn in inherited:  # a fork's copies of the parent's pipe ends: with them open, a
        conn.close()  # killed parent would never send this worker EOF
    from .heap import keep_freed_memory

    one_opencv_thread()  # one per worker process: no oversubscription
    keep_freed_memory()  # a forked worker has it already; a spawned one needs it
    _take_settings(given)
    replies: queue.SimpleQueue = queue.SimpleQueue()
    sender = threading.Thread(target=_send_replies, args=(replies, results), daemon=True)
    sender.start()
    try:
        while True:
            try:
                job = jobs.recv()
            except EOFError:
                return
            if job is None:
                return
            try:
                started = time.perf_counter()
                result = task(*job)
                reply = ("ok", result, time.perf_counter() - started)
            except BaseException as exc:  # every failure goes back to the parent, which raises it
                reply = ("error", _picklable(exc), traceback.format_exc())
            replies.put(reply)
    finally:
        replies.put(None)
        sender.join()


def _send_replies(replies: queue.SimpleQueue, results: Connection) -> None:
    """A worker's replies, in order, from a thread of its own: the worker computes its next
    chunk while a result larger than the pipe waits for a parent busy writing (a chunk of 16
    photos is 3 MB; sent inline, the worker sat idle half of an `lmdb --resize` run)."""
    while (reply := replies.get()) is not None:
        try:
            results.send(reply)
        except OSError:  # the parent is gone
            return


def _picklable(exc: BaseException) -> BaseException:
    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


class RemoteTraceback(Exception):
    """The traceback of an exception raised in a worker, chained as the ``__cause__``."""

    def __str__(self) -> str:
        return "\n" + self.args[0]


class ProcessExecutor(Executor):
    """``workers`` processes share the chunks: ``workers - 1`` children and this process.

    Each child has its own job and result pipes and about ``QUEUE_SECONDS`` of chunks in
    flight (at least two: one running, one waiting), measured from the time its chunks take;
    it sends its results from a thread, so it computes on while a large one waits to be
    read. Results are read back in chunk order. While the next result is not ready, this process
    computes a later chunk itself (up to about ``queued_items`` items ahead): on a 2-core
    machine the parent would otherwise sit idle between writes, and its chunks never cross
    a pipe.
    A child that dies is detected through its sentinel and reported; on an error or
    Ctrl-C the children are stopped at once.
    """

    def __init__(self, workers: int, queued_items: int = 128, start_method: str | None = None) -> None:
        self.workers = workers
        self.queued_items = queued_items
        self.start_method = start_method  # None: chosen when the workers start (see _context)

    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
        if not bounds:
            return
        one_opencv_thread()  # this process works on chunks too: one OpenCV thread each
        ctx = _context(self.start_method)
        n = len(bounds)
        children = max(1, min(self.workers - 1, n - 1))
        depth = 2  # chunks queued per child, until their times are known
        chunk_seconds: deque[float] = deque(maxlen=16)  # the latest chunk times of children
        ahead = max(2, min(8, self.queued_items // max(1, bounds[0][1] - bounds[0][0])))
        procs, jobs, results = [], [], []
        finished = False
        try:
            for _ in range(children):
                job_r, job_w = ctx.Pipe(duplex=False)
                res_r, res_w = ctx.Pipe(duplex=False)
                _grow_pipe(res_r)
                inherited = [*jobs, *results, job_w, res_r] if ctx.get_start_method() == "fork" else []
                proc = ctx.Process(
                    target=_worker_main, args=(task, job_r, res_w, inherited, settings()), daemon=True
                )
                # the child starts with Ctrl-C and SIGTERM blocked: a SIGTERM that reached a
                # fork before _worker_main ran the parent's handler there, whose exception
                # escaped the fork's bootstrap and went on running the parent's code (seen as
                # a second copy of a test worker interrupting pytest-xdist)
                with warnings.catch_warnings(), signals_held():
                    # Python 3.12+ warns on fork whenever native threads exist; the only ones
                    # here are idle OpenBLAS workers, which re-initialise after a fork
                    warnings.simplefilter("ignore", DeprecationWarning)
                    proc.start()
                job_r.close()
                res_w.close()
                procs.append(proc)
                jobs.append(job_w)
                results.append(res_r)
            owner: dict[int, int] = {}  # chunk -> child computing it
            mine: dict[int, list[Any]] = {}  # chunks this process computed ahead
            load = [0] * children
            nxt = 0  # the first chunk nobody has taken yet
            for i in range(n):
                for k in range(children):  # keep every child's queue full
                    while load[k] < depth and nxt < n:
                        try:
                            jobs[k].send(bounds[nxt])
                        except OSError:  # its pipe is gone: the child died
                            raise _died(procs[k]) from None
                        owner[nxt], load[k], nxt = k, load[k] + 1, nxt + 1
                if i in mine:
                    yield mine.pop(i)
                    continue
                k = owner.pop(i)
                while not results[k].poll() and nxt < n and len(mine) < ahead:
                    mine[nxt] = task(*bounds[nxt])
                    nxt += 1
                load[k] -= 1
                result, seconds = self._receive(procs[k], results[k])
                chunk_seconds.append(seconds)
                depth = _queue_depth(chunk_seconds)
                yield result
            finished = True
        finally:
            _stop(procs, jobs, results, graceful=finished)

    @staticmethod
    def _receive(proc: multiprocessing.Process, conn: Connection) -> tuple[list[Any], float]:
        ready = wait([conn, proc.sentinel])
        if conn not in ready:
            raise _died(proc)
        try:
            reply = conn.recv()
        except EOFError:
            raise _died(proc) from None
        if reply[0] == "error":
            raise reply[1] from RemoteTraceback(reply[2])
        return reply[1], reply[2]


# Work queued per child: enough that it does not run dry while this process writes, little
# enough that at the end this process does not wait long on a child's queue; slow chunks
# keep two queued. docs/performance.md has the measurements behind the value.
QUEUE_SECONDS = 0.01


def _queue_depth(chunk_seconds: Iterable[float], most: int = 64) -> int:
    """Chunks to keep queued per child: ``QUEUE_SECONDS`` of work at the recent chunk time."""
    times = list(chunk_seconds)
    mean = sum(times) / len(times)
    return max(2, min(most, math.ceil(QUEUE_SECONDS / mean) if mean > 0 else most))


def _died(proc: multiprocessing.Process) -> DataprepError:
    import signal

    proc.join(1)
    if proc.exitcode in (-signal.SIGBUS, -signal.SIGSEGV):  # a read past a damaged file's pages
        return DataprepError(
            f"a worker process died of {signal.Signals(-proc.exitcode).name} while reading: a damaged store "
            "or file (dataprep verify STORE tells)"
        )
    return DataprepError(
        f"a worker process died unexpectedly (exit code {proc.exitcode}; out of memory or killed?)"
    )


def _stop(procs: list, jobs: list[Connection], results: list[Connection], graceful: bool) -> None:
    for conn in jobs:
        with contextlib.suppress(OSError):
            if graceful:
                conn.send(None)
            conn.close()
    for proc in procs:
        if not graceful:
            proc.terminate()  # nothing is read from it again, so a half-sent reply is harmless
        proc.join()
    for conn in results:  # a map abandoned by its consumer ends when the garbage collector
        with contextlib.suppress(OSError):  # gets to it: a pipe already gone is no error then
            conn.close()


# Dask's periodic housekeeping, eased on the clusters dataprep starts: a sampling profiler
# every 10 ms, an event-loop tick every 20 ms, memory and system monitors every 0.1 and
# 0.5 s took 18% of a core on an idle 2-worker cluster here (3% with these), and more
# while the workers run. On your own cluster, put them in the workers' Dask config.
QUIET_DASK = {
    "distributed.worker.profile.enabled": False,
    "distributed.admin.tick.interval": "1s",
    "distributed.admin.system-monitor.interval": "2s",
    "distributed.worker.memory.monitor-interval": "1s",
}


def local_cluster(workers: int) -> Any:
    """A ``LocalCluster`` of ``workers`` one-thread processes, as ``--executor dask``
    starts without a scheduler address."""
    import dask.config
    from dask.distributed import LocalCluster

    with dask.config.set(QUIET_DASK):
        return LocalCluster(
            n_workers=workers,
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            # no dashboard, and the scheduler's HTTP routes on a free port: on Dask's 8787 a
            # second cluster (two commands at once) printed "Port 8787 is already in use"
            scheduler_kwargs={"dashboard": False, "dashboard_address": ":0"},
            # the workers share this command's stderr: only their critical lines. Task errors
            # come back through the results; a worker's "failed during get data" when Ctrl-C
            # cut the client's connection was noise after "Interrupted."
            silence_logs=logging.CRITICAL,
        )


def _direct_to_workers() -> bool:
    """Results come straight from the workers unless Dask's own setting says otherwise
    (``DASK_DISTRIBUTED__CLIENT__DIRECT_TO_WORKERS=False`` where the client cannot reach
    them): Dask's default routes every result through the scheduler, which moved each
    byte twice and cost the scheduler CPU (lmdb --resize: +33% against the local executor)."""
    import dask.config

    direct = dask.config.get("distributed.client.direct-to-workers", None)
    return True if direct is None else bool(direct)


def _same(task: Task) -> Task:
    return task


def _run_chunk(task: Task, start: int, stop: int, given: dict) -> list[Any]:
    """One chunk on a Dask worker (a module-level function: Dask ships it by reference),
    with one OpenCV thread and the malloc settings the local workers have: Dask's nanny
    starts workers with MALLOC_TRIM_THRESHOLD_=65536, which made every image's buffers
    fault in again (a 64-photo chunk took 0.29 s there against 0.15 s locally)."""
    from .heap import keep_freed_memory

    keep_freed_memory()
    one_opencv_thread()
    _take_settings(given)
    return task(start, stop)


CONNECT_SECONDS = 5  # how long a scheduler address may take to answer
SCHEMES = ("tcp", "tls", "ucx", "ws", "wss")


def check_scheduler(address: str) -> None:
    """UsageError for an address Dask could not connect to, before trying (a missing port
    hung 10 s, then failed inside Dask): ``tcp://HOST:PORT``."""
    from urllib.parse import urlsplit

    parts = urlsplit(address if "://" in address else f"tcp://{address}")
    try:
        port = parts.port
    except ValueError:
        port = None
    if parts.scheme not in SCHEMES or not parts.hostname or port is None or not 0 < port < 65536:
        raise UsageError(f"{address}: give a Dask scheduler address as tcp://HOST:PORT (tcp://head:8786)")


def _quiet_dask() -> None:
    """Dask's own logging off (only -v shows it): a lost scheduler printed 30 lines and a
    traceback, some after the client closed; the command reports what happened in its
    one line. Dask's loggers set their own levels, so each is set."""
    names = [name for name in logging.root.manager.loggerDict if name.startswith("distributed")]
    for name in ["distributed", *names]:
        logging.getLogger(name).setLevel(logging.CRITICAL + 1)


class DaskExecutor(Executor):
    """The same ordered chunked map on a Dask cluster: the task is sent once (a graph node
    the chunks depend on), ``PER_WORKER`` chunks per worker now in the cluster are in flight
    (never a future per item, never the dataset in the scheduler; a cluster that grows
    mid-run gets more) and results are yielded in chunk order. A worker that dies has its
    chunks rerun elsewhere by Dask; a chunk is a pure function of its bounds, so a rerun
    gives the same records. Without an address a ``LocalCluster`` of ``workers`` processes
    starts (tests, one big machine)."""

    PER_WORKER = 4  # chunks in flight per worker: one running, the rest queued or on their way
    RECOUNT_SECONDS = 2.0  # how often the cluster's workers are counted again

    def __init__(self, address: str | None = None, workers: int | None = None) -> None:
        try:
            from dask.distributed import Client
        except ImportError:
            raise MissingPackage("--executor dask", "dask", "Dask (dask[distributed])") from None
        if address:
            check_scheduler(address)
        if not logging.getLogger("dataprep").isEnabledFor(logging.DEBUG):
            _quiet_dask()
        self.address = address
        self._cluster = None
        self.client = None
        direct = _direct_to_workers()
        try:
            if address:
                self.client = Client(
                    address, timeout=CONNECT_SECONDS, set_as_default=False, direct_to_workers=direct
                )
            else:
                # a Ctrl-C during the cluster's start-up is taken once it is up, and closes it:
                # one cut short left its processes' semaphores behind
                try:
                    with interrupts_deferred():
                        self._cluster = local_cluster(workers or default_workers())
                        self.client = Client(self._cluster, set_as_default=False, direct_to_workers=direct)
                except KeyboardInterrupt:
                    self.close()
                    raise
        except (OSError, TimeoutError) as exc:
            raise DataprepError(
                f"cannot reach the Dask scheduler at {address} within {CONNECT_SECONDS} s: {exc}"
            ) from None
        self.workers = self._count_workers()
        if not self.workers:  # its batch jobs still queued, say
            logging.getLogger("dataprep").info(
                "no Dask worker at %s yet: waiting for one to join (Ctrl-C stops)", address
            )
            self.client.wait_for_workers(1)
            self.workers = self._count_workers()
        # a Dask task costs milliseconds of scheduling (7 ms each on this 2-core machine):
        # chunks of up to 64 images keep that a few percent of the work
        self.chunk_cap = 64

    def _count_workers(self) -> int:
        return self.client.scheduler_info(n_workers=0)["n_workers"]  # the count alone: 1 ms

    def map_chunks(self, task: Task, bounds: list[tuple[int, int]]) -> Iterator[list[Any]]:
        if not bounds:
            return
        # the task as a (small) graph node rather than scattered data: if the worker holding
        # it dies, Dask recomputes it instead of losing it
        shipped = self.client.submit(_same, task, pure=False)
        given = settings()
        pending: deque = deque()
        upcoming = iter(bounds)
        counted = time.monotonic()
        try:
            while True:
                if time.monotonic() - counted > self.RECOUNT_SECONDS:
                    now = self._count_workers()
                    if now < self.workers:
                        logging.getLogger("dataprep").info(
                            "a Dask worker left (%d now): Dask reruns its chunks on the others", now
                        )
                    self.workers, counted = max(1, now), time.monotonic()
                while len(pending) < self.PER_WORKER * self.workers:
                    following = next(upcoming, None)
                    if following is None:
                        break
                    pending.append(self.client.submit(_run_chunk, shipped, *following, given, pure=False))
                if not pending:
                    return
                try:
                    result = pending.popleft().result()
                except Exception as exc:
                    if self.client.status == "running" and "connection" not in str(exc).lower():
                        raise
                    left = len(pending) + 1 + sum(1 for _ in upcoming)
                    raise DataprepError(
                        f"lost the Dask scheduler at {self.address or 'the local cluster'}: "
                        f"{left} of {len(bounds)} chunks were not done (rerun the command)"
                    ) from None
                yield result
        finally:  # also when the generator is collected after close(): then nothing is left
            if pending and self.client.status == "running":
                self.client.cancel(list(pending))

    def close(self) -> None:
        if self.client is not None:
            self.client.close()
        if self._cluster is not None:
            self._cluster.close()


# --executor and --scheduler (or DATAPREP_SCHEDULER): set by the command line options
EXECUTOR = {"kind": "local", "scheduler": None}
_DASK: list[DaskExecutor] = []


def close_executors() -> None:
    """End of a command: close a Dask client (and its local cluster) and go back to the
    local executor, so nothing carries over to the next command run in this process."""
    while _DASK:
        _DASK.pop().close()
    EXECUTOR.update(kind="local", scheduler=None)


def make_executor(workers: int | None = None, n: int | None = None) -> Executor:
    """A process pool for ``workers > 1`` (default: all cores), inline otherwise or for tiny
    jobs; with ``use_executor("dask")`` the Dask cluster (one client per process)."""
    if EXECUTOR["kind"] == "dask":
        if not _DASK:
            _DASK.append(DaskExecutor(EXECUTOR["scheduler"], workers))
        return _DASK[0]
    workers = default_workers() if workers is None else workers
    if workers < 1:
        raise UsageError(f"--workers must be at least 1, got {workers}")
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
    """Yield ``task``'s results for items ``0..n-1`` in order; ``progress(k)`` after each chunk.

    An interrupt swallowed on its way (one landing in a finalizer) still stops the map at
    the next chunk."""
    size = chunk_size or default_chunk_size(n, executor.workers, executor.chunk_cap)
    chunks = executor.map_chunks(task, chunk_bounds(n, size))
    try:
        for results in chunks:
            if INTERRUPTED.is_set():
                raise KeyboardInterrupt
            if progress is not None:  # before handing them out: a consumer that stops after
                progress(len(results))  # the last item never resumes this generator
            yield from results
    finally:  # the workers stop when this map is closed or abandoned, not when the garbage
        chunks.close()  # collector gets to the generator (its pipes' descriptors long reused)
