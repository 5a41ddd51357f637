"""``dataprep plot``: training curves from Caffe's logs and dataprep's, and parse_log's tables."""

from __future__ import annotations

import click

from .options import common_options, json_opt, overwrite_opt
from .running import echo_result


@click.command("plot")
@click.argument("logs", nargs=-1, required=True, type=click.Path(dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="curves.png", show_default=True)
@click.option(
    "--label", "labels", multiple=True, help="A name for each log, in order [default: its file name]."
)
@click.option("--x", "x", type=click.Choice(["iters", "seconds"]), default="iters", show_default=True)
@click.option(
    "--y",
    "names",
    multiple=True,
    metavar="NAME",
    help="An output to draw (loss, accuracy, 'test loss'); repeatable.",
)
@click.option("--lr", is_flag=True, help="Add the learning rate, on its own panel.")
@click.option(
    "--csv",
    "csv_dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Also write parse_log.py's tables, LOG.train and LOG.test, into this folder.",
)
@click.option(
    "--watch",
    type=float,
    default=None,
    metavar="SECONDS",
    help="Redraw every SECONDS while the logs grow (a training in progress), until Ctrl-C; "
    "waits for logs that do not exist yet and for their first outputs.",
)
@overwrite_opt
@json_opt
@common_options
def plot_cmd(logs, out, labels, x, names, lr, csv_dir, watch, overwrite, as_json):
    """Draw the training curves of LOGS (Caffe's, with either glog prefix, or dataprep
    train's) into one picture, one panel per kind of quantity (losses, errors, accuracy,
    learning rate), each log's lines named by its file or --label. A run resumed from a
    snapshot in the same log continues its line as a new segment. Panels whose values
    span decades get a log scale.

    \b
    dataprep plot caffe.log -o curves.png --lr
    dataprep plot run1.log run2.log --label baseline --label wider --y 'test accuracy'
    dataprep plot caffe.log --csv tables/        # caffe.log.train, caffe.log.test
    dataprep train recipe.yaml 2> train.log & dataprep plot train.log --watch 5
    """
    import logging
    import time
    from pathlib import Path

    from ..logs import log_series, write_tables
    from ..plotting import plot_panels
    from ..staging import Staging, add_inputs

    missing = [log for log in logs if not Path(log).is_file()]
    if missing and watch is None:
        raise click.UsageError(f"{missing[0]}: no such log (--watch waits for one)")
    add_inputs(*logs)  # -o over a log it reads is refused, --overwrite or not

    if labels and len(labels) != len(logs):
        raise click.UsageError(f"{len(labels)} --label for {len(logs)} logs: give one per log, or none")
    names = list(names)
    title = Path(logs[0]).name if len(logs) == 1 else f"{len(logs)} runs"
    xlabel = "iteration" if x == "iters" else "seconds"

    def collect() -> list:
        series = []
        for k, log in enumerate(logs):
            if Path(log).is_file():
                series += log_series(log, labels[k] if labels else Path(log).name, x, names, lr)
        return series

    def draw(series: list, replace: bool) -> None:
        with Staging(overwrite=replace) as staging:
            plot_panels(series, staging.path(Path(out)), title, xlabel)

    series = collect()
    if not series and watch is not None:  # a training started just now: wait for its first lines
        logging.getLogger("dataprep").info("waiting for %s to show training outputs", ", ".join(logs))
        while not series:
            time.sleep(watch)
            series = collect()
    if not series:
        raise click.ClickException(f"{', '.join(logs)}: no training outputs found (no 'Solving' line yet?)")
    tables = []
    if csv_dir:
        Path(csv_dir).mkdir(parents=True, exist_ok=True)
        for log in logs:
            tables += write_tables(log, csv_dir)
    draw(series, overwrite)
    echo_result(as_json, {"outputs": [str(out), *map(str, tables)]}, [*map(str, tables), str(out)])
    if watch is not None:
        _watch(logs, watch, lambda: draw(collect(), True))


def _watch(logs, seconds: float, redraw) -> None:
    """Redraw whenever a log changed, checking every ``seconds``; Ctrl-C ends it (130)."""
    import os
    import time

    def stamp():
        return [
            (os.stat(log).st_size, os.stat(log).st_mtime_ns) if os.path.exists(log) else None for log in logs
        ]

    seen = stamp()
    while True:
        time.sleep(seconds)
        now = stamp()
        if now != seen:
            seen = now
            redraw()
