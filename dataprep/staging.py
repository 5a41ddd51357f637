"""Outputs are built at temporary sibling paths and moved into place only when complete.

An interrupted or failed run therefore never leaves anything at a destination that looks
finished.

Two runs on one destination are kept apart by a claim: a hidden ``.NAME.claim`` file made
with ``O_CREAT | O_EXCL`` and holding the host and process that made it. A run without
``--overwrite`` claims its outputs when it starts, so a second such run fails at once and
the first finishes intact; a run with ``--overwrite`` claims them just before it moves
them into place (waiting for a live holder), so the last commit wins and no output set is
ever a mix of two runs. Claims of killed processes are removed like their partials.

A hard kill (``kill -9``) can leave a hidden ``.NAME.partial-HOST-PID-XXXXXXXX``
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
import tempfile
import threading
import time
import uuid
from pathlib import Path
from types import TracebackType
from typing import Iterator

from .errors import DataprepError, StoreExistsError, UsageError

log = logging.getLogger(__name__)

# Set by the CLI's Ctrl-C / SIGTERM handler. The KeyboardInterrupt it raises can be swallowed
# when it lands inside a finalizer (h5py's weakref callbacks); commit checks this flag too.
INTERRUPTED = threading.Event()


def exists(path: Path) -> bool:
    """True for anything at ``path``, broken symlinks included."""
    return path.exists() or path.is_symlink()


def is_stream(path: Path) -> bool:
    """A character device or a FIFO, followed through symlinks: an output written directly."""
    import stat

    try:
        mode = os.stat(path).st_mode
    except OSError:
        return False
    return stat.S_ISCHR(mode) or stat.S_ISFIFO(mode)


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
    import socket  # 5 ms of imports, for staging on shared folders only

    return re.sub(r"[^A-Za-z0-9.]", "_", socket.gethostname()) or "host"


def partial_name(dest: Path) -> Path:
    """A temporary sibling of ``dest`` named after this host and process."""
    return dest.with_name(f".{dest.name}.partial-{_host()}-{os.getpid()}-{uuid.uuid4().hex[:8]}")


def describe_bytes(count: int) -> str:
    """A size in the unit that shows it: 512 bytes, 12.3 KB, 4.5 MB, 1.2 GB."""
    for unit, scale in (("GB", 1e9), ("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} bytes"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


def _size(path: Path) -> int:
    """The bytes ``path`` takes on disk: its blocks, not its apparent size (an LMDB map
    is sparse: gigabytes apparent, megabytes used)."""
    if path.is_dir() and not path.is_symlink():
        files = (p for p in path.rglob("*") if p.is_file() and not p.is_symlink())
        return sum(p.lstat().st_blocks * 512 for p in files)
    return path.lstat().st_blocks * 512


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
            "removed %s, left by an interrupted run (process %s): %s freed",
            path,
            match.group(2),
            describe_bytes(size),
        )
    return removed


@contextlib.contextmanager
def scratch_beside(dest: str | os.PathLike) -> Iterator[Path]:
    """A scratch folder named as ``dest``'s partials are (beside it when its folder exists):
    removed after the block, and by a later run on ``dest`` when a ``kill -9`` left it."""
    dest = Path(dest)
    remove_stale_partials(dest)
    scratch = partial_name(dest)
    if not dest.parent.is_dir():  # no folder made just for scratch
        scratch = Path(tempfile.gettempdir()) / scratch.name
    scratch.mkdir()
    try:
        yield scratch.absolute()
    finally:
        remove(scratch)


def _move_into_place(tmp: Path, dest: Path) -> None:
    if dest.is_dir() and not dest.is_symlink():
        old = partial_name(dest)
        old = old.with_name(old.name.replace(".partial-", ".old-", 1))
        os.replace(dest, old)
        os.replace(tmp, dest)
        remove(old)
    elif dest.is_symlink() and tmp.is_dir():  # the link is replaced, never its target (as for files)
        os.unlink(dest)
        os.replace(tmp, dest)
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


class _Inputs:
    """What the running command reads: files and folders (lists, stores) and the images of
    its lists (gathered on the first check, once)."""

    def __init__(self) -> None:
        self.paths: dict[str, str] = {}  # real path -> as the user named it
        self.lists: list = []
        self._images: set[str] | None = None
        self._folders: set[str] = set()

    def add_list(self, listfile) -> None:
        self.lists.append(listfile)
        self._images = None  # gathered again on the next check

    def images(self) -> tuple[set[str], set[str]]:
        if self._images is None:
            self._images = {
                os.path.normpath(os.path.abspath(listfile.resolve(e)))
                for listfile in self.lists
                for e in listfile.entries
            }
            self._folders = {os.path.dirname(p) for p in self._images}
        return self._images, self._folders


_SCOPES: list[_Inputs] = []


@contextlib.contextmanager
def command_inputs() -> Iterator[None]:
    """Within the block, the inputs a command opens are noted, and no output may be one of
    them, lie inside one, or hold one (``--overwrite`` or not)."""
    _SCOPES.append(_Inputs())
    try:
        yield
    finally:
        _SCOPES.pop()


def add_inputs(*paths: str | os.PathLike) -> None:
    """Note files or folders the running command reads (a store, a list file)."""
    if _SCOPES:
        for path in paths:
            _SCOPES[-1].paths[os.path.realpath(path)] = str(path)


def add_list(listfile) -> None:
    """Note a list the running command reads: the file and the images it names."""
    if _SCOPES:
        if listfile.name != "<stdin>":
            add_inputs(listfile.name)
        _SCOPES[-1].add_list(listfile)


def refuse_over_inputs(dest: str | os.PathLike) -> None:
    """UsageError when ``dest`` is an input of the running command, lies inside one (a
    store's folder), or holds one (a folder of the inputs)."""
    if not _SCOPES:
        return
    scope = _SCOPES[-1]
    d = os.path.realpath(dest)
    for real, named in scope.paths.items():
        if d == real or d.startswith(real + os.sep):
            relation = "is" if d == real else "lies inside"
            raise UsageError(f"{dest} {relation} this command's input {named}: choose another output")
        if real.startswith(d + os.sep):
            raise UsageError(f"{dest} holds this command's input {named}: choose another output")
    if not scope.lists:
        return
    images, folders = scope.images()
    plain = os.path.normpath(os.path.abspath(dest))
    if plain in images or d in images:
        raise UsageError(f"{dest} is an image this command reads: choose another output")
    if any(f == plain or f.startswith(plain + os.sep) for f in folders):
        raise UsageError(f"{dest} holds images this command reads: choose another output")


CLAIM_POLL = 0.05  # seconds between looks at a claim a live process holds
PAUSE_HOOK = "DATAPREP_TEST_PAUSE_COMMIT"  # tests: a folder; commit waits there for go-PID


def claim_path(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.claim")


def _owner(claim: Path) -> tuple[str, int] | None:
    """The (host, pid) a claim names; None when it is gone or unreadable."""
    try:
        host, pid = claim.read_text().split()
        return host, int(pid)
    except (OSError, ValueError):
        return None


def take_claim(dest: Path, wait: bool, refusal: str = "{dest} already exists: another run") -> None:
    """Claim ``dest`` for this process: exclusive; a killed process's claim is removed; a
    live one's is waited for (``wait``) or refused with StoreExistsError (``refusal``, then
    the holder)."""
    claim = claim_path(dest)
    said = False
    while True:
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            owner = _owner(claim)
            if owner is None or (owner[0] == _host() and not _alive(owner[1])):
                with contextlib.suppress(FileNotFoundError):  # stale (or just released)
                    claim.unlink()
                    if owner is not None:
                        log.info("removed %s, left by an interrupted run (process %s)", claim, owner[1])
                continue
            if owner == (_host(), os.getpid()):
                return
            if not wait:
                raise StoreExistsError(
                    f"{refusal.format(dest=dest)} (process {owner[1]} on {owner[0]}) is writing it"
                ) from None
            if not said:
                log.info("waiting for process %s on %s, which is writing %s", owner[1], owner[0], dest)
                said = True
            time.sleep(CLAIM_POLL)
            continue
        except OSError as exc:
            raise DataprepError(f"cannot write to {dest.parent}: {exc.strerror}") from None
        with os.fdopen(fd, "w") as out:
            out.write(f"{_host()} {os.getpid()}\n")
        return


def release_claim(dest: Path) -> None:
    """Remove this process's claim on ``dest`` (only its own)."""
    claim = claim_path(dest)
    if _owner(claim) == (_host(), os.getpid()):
        with contextlib.suppress(FileNotFoundError):
            claim.unlink()


def _pause_for_tests() -> None:
    """With DATAPREP_TEST_PAUSE_COMMIT=DIR: say ``DIR/paused-PID`` and wait for
    ``DIR/go-PID`` (at most a minute), so a test can run a second writer at this point."""
    folder = os.environ.get(PAUSE_HOOK)
    if not folder:
        return
    (Path(folder) / f"paused-{os.getpid()}").touch()
    deadline = time.monotonic() + 60
    while not (Path(folder) / f"go-{os.getpid()}").exists() and time.monotonic() < deadline:
        time.sleep(0.02)


_MADE: set[Path] = set()  # folders made for outputs that were aborted, not yet empty


def _writable_parent(dest: Path) -> list[Path]:
    """Make ``dest``'s folder (as the output will need it) and check it can be written;
    returns the folders it made, outermost first."""
    made = [p for p in reversed(dest.parents) if not exists(p)]
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DataprepError(f"cannot create {dest.parent}: {exc.strerror}") from None
    if not os.access(dest.parent, os.W_OK):
        raise DataprepError(f"cannot write to {dest.parent}: permission denied")
    return made


@contextlib.contextmanager
def naming(dest: str | os.PathLike) -> Iterator[None]:
    """An OSError that names no file (a write on a full disk) names ``dest``."""
    try:
        yield
    except OSError as exc:
        if exc.filename is None:
            exc.filename = str(dest)
        raise


class Staging:
    """Hands out temporary paths for destinations and commits them in registration order.

    Register completion markers (list files, ``*_h5.txt``) last: they appear last.
    Used as a context manager, an exception removes every temporary path instead.
    """

    def __init__(self, overwrite: bool = False, after_interrupt: bool = False) -> None:
        self.overwrite = overwrite
        self.after_interrupt = after_interrupt  # an output written because of the interrupt
        self._pending: list[tuple[Path, Path]] = []
        self._claimed: list[Path] = []  # claimed at start: must still be absent at commit
        self._made: list[Path] = []  # folders made for the outputs: removed again on abort

    def claim(self, dest: str | os.PathLike) -> None:
        """Claim ``dest`` now, for a run without --overwrite (``path`` does this itself;
        writers that name some outputs late claim their completion marker here)."""
        dest = Path(dest)
        refuse_over_inputs(dest)
        self._made += _writable_parent(dest)
        take_claim(dest, wait=False)
        self._claimed.append(dest)

    def path(self, dest: str | os.PathLike, allow_empty_dir: bool = False) -> Path:
        """A temporary path whose content will become ``dest`` on commit; absolute, since
        workers may write into it from another working directory (see parallel). A device
        or a FIFO (``/dev/null``, a named pipe) is written directly: nothing to stage."""
        dest = Path(dest)
        if is_stream(dest):
            return dest
        refuse_existing(dest, self.overwrite, allow_empty_dir)
        if any(d == dest for _, d in self._pending):
            raise DataprepError(f"{dest} is named twice as an output")
        refuse_over_inputs(dest)
        self._made += _writable_parent(dest)
        remove_stale_partials(dest)
        if not self.overwrite and not (allow_empty_dir and dest.is_dir()):
            self.claim(dest)
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
        late = sorted({dest for _, dest in self._pending} - set(self._claimed))
        try:
            for dest in late:  # --overwrite: the last commit wins, one at a time
                take_claim(dest, wait=True)
            self._claimed.extend(late)
            for dest in self._claimed[: len(self._claimed) - len(late)]:
                refuse_existing(dest, False)  # made meanwhile by a run with --overwrite
            _pause_for_tests()
            done = []
            with signals_held():
                for tmp, dest in self._pending:
                    _move_into_place(tmp, dest)
                    done.append(dest)
                self._pending.clear()
        finally:
            self._release()
        return done

    def _release(self) -> None:
        for dest in self._claimed:
            release_claim(dest)
        self._claimed.clear()

    def abort(self) -> None:
        """Remove every temporary path."""
        for tmp, _ in self._pending:
            remove(tmp)
        self._pending.clear()
        self._release()
        _MADE.update(self._made)
        self._made.clear()
        for folder in sorted(_MADE, key=lambda p: -len(p.parts)):  # folders this process made
            with contextlib.suppress(OSError):  # for outputs go too, once empty (one store
                folder.rmdir()  # of several may abort while the others still fill them)
                _MADE.discard(folder)

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
            return
        if isinstance(exc, OSError) and exc.filename is None and self._pending:
            exc.filename = str(self._pending[-1][1])  # a failed write: the last file staged
        self.abort()
