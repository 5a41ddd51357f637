"""Check a store record by record: decoding, shapes, labels, the writer's manifest and
checksums, and optionally that it holds exactly the entries of a list file."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from .errors import StoreError
from .images import describe_shape
from .listfile import ListFile, read_list, shuffle_order
from .progress import set_total
from .stores import open_store, store_kind
from .stores.base import CHECKSUM, checksum
from .stores.caffe_pb import parse_datum
from .stores.datum import DatumReader, datum_array
from .stores.hdf5 import Hdf5Reader, read_h5_list


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
    """Read and check every record of the store at ``path``."""
    report = Report()
    path = Path(path)
    if ".partial-" in path.name:
        report.problems.append(f"{path}: an unfinished dataprep output (the writer was interrupted)")
    try:
        kind = store_kind(path)
        if kind == "hdf5" and path.suffix == ".txt":
            _check_h5_files(path, report)
            if report.problems:
                return report
        reader = open_store(path)
    except (StoreError, OSError) as exc:
        report.problems.append(str(exc))
        return report
    with reader:
        set_total(progress, len(reader))
        _check_manifest(reader, report)
        expected = _expected(reader, list_path, root) if list_path else None
        if isinstance(reader, Hdf5Reader):
            _check_hdf5(reader, report, expected, progress)
        else:
            _check_datums(reader, report, expected, progress)
    return report


def _check_h5_files(path: Path, report: Report) -> None:
    import h5py

    for file in read_h5_list(path):
        if not file.is_file():
            report.problems.append(f"{file}: listed in {path.name} but missing")
            continue
        try:
            with h5py.File(file, "r") as f:
                lengths = {name: len(f[name]) for name in f}
        except OSError as exc:
            report.problems.append(f"{file}: cannot be read (truncated or corrupt): {exc}")
            continue
        if len(set(lengths.values())) > 1:
            report.problems.append(f"{file}: datasets of different lengths: {lengths}")


def _check_manifest(reader, report: Report) -> None:
    manifest = reader.manifest
    if manifest is None:
        if isinstance(reader, Hdf5Reader) and "dataprep_keys" in reader.files[0].attrs:
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


def _check_datums(reader: DatumReader, report: Report, expected, progress) -> None:
    manifest = reader.manifest or {}
    sums = manifest.get("checksums") if manifest.get("checksum") == CHECKSUM else None
    uniform = manifest.get("shape") is not None if manifest else True
    integer = (manifest.get("labels") or {}).get("kind") == "int"
    labels = reader.labels_reader()
    label_iter = iter(labels) if labels is not None else None
    if labels is not None and len(labels) != len(reader):
        report.problems.append(f"{labels.path}: {len(labels)} label records for {len(reader)} records")
        label_iter = None
    first = None
    seen = set()
    for i, (raw_key, value) in enumerate(reader.raw_values(0, len(reader))):
        key = raw_key.decode(errors="replace")
        report.checked += 1
        if sums is not None and i < len(sums) and checksum(value) != sums[i]:
            report.problems.append(f"{key}: checksum mismatch: the record was changed after writing")
        try:
            datum = parse_datum(value)
            array = datum_array(datum, reader.gray)
        except Exception as exc:  # protobuf DecodeError, bad image bytes, bad dimensions
            report.problems.append(f"{key}: cannot decode: {exc}")
            continue
        if first is None:
            first = (array.shape, key)
        elif uniform and array.shape != first[0]:
            report.problems.append(
                f"{key}: {describe_shape(array.shape, 'CHW')}, but {first[1]} is "
                f"{describe_shape(first[0], 'CHW')}"
            )
        stored_labels = (
            next(label_iter).array.ravel() if label_iter is not None else np.array([datum.label], float)
        )
        _check_labels(key, stored_labels, integer, report)
        if expected is not None:
            _check_entry(key, i, stored_labels, expected, report, seen, "datum_key")
        if progress:
            progress(1)
    if expected is not None:
        _missing(expected, seen, report)


def _check_entry(key, i, labels, expected, report, seen, lined_up_by: str) -> None:
    """Line a record up with its list entry: Datum keys carry the entry's index; HDF5 keys
    are the paths, matched to the next unseen entry with that path (entries skipped by
    --skip-bad leave gaps, not a cascade of mismatches); rows of HDF5 files other tools
    wrote (no keys) line up by position."""
    if lined_up_by == "position":
        index, path = i, key
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
    if path != want_path:
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


def _check_hdf5(reader: Hdf5Reader, report: Report, expected, progress) -> None:
    seen: set[int] = set()
    checked_sums = (reader.manifest or {}).get("checksum") == CHECKSUM
    keyed = all("dataprep_keys" in f.attrs for f in reader.files)
    lined_up_by = "path" if keyed else "position"
    for f in reader.files:
        raw = f.attrs.get("dataprep")
        shard = json.loads(raw) if raw is not None else None
        if shard is not None and shard.get("shard_count") != len(f["data"]):
            report.problems.append(
                f"{f.filename}: {len(f['data'])} rows, its manifest says {shard.get('shard_count')}"
            )
    for i, rec in enumerate(reader):
        report.checked += 1
        file_index = int(np.searchsorted(reader.offsets, i, side="right") - 1)
        local = i - int(reader.offsets[file_index])
        sums = reader.files[file_index].attrs.get("dataprep_checksums") if checked_sums else None
        row_labels = np.asarray(rec.labels, np.float32)
        if (
            sums is not None
            and local < len(sums)
            and int(checksum(rec.array, row_labels.tobytes()), 16) != int(sums[local])
        ):
            report.problems.append(f"{rec.key}: checksum mismatch: the row was changed after writing")
        if not np.all(np.isfinite(rec.array)):
            report.problems.append(f"{rec.key}: data holds NaN or infinity")
        _check_labels(rec.key, rec.labels, False, report)
        if expected is not None:
            _check_entry(rec.key, i, rec.labels, expected, report, seen, lined_up_by)
        if progress:
            progress(1)
    if expected is not None:
        _missing(expected, seen, report)
