"""The ordered, chunked executor: order, chunking, errors and crashes."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import DieAt, FailAt, Square, Stamped

from dataprep.errors import DataprepError
from dataprep.parallel import (
    QUEUE_SECONDS,
    InlineExecutor,
    ProcessExecutor,
    _grow_pipe,
    _queue_depth,
    _worker_main,
    chunk_bounds,
    make_executor,
    ordered_map,
    settings,
)

# Workers are plain forks in a command's process and come from a fork server where threads
# run (or CuPy is loaded): both ways are tested.
START_METHODS = pytest.mark.parametrize("method", ["fork", "forkserver"])


def test_chunk_bounds_cover_the_range():
    assert chunk_bounds(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert chunk_bounds(0, 4) == []


@START_METHODS
def test_results_come_back_in_order_and_use_several_processes(method):
    seen = []
    results = list(
        ordered_map(
            Square(0.02), 200, ProcessExecutor(2, start_method=method), chunk_size=7, progress=seen.append
        )
    )
    assert [(i, sq) for i, sq, _ in results] == [(i, i * i) for i in range(200)]
    assert len({pid for *_, pid in results}) == 2
    assert sum(seen) == 200 and max(seen) == 7


@START_METHODS
def test_inline_and_process_executors_agree(method):
    inline = [r[:2] for r in ordered_map(Square(), 50, InlineExecutor())]
    pooled = [r[:2] for r in ordered_map(Square(), 50, ProcessExecutor(2, start_method=method), chunk_size=3)]
    assert inline == pooled


@START_METHODS
def test_task_errors_propagate(method):
    with pytest.raises(ValueError, match="boom at 33"):
        list(ordered_map(FailAt(33), 100, ProcessExecutor(2, start_method=method), chunk_size=5))


@START_METHODS
def test_a_dying_worker_is_a_clear_error(method):
    with pytest.raises(DataprepError, match="worker process died"):
        for index in range(0, 100, 5):  # one chunk or another reaches a child and kills it
            list(
                ordered_map(
                    DieAt(index, os.getpid()), 100, ProcessExecutor(2, start_method=method), chunk_size=5
                )
            )


def test_workers_are_forks_only_while_no_thread_runs():
    code = """
import threading, time
from dataprep.parallel import fork_safe
from dataprep.progress import progress_bar
bar = progress_bar(10, "x")  # stderr is a terminal: a real tqdm bar, without a monitor thread
assert type(bar.bar).__name__ == "tqdm", bar
bar(5)
alone = fork_safe()
threading.Thread(target=time.sleep, args=(0.5,)).start()
print(alone, fork_safe())
"""
    import pty

    leader, terminal = pty.openpty()
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], stderr=terminal, stdout=subprocess.PIPE, text=True, check=True
        ).stdout
    finally:
        os.close(leader)
        os.close(terminal)
    assert out.split() == ["True", "False"]


def test_children_queue_about_queue_seconds_of_work():
    assert _queue_depth([0.03, 0.03]) == 2  # slow chunks: one running, one waiting
    assert _queue_depth([QUEUE_SECONDS / 8] * 4) == 8
    assert _queue_depth([0.0, 0.0]) == 64 and _queue_depth([1e-7], most=10) == 10


def test_make_executor():
    assert isinstance(make_executor(1), InlineExecutor)
    assert isinstance(make_executor(2, n=1), InlineExecutor)
    assert make_executor(2).workers == 2
    with pytest.raises(DataprepError):
        make_executor(0)


@pytest.mark.parametrize("executor", [InlineExecutor(), ProcessExecutor(2)])
def test_zero_items_is_nothing_to_do(executor):
    assert list(ordered_map(Square(), 0, executor)) == []


FORK_WINDOW = """
import os, signal, sys
sys.path.insert(0, {tests!r})
from helpers import FailAt
from dataprep.parallel import ProcessExecutor, ordered_map
if __name__ == "__main__":
    # a Dask cluster started and closed in this process lengthens each fork's start-up,
    # as in a test worker that ran the Dask tests: the window where a SIGTERM used to land
    from dask.distributed import Client, LocalCluster
    cluster = LocalCluster(n_workers=1, processes=True, dashboard_address=None, silence_logs=50)
    Client(cluster).close()
    cluster.close()
    def interrupt(*_):  # the CLI's handler: Ctrl-C and SIGTERM unwind as KeyboardInterrupt
        raise KeyboardInterrupt
    signal.signal(signal.SIGTERM, interrupt)
    for _ in range(60):  # a failing chunk makes the parent terminate the other child
        try:
            list(ordered_map(FailAt(33), 100, ProcessExecutor(2, start_method="fork"), chunk_size=5))
        except ValueError:
            pass
    print("done", flush=True)
"""


def test_a_worker_stopped_while_starting_never_runs_the_parents_code(tmp_path):
    pytest.importorskip("dask.distributed")
    script = tmp_path / "window.py"
    script.write_text(FORK_WINDOW.format(tests=str(Path(__file__).parent)))
    run = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=300)
    # before the fix, children escaped their bootstrap on the parent's handler and went on
    # as copies of the parent: dozens of "done" lines and KeyboardInterrupt tracebacks
    assert run.returncode == 0 and run.stdout.split() == ["done"], run.stdout[-500:] + run.stderr[-2000:]
    assert "KeyboardInterrupt" not in run.stderr


def test_a_worker_computes_on_while_a_large_result_waits_to_be_read():
    """A result larger than the pipe does not hold its worker: the next chunk starts while
    the parent, busy writing, has read nothing yet (sent inline, a worker of `lmdb --resize`
    sat idle half the run)."""
    import multiprocessing
    import time

    ctx = multiprocessing.get_context("fork")
    job_r, job_w = ctx.Pipe(duplex=False)
    res_r, res_w = ctx.Pipe(duplex=False)
    _grow_pipe(res_r)
    task = Stamped(4 << 20)  # 4 MB: four times the result pipe
    proc = ctx.Process(target=_worker_main, args=(task, job_r, res_w, [job_w, res_r], settings()))
    proc.start()
    job_r.close()
    res_w.close()
    try:
        job_w.send((0, 1))
        job_w.send((1, 2))
        time.sleep(0.5)  # busy: nothing read
        read_at = time.monotonic()
        replies = [res_r.recv(), res_r.recv()]
        assert [r[0] for r in replies] == ["ok", "ok"]
        first, second = (r[1][0][0] for r in replies)
        assert first < second < read_at - 0.3  # the second chunk ran before the first was read
        job_w.send(None)
        proc.join(10)
        assert proc.exitcode == 0
    finally:
        if proc.is_alive():
            proc.terminate()
