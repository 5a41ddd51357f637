"""WebDataset shards: POSIX tar files ``OUT-000000.tar``, ... of at most ``shard_rows``
records or ``shard_bytes`` bytes, written with the standard ``tarfile`` module.

Each sample is ``KEY.png`` or ``KEY.jpg`` (the original file's bytes when its pixels are
unchanged, as ``lmdb --encoded``) and ``KEY.cls`` (one integer label) or ``KEY.json``
(float or several labels, and the source path). KEY is the record index ``%08d``:
WebDataset splits a member name at its first dot, so list paths cannot be keys. The
manifest ``OUT.manifest.json`` beside the shards holds the count, checksums, shard names
and every member's offset, so record i is read without scanning a tar.
"""

from __future__ import annotations

import io
import json
import re
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, NamedTuple

import numpy as np

from ..errors import RecordError, StoreError
from ..images import decode, encode, file_format
from ..records import Record
from ..staging import Staging, refuse_existing, remove
from .base import (
    RecordCheck,
    StoredRecord,
    StoreReader,
    StoreWriter,
    build_manifest,
    checksum,
    dump_manifest,
    shards_of,
    write_error,
)

if TYPE_CHECKING:
    import tarfile

MANIFEST_SUFFIX = ".manifest.json"


def shard_name(out: Path, index: int) -> Path:
    return out.with_name(f"{out.name}-{index:06d}.tar")


def manifest_path(out: Path) -> Path:
    return out.with_name(out.name + MANIFEST_SUFFIX)


def prefix_of(path: str | Path) -> Path | None:
    """The ``OUT`` prefix of a path naming WebDataset shards (the prefix, its manifest or a
    shard), or None."""
    path = Path(path)
    if path.name.endswith(MANIFEST_SUFFIX):
        return path.with_name(path.name[: -len(MANIFEST_SUFFIX)])
    if manifest_path(path).is_file():
        return path
    return None


class WdsPayload(NamedTuple):
    image: bytes
    ext: str
    label: bytes
    label_ext: str
    shape: tuple[int, int, int]
    checksum: str


class WdsEncoder:
    """Record -> the sample's member bytes; runs in workers."""

    def __eq__(self, other: object) -> bool:
        return isinstance(other, WdsEncoder)

    def __hash__(self) -> int:
        return hash(WdsEncoder)

    def __call__(self, record: Record) -> WdsPayload:
        if record.data is not None:
            ext, image = file_format(record.data), record.data
        else:
            ext, image = "png", encode(record.image, "png")
        labels = record.labels
        if len(labels) == 1 and isinstance(labels[0], int):
            label, label_ext = str(labels[0]).encode(), "cls"
        else:
            label, label_ext = json.dumps({"labels": list(labels), "path": record.key}).encode(), "json"
        h, w, c = record.image.shape
        return WdsPayload(image, ext, label, label_ext, (c, h, w), checksum(image, label))


class WdsWriter(StoreWriter):
    """Writes shards ``OUT-%06d.tar`` and ``OUT.manifest.json``, all staged until closed."""

    def __init__(
        self,
        path: str | Path,
        *,
        overwrite: bool = False,
        shard_rows: int | None = 10000,
        shard_bytes: int | None = None,
        meta: dict | None = None,
    ) -> None:
        self.path = Path(path)
        self.meta = dict(meta or {})
        self.shard_rows, self.shard_bytes = shard_rows, shard_bytes
        self._old = shards_of(self.path, re.escape(self.path.name) + r"-\d{6}\.tar")
        if self._old:  # an earlier set: replaced as a whole, or refused
            refuse_existing(self._old[0], overwrite)
        self._staging = Staging(overwrite)
        self._manifest_tmp = self._staging.path(manifest_path(self.path))
        self._tar: tarfile.TarFile | None = None
        self._shards: list[str] = []
        self._records: list[list] = []  # [shard, image offset, size, ext, label offset, size, ext]
        self._checksums: list[str] = []
        self._shapes: set[tuple[int, int, int]] = set()
        self._rows = 0

    def encoder(self) -> Callable[[Record], WdsPayload]:
        return WdsEncoder()

    def _next_shard(self) -> None:
        if self._tar is not None:
            self._tar.close()
        import tarfile  # 8 ms of imports: loaded by writers only, not when a path is looked at

        name = shard_name(self.path, len(self._shards))
        self._tar = tarfile.open(self._staging.path(name), "w", format=tarfile.USTAR_FORMAT)
        self._shards.append(name.name)
        self._rows = 0

    def _add(self, name: str, data: bytes) -> int:
        """Add one member; returns where its data starts in the shard."""
        import tarfile

        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(data), 0o644, 0  # mtime 0: identical runs, identical bytes
        self._tar.addfile(info, io.BytesIO(data))
        return self._tar.offset - -(-len(data) // 512) * 512

    def put(self, index: int, key: str, payload: WdsPayload) -> None:
        try:
            self._put(index, key, payload)
        except OSError as exc:  # a full disk
            raise write_error(self.path, exc, len(self._checksums)) from None

    def _put(self, index: int, key: str, payload: WdsPayload) -> None:
        full = self._tar is None or (self.shard_rows and self._rows >= self.shard_rows)
        if (
            not full
            and self.shard_bytes
            and self._tar.offset + len(payload.image) > self.shard_bytes
            and self._rows
        ):
            full = True
        if full:
            self._next_shard()
        name = f"{index:08d}"
        image_at = self._add(f"{name}.{payload.ext}", payload.image)
        label_at = self._add(f"{name}.{payload.label_ext}", payload.label)
        self._records.append(
            [
                len(self._shards) - 1,
                image_at,
                len(payload.image),
                payload.ext,
                label_at,
                len(payload.label),
                payload.label_ext,
                key,
            ]
        )
        self._checksums.append(payload.checksum)
        self._shapes.add(payload.shape)
        self._rows += 1

    def close(self) -> list[Path]:
        if self._tar is None:
            self._next_shard()
        self._tar.close()
        shape = list(next(iter(self._shapes))) if len(self._shapes) == 1 else None
        manifest = build_manifest(
            "wds",
            len(self._records),
            shape,
            "uint8",
            self.meta,
            encoded=True,
            shards=self._shards,
            records=self._records,
            checksums=self._checksums,
        )
        self._manifest_tmp.write_text(dump_manifest(manifest))
        self._staging.commit()
        outputs = [manifest_path(self.path), *(self.path.with_name(s) for s in self._shards)]
        for stale in self._old:  # the earlier set's shards past the new set's last
            if stale not in outputs:
                remove(stale)
        return outputs

    def abort(self) -> None:
        if self._tar is not None:
            try:
                self._tar.close()
            except Exception:  # the staged files are removed below whatever state they are in
                pass
        self._staging.abort()


class WdsReader(StoreReader):
    """Record i by its offsets in the manifest: one read per member, no scanning."""

    kind = "wds"
    lined_up_by = "position"

    def __init__(self, path: str | Path) -> None:
        prefix = prefix_of(path)
        if prefix is None:
            raise StoreError(f"{path}: no WebDataset manifest ({Path(path).name}{MANIFEST_SUFFIX})")
        self.path = prefix
        try:
            self.manifest = json.loads(manifest_path(prefix).read_text())
        except (OSError, ValueError) as exc:
            raise StoreError(f"{manifest_path(prefix)}: unreadable manifest: {exc}") from None
        self._records = self.manifest["records"]
        self.gray = bool((self.manifest.get("preprocessing") or {}).get("gray"))

    def _shard(self, index: int):
        return self._handle(
            f"shard{index}", lambda: open(self.path.with_name(self.manifest["shards"][index]), "rb")
        )

    def _member(self, shard: int, offset: int, size: int) -> bytes:
        f = self._shard(shard)
        f.seek(offset)
        data = f.read(size)
        if len(data) != size:
            raise StoreError(f"{self.manifest['shards'][shard]}: truncated at byte {offset}")
        return data

    def __len__(self) -> int:
        return len(self._records)

    def keys(self) -> list[str]:
        return [f"{i:08d}" for i in range(len(self._records))]

    def encoded(self) -> bool:
        return True

    def _raw(self, i: int) -> tuple[bytes, bytes, str]:
        shard, image_at, image_size, _, label_at, label_size, label_ext, _ = self._records[i]
        return self._member(shard, image_at, image_size), self._member(shard, label_at, label_size), label_ext

    def _labels(self, label: bytes, ext: str) -> np.ndarray:
        if ext == "cls":
            return np.array([int(label)], np.float64)
        return np.asarray(json.loads(label)["labels"], np.float64)

    def iter_range(self, start: int, stop: int, check: bool = True) -> Iterator[StoredRecord]:
        sums = (self.manifest.get("checksums") or []) if check else []
        for i in range(start, min(stop, len(self))):
            try:
                image, label, ext = self._raw(i)
                if i < len(sums) and checksum(image, label) != sums[i]:
                    raise StoreError("checksum mismatch")  # named with the record below
                array = decode(image, "gray" if self.gray else "color").transpose(2, 0, 1)
                labels = self._labels(label, ext)
            except (StoreError, ValueError, KeyError, TypeError) as exc:  # a damaged member or manifest
                raise RecordError(f"{self.path}: record {i:08d}: {exc}") from None
            yield StoredRecord(f"{i:08d}", array, labels, image)

    def all_labels(self) -> np.ndarray:
        rows = [self._labels(self._member(r[0], r[4], r[5]), r[6]) for r in self._records]
        return np.stack(rows) if rows else np.empty((0, 0))

    def checked_records(self) -> Iterator[RecordCheck]:
        sums = self.manifest.get("checksums") or []
        for i in range(len(self)):
            key = f"{i:08d}"
            try:
                image, label, ext = self._raw(i)
                array = decode(image, "gray" if self.gray else "color").transpose(2, 0, 1)
            except (StoreError, ValueError) as exc:
                yield RecordCheck(key, None, None, str(exc))
                continue
            ok = checksum(image, label) == sums[i] if i < len(sums) else None
            yield RecordCheck(key, array, self._labels(label, ext), None, ok)

    def files_on_disk(self) -> list[Path]:
        return [manifest_path(self.path), *(self.path.with_name(s) for s in self.manifest["shards"])]

    def close(self) -> None:
        for handle in self._own_handles().values():
            handle.close()
        self.__dict__.pop("_handles", None)
