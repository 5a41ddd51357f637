"""Atomic outputs: partial names say who made them; a rerun frees only a dead process's."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

from dataprep.staging import Staging, partial_name, remove_stale_partials


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_partial_names_carry_host_and_process(tmp_path):
    name = partial_name(tmp_path / "train_lmdb").name
    assert name.startswith(".train_lmdb.partial-") and f"-{os.getpid()}-" in name


def test_only_dead_processes_of_this_host_lose_their_partials(tmp_path, caplog):
    mine = partial_name(tmp_path / "db")
    host = mine.name.split(".partial-")[1].rsplit("-", 2)[0]
    dead = tmp_path / f".db.partial-{host}-{dead_pid()}-0123abcd"
    alive = tmp_path / f".db.partial-{host}-{os.getpid()}-0123abcd"
    other_host = tmp_path / f".db.partial-elsewhere-{dead_pid()}-0123abcd"
    other_dest = tmp_path / f".db2.partial-{host}-{dead_pid()}-0123abcd"
    for path in (dead, alive, other_host, other_dest):
        path.mkdir()
        (path / "data.mdb").write_bytes(b"x" * 2_000_000)
    with caplog.at_level(logging.INFO, logger="dataprep"):
        assert remove_stale_partials(tmp_path / "db") == [dead]
    assert not dead.exists() and alive.exists() and other_host.exists() and other_dest.exists()
    assert "left by an interrupted run" in caplog.text and "2.0 MB freed" in caplog.text


def test_the_freed_bytes_are_the_blocks_not_the_apparent_size(tmp_path, caplog):
    """A killed LMDB's map is a sparse file: 1 GB apparent, a few kB on disk."""
    mine = partial_name(tmp_path / "db")
    host = mine.name.split(".partial-")[1].rsplit("-", 2)[0]
    dead = tmp_path / f".db.partial-{host}-{dead_pid()}-0123abcd"
    dead.mkdir()
    with open(dead / "data.mdb", "wb") as f:
        f.write(b"x" * 300_000)
        f.truncate(1 << 30)
    with caplog.at_level(logging.INFO, logger="dataprep"):
        assert remove_stale_partials(tmp_path / "db") == [dead]
    assert re.search(r"\b30[0-9]\.[0-9] KB freed", caplog.text), caplog.text  # not 1.1 GB


def test_staging_frees_stale_partials_of_its_destination(tmp_path):
    host = partial_name(tmp_path / "x").name.split(".partial-")[1].rsplit("-", 2)[0]
    stale = tmp_path / f".out.h5.partial-{host}-{dead_pid()}-deadbeef"
    stale.write_bytes(b"half")
    with Staging() as staging:
        staging.path(tmp_path / "out.h5").write_bytes(b"whole")
    assert not stale.exists() and (tmp_path / "out.h5").read_bytes() == b"whole"
