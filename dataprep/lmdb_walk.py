"""The page walk that turns a damaged LMDB into one error instead of a bus error (SIGBUS)
when it is read. Kept outside the stores package, which loads NumPy, so that a command can
start the walk before it loads anything else (``walk_ahead``)."""

from __future__ import annotations

import atexit
import contextlib
import os
from pathlib import Path

import lmdb

from .errors import StoreError

_WALKED: set[tuple] = set()  # (path, size, mtime) of stores walked in this process or its parent
_AHEAD: dict[tuple, _Walk] = {}  # walks started by ``walk_ahead``, not yet waited for
_DAMAGED, _NO_VERDICT = 3, 4  # a walking child's exit codes besides 0 (sound)


def _walk_key(path: Path) -> tuple:
    stat = (path / "data.mdb").stat()
    return (str(path.resolve()), stat.st_size, stat.st_mtime_ns)


class _Walk:
    """A forked child that walks every page of a store: it touches each value's first and
    last byte (overflow pages too) through ``env``, or an environment of its own, and says
    what LMDB said on a pipe."""

    def __init__(self, path: Path, env=None) -> None:
        self.path = path
        read, write = os.pipe()
        self.pid = os.fork()
        if self.pid == 0:  # the child: walk, say what LMDB said, and leave without cleanup
            os.close(read)
            os._exit(_walk_pages(path, env, write))
        os.close(write)
        self._said = read

    def wait(self) -> bool:
        """StoreError for a damaged store; True for a sound one, False where the child gave
        no verdict (it could not open the store itself)."""
        import signal

        with os.fdopen(self._said, "rb") as said:
            message = said.read().decode(errors="replace")
        _, status = os.waitpid(self.pid, 0)
        if os.WIFSIGNALED(status):
            name = signal.Signals(os.WTERMSIG(status)).name
            raise StoreError(
                f"{self.path}: damaged (reading its pages ended in {name}: a page points outside the file)"
            )
        if os.WEXITSTATUS(status) == _DAMAGED:
            raise StoreError(f"{self.path}: damaged ({message})")
        return os.WEXITSTATUS(status) == 0

    def abandon(self) -> None:
        """Stop the child and reap it."""
        import signal

        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        os.close(self._said)
        os.waitpid(self.pid, 0)


def _walk_pages(path: Path, env, write: int) -> int:
    """The child's walk; its exit code."""
    try:
        if env is None:
            try:
                env = lmdb.open(str(path), readonly=True, lock=False, subdir=True)
            except lmdb.Error:
                return _NO_VERDICT
        with env.begin(buffers=True) as txn:
            for _, value in txn.cursor():
                if len(value):
                    value[0], value[len(value) - 1]
    except lmdb.Error as exc:
        os.write(write, str(exc).encode()[:500])
        return _DAMAGED
    except BaseException:
        return _NO_VERDICT
    return 0


def walk_ahead(path: str | os.PathLike) -> None:
    """Start the page walk of the LMDB folder ``path`` now, in a child with its own
    environment, so that it runs on another core while the command imports and sets up;
    the reader that opens the store waits for its verdict (``walk_checked``). Walks not
    waited for are stopped when the CLI command ends, or at exit. A path that is no LMDB
    folder is left alone."""
    try:
        key = _walk_key(Path(path))
    except OSError:
        return
    if key in _WALKED or key in _AHEAD:
        return
    _AHEAD[key] = _Walk(Path(path))


def abandon_walks(path: Path | None = None) -> None:
    """Stop the walks started ahead (of ``path`` only, when given)."""
    for key in [k for k in _AHEAD if path is None or k[0] == str(path.resolve())]:
        _AHEAD.pop(key).abandon()


atexit.register(abandon_walks)


def walk_checked(path: Path, env) -> None:
    """Walk every page of the store once, in a forked child, before this process reads it:
    a damaged page can point LMDB outside the file, and that read is a SIGBUS that Python
    cannot recover from. The child's death by a signal, or an LMDB error, becomes one
    StoreError naming the store (``--skip-bad`` does not hide it: a damaged page is not a
    damaged record). Each (path, size, mtime) is walked once per process tree; a walk
    started by ``walk_ahead`` is waited for rather than started again."""
    key = _walk_key(path)
    if key in _WALKED:
        return
    ahead = _AHEAD.pop(key, None)
    try:
        verdict = ahead is not None and ahead.wait()
    finally:
        abandon_walks(path)  # one started on an older file of this path
    if not verdict:
        _Walk(path, env).wait()
    _WALKED.add(key)
