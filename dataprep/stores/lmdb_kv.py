"""LMDB key-value access for Datum stores: a growing map for writing, read-only access."""

from __future__ import annotations

import contextlib
import errno
import os
from pathlib import Path
from typing import Iterator

import lmdb

from ..errors import StoreError
from ..lmdb_walk import abandon_walks, walk_checked
from ..staging import describe_bytes

INITIAL_MAP_SIZE = 1 << 30  # a sparse file while writing; truncated to the used pages at close
RESERVE = 16 << 20  # disk blocks allocated ahead of the pages a transaction may touch


class LmdbWriteKV:
    """A new LMDB environment at ``path``; the map doubles on MapFullError, as Caffe's does.

    Pages are written straight into the memory map (MAP_WRITEMAP): committing through
    LMDB's default private buffers is a copy, all of it in the one process that writes
    (docs/performance.md has the measurement). That mode sizes the file to the map, so
    ``close`` truncates it to the pages in use: the result is an ordinary LMDB, as small
    as one written without it.
    Commits do not fsync (a store is valid only once renamed into place, after ``close``
    synced it), and batches of ascending keys are appended without B-tree searches.

    A page written into the map where the disk has no block for it is a bus error (SIGBUS),
    which Python cannot catch: before each transaction the file's blocks are allocated
    (``posix_fallocate``) past every page it may touch, so a full disk is an OSError there
    and one line for the user.
    """

    def __init__(self, path: Path, map_size: int | None = None) -> None:
        self.path = Path(path)
        map_size = map_size or INITIAL_MAP_SIZE  # read at call time: tests shrink it
        try:
            self.env = lmdb.open(
                str(path), map_size=map_size, subdir=True, writemap=True, sync=False, max_dbs=0
            )
        except lmdb.Error as exc:  # DiskError on a full disk, and the like
            raise StoreError(f"{path}: cannot create the LMDB environment: {exc}") from None
        self._last = b""
        self._data = os.open(self.path / "data.mdb", os.O_RDWR)
        self._reserved = 0

    def _reserve(self, incoming: int) -> None:
        """Disk blocks for every page the next transaction may write: those in use, twice
        the incoming bytes (pages, B-tree copies) and RESERVE more."""
        used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        need = used + 2 * incoming + 4 * self.env.stat()["psize"]
        if need <= self._reserved:
            return
        for target in (need + RESERVE, need):  # ahead when the disk allows, else just enough
            try:
                os.posix_fallocate(self._data, self._reserved, target - self._reserved)
                break
            except OSError as exc:
                if exc.errno != errno.ENOSPC or target == need:
                    raise
        self._reserved = target

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        self._reserve(sum(len(k) + len(v) for k, v in items))
        keys = [k for k, _ in items]
        append = keys[0] > self._last and all(a < b for a, b in zip(keys, keys[1:]))
        while True:
            try:
                with self.env.begin(write=True) as txn:
                    txn.cursor().putmulti(items, append=append)
                break
            except lmdb.MapFullError:
                self.env.set_mapsize(self.env.info()["map_size"] * 2)
        self._last = max(self._last, max(keys))

    def close(self) -> None:
        os.close(self._data)
        used = (self.env.info()["last_pgno"] + 1) * self.env.stat()["psize"]
        self.env.sync(True)
        self.env.close()
        data = self.path / "data.mdb"
        if data.stat().st_size > used:
            os.truncate(data, used)


_OPEN: dict[tuple[str, int], list] = {}  # (path, pid) -> [environment, users]: LMDB opens one per process


def _refuse_truncated(path: Path, env) -> None:
    """StoreError for a data.mdb shorter than the pages its last transaction uses (reading
    such a map past the file's end is a bus error, SIGBUS, which Python cannot catch), or
    whose meta page claims what no file of its size holds (a damaged meta page)."""
    data = path / "data.mdb"
    size = data.stat().st_size
    info, stat = env.info(), env.stat()
    pages = info["last_pgno"] + 1
    needed = pages * stat["psize"]
    used = stat["branch_pages"] + stat["leaf_pages"] + stat["overflow_pages"]
    root = _main_root(data, stat["psize"])
    empty = root == NO_PAGE
    if (
        needed > info["map_size"]
        or used > pages
        or stat["depth"] > 64
        or stat["entries"] > needed
        or (not empty and root >= pages)
        or empty != (stat["entries"] == 0)
    ):
        claims = f"{pages} pages, {stat['entries']} records, root page {root}"
        raise StoreError(f"{path}: damaged (its meta page claims {claims})")
    if size < needed:
        raise StoreError(f"{data}: truncated ({describe_bytes(size)}, needs {describe_bytes(needed)})")


NO_PAGE = 2**64 - 1  # LMDB's P_INVALID: the root of an empty database


def _main_root(data: Path, psize: int) -> int:
    """The main database's root page as the newer of the two meta pages names it (the one
    LMDB reads): MDB_meta after the 16-byte page header, the second MDB_db's md_root."""
    import struct

    with open(data, "rb") as f:
        head = f.read(2 * psize)
    metas = []
    for at in (0, psize):
        page = head[at : at + 152]
        if len(page) == 152:
            txnid, root = struct.unpack_from("<Q", page, 144)[0], struct.unpack_from("<Q", page, 128)[0]
            metas.append((txnid, at, root))
    return max(metas)[2] if metas else NO_PAGE


@contextlib.contextmanager
def _damage_named(path: str) -> Iterator[None]:
    """LMDB's own errors on a damaged tree (MDB_CORRUPTED, MDB_PAGE_NOTFOUND) as one line
    naming the store."""
    try:
        yield
    except lmdb.Error as exc:
        raise StoreError(f"{path}: damaged ({exc})") from None


class LmdbReadKV:
    """Read-only access (MDB_RDONLY, no lock file writes) to an LMDB directory. Readers of
    the same store in one process share its environment (LMDB allows one per process)."""

    def __init__(self, path: Path) -> None:
        if not (Path(path) / "data.mdb").is_file():
            raise StoreError(f"{path}: not an LMDB directory (no data.mdb)")
        self._key = (str(Path(path).resolve()), os.getpid())
        for key in [k for k in _OPEN if k[1] != os.getpid()]:  # inherited through a fork: this
            _OPEN.pop(key)[0].close()  # process's copy only (unmapped here, the parent's stays)
        if self._key not in _OPEN:
            try:
                env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
            except lmdb.Error as exc:
                if "already open in this process" in str(exc):  # the caller's own lmdb.open
                    raise StoreError(
                        f"{path}: this process already holds the store through its own lmdb.open "
                        "(LMDB allows one environment per process): close that one first, or read "
                        "through open_store only"
                    ) from None
                raise StoreError(f"{path}: cannot open LMDB: {exc}") from None
            try:
                _refuse_truncated(Path(path), env)
                walk_checked(Path(path), env)
            except StoreError:
                abandon_walks(Path(path))
                env.close()
                raise
            _OPEN[self._key] = [env, 0]
        _OPEN[self._key][1] += 1
        self.env = _OPEN[self._key][0]

    def __len__(self) -> int:
        return self.env.stat()["entries"]

    def keys(self) -> list[bytes]:
        with _damage_named(self._key[0]), self.env.begin() as txn:
            return list(txn.cursor().iternext(keys=True, values=False))

    def items_from(self, key: bytes, count: int) -> Iterator[tuple[bytes, bytes | memoryview]]:
        """``count`` pairs from ``key`` on; each value is a view of the map, valid until the
        next pair is asked for (no copy of a record that is parsed and dropped)."""
        with _damage_named(self._key[0]), self.env.begin(buffers=True) as txn:
            cursor = txn.cursor()
            if not cursor.set_key(key):
                raise StoreError(f"key {key!r} not found")
            for n, (k, value) in enumerate(cursor.iternext()):
                if n == count:
                    break
                yield bytes(k), value

    def values_of(self, keys: list[bytes]) -> Iterator[bytes | memoryview]:
        """The values of ``keys`` in one transaction, each a view of the map valid until the
        next is asked for."""
        with _damage_named(self._key[0]), self.env.begin(buffers=True) as txn:
            cursor = txn.cursor()
            for key in keys:
                if not cursor.set_key(key):
                    raise StoreError(f"key {key!r} not found")
                yield cursor.value()

    def close(self) -> None:
        entry = _OPEN.get(self._key)
        if entry is None:
            return
        entry[1] -= 1
        if entry[1] == 0:
            del _OPEN[self._key]
            self.env.close()
