"""The onnxruntime engine's graphs, kept between commands.

Building a model's graph from its prototxt and weights (reading the weights, importing
onnx, a native net for the shapes, the protobuf copies) took CaffeNet 2.5 s, where
onnxruntime opens the built file in 0.4 s. A graph is found again by everything it was
built from: the layers, the input shape, the outputs asked for, the weights file as it is
now (path, size, modification time) and dataprep's own source files; a change to any of
them builds a new graph, so a cached one is never stale. The key needs the model's layers,
so the model must be read before its graph is found; a hint, keyed by what the command
line names (the model and weights files as they are now, the options), says which graph
the last such command used, so onnxruntime can open it while the model is read. The engine
still finds its graph by the key and uses the hinted one only where they agree: a wrong
hint costs an opening, never an answer. Graphs live in ``$DATAPREP_CACHE``
(default ``$XDG_CACHE_HOME/dataprep``, else ``~/.cache/dataprep``), at most ``KEEP_BYTES``
of them, the least recently used dropped first; ``DATAPREP_CACHE=off`` keeps none.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import uuid
from pathlib import Path
from typing import Callable

log = logging.getLogger("dataprep")

CACHE_ENV = "DATAPREP_CACHE"
KEEP_BYTES = 4 << 30  # about sixteen CaffeNets


def cache_root() -> Path | None:
    """Where dataprep keeps what commands reuse (these graphs; parsed prototxts:
    ``prototxt_cache``); None when ``DATAPREP_CACHE=off``."""
    given = os.environ.get(CACHE_ENV)
    if given == "off":
        return None
    if given:
        return Path(given)
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "dataprep"


def cache_dir() -> Path | None:
    """Where graphs are kept; None when ``DATAPREP_CACHE=off``."""
    root = cache_root()
    return root / "onnx" if root is not None else None


def file_identity(path: str | Path) -> list:
    """A file as it is now: its absolute path, size and modification time in nanoseconds."""
    st = os.stat(path)
    return [os.path.abspath(path), st.st_size, st.st_mtime_ns]


@functools.lru_cache(maxsize=1)
def code_identity() -> tuple:
    """dataprep's source files as they are now (read once a process): a changed exporter,
    layer or parser builds anew."""
    package = Path(__file__).resolve().parents[1]
    return tuple(file_identity(p)[1:] + [str(p.relative_to(package))] for p in sorted(package.rglob("*.py")))


def key_of(parts: dict) -> str:
    """A kept file's name for what it was made from (``parts``, JSON-able) by this dataprep."""
    text = json.dumps({**parts, "code": code_identity()}, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()


def keep_file(path: Path, data: bytes) -> bool:
    """Write ``path`` whole or not at all (commands may share the cache); False where the
    cache cannot be written."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex}.partial")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp.write_bytes(data)
        os.replace(tmp, path)
    except OSError as exc:
        log.debug("not kept in %s: %s", path.parent, exc)
        with contextlib.suppress(OSError):
            tmp.unlink()
        return False
    return True


def kept(parts: dict) -> str | None:
    """The path of the graph built from ``parts`` where it is kept, else None."""
    folder = cache_dir()
    path = folder / f"{key_of(parts)}.onnx" if folder is not None else None
    return str(path) if path is not None and path.is_file() else None


def _hint_path(request: dict) -> Path | None:
    """Where the hint for ``request`` is kept; None when ``DATAPREP_CACHE=off``."""
    folder = cache_dir()
    if folder is None:
        return None
    text = json.dumps(request, sort_keys=True, default=str)
    return folder / f"{hashlib.sha256(text.encode()).hexdigest()}.hint"


def hinted(request: dict) -> str | None:
    """The kept graph the last command with ``request`` (JSON-able: what its command line
    names) used, where it is still kept; else None."""
    hint = _hint_path(request)
    try:
        name = hint.read_text().strip() if hint is not None else ""
    except OSError:
        return None
    graph = hint.with_name(name) if name.endswith(".onnx") and Path(name).name == name else None
    return str(graph) if graph is not None and graph.is_file() else None


def used(graph: str, request: dict | None = None) -> None:
    """Note that the kept ``graph`` was used now (the last to be dropped) by a command with
    ``request`` (``hinted``); a cache that cannot be written keeps no hint."""
    with contextlib.suppress(OSError):  # dropped by another command just now
        os.utime(graph)
    hint = _hint_path(request) if request is not None else None
    if hint is not None and hinted(request) != graph:
        keep_file(hint, f"{Path(graph).name}\n".encode())


def cached_graph(parts: dict, build: Callable[[], bytes]) -> str | bytes:
    """The graph built from ``parts``: the path of the kept file, or the serialized graph
    from ``build`` (then kept). Where the cache is off or cannot be written, the bytes."""
    folder = cache_dir()
    if folder is None:
        return build()
    path = folder / f"{key_of(parts)}.onnx"
    if path.is_file():
        try:
            os.utime(path)  # used now: the last to be dropped
            return str(path)
        except OSError:  # dropped by another command just now
            pass
    graph = build()
    if not keep_file(path, graph):
        return graph
    _trim(folder, keep=path)
    return str(path)


def forget(path: str) -> None:
    """Drop a kept graph onnxruntime could not open (a damaged file): the next use builds it."""
    Path(path).unlink(missing_ok=True)


def trim(folder: Path, pattern: str, limit: int, keep: Path) -> None:
    """Drop the least recently used files of ``pattern`` in ``folder`` past ``limit`` bytes
    (never ``keep``, just written)."""
    found = []
    for p in folder.glob(pattern):
        try:
            st = p.stat()
        except OSError:
            continue
        found.append((st.st_mtime_ns, st.st_size, p))
    total = sum(size for _, size, _ in found)
    for _, size, p in sorted(found, key=lambda f: f[0]):
        if total <= limit:
            break
        if p != keep:
            p.unlink(missing_ok=True)
            total -= size


def _trim(folder: Path, keep: Path) -> None:
    """Drop the least recently used graphs past KEEP_BYTES, and the hints that name them."""
    trim(folder, "*.onnx", KEEP_BYTES, keep)
    for hint in folder.glob("*.hint"):
        with contextlib.suppress(OSError):
            if not (folder / hint.read_text().strip()).is_file():
                hint.unlink()
