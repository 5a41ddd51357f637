"""The LMDB page walk started ahead (``walk_ahead``): its verdict is the one the reader
uses, a walk is made once, a walk without a verdict is made again, abandoned walks are
reaped, and the CLI starts one for the store a command reads first."""

from __future__ import annotations

import os

import lmdb
import pytest
from helpers import damage_lmdb

from dataprep import lmdb_walk
from dataprep.errors import StoreError
from dataprep.stores.lmdb_kv import LmdbReadKV


@pytest.fixture
def store(tmp_path):
    """An LMDB of 200 values of 5000 bytes: branch, leaf and overflow pages."""
    env = lmdb.open(str(tmp_path / "db"), map_size=16 << 20)
    with env.begin(write=True) as txn:
        for i in range(200):
            txn.put(b"%08d" % i, bytes([i % 251]) * 5000)
    env.close()
    return tmp_path / "db"


@pytest.fixture
def walks(monkeypatch):
    """Every walk started in this process, in order."""
    made = []

    class Counted(lmdb_walk._Walk):
        def __init__(self, path, env=None):
            made.append("own env" if env is None else "reader's env")
            super().__init__(path, env)

    monkeypatch.setattr(lmdb_walk, "_Walk", Counted)
    monkeypatch.setattr(lmdb_walk, "_WALKED", set())
    monkeypatch.setattr(lmdb_walk, "_AHEAD", {})
    return made


def _read_all(path) -> int:
    kv = LmdbReadKV(path)
    try:
        return sum(1 for _ in kv.items_from(b"%08d" % 0, len(kv)))
    finally:
        kv.close()


def test_a_walk_started_ahead_is_the_one_the_reader_waits_for(store, walks):
    lmdb_walk.walk_ahead(store)
    lmdb_walk.walk_ahead(store)  # once per store
    assert walks == ["own env"] and len(lmdb_walk._AHEAD) == 1
    assert _read_all(store) == 200
    assert walks == ["own env"] and not lmdb_walk._AHEAD  # no second walk, none left waiting
    lmdb_walk.walk_ahead(store)  # walked already
    assert walks == ["own env"]


@pytest.mark.parametrize("where", ["leaf", "branch"])
def test_a_damaged_store_walked_ahead_is_one_error(store, walks, where):
    data = bytearray((store / "data.mdb").read_bytes())
    damage_lmdb(data, where)
    (store / "data.mdb").write_bytes(bytes(data))
    lmdb_walk.walk_ahead(store)
    with pytest.raises(StoreError, match=r"db: damaged \("):
        LmdbReadKV(store)
    assert walks == ["own env"] and not lmdb_walk._AHEAD


def test_a_walk_ahead_without_a_verdict_is_made_again_by_the_reader(store, walks, monkeypatch):
    parent, real_open = os.getpid(), lmdb.open

    def refused_in_children(*args, **kwargs):
        if os.getpid() != parent:
            raise lmdb.Error("refused")
        return real_open(*args, **kwargs)

    monkeypatch.setattr(lmdb, "open", refused_in_children)
    lmdb_walk.walk_ahead(store)
    assert _read_all(store) == 200
    assert walks == ["own env", "reader's env"]


def test_walks_not_waited_for_are_stopped_and_reaped(store, walks, tmp_path):
    lmdb_walk.walk_ahead(store)
    pid = next(iter(lmdb_walk._AHEAD.values())).pid
    lmdb_walk.abandon_walks()
    assert not lmdb_walk._AHEAD
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, 0)  # reaped
    lmdb_walk.walk_ahead(tmp_path / "not-a-store")  # left alone
    assert walks == ["own env"] and not lmdb_walk._AHEAD


def test_the_cli_walks_ahead_the_store_a_command_reads_first(store, monkeypatch, invoke):
    started = []
    monkeypatch.setattr(lmdb_walk, "walk_ahead", started.append)
    invoke("mean", "-o", "m.binaryproto", str(store))  # an option first: left to the reader
    invoke("lmdb", str(store), "x")  # a command that does not read its first argument
    assert started == []
    invoke("info", str(store))
    invoke("mean", str(store), "-o", str(store.parent / "m.binaryproto"))
    invoke("verify", str(store.parent))  # no LMDB folder
    assert started == [str(store)] * 2


def test_a_walk_the_command_did_not_wait_for_is_stopped_when_it_ends(store, walks, invoke):
    result = invoke("info", str(store), "--no-such-option")
    assert result.exit_code == 2
    assert walks == ["own env"] and not lmdb_walk._AHEAD  # started, then stopped and reaped
