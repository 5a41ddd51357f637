"""Image-to-files jobs (``resize``, ``augment``): one pipeline from a folder or a list to
image files under OUT, resumable and never silently stale.

* Outputs mirror each input's path relative to a base folder: SRC for a folder; for a list,
  ``--root`` when given, else the folder all its images share. They never leave OUT.
* Each output is written under a temporary name and renamed when complete, so an existing
  output is a finished one and a rerun skips it.
* ``OUT/dataprep-settings.json`` records the settings that made OUT: a rerun with the same
  settings resumes; with other settings it stops naming what differs (``--overwrite``
  redoes everything). It also records which input list each output list came from.
* Each list line is its own item, repeated lines included (the usual way to oversample).
"""

from __future__ import annotations

import json
import logging
import os
from abc import ABC, abstractmethod
from dataclasses import dataclass, replace
from pathlib import Path, PurePosixPath
from typing import Callable, NamedTuple

import numpy as np

from .errors import DataprepError, ImageError, OnError, StoreExistsError, UsageError
from .images import Channels, partial_path, write_image
from .listfile import ListFile, format_line, read_list, write_list
from .parallel import Executor, ordered_map
from .progress import set_total
from .scan import DEFAULT_EXTENSIONS, images_under
from .staging import Staging, add_inputs, refuse_over_inputs, remove

log = logging.getLogger(__name__)

FORMATS = {"keep": None, "jpg": ".jpg", "png": ".png"}
SETTINGS_NAME = "dataprep-settings.json"


class Item(NamedTuple):
    source: str  # absolute path of the input
    output: str  # relative path under OUT
    where: str  # for messages: "list:line: path" or the relative path
    line: int | None = None  # the list line
    occurrence: int = 0  # how many earlier items have the same output (repeated list lines)


@dataclass(frozen=True)
class OutputOptions:
    """How an image-to-files job writes: format (``keep``: the input's), JPEG quality,
    channels, the folder a list's paths resolve against, device, and whether to redo."""

    fmt: str = "keep"
    quality: int = 95
    channels: Channels = Channels()
    root: str | None = None
    device: str = "cpu"
    overwrite: bool = False

    def __post_init__(self) -> None:
        if self.fmt not in FORMATS:
            raise UsageError(f"unknown format {self.fmt!r}; choose from {', '.join(FORMATS)}")

    def settings(self) -> dict:
        """What of these the outputs depend on (see ``check_settings``)."""
        return {
            "format": self.fmt,
            "quality": self.quality,
            "channels": self.channels.mode,
            "device": self.device,
        }


def output_name(relative: str, fmt: str) -> str:
    """The output's relative path: the input's, with the extension ``fmt`` asks for."""
    ext = FORMATS[fmt]
    return str(PurePosixPath(relative).with_suffix(ext)) if ext else relative


def contained(out: Path, relative: str, where: str) -> None:
    """Refuse an output that would land outside OUT (absolute paths, ``..`` past the top).
    A lexical check, a few microseconds per entry: symbolic links the user made inside OUT
    are followed as the user meant."""
    norm = os.path.normpath(relative)
    if os.path.isabs(norm) or norm == ".." or norm.startswith("../"):
        raise DataprepError(f"{where}: output {relative!r} would land outside {out}")


def _numbered(items: list[Item]) -> list[Item]:
    seen: dict[str, int] = {}
    numbered = []
    for item in items:
        numbered.append(item._replace(occurrence=seen.get(item.output, 0)))
        seen[item.output] = seen.get(item.output, 0) + 1
    return numbered


def folder_items(src: Path, fmt: str) -> list[Item]:
    """Every image under ``src`` (by absolute path), mirrored under OUT."""
    src = Path(os.path.abspath(src))
    files = images_under(src, set(DEFAULT_EXTENSIONS))
    if not files:
        raise DataprepError(f"{src}: no images")
    return [
        Item(str(p), output_name(p.relative_to(src).as_posix(), fmt), p.relative_to(src).as_posix())
        for p in files
    ]


def list_base(listfile: ListFile, root_given: bool) -> str:
    """The folder a list's outputs are mirrored from: ``--root`` when given, else the
    deepest folder every image of the list lies under (lexically, links not followed)."""
    if root_given or not listfile.entries:
        return os.path.normpath(os.path.abspath(listfile.root))
    return os.path.commonpath(
        [os.path.dirname(os.path.normpath(os.path.abspath(listfile.resolve(e)))) for e in listfile.entries]
    )


def list_items(listfile: ListFile, out: Path, fmt: str, root_given: bool = False) -> list[Item]:
    """The images of a list, each mirrored under OUT relative to ``list_base``."""
    base = list_base(listfile, root_given)
    items = []
    for e in listfile.entries:
        where = f"{listfile.name}:{e.line}: {e.path}"
        source = os.path.normpath(os.path.abspath(listfile.resolve(e)))
        relative = output_name(Path(os.path.relpath(source, base)).as_posix(), fmt)
        contained(out, relative, where)
        items.append(Item(source, relative, where, e.line))
    return _numbered(items)


def check_settings(out: Path, settings: dict, overwrite: bool) -> tuple[dict, bool]:
    """The settings record OUT should hold, and whether OUT holds outputs of other settings
    (stale: ``overwrite`` removes them, so no orphaned variants stay behind).

    Raises StoreExistsError when OUT holds files but no settings record (not made by this
    command), or a record of other settings, unless ``overwrite``."""
    settings = json.loads(json.dumps(settings))  # as the record holds them (tuples as lists)
    path = out / SETTINGS_NAME
    try:
        recorded = json.loads(path.read_text())
    except FileNotFoundError:
        recorded = None
    except (OSError, ValueError):
        recorded = {"settings": None}
    if recorded is None:
        if not overwrite and out.is_dir() and any(out.iterdir()):
            raise StoreExistsError(
                f"{out} already holds files that this command did not make; "
                "choose another folder, or pass --overwrite to write into it"
            )
        return {"settings": settings, "lists": {}}, False
    old = recorded.get("settings")
    if old != settings and not overwrite:
        if not isinstance(old, dict):
            raise StoreExistsError(f"{out}/{SETTINGS_NAME} is unreadable; pass --overwrite to redo {out}")
        differ = [
            f"--{k.replace('_', '-')} {_shown(old.get(k))} then, {_shown(v)} now"
            for k, v in settings.items()
            if old.get(k) != v
        ]
        raise StoreExistsError(
            f"{out} was made with other settings ({'; '.join(differ)}): rerun "
            "with the same settings to resume, or pass --overwrite to redo "
            "everything"
        )
    lists = recorded.get("lists", {}) if old == settings else {}
    return {"settings": settings, "lists": lists if isinstance(lists, dict) else {}}, old != settings


def _shown(value: object) -> str:
    if value is None:
        return "unset"
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(isinstance(v, int) for v in value):
        return f"{value[0]}x{value[1]}"
    return str(value)


def _write_settings(out: Path, record: dict) -> None:
    with Staging(overwrite=True) as staging:
        staging.path(out / SETTINGS_NAME).write_text(json.dumps(record, indent=1, sort_keys=True))


@dataclass(frozen=True)
class FileTask(ABC):
    """Worker task over items ``start..stop-1``: load each image, render its outputs, write
    them. Each item gives "done", "kept" (all outputs exist), "repeat" (a repeated line whose
    outputs an earlier item writes) or an ImageError.

    On the CPU an image goes from decode to write before the next is read (it stays in
    cache); on a GPU the chunk is rendered together (one upload, one download)."""

    items: list[Item]
    out: str
    output: OutputOptions  # channels and device resolved

    def __post_init__(self) -> None:
        object.__setattr__(self, "out", os.path.abspath(self.out))  # see parallel: paths in tasks

    @abstractmethod
    def outputs(self, item: Item) -> list[str]:
        """The item's outputs, relative to OUT."""

    @abstractmethod
    def render(self, todo: list[tuple[int, np.ndarray]]) -> list[list[np.ndarray]]:
        """Each (item index, H x W x C image)'s output images, in ``outputs`` order."""

    def check(self, item: Item, image: np.ndarray) -> None:
        """Refuse an image the task cannot handle (raise ImageError)."""

    def repeats(self, item: Item) -> bool:
        """Whether a repeated item's outputs are an earlier item's (nothing to write)."""
        return item.occurrence > 0

    def __call__(self, start: int, stop: int) -> list[str | ImageError]:
        status: dict[int, str | ImageError] = {}
        todo: list[tuple[int, np.ndarray]] = []
        for i in range(start, stop):
            item = self.items[i]
            if self.repeats(item):
                status[i] = "repeat"
                continue
            if not self.output.overwrite and all((Path(self.out) / o).exists() for o in self.outputs(item)):
                status[i] = "kept"
                continue
            try:
                image = self.output.channels.load(Path(item.source), item.where, item.line)[1]
                self.check(item, image)
            except ImageError as exc:
                status[i] = exc
                continue
            todo.append((i, image))
            if self.output.device == "cpu":
                self._write(todo)
                status[i] = "done"
                todo = []
        self._write(todo)
        status.update((i, "done") for i, _ in todo)
        return [status[i] for i in range(start, stop)]

    def _write(self, todo: list[tuple[int, np.ndarray]]) -> None:
        if not todo:
            return
        for (i, _), images in zip(todo, self.render(todo)):
            for name, image in zip(self.outputs(self.items[i]), images):
                write_image(Path(self.out) / name, image, self.output.quality)


class JobResult(NamedTuple):
    done: int
    kept: int
    skipped: int
    list_path: Path | None


def file_job(
    src: Path,
    out: Path,
    settings: dict,
    make_task: Callable[[list[Item], OutputOptions], FileTask],
    executor: Executor,
    output: OutputOptions = OutputOptions(),
    on_error: OnError | None = None,
    progress: Callable[[int], object] | None = None,
    check: Callable[[ListFile | None, Channels], None] | None = None,
) -> JobResult:
    """Run a FileTask over a folder (mirrored under ``out``) or a list file (its images under
    ``out``, the list rewritten as ``out/<list name>`` naming every output of every good
    entry with that entry's labels). ``settings`` are what the outputs depend on besides
    ``output`` (see ``check_settings``). Bad images follow ``on_error``; ``check`` may
    refuse the input (with the channel count resolved) before any work starts."""
    from .gpu import resolve_device

    on_error = on_error or OnError()
    src, out = Path(src), Path(out)
    listfile = None
    if str(src) != "-" and src.is_dir():
        items = folder_items(src, output.fmt)
    else:
        listfile = read_list(src, root=output.root, on_error=on_error)
        items = list_items(listfile, out, output.fmt, root_given=output.root is not None)
    if listfile is None:
        add_inputs(src)  # a folder of images (a list's images are noted as it is read)
    refuse_over_inputs(out)  # OUT may not be, lie inside or hold what the job reads
    channels = output.channels.resolve((Path(item.source), item.where) for item in items)
    output = replace(output, channels=channels, device=resolve_device(output.device))
    if check is not None:
        check(listfile, channels)
    record, stale = check_settings(out, {**settings, **output.settings()}, output.overwrite)
    if stale:  # --overwrite over outputs of other settings: none of them may stay
        log.info("removing %s: its outputs were made with other settings", out)
        remove(out)
    list_path = None
    if listfile is not None:
        list_path = out / (Path(listfile.name).name if str(src) != "-" else "list.txt")
        source = str(Path(listfile.name).absolute()) if str(src) != "-" else "-"
        made_from = record["lists"].get(list_path.name)
        if not output.overwrite and list_path.exists() and made_from != source:
            raise StoreExistsError(
                f"{list_path} already exists (not written from {listfile.name}); "
                "pass --overwrite to replace it"
            )
        record["lists"][list_path.name] = source
    out.mkdir(parents=True, exist_ok=True)
    _write_settings(out, record)
    set_total(progress, len(items))
    task = make_task(items, output)
    counts = {"done": 0, "kept": 0}
    good: list[int] = []
    try:
        _collect(task, items, executor, progress, on_error, counts, good)
    except BaseException:  # workers stopped mid-write leave their partial files: remove them
        _remove_partials(Path(out), task, items)
        raise
    if listfile is not None:
        lines = [
            format_line(name, listfile.entries[i].labels) for i in good for name in task.outputs(items[i])
        ]
        with Staging(overwrite=True) as staging:
            write_list(staging.path(list_path), lines)
    return JobResult(counts["done"], counts["kept"], on_error.skipped, list_path)


def _collect(task, items, executor, progress, on_error, counts: dict, good: list[int]) -> None:
    """Each item's status in order into ``counts`` (done, kept) and ``good`` (the indices
    of the good items); a bad item follows ``on_error``."""
    written: set[str] = set()  # outputs of the good items, for repeated lines
    for i, status in enumerate(ordered_map(task, len(items), executor, progress=progress)):
        item = items[i]
        if status == "repeat" and item.output not in written:  # its first occurrence was bad
            status = ImageError(f"{item.where}: skipped with its first occurrence", item.line)
        if isinstance(status, ImageError):
            on_error(status)
        else:
            if status != "repeat":
                counts[status] += 1
                written.add(item.output)
            good.append(i)
        on_error.reached(item.line)


def _remove_partials(out: Path, task, items) -> None:
    """The partial files a stopped run's workers were writing (they are killed, not
    unwound)."""
    for item in items:
        for name in task.outputs(item):
            partial_path(out / name).unlink(missing_ok=True)
