"""convert.write_stores: one worker pool serving several stores, skips, and refusals."""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
import pytest

from dataprep.convert import write_stores
from dataprep.errors import DataprepError, ImageError, OnError
from dataprep.parallel import InlineExecutor, ProcessExecutor
from dataprep.records import Record
from dataprep.stores.base import StoreWriter


class Numbers:
    """Record i holds i; the records in ``bad`` do not load."""

    def __init__(self, n: int, bad: tuple[int, ...] = ()) -> None:
        self.n, self.bad = n, bad

    def __len__(self) -> int:
        return self.n

    def record(self, index: int) -> Record:
        if index in self.bad:
            raise ImageError(f"list:{index + 1}: broken", index + 1)
        return Record(f"k{index}", np.full((1, 1, 1), index, np.uint8), (index,), line=index + 1)


def double(record: Record) -> int:
    return int(record.image[0, 0, 0]) * 2


class Collect(StoreWriter):
    """Keeps what it is given; ``closed`` / ``aborted`` say how it ended."""

    def __init__(self, encoder: Callable[[Record], Any] = double) -> None:
        self.items: list[tuple[int, str, Any]] = []
        self._encoder = encoder
        self.closed = self.aborted = False

    def encoder(self):
        return self._encoder

    def put(self, index, key, payload):
        self.items.append((index, key, payload))

    def close(self):
        self.closed = True
        return []

    def abort(self):
        self.aborted = True


@pytest.mark.parametrize("executor", [InlineExecutor(), ProcessExecutor(2)])
def test_records_are_split_across_writers_in_order(executor):
    a, b = Collect(), Collect()
    results = write_stores(Numbers(10), [(a, 6), (b, 4)], executor)
    assert a.items == [(i, f"k{i}", 2 * i) for i in range(6)]
    assert b.items == [(i - 6, f"k{i}", 2 * i) for i in range(6, 10)]  # indices restart per writer
    assert [r.written for r in results] == [6, 4] and a.closed and b.closed


def test_bad_records_are_skipped_and_counted_per_writer():
    a, b = Collect(), Collect()
    on_error = OnError(skip=True)
    results = write_stores(Numbers(6, bad=(1, 4)), [(a, 3), (b, 3)], InlineExecutor(), on_error)
    assert [key for _, key, _ in a.items] == ["k0", "k2"] and [key for _, key, _ in b.items] == ["k3", "k5"]
    assert [(r.written, r.skipped) for r in results] == [(2, 1), (2, 1)]


def test_a_bad_record_aborts_every_writer():
    a, b = Collect(), Collect()
    with pytest.raises(ImageError, match="list:5: broken"):
        write_stores(Numbers(6, bad=(4,)), [(a, 3), (b, 3)], InlineExecutor())
    assert a.aborted and b.aborted and not a.closed


def test_writers_must_share_an_encoder_and_cover_the_source():
    with pytest.raises(ValueError, match="identical encoders"):
        write_stores(Numbers(4), [(Collect(), 2), (Collect(str), 2)], InlineExecutor())
    with pytest.raises(ValueError, match="cover 3 records"):
        write_stores(Numbers(4), [(Collect(), 3)], InlineExecutor())


def test_a_part_with_every_record_skipped_is_a_data_error():
    with pytest.raises(DataprepError, match="every input was skipped"):
        write_stores(Numbers(2, bad=(0, 1)), [(Collect(), 2)], InlineExecutor(), OnError(skip=True))
