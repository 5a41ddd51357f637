"""``dataprep example``: small made-up datasets in the formats users hold, for the tour."""

from __future__ import annotations

import click

from .options import common_options, json_opt, overwrite_opt
from .running import echo_result


@click.command("example")
@click.argument("kind", type=click.Choice(["mnist", "cifar10", "photos"]))
@click.argument("out", type=click.Path(), default=".")
@click.option("--n", type=click.IntRange(1), default=200, show_default=True, help="Training images.")
@click.option("--seed", type=int, default=0, show_default=True)
@overwrite_opt
@json_opt
@common_options
def example_cmd(kind, out, n, seed, overwrite, as_json):
    """Write a small made-up dataset into OUT in the format users hold, to try the
    commands without a download: mnist (the four gzipped IDX files: N training and N/5
    test digits), cifar10 (cifar-10-binary.tar.gz as the official archive is laid out:
    five training batches and a test batch), or photos (N color JPEGs of 96 to 160
    pixels in one subfolder per class; OUT is that folder). The classes look different,
    so a net learns them.

    \b
    dataprep example mnist mnist && dataprep import mnist mnist .
    dataprep example cifar10 . && dataprep import cifar10 cifar-10-binary.tar.gz .
    dataprep example photos photos && dataprep list photos --split 0.8,0.1,0.1 -o lists/all.txt
    """
    from pathlib import Path

    from ..examples import EXAMPLES

    written = EXAMPLES[kind](Path(out), n, seed, overwrite)
    echo_result(as_json, {"kind": kind, "outputs": [str(p) for p in written]}, [str(p) for p in written])
