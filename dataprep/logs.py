"""Training logs (Caffe's and dataprep's own) as tables, by the rules of Caffe's
``tools/extra/parse_log.py``, for either glog prefix: the classic ``I1130 21:11:32.158977``
(no year: taken from the file's time, as parse_log does, and carried into the next year
when the months wrap) and glog 0.6's ``I20261130 21:11:32.158977``.

A table row is one iteration's outputs: ``NumIters``, ``Seconds`` (from the log's
``Solving`` line), ``LearningRate``, then each output in first-seen order. A row is kept
once it has as many columns as the first (a line cut mid-write leaves the last one out).
"""

from __future__ import annotations

import csv
import datetime
import os
import re
from collections import OrderedDict
from pathlib import Path

ITERATION = re.compile(r"Iteration (\d+)")
TRAIN_OUTPUT = re.compile(r"Train net output #(\d+): (\S+) = ([\.\deE+-]+)")
TEST_OUTPUT = re.compile(r"Test net output #(\d+): (\S+) = ([\.\deE+-]+)")
LEARNING_RATE = re.compile(r"lr = ([-+]?[0-9]*\.?[0-9]+([eE]?[-+]?[0-9]+)?)")
# the forms of Caffe's logs before "Train/Test net output" (2014): read as parse_log.py of
# that time read them, test score #0 the accuracy and #1 the loss
OLD_TRAIN = re.compile(r"Iteration \d+, loss = ([\.\deE+-]+)")
OLD_TEST = re.compile(r"Test score #(\d+): ([\.\deE+-]+)")
OLD_NAMES = {"0": "accuracy", "1": "loss"}
PREFIX = re.compile(r"^[IWEF](\d{8}|\d{4}) (\d\d):(\d\d):(\d\d)\.(\d+) ")


def line_time(line: str, year: int) -> datetime.datetime | None:
    """The time a log line's prefix gives (the classic form in ``year``); None for a line
    without a prefix (a net definition's lines)."""
    match = PREFIX.match(line)
    if not match:
        return None
    date, hour, minute, second, micro = match.groups()
    if len(date) == 8:
        year, date = int(date[:4]), date[4:]
    try:
        return datetime.datetime(
            year, int(date[:2]), int(date[2:]), int(hour), int(minute), int(second), int(micro)
        )
    except ValueError:
        return None


def _found(regex: re.Pattern, line: str, old: bool) -> tuple[str, float] | None:
    """An output a line gives: (name, value), in the current form or the 2014 one."""
    match = regex.search(line)
    if not match:
        return None
    if not old:
        return match.group(2), float(match.group(3))
    if regex is OLD_TRAIN:
        return "loss", float(match.group(1))
    return OLD_NAMES.get(match.group(1), f"score{match.group(1)}"), float(match.group(2))


def _output(found, row, rows: list, iteration: float, seconds: float, rate: float):
    """parse_log.py's parse_line_for_net_output: start a row per iteration, push full ones."""
    if found:
        if not row or row["NumIters"] != iteration:
            if row:
                rows.append(row)
            row = OrderedDict([("NumIters", iteration), ("Seconds", seconds), ("LearningRate", rate)])
        row[found[0]] = found[1]
    if row and rows and len(row) == len(rows[0]):
        rows.append(row)
        row = None
    return row


def _complete_lines(f):
    """The lines of a log that end in a newline: one being written (a training in
    progress) is left for the next read, not taken cut."""
    for line in f:
        if line.endswith("\n"):
            yield line


def parse_log(path: str | Path) -> tuple[list[dict], list[dict]]:
    """The train and test tables of a log, as parse_log.py computes them."""
    path = Path(path)
    year = datetime.datetime.fromtimestamp(os.path.getctime(path)).year
    train: list = []
    test: list = []
    train_row = test_row = None
    iteration, rate = -1.0, float("nan")
    with open(path, errors="replace") as f:
        old = not any("net output #" in line for line in f)  # a log of 2014's forms
    patterns = (OLD_TRAIN, OLD_TEST) if old else (TRAIN_OUTPUT, TEST_OUTPUT)
    with open(path, errors="replace") as f:
        lines = _complete_lines(f)
        start = None
        for line in lines:  # the start: the 'Solving' line
            if "Solving" in line:
                start = line_time(line.strip(), year)
                break
        if start is None:
            return [], []
        last = start
        for line in lines:
            match = ITERATION.search(line)
            if match:
                iteration = float(match.group(1))
            if iteration == -1:
                continue
            time = line_time(line.strip(), year)
            if time is None:
                continue
            if time.month < last.month:  # the classic prefix has no year: a new one began
                year += 1
                time = line_time(line.strip(), year)
            last = time
            seconds = (time - start).total_seconds()
            found = LEARNING_RATE.search(line)
            if found:
                rate = float(found.group(1))
            train_row = _output(_found(patterns[0], line, old), train_row, train, iteration, seconds, rate)
            test_row = _output(_found(patterns[1], line, old), test_row, test, iteration, seconds, rate)
    for rows in (train, test):  # fix_initial_nan_learning_rate
        if len(rows) > 1:
            rows[0]["LearningRate"] = rows[1]["LearningRate"]
    return train, test


def write_tables(path: str | Path, folder: str | Path) -> list[Path]:
    """``LOG.train`` and ``LOG.test`` in ``folder`` as parse_log.py writes them (the csv
    module's excel dialect: CRLF line ends); a table with no rows is not written."""
    train, test = parse_log(path)
    written = []
    for suffix, rows in (("train", train), ("test", test)):
        if not rows:
            continue
        out = Path(folder) / f"{Path(path).name}.{suffix}"
        with open(out, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0].keys()), dialect=csv.excel)
            writer.writeheader()
            writer.writerows(rows)
        written.append(out)
    return written


def log_series(
    path: str | Path, label: str, x: str = "iters", names: list[str] | None = None, rate: bool = False
):
    """A log's tables as plotting series: each output (``names`` picks them, train and
    test apart) against iterations or seconds, and with ``rate`` the learning rate. A run
    restarted from a snapshot (the iterations go back) continues the same line as a new
    segment."""
    from .plotting import Series

    train, test = parse_log(path)
    column = "NumIters" if x == "iters" else "Seconds"
    out = []
    for phase, rows in (("train", train), ("test", test)):
        found = [k for k in (rows[0] if rows else {}) if k not in ("NumIters", "Seconds", "LearningRate")]
        for name in found:
            if names and name not in names and f"{phase} {name}" not in names:
                continue
            out.append(Series(f"{label}: {phase} {name}", name, phase, _segments(rows, column, name)))
    if rate and train:
        out.append(Series(f"{label}: learning rate", "lr", "train", _segments(train, column, "LearningRate")))
    return out


def _segments(rows: list[dict], column: str, name: str) -> tuple[tuple[float, float], ...]:
    """(x, y) points, a (nan, nan) break wherever the iterations go back (a resumed run)."""
    points: list[tuple[float, float]] = []
    previous = None
    for row in rows:
        if name not in row:
            continue
        if previous is not None and row["NumIters"] < previous:
            points.append((float("nan"), float("nan")))
        previous = row["NumIters"]
        points.append((float(row[column]), float(row[name])))
    return tuple(points)
