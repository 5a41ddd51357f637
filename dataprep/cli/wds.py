"""``dataprep wds``: a list of images to WebDataset tar shards with an index manifest."""

from __future__ import annotations

import click

from .options import input_options
from .running import echo_written, run_store, start_workers


@click.command("wds")
@click.argument("list_file", metavar="LIST")
@click.argument("out", type=click.Path())
@click.option(
    "--shard-size",
    default="10000",
    show_default=True,
    metavar="N|SIZE",
    help="Records per shard (10000) or a shard size (1GB).",
)
@input_options
def wds_cmd(list_file, out, shard_size, inputs, workers, overwrite, as_json):
    """Write the images of LIST as WebDataset shards OUT-000000.tar, ...: per record
    KEY.jpg or KEY.png (the file's own bytes when its pixels are unchanged) and KEY.cls
    (an integer label) or KEY.json (float or several labels, and the path), KEY being the
    record index %08d. OUT.manifest.json indexes every member, so `open_store(OUT)`,
    `mean`, `info`, `verify` and `train` read records without scanning; the `webdataset`
    library and `tar` read the shards as they are.

    \b
    dataprep wds train.txt shards/train --shard-size 1GB
    """
    start_workers(workers)
    from ..convert import store_meta
    from ..errors import OnError
    from ..stores.hdf5 import parse_shard_size
    from ..stores.wds import WdsWriter

    rows, size = parse_shard_size(shard_size)
    on_error = OnError(inputs.skip_bad)
    source = inputs.source(list_file, on_error)
    meta = store_meta(source, encoded=True, **inputs.manifest())
    writer = WdsWriter(out, overwrite=overwrite, shard_rows=rows, shard_bytes=size, meta=meta)
    echo_written(as_json, run_store(source, writer, workers, on_error, inputs.check_size, "wds"))
