"""Shared fixtures: a CLI runner and small synthetic image lists (helpers in helpers.py)."""

from __future__ import annotations

# first: importing dataprep chooses OpenBLAS's kernels as every command does (blas.py)
from dataprep import blas  # noqa: F401

# isort: split
import contextlib
import faulthandler
import os
import signal

import pytest
from click.testing import CliRunner
from helpers import write_images

from dataprep.cli.main import cli

# A child process that hangs prints every thread's stack when the guard below aborts it.
os.environ["PYTHONFAULTHANDLER"] = "1"
# seconds: eight times the slowest test; past it a test is hung, not slow (the variable: for
# the guard's own test)
HANG = float(os.environ.get("DATAPREP_TEST_HANG", 180))


@pytest.fixture(autouse=True)
def _hang_guard():
    """A test still running after HANG seconds fails instead of holding CI to its limit:
    its child processes are aborted (SIGABRT: each prints its threads' stacks into the output
    the test reads, so the test's wait returns and its assertion shows them); a test that
    still runs HANG seconds later, or had no children, fails where it waits, with this
    process's stacks. A timer signal, not a thread: a thread would change what the commands
    under test see (``parallel.fork_safe``)."""
    import psutil

    alarms = []

    def hung(signum, frame) -> None:
        alarms.append(signum)
        children = psutil.Process().children(recursive=True)
        for child in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                child.send_signal(signal.SIGABRT)
        if children and len(alarms) == 1:
            return  # the alarm repeats: HANG seconds on, the test fails if it still waits
        signal.setitimer(signal.ITIMER_REAL, 0)
        faulthandler.dump_traceback(all_threads=True)  # into the test's captured stderr
        pytest.fail(f"hung: still running after {HANG * len(alarms):g} s (its stacks: captured stderr)")

    previous = signal.signal(signal.SIGALRM, hung)
    signal.setitimer(signal.ITIMER_REAL, HANG, HANG)
    yield
    signal.setitimer(signal.ITIMER_REAL, 0)
    signal.signal(signal.SIGALRM, previous)


@pytest.fixture(autouse=True)
def _graph_cache(tmp_path_factory, monkeypatch):
    """Each test keeps onnxruntime graphs and parsed prototxts (graph_cache, prototxt_cache) in a
    folder of its own, never in ~/.cache."""
    monkeypatch.setenv("DATAPREP_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run ``dataprep ARGS`` in-process; returns Click's Result (stdout and stderr apart)."""

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


@pytest.fixture
def image_list(tmp_path):
    """A list of 20 color PNGs (12x16) with integer labels, and the images as BGR arrays."""
    return write_images(tmp_path, 20)
