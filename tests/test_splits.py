"""--split parsing and the seeded train/val/test assignment."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from dataprep.errors import DataprepError
from dataprep.splits import assign, default_split, parse_split, split_counts


def test_counts_and_ratios():
    assert split_counts(parse_split("50000,10000,10000"), 70000) == [50000, 10000, 10000]
    assert split_counts(parse_split("0.8,0.1,0.1"), 10) == [8, 1, 1]
    assert split_counts(parse_split("0.5,0.5"), 7) in ([4, 3, 0], [3, 4, 0])
    assert default_split(70000) == [50000, 10000, 10000]


@pytest.mark.parametrize("text", ["1,2,3,4", "a,b", "0.5,0.6", "-0.5,1.5", ""])
def test_bad_splits(text):
    with pytest.raises(DataprepError):
        parse_split(text)


def test_counts_must_add_up():
    with pytest.raises(DataprepError, match="add up to 60, not 70"):
        split_counts(parse_split("50,5,5"), 70)


@given(st.integers(1, 5000), st.floats(0, 1), st.floats(0, 1))
def test_ratio_counts_always_sum_to_n(n, a, b):
    a, b = sorted((a, b))
    counts = split_counts([a, b - a, 1 - b], n)
    assert sum(counts) == n and min(counts) >= 0


def test_assignment_is_a_seeded_partition():
    parts = assign(100, [70, 20, 10], seed=3)
    assert sorted(np.concatenate(parts).tolist()) == list(range(100))
    assert [len(p) for p in parts] == [70, 20, 10]
    again = assign(100, [70, 20, 10], seed=3)
    assert all((p == q).all() for p, q in zip(parts, again))
    assert not (assign(100, [70, 20, 10], seed=4)[0] == parts[0]).all()
