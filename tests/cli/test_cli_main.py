"""The root group: help for every command, version, error conventions."""

from __future__ import annotations

import pytest
from helpers import run_dataprep

from dataprep import __version__
from dataprep.cli.main import COMMANDS


def test_help_lists_every_command(invoke):
    r = invoke("--help")
    assert r.exit_code == 0
    for name, summary in COMMANDS.items():
        assert name in r.stdout and summary.split()[0] in r.stdout


@pytest.mark.parametrize("name", sorted(COMMANDS))
def test_every_command_has_help(invoke, name):
    r = invoke(name, "--help")
    assert r.exit_code == 0 and "Usage: " in r.stdout and "--quiet" in r.stdout


def test_version(invoke):
    assert __version__ in invoke("--version").stdout


def test_usage_error_is_exit_2(invoke):
    assert invoke("noise", "--workers", 0).exit_code == 2
    assert invoke("nonsense").exit_code == 2


@pytest.mark.parametrize("fails", [False, True])
def test_a_command_run_in_process_gives_back_the_processs_handlers(invoke, tmp_path, fails):
    # a process that runs commands in-process and later forks (a multiprocessing pool
    # terminates its forks with SIGTERM) must not have dataprep's handlers left behind
    import multiprocessing
    import signal
    import sys

    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook
    args = ["noise", "--n", 20, "--size", "8x8", "--out", tmp_path / "n", "-j", 2]
    r = invoke(*args, *(["--workers", 0] if fails else []))
    assert r.exit_code == (2 if fails else 0)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook) == before
    with multiprocessing.get_context("fork").Pool(2) as pool:  # terminated with SIGTERM on exit
        assert pool.map(abs, [-1, -2, -3]) == [1, 2, 3]


def test_debug_shows_the_traceback(tmp_path):
    (tmp_path / "l.txt").write_text("missing.png 1\n")
    plain = run_dataprep("hdf5", tmp_path / "l.txt")
    assert plain.returncode == 1 and "Traceback" not in plain.stderr
    assert plain.stderr.strip().splitlines() == [
        f"Error: {tmp_path / 'l.txt'}:1: missing.png: cannot read image (No such file or directory)"
    ]
    debug = run_dataprep("--debug", "hdf5", tmp_path / "l.txt")
    assert debug.returncode == 1 and "Traceback" in debug.stderr and "ImageError" in debug.stderr


def test_help_does_not_import_heavy_modules():
    import subprocess
    import sys

    code = (
        "import sys; from dataprep.cli.main import cli; cli(['--help'], standalone_mode=False);"
        "print(sorted(m for m in ('numpy','cv2','h5py','lmdb','matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True).stdout
    assert out.strip().endswith("[]")


def run_on_terminal(*args, cwd, columns=100) -> str:
    """Run dataprep with stderr on a pseudo-terminal; returns what it drew there."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    leader, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, columns, 0, 0))
    chunks = []
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
            cwd=cwd,
            stdout=subprocess.DEVNULL,
            stderr=terminal,
        )
        os.close(terminal)
        while True:
            try:
                data = os.read(leader, 4096)
            except OSError:  # the other side closed: the command ended
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(60) == 0
    finally:
        os.close(leader)
    return b"".join(chunks).decode(errors="replace")


def test_progress_bar_on_a_terminal_only_the_closing_line_everywhere(tmp_path):
    for name in "abc":
        (tmp_path / name).mkdir()
    drawn = run_on_terminal("noise", "--n", 300, "--out", "s", "-j", 2, cwd=tmp_path / "a")
    assert "noise:" in drawn and "/300" in drawn and "img/s" in drawn
    hidden = run_dataprep("noise", "--n", 300, "--out", "s", "-j", 2, cwd=tmp_path / "b")
    assert hidden.returncode == 0 and "/300" not in hidden.stderr
    assert hidden.stderr.startswith("noise: 300 img in ") and hidden.stderr.count("\n") == 1
    quiet = run_on_terminal("noise", "--n", 300, "--out", "s", "-q", cwd=tmp_path / "c")
    assert "img/s" not in quiet


def test_bars_count_whole_images_and_end_with_a_summary(tmp_path):
    from helpers import write_images

    drawn = run_on_terminal("noise", "--n", 1200, "--out", "s", "-j", 1, cwd=tmp_path)
    assert "/1,200 img" in drawn and "0.00/" not in drawn and "k/" not in drawn
    assert "noise: 1,200 img in " in drawn and " img/s)" in drawn
    list_path, _ = write_images(tmp_path / "r", 20)
    drawn = run_on_terminal("resize", list_path, "out", "--size", "4x4", "-j", 1, cwd=tmp_path / "r")
    assert "/20 img" in drawn and "resize: 20 img in " in drawn  # a total, so a percentage and ETA
    (tmp_path / "n").mkdir()  # a terminal that reports no width: 80 columns
    narrow = run_on_terminal("noise", "--n", 300, "--out", "s", "-j", 1, cwd=tmp_path / "n", columns=0)
    assert "/300 img" in narrow


def _closing(stderr: str, desc: str) -> int:
    """The count of the closing line ``DESC: N img in S s (R img/s)``."""
    import re

    (match,) = re.findall(rf"^{re.escape(desc)}: ([\d,]+) \w+ in [\d.]+ s \(", stderr, re.M)
    return int(match.replace(",", ""))


def test_closing_counts_are_the_records_written_and_printed_without_a_terminal(tmp_path):
    """Not on a terminal (scripts, logs, ./dev demo) the closing line is still printed, and
    its count is exact: chunked work used to lose its last chunk (1,984 for 2,000)."""
    from helpers import write_images

    from dataprep.stores import open_store

    def stored(path) -> int:
        with open_store(tmp_path / path) as reader:
            return len(reader)

    r = run_dataprep("noise", "--n", 1000, "--to", "hdf5", "--out", "h", cwd=tmp_path)
    assert r.returncode == 0 and _closing(r.stderr, "noise -> hdf5") == 1000
    assert sum(stored(f"h/{s}_h5.txt") for s in ("train", "val", "test")) == 1000
    r = run_dataprep("noise", "--n", 203, "--out", "n", cwd=tmp_path)
    assert _closing(r.stderr, "noise") == 203
    list_path, _ = write_images(tmp_path, 203, shape=(4, 4, 3))
    (tmp_path / "img" / "0007.png").write_bytes(b"broken")  # skipped: not written
    for args, desc, out in [
        (["lmdb", list_path, "db", "--skip-bad"], "lmdb", "db"),
        (["hdf5", list_path, "-o", "l.h5", "--skip-bad"], "hdf5", "l_h5.txt"),
        (["wds", list_path, "w", "--skip-bad"], "wds", "w"),
        (["convert", "db", "c", "--to", "lmdb"], "convert", "c"),
    ]:
        r = run_dataprep(*args, cwd=tmp_path)
        assert r.returncode == 0, r.stderr
        assert _closing(r.stderr, desc) == stored(out) == 202, (desc, r.stderr)
    r = run_dataprep("mean", "db", "-o", "m.binaryproto", cwd=tmp_path)
    assert _closing(r.stderr, "mean") == 202
    r = run_dataprep("resize", list_path, "r", "--size", "2x2", "--skip-bad", cwd=tmp_path)
    assert _closing(r.stderr, "resize") == 202 == len(list((tmp_path / "r").glob("*.png")))
    for name in ("0001.png", "0002.png"):
        (tmp_path / "r" / name).unlink()
    r = run_dataprep("resize", list_path, "r", "--size", "2x2", "--skip-bad", cwd=tmp_path)
    assert _closing(r.stderr, "resize") == 2 and "; 200 done before" in r.stderr
    r = run_dataprep("augment", list_path, "a", "--copies", 2, "--mirror", "--skip-bad", cwd=tmp_path)
    assert _closing(r.stderr, "augment") == 202 and len(list((tmp_path / "a").glob("*.png"))) == 404
    assert run_dataprep("example", "mnist", "m", "--n", 99, cwd=tmp_path).returncode == 0
    r = run_dataprep("import", "mnist", "m", "i", "--to", "lmdb", cwd=tmp_path)
    assert (
        _closing(r.stderr, "import") == 99 + 19 == stored("i/mnist_train_lmdb") + stored("i/mnist_test_lmdb")
    )
    quiet = run_dataprep("lmdb", list_path, "q", "--skip-bad", "-q", cwd=tmp_path)
    assert quiet.returncode == 0 and " img in " not in quiet.stderr


@pytest.mark.parametrize("args", [["list", "img", "--flat", "-o", "-"], ["noise", "--n", 5, "--out", "n"]])
def test_a_closed_pipe_ends_quietly_with_141(tmp_path, args):
    """`dataprep ... | head -1`: the reader went away, as SIGPIPE ends Unix tools (128 + 13)."""
    import os
    import subprocess
    import sys

    from helpers import write_images

    write_images(tmp_path, 3)
    read, write = os.pipe()
    os.close(read)  # the reader is gone before the first write
    try:
        done = subprocess.run(
            [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
            cwd=tmp_path,
            stdout=write,
            stderr=subprocess.PIPE,
            text=True,
        )
    finally:
        os.close(write)
    assert done.returncode == 141 and "Error" not in done.stderr and "Traceback" not in done.stderr


def test_training_draws_a_bar_for_each_test_pass_on_a_terminal(tmp_path):
    import yaml

    recipe = {
        "data": {
            "train": {"noise": {"n": 40, "offset": 0, "size": "16x16", "seed": 3}},
            "val": {"noise": {"n": 40, "offset": 40, "size": "16x16", "seed": 3}},
            "batch_size": 10,
            "target": "freq",
        },
        "net": [
            {"name": "fc", "type": "InnerProduct", "num_output": 2},
            {"name": "loss", "type": "EuclideanLoss", "bottom": ["fc", "freq"]},
        ],
        "solver": {"max_iter": 2, "test_interval": 2, "snapshot_prefix": "r"},
    }
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(recipe))
    drawn = run_on_terminal("train", "r.yaml", cwd=tmp_path)
    assert "test at 0:" in drawn and "/4 batch" in drawn and "train:" in drawn and "/2 iter" in drawn


EXIT_SCRIPT = """
import atexit, sys, threading, time
from pathlib import Path
from dataprep.cli.main import main

out = Path(sys.argv[1])
class Finalized:
    def __del__(self):
        (out / "finalized").write_text("the interpreter's teardown ran")
kept = Finalized()
atexit.register(lambda: (out / "atexit").write_text("ran"))
def late():
    time.sleep(0.3)
    (out / "thread").write_text("joined")
threading.Thread(target=late).start()
sys.stdout.write("buffered " * 1000)  # left in the buffer until the exit flushes it
sys.argv = ["dataprep", *sys.argv[2:]]
main()
"""


@pytest.mark.parametrize("args, code", [(["--version"], 0), (["mean", "missing"], 2)])
def test_the_entry_point_exits_without_the_teardown_once_exit_work_is_done(tmp_path, args, code):
    import subprocess
    import sys

    result = subprocess.run(
        [sys.executable, "-c", EXIT_SCRIPT, str(tmp_path), *args],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert result.returncode == code, result.stderr
    assert result.stdout.startswith("buffered " * 1000)  # flushed
    assert (__version__ in result.stdout) == (code == 0)
    assert (tmp_path / "thread").exists() and (tmp_path / "atexit").exists()  # joined, run
    assert not (tmp_path / "finalized").exists()  # no teardown
