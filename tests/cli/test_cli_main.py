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


def test_progress_bar_on_a_terminal_only(tmp_path):
    for name in "abc":
        (tmp_path / name).mkdir()
    drawn = run_on_terminal("noise", "--n", 300, "--out", "s", "-j", 2, cwd=tmp_path / "a")
    assert "noise:" in drawn and "/300" in drawn and "img/s" in drawn
    hidden = run_dataprep("noise", "--n", 300, "--out", "s", "-j", 2, cwd=tmp_path / "b")
    assert hidden.returncode == 0 and "img/s" not in hidden.stderr
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
