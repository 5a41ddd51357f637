"""``dataprep hdf5``: a list of images to HDF5 files for Caffe's HDF5Data layer."""

from __future__ import annotations

from pathlib import Path

import click

from .options import echo_result, input_options, run_store, start_workers, store_options


@click.command("hdf5")
@click.argument("list_file", metavar="LIST")
@click.option("-o", "--out", type=click.Path(dir_okay=False), default=None,
              help="HDF5 file [default: LIST with .h5, beside it]; shards add _000, _001, ...")
@click.option("--list-out", type=click.Path(dir_okay=False), default=None,
              help="The HDF5Data source list [default: OUT's name + _h5.txt].")
@store_options()
@input_options
def hdf5_cmd(list_file, out, list_out, label_names, mean, mean_file, scale, shard_size, compression,
             relative, root, gray, resize, check_size, shuffle, skip_bad, workers, seed, overwrite,
             as_json):
    """Convert the images of LIST (``path label...`` lines, - for stdin) to HDF5.

    Writes float32 ``data`` (N x C x H x W, BGR, (pixel - mean) * scale) and the labels,
    then NAME_h5.txt naming the file(s) for the layer's ``source``. Streams in chunks:
    memory does not grow with the number of images.

    \b
    dataprep hdf5 train.txt --mean 128 --label-names freq
    dataprep hdf5 train.txt --resize 227x227 --mean-file mean.binaryproto --shard-size 1GB
    """
    start_workers(workers)
    from ..convert import list_source, store_meta
    from ..handlers import OnError
    from ..mean import resolve_mean
    from ..stores.hdf5 import COMPRESSIONS, Hdf5Writer, parse_shard_size

    if out is None:
        if list_file == "-":
            raise click.UsageError("reading the list from stdin needs --out")
        out = Path(list_file).with_suffix(".h5")
    names = [n.strip() for n in label_names.split(",") if n.strip()]
    rows, nbytes = parse_shard_size(shard_size) if shard_size else (None, None)
    mean_values = resolve_mean(mean, mean_file)
    on_error = OnError(skip_bad)
    source = list_source(list_file, root, gray, resize, shuffle, seed, on_error)
    meta = store_meta(source, gray, resize, mean=mean if mean else mean_file, scale=scale,
                      shuffle=shuffle, seed=seed if shuffle else None)
    writer = Hdf5Writer(out, list_path=list_out, overwrite=overwrite, label_names=names,
                        shard_rows=rows, shard_bytes=nbytes, compression=COMPRESSIONS[compression],
                        relative=relative, mean=mean_values, scale=scale, expected=len(source),
                        meta=meta)
    result = run_store(source, writer, workers, on_error, check_size, "hdf5")
    summary = {"outputs": [str(p) for p in result.outputs], "written": result.written,
               "skipped": result.skipped}
    echo_result(as_json, summary, [str(p) for p in result.outputs])
