"""Train/val/test splits: parse ``--split`` (counts or ratios) and draw a seeded assignment,
plain (``assign``) or stratified by class (``stratified_split``)."""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np

from .errors import UsageError

SPLIT_NAMES = ("train", "val", "test")
_SPLIT_STREAM = 0x5B17  # keeps the split's random stream apart from per-sample streams


def parse_split(text: str) -> list[float] | list[int]:
    """``"50000,10000,10000"`` (counts) or ``"0.8,0.1,0.1"`` (ratios), one to three parts."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not 1 <= len(parts) <= len(SPLIT_NAMES):
        raise UsageError(f"--split {text!r}: give 1 to 3 comma-separated parts (train,val,test)")
    try:
        if all(p.isdigit() for p in parts):
            return [int(p) for p in parts]
        ratios = [float(p) for p in parts]
    except ValueError:
        raise UsageError(f"--split {text!r}: parts must be counts or ratios") from None
    if any(r < 0 or not math.isfinite(r) for r in ratios):
        raise UsageError(f"--split {text!r}: ratios must be non-negative")
    if abs(sum(ratios) - 1.0) > 1e-6:
        raise UsageError(f"--split {text!r}: ratios add up to {sum(ratios):g}, not 1")
    return ratios


def split_counts(spec: Sequence[float] | Sequence[int], n: int) -> list[int]:
    """Counts for train, val, test (always three) that add up to ``n``."""
    if all(isinstance(v, int) for v in spec):
        counts = list(spec)
        if sum(counts) != n:
            raise UsageError(f"--split counts add up to {sum(counts)}, not {n}")
    else:
        exact = [r * n for r in spec]
        counts = [math.floor(x) for x in exact]
        # largest remainder: hand the leftover items to the parts that lost the most
        order = sorted(range(len(exact)), key=lambda i: counts[i] - exact[i])
        for i in order[: n - sum(counts)]:
            counts[i] += 1
    return counts + [0] * (len(SPLIT_NAMES) - len(counts))


def default_split(n: int) -> list[int]:
    """The tutorial's 5/7, 1/7, 1/7 split of ``n``."""
    return split_counts([5 / 7, 1 / 7, 1 / 7], n)


def assign(n: int, counts: Sequence[int], seed: int) -> list[np.ndarray]:
    """A seeded shuffle of ``0..n-1`` cut into consecutive parts of ``counts``."""
    perm = np.random.default_rng([seed, _SPLIT_STREAM]).permutation(n)
    bounds = np.cumsum([0, *counts])
    return [perm[bounds[i] : bounds[i + 1]] for i in range(len(counts))]


def stratified_split(
    labels: Sequence[int], ratios: Sequence[float] | Sequence[int], seed: int
) -> list[list[int]]:
    """Indices per split: each class is shuffled and cut by ``ratios``; each split then shuffled."""
    rng = np.random.default_rng(seed)
    labels = np.asarray(labels)
    parts: list[list[int]] = [[] for _ in SPLIT_NAMES]
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        counts = split_counts(ratios, len(members))
        bounds = np.cumsum([0, *counts])
        for i in range(len(SPLIT_NAMES)):
            parts[i].extend(members[bounds[i] : bounds[i + 1]].tolist())
    return [rng.permutation(p).tolist() for p in parts]
