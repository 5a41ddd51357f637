"""``dataprep hdf5``: a list of images to HDF5 files for Caffe's HDF5Data layer."""

from __future__ import annotations

from pathlib import Path

import click

from .options import input_options, store_options
from .running import echo_written, run_store, start_workers


@click.command("hdf5")
@click.argument("list_file", metavar="[LIST]", required=False)
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
    """Convert the images of LIST (``path label...`` lines, - for list lines on stdin) to HDF5.

    Writes float32 ``data`` (N x C x H x W, (pixel - mean) * scale; C is 1 for gray images
    and 3 (BGR) for color unless --gray or --color) and the labels, then NAME_h5.txt naming
    the file(s) for the layer's ``source``. Streams in chunks: memory does not grow with
    the number of images.

    \b
    dataprep hdf5 train.txt --mean 128 --label-names freq
    dataprep hdf5 train.txt --resize 227x227 --mean-file mean.binaryproto --shard-size 1GB
    dataprep hdf5 test.txt --no-labels
    dataprep noise --n 70000 | dataprep hdf5 --mean 128 --label-names freq

    Without LIST, the paths piped on stdin (as `noise` and `list` print them) name the
    lists: each list of images is converted with the same options, one output per list
    named after it (a list without labels gives a store without labels); other files, and
    a list of the same images as an unlabelled one (test_labels.txt: its ground truth),
    are passed over with a line each.
    """
    start_workers(workers)
    if list_file is not None:
        _convert(list_file, out, list_out, no_labels, hdf5, inputs, workers, overwrite, as_json)
        return
    from ..piped import image_lists, piped_lines

    lines = piped_lines()
    if lines is None:
        raise click.UsageError("give LIST, or pipe the paths of lists: dataprep noise | dataprep hdf5")
    lists = image_lists(lines)
    if not lists:
        raise click.UsageError("no list of images among the paths on standard input")
    if len(lists) > 1 and (out or list_out):
        raise click.UsageError(f"-o/--list-out name one output; stdin named {len(lists)} lists")
    for path in lists:
        _convert(path, out, list_out, no_labels or None, hdf5, inputs, workers, overwrite, as_json)


def _convert(list_file, out, list_out, no_labels, hdf5, inputs, workers, overwrite, as_json) -> None:
    """One LIST to HDF5; ``no_labels`` None: as the list has labels or not."""
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
    if no_labels is None:
        no_labels = listfile.label_count == 0
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
