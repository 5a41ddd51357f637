"""What every command does around its core call: start the workers early, draw progress,
report skipped inputs, print results. Options live in ``options``; this is orchestration."""

from __future__ import annotations

import contextlib
import json
import logging
from typing import Callable, Iterator

import click

from .options import Settings


def echo_result(as_json: bool, summary: dict, lines: list[str]) -> None:
    """Results on stdout: the JSON summary, or one output per line."""
    if as_json:
        click.echo(json.dumps(summary, indent=2, default=str))
    else:
        for line in lines:
            click.echo(line)


def echo_file_job(as_json: bool, out: str, result, skipped: int, **counts: int) -> None:
    """The result of ``resize``/``augment``: the rewritten list (or OUT), or JSON with the
    command's ``counts``, what was already done and what was skipped."""
    summary = {
        "out": out,
        **counts,
        "already_done": result.kept,
        "skipped": skipped,
        "list": str(result.list_path) if result.list_path else None,
    }
    echo_result(as_json, summary, [str(result.list_path or out)])


def finish_file_job(update, result) -> None:
    """The closing count of ``resize``/``augment``: the images done now, and how many an
    earlier run had done (a resumed run)."""
    update.finish(result.done, f"{result.kept:,} done before" if result.kept else "")


def echo_written(as_json: bool, result) -> None:
    """The result of a store command: its outputs, or JSON with the counts."""
    outputs = [str(p) for p in result.outputs]
    echo_result(as_json, {"outputs": outputs, "written": result.written, "skipped": result.skipped}, outputs)


@contextlib.contextmanager
def progress(
    total: int | None, desc: str, unit: str = "img", closing: bool = True
) -> Iterator[Callable[[int], object]]:
    """A progress callback for the core (``update(n)``; ``update.set_total(n)`` when the core
    learns the total; ``update.finish(count)`` for the exact result), drawn as a tqdm bar
    on a terminal's stderr, with a closing summary line on stderr unless quiet (``-q``) or
    the command reports its own (``closing=False``: ``train`` keeps stderr to Caffe's lines)."""
    from ..progress import progress_bar

    with progress_bar(total, desc, unit, Settings.get().progress, closing) as bar:
        yield bar


def report_skipped(on_error) -> int:
    """Log the skips still waiting for their turn (list order), then the closing count of bad
    inputs that --skip-bad passed over; returns the count."""
    skipped = on_error.finish()
    if skipped:
        logging.getLogger("dataprep").warning("skipped %d bad input(s)", skipped)
    return skipped


def start_workers(workers: int | None) -> None:
    """Start the worker fork server first thing, so its imports overlap with the command's
    (not for --executor dask, whose workers are the cluster's)."""
    from ..parallel import EXECUTOR, warm_up

    if workers != 1 and EXECUTOR["kind"] == "local":
        warm_up()


def run_store(source, writer, workers: int | None, on_error, check_size: bool, desc: str):
    """Stream ``source`` into ``writer`` with a progress bar; the shared body of store commands."""
    from ..convert import write_store
    from ..parallel import make_executor

    try:
        executor = make_executor(workers, len(source))
    except BaseException:  # an unreachable scheduler, Ctrl-C while a cluster starts
        writer.abort()
        raise
    with progress(len(source), desc) as update:
        result = write_store(
            source, writer, executor, on_error=on_error, check_size=check_size, progress=update
        )
        update.finish(result.written)
    report_skipped(on_error)
    return result
