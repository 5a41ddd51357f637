"""Helpers shared by the benchmarks: timing subprocesses and their peak memory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

_MEASURE = r"""
import json, resource, subprocess, sys, time
err = subprocess.PIPE if sys.argv[1] == "pipe" else None
t = time.perf_counter()
p = subprocess.run(sys.argv[2:], stdout=subprocess.DEVNULL, stderr=err, text=True)
wall = time.perf_counter() - t
print(json.dumps({"rc": p.returncode, "wall": wall, "stderr": (p.stderr or "")[-2000:],
                  "peak_mb": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024}))
"""


def measure(cmd: list, cwd: Path | None = None, log: Path | None = None) -> dict:
    """Run ``cmd`` in a fresh wrapper; wall seconds and the largest RSS of any of its processes
    (``log``: its whole stderr goes there).

    The wrapper is small: a child started straight from a large process (a bench that has
    built nets) counts that process's memory in its own peak, since Linux records the peak of
    the memory it replaced at exec (LeNet's `train` read 379 MB that way, 136 MB alone).
    Bytecode caching is left on, as on a normal install: with PYTHONDONTWRITEBYTECODE (set
    on this machine) every run recompiles numpy, cv2 and the rest, 0.4 s per process.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    with open(log, "w") if log is not None else contextlib.nullcontext(subprocess.PIPE) as err:
        out = subprocess.run(
            [sys.executable, "-c", _MEASURE, "pipe" if log is None else "log", *map(str, cmd)],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=err,
            text=True,
            check=True,
        ).stdout
    result = json.loads(out)
    if result["rc"] != 0:
        said = result["stderr"] if log is None else Path(log).read_text()[-2000:]
        raise RuntimeError(f"{cmd} failed: {said}")
    return result


def dataprep(*args) -> list[str]:
    """The command line of the installed dataprep CLI."""
    return [sys.executable, "-m", "dataprep.cli.main", *map(str, args)]


def row(name: str, n: int, seconds: float, peak_mb: float | None = None) -> str:
    mem = f"{peak_mb:8.0f} MB" if peak_mb is not None else " " * 11
    return f"{name:<46} {n / seconds:9.0f} img/s {seconds:8.2f} s {mem}"


def print_rows(times: dict, labels: dict[str, str], n: int) -> None:
    """One ``row`` per command of an ``interleaved`` run, in ``labels`` order."""
    for name, label in labels.items():
        print(row(f"  {label}", n, times[name]["wall"], times[name]["peak_mb"]))


def timed(fn, *args, **kw) -> float:
    t = time.perf_counter()
    fn(*args, **kw)
    return time.perf_counter() - t


def interleaved(cmds: dict[str, tuple[list, Path | None, list[Path]]], repeat: int, settle) -> dict:
    """Run every command ``repeat`` times, round-robin, removing its outputs between runs;
    returns per name the median wall time and the largest peak memory.

    The disk here swings by 2x within minutes, so single runs compare nothing; interleaved
    medians do.
    """
    import statistics

    walls: dict[str, list[float]] = {name: [] for name in cmds}
    peaks: dict[str, float] = {name: 0.0 for name in cmds}
    for _ in range(repeat):
        for name, (cmd, cwd, outputs) in cmds.items():
            for out in outputs:
                shutil.rmtree(out, ignore_errors=True) if out.is_dir() else out.unlink(missing_ok=True)
            settle()
            m = measure(cmd, cwd=cwd)
            walls[name].append(m["wall"])
            peaks[name] = max(peaks[name], m["peak_mb"])
    return {
        name: {"wall": statistics.median(walls[name]), "peak_mb": peaks[name], "runs": walls[name]}
        for name in cmds
    }


@contextlib.contextmanager
def scratch_dir(prefix: str, parent: Path | None = None) -> Iterator[Path]:
    """A temporary folder for one benchmark (under ``parent``, the --dir option), removed after."""
    base = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
    try:
        yield base
    finally:
        shutil.rmtree(base, ignore_errors=True)


def scratch_args(doc: str, **defaults):
    """The benchmarks' command line: their size options, --repeat and a scratch --dir."""
    import argparse

    ap = argparse.ArgumentParser(description=doc.splitlines()[0])
    for name, value in defaults.items():
        ap.add_argument(f"--{name}", type=type(value), default=value)
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    return ap.parse_args()
