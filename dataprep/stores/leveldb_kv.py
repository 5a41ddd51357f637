"""LevelDB key-value access for Datum stores (plyvel, an optional dependency)."""

from __future__ import annotations

import itertools
from pathlib import Path
from typing import Iterator

from ..errors import MissingPackage, StoreError


def _plyvel():
    try:
        import plyvel
    except ImportError:
        raise MissingPackage(
            "LevelDB support", "leveldb", "plyvel (wheels exist for Python <= 3.12)"
        ) from None
    return plyvel


class LevelDbWriteKV:
    """A new LevelDB at ``path`` with Caffe's settings: 64 KiB blocks, 256 MiB write buffer."""

    def __init__(self, path: Path) -> None:
        self.db = _plyvel().DB(
            str(path),
            create_if_missing=True,
            error_if_exists=True,
            block_size=64 << 10,
            write_buffer_size=256 << 20,
        )

    def write_batch(self, items: list[tuple[bytes, bytes]]) -> None:
        with self.db.write_batch() as batch:
            for key, value in items:
                batch.put(key, value)

    def close(self) -> None:
        self.db.close()


class LevelDbReadKV:
    """Read access to a LevelDB directory."""

    def __init__(self, path: Path) -> None:
        plyvel = _plyvel()
        try:
            self.db = plyvel.DB(str(path), create_if_missing=False)
        except plyvel.Error as exc:
            raise StoreError(f"{path}: cannot open LevelDB: {exc}") from None
        self._count: int | None = None

    def __len__(self) -> int:
        if self._count is None:
            self._count = sum(1 for _ in self.db.iterator(include_value=False))
        return self._count

    def keys(self) -> list[bytes]:
        return list(self.db.iterator(include_value=False))

    def items_from(self, key: bytes, count: int) -> Iterator[tuple[bytes, bytes]]:
        yield from itertools.islice(self.db.iterator(start=key), count)

    def values_of(self, keys: list[bytes]) -> Iterator[bytes]:
        for key in keys:
            value = self.db.get(key)
            if value is None:
                raise StoreError(f"key {key!r} not found")
            yield value

    def close(self) -> None:
        self.db.close()
