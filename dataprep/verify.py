"""Check a store record by record: decoding, shapes, labels, the writer's manifest and
checksums, and optionally that it holds exactly the entries of a list file."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import StoreError
from .images import describe_shape
from .listfile import ListFile, read_list, shuffle_order
from .progress import set_total
from .stores import open_problems, open_store
from .stores.base import CHECKSUM, StoreReader


@dataclass
class Report:
    """Problems found (each naming its key or file), notes, and how many records were read."""

    checked: int = 0
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems


def verify(
    path: str | Path,
    list_path: str | Path | None = None,
    root: str | None = None,
    progress: Callable[[int], object] | None = None,
) -> Report:
    """Read and check every record of the store at ``path``, through the reader interface."""
    report = Report()
    path = Path(path)
    if ".partial-" in path.name:
        report.problems.append(f"{path}: an unfinished dataprep output (the writer was interrupted)")
    try:
        cannot_open = open_problems(path)
        if cannot_open:
            report.problems.extend(cannot_open)
            return report
        reader = open_store(path)
    except (StoreError, OSError) as exc:
        report.problems.append(str(exc))
        return report
    with reader:
        set_total(progress, len(reader))
        _check_manifest(reader, report)
        report.problems.extend(reader.structure_problems())
        expected = _expected(reader, list_path, root) if list_path else None
        _check_records(reader, report, expected, progress)
    return report


def _check_manifest(reader, report: Report) -> None:
    manifest = reader.manifest
    if manifest is None:
        if reader.unfinished():
            report.problems.append(f"{reader.path}: no manifest: the writer did not finish")
        else:
            report.notes.append("no manifest (not written by dataprep): records checked for consistency only")
        return
    if manifest.get("checksum") != CHECKSUM:
        report.notes.append(f"checksums of kind {manifest.get('checksum')!r} are not checked")
    if manifest.get("count") != len(reader):
        report.problems.append(
            f"{reader.path}: holds {len(reader)} records, its manifest says {manifest.get('count')}"
        )


def _expected(reader, list_path, root) -> "_Expected":
    """The (path, labels) the store should hold, in store order (redoing a --shuffle)."""
    listfile: ListFile = read_list(list_path, root=root)
    entries = [(e.path, e.labels) for e in listfile.entries]
    prep = (reader.manifest or {}).get("preprocessing") or {}
    if prep.get("shuffle"):
        entries = [entries[i] for i in shuffle_order(len(entries), prep.get("seed") or 0)]
    return _Expected(entries)


def _labels_match(stored: np.ndarray, wanted: tuple) -> bool:
    wanted_arr = np.asarray(wanted, np.float64) if wanted else np.zeros(1)
    return stored.shape == wanted_arr.shape and np.allclose(stored, wanted_arr, rtol=1e-6, atol=1e-7)


def _check_labels(key: str, labels: np.ndarray, integer: bool, report: Report) -> None:
    if not np.all(np.isfinite(labels)):
        report.problems.append(f"{key}: label is not finite: {labels.tolist()}")
    elif integer and not np.all(labels == np.round(labels)):
        report.problems.append(f"{key}: integer label store holds {labels.tolist()}")


def _check_records(reader: StoreReader, report: Report, expected, progress) -> None:
    manifest = reader.manifest or {}
    uniform = manifest.get("shape") is not None if manifest else True
    integer = (manifest.get("labels") or {}).get("kind") == "int"
    first = None
    seen: set[int] = set()
    for i, rec in enumerate(reader.checked_records()):
        report.checked += 1
        if rec.checksum_ok is False:
            report.problems.append(f"{rec.key}: checksum mismatch: the record was changed after writing")
        if rec.error is not None:
            report.problems.append(f"{rec.key}: {rec.error}")
        else:
            if first is None:
                first = (rec.array.shape, rec.key)
            elif uniform and rec.array.shape != first[0]:
                report.problems.append(
                    f"{rec.key}: {describe_shape(rec.array.shape, 'CHW')}, but {first[1]} is "
                    f"{describe_shape(first[0], 'CHW')}"
                )
            if rec.array.dtype.kind == "f" and not np.all(np.isfinite(rec.array)):
                report.problems.append(f"{rec.key}: data holds NaN or infinity")
            _check_labels(rec.key, rec.labels, integer, report)
            if expected is not None:
                _check_entry(rec.key, i, rec.labels, expected, report, seen, reader.lined_up_by)
        if progress:
            progress(1)
    if expected is not None:
        _missing(expected, seen, report)


def _check_entry(key, i, labels, expected, report, seen, lined_up_by: str) -> None:
    """Line a record up with its list entry: Datum keys carry the entry's index; HDF5 keys
    are the paths, matched to the next unseen entry with that path (entries skipped by
    --skip-bad leave gaps, not a cascade of mismatches); records whose keys are only their
    position (WebDataset shards, HDF5 files other tools wrote) line up by position, and
    only their labels can be compared."""
    if lined_up_by == "position":
        index, path = i, None
        if index >= len(expected):
            report.problems.append(f"{key}: more records than list entries")
            return
    elif lined_up_by == "datum_key":
        index, _, path = key.partition("_")
        if not index.isdigit() or int(index) >= len(expected):
            report.problems.append(f"{key}: not an entry of the list")
            return
        index = int(index)
    else:
        path = key
        waiting = expected.by_path.get(key)
        if not waiting:
            report.problems.append(
                f"{key}: not an entry of the list"
                if key not in expected.by_path
                else f"{key}: more records of this path than list entries"
            )
            return
        index = waiting.pop(0)
        if index < expected.last:
            report.problems.append(
                f"{key}: out of list order (the list has it before {expected[expected.last][0]!r})"
            )
        expected.last = max(expected.last, index)
    want_path, want_labels = expected[index]
    seen.add(index)
    if path is not None and path != want_path:
        report.problems.append(f"{key}: the list has {want_path!r} at this position")
    elif not _labels_match(labels, want_labels):
        report.problems.append(f"{key}: labels {labels.tolist()} differ from the list's {list(want_labels)}")


class _Expected(list):
    """The (path, labels) entries a store should hold, in store order, with the entry
    indices of each path still to be matched."""

    def __init__(self, entries: list[tuple[str, tuple]]) -> None:
        super().__init__(entries)
        self.by_path: dict[str, list[int]] = {}
        for index, (path, _) in enumerate(entries):
            self.by_path.setdefault(path, []).append(index)
        self.last = -1


def _missing(expected, seen, report) -> None:
    missing = [i for i in range(len(expected)) if i not in seen]
    for i in missing[:20]:
        report.problems.append(f"{expected[i][0]}: in the list but not in the store")
    if len(missing) > 20:
        report.problems.append(f"... and {len(missing) - 20} more list entries missing")
