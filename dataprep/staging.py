"""Outputs are built at temporary sibling paths and moved into place only when complete.

An interrupted or failed run therefore never leaves anything at a destination that looks
finished. A hard kill (``kill -9``) can leave a hidden ``.NAME.partial-HOST-PID-XXXXXXXX``
sibling: its name says which host and process made it, so the next run on the same
destination removes it once that process is gone, and logs what it freed. Partial outputs
of a live process, or of another host sharing the filesystem, are left alone.
"""

from __future__ import annotations

import contextlib
import logging
import os
import re
import shutil
import signal
import socket
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Iterator

from .errors import DataprepError, StoreExistsError

log = logging.getLogger(__name__)

# Set by the CLI's Ctrl-C / SIGTERM handler. The KeyboardInterrupt it raises can be swallowed
# when it lands inside a finalizer (h5py's weakref callbacks); commit checks this flag too.
INTERRUPTED = threading.Event()


def exists(path: Path) -> bool:
    """True for anything at ``path``, broken symlinks included."""
    return path.exists() or path.is_symlink()


def refuse_existing(dest: Path, overwrite: bool, allow_empty_dir: bool = False) -> None:
    """Raise StoreExistsError when ``dest`` exists and ``overwrite`` is false."""
    if overwrite or not exists(dest):
        return
    if allow_empty_dir and dest.is_dir() and not any(dest.iterdir()):
        return
    raise StoreExistsError(f"{dest} already exists; pass --overwrite to replace it")


def remove(path: Path) -> None:
    """Delete a file or a folder tree if it is there."""
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    elif exists(path):
        path.unlink()


def _host() -> str:
    """This machine's name as it may appear in a file name."""
    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def partial_name(dest: Path) -> Path:
    """A temporary sibling of ``dest`` named after this host and process."""
    return dest.with_name(f".{dest.name}.partial-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _size(path: Path) -> int:
    if path.is_dir() and not path.is_symlink():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())
    return path.lstat().st_size


def remove_stale_partials(dest: Path) -> list[Path]:
    """Remove the partial outputs for ``dest`` that a killed process of this host left;
    returns them. Each removal is logged with the bytes it freed."""
    pattern = re.compile(re.escape(f".{dest.name}.") + r"(?:partial|old)-(.+)-(\d+)-[0-9a-f]{8}$")
    host = _host()
    removed = []
    try:
        siblings = list(dest.parent.iterdir())
    except OSError:
        return removed
    for path in siblings:
        match = pattern.match(path.name)
        if not match or match.group(1) != host or _alive(int(match.group(2))):
            continue
        size = _size(path)
        remove(path)
        removed.append(path)
        log.info(
            "removed %s, left by an interrupted run (process %s): %.1f MB freed",
            path,
            match.group(2),
            size / 1e6,
        )
    return removed


def _move_into_place(tmp: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        old = partial_name(dest)
        old = old.with_name(old.name.replace(".partial-", ".old-", 1))
        os.replace(dest, old)
        os.replace(tmp, dest)
        remove(old)
    else:
        os.replace(tmp, dest)


@contextlib.contextmanager
def signals_held() -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM back until the block is done (the main thread only)."""
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def interrupts_deferred() -> Iterator[None]:
    """Note Ctrl-C and SIGTERM during the block and raise KeyboardInterrupt after it (the
    main thread only): for start-ups that cannot be cut short without leaking (a Dask
    cluster's half-started processes), and whose children must not inherit blocked
    signals, as a mask would give them."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    caught: list[int] = []
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for signum in previous:
        signal.signal(signum, lambda signum, frame: caught.append(signum))
    try:
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
    if caught:
        INTERRUPTED.set()
        raise KeyboardInterrupt


class Staging:
    """Hands out temporary paths for destinations and commits them in registration order.

    Register completion markers (list files, ``*_h5.txt``) last: they appear last.
    Used as a context manager, an exception removes every temporary path instead.
    """

    def __init__(self, overwrite: bool = False, after_interrupt: bool = False) -> None:
        self.overwrite = overwrite
        self.after_interrupt = after_interrupt  # an output written because of the interrupt
        self._pending: list[tuple[Path, Path]] = []

    def path(self, dest: str | os.PathLike, allow_empty_dir: bool = False) -> Path:
        """A temporary path whose content will become ``dest`` on commit; absolute, since
        workers may write into it from another working directory (see parallel)."""
        dest = Path(dest)
        refuse_existing(dest, self.overwrite, allow_empty_dir)
        if any(d == dest for _, d in self._pending):
            raise DataprepError(f"{dest} is named twice as an output")
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise DataprepError(f"cannot create {dest.parent}: {exc.strerror}") from None
        if not os.access(dest.parent, os.W_OK):
            raise DataprepError(f"cannot write to {dest.parent}: permission denied")
        remove_stale_partials(dest)
        tmp = partial_name(dest).absolute()
        self._pending.append((tmp, dest))
        return tmp

    def commit(self) -> list[Path]:
        """Move every temporary path to its destination; returns the destinations.

        Ctrl-C and SIGTERM are held back until all moves are done, so an interrupt never
        leaves half of a multi-file output in place.
        """
        if INTERRUPTED.is_set() and not self.after_interrupt:
            raise KeyboardInterrupt
        done = []
        with signals_held():
            for tmp, dest in self._pending:
                _move_into_place(tmp, dest)
                done.append(dest)
            self._pending.clear()
        return done

    def abort(self) -> None:
        """Remove every temporary path."""
        for tmp, _ in self._pending:
            remove(tmp)
        self._pending.clear()

    def __enter__(self) -> "Staging":
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()
