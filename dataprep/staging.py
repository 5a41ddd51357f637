"""Outputs are built at temporary sibling paths and moved into place only when complete.

An interrupted or failed run therefore never leaves anything at a destination that looks
finished; at worst a hidden ``.NAME.partial-*`` sibling remains after a hard kill.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import threading
import uuid
from pathlib import Path
from types import TracebackType
from typing import Iterator

from .errors import DataprepError, StoreExistsError


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


def _move_into_place(tmp: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        old = dest.with_name(f".{dest.name}.old-{uuid.uuid4().hex[:8]}")
        os.replace(dest, old)
        os.replace(tmp, dest)
        remove(old)
    else:
        os.replace(tmp, dest)


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    held = {signal.SIGINT, signal.SIGTERM}
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, held)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


class Staging:
    """Hands out temporary paths for destinations and commits them in registration order.

    Register completion markers (list files, ``*_h5.txt``) last: they appear last.
    Used as a context manager, an exception removes every temporary path instead.
    """

    def __init__(self, overwrite: bool = False) -> None:
        self.overwrite = overwrite
        self._pending: list[tuple[Path, Path]] = []

    def path(self, dest: str | os.PathLike, allow_empty_dir: bool = False) -> Path:
        """A temporary path whose content will become ``dest`` on commit."""
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
        tmp = dest.with_name(f".{dest.name}.partial-{uuid.uuid4().hex[:8]}")
        self._pending.append((tmp, dest))
        return tmp

    def commit(self) -> list[Path]:
        """Move every temporary path to its destination; returns the destinations.

        Ctrl-C and SIGTERM are held back until all moves are done, so an interrupt never
        leaves half of a multi-file output in place.
        """
        if INTERRUPTED.is_set():
            raise KeyboardInterrupt
        done = []
        with _signals_held():
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
