"""``dataprep hdf5``: a list of images to HDF5 files for Caffe's HDF5Data layer."""

from __future__ import annotations

from pathlib import Path

import click

from .options import input_options, store_options
from .running import echo_written, run_store, start_workers


@click.command("hdf5")
@click.argument("list_file", metavar="LIST")
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False),
    default=None,
    help="HDF5 file [default: LIST with .h5, beside it]; shards add _000, _001, ...",
)
@click.option(
    "--list-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="The HDF5Data source list [default: OUT's name + _h5.txt].",
)
@click.option("--no-labels", is_flag=True, help="Write data only, for a list without labels (e.g. test.txt).")
@store_options()
@input_options
def hdf5_cmd(list_file, out, list_out, no_labels, hdf5, inputs, workers, overwrite, as_json):
    """Convert the images of LIST (``path label...`` lines, - for stdin) to HDF5.

    Writes float32 ``data`` (N x C x H x W, (pixel - mean) * scale; C is 1 for gray images
    and 3 (BGR) for color unless --gray or --color) and the labels, then NAME_h5.txt naming
    the file(s) for the layer's ``source``. Streams in chunks: memory does not grow with
    the number of images.

    \b
    dataprep hdf5 train.txt --mean 128 --label-names freq
    dataprep hdf5 train.txt --resize 227x227 --mean-file mean.binaryproto --shard-size 1GB
    dataprep hdf5 test.txt --no-labels
    """
    start_workers(workers)
    from ..convert import image_list_of, store_meta
    from ..errors import DataprepError, OnError
    from ..stores.hdf5 import Hdf5Writer

    if out is None:
        if list_file == "-":
            raise click.UsageError("reading the list from stdin needs --out")
        out = Path(list_file).with_suffix(".h5")
    on_error = OnError(inputs.skip_bad)
    source = inputs.source(list_file, on_error)
    listfile = image_list_of(source).listfile
    if listfile.label_count == 0 and not no_labels:
        raise DataprepError(
            f"{listfile.name} has no labels (paths only), so the HDF5 file would "
            "hold no label dataset: pass --no-labels to write the data alone"
        )
    if listfile.label_count and no_labels:
        raise click.UsageError(
            f"--no-labels, but {listfile.name} has {listfile.label_count} label(s) per line"
        )
    meta = store_meta(source, **hdf5.manifest(), **inputs.manifest())
    writer = Hdf5Writer(
        out,
        list_path=list_out,
        overwrite=overwrite,
        expected=len(source),
        meta=meta,
        **hdf5.writer_options(["label"]),
    )
    echo_written(as_json, run_store(source, writer, workers, on_error, inputs.check_size, "hdf5"))
