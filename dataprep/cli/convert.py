"""``dataprep convert``: any store into another kind, records and order kept."""

from __future__ import annotations

import click

from .options import common_options, json_opt, max_pixels_opt, overwrite_opt, skip_bad_opt, workers_opt
from .running import echo_written, progress, report_skipped, start_workers


@click.command("convert")
@click.argument("store", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--to", "kind", type=click.Choice(["hdf5", "lmdb", "leveldb", "wds"]), required=True)
@click.option(
    "--decode", is_flag=True, help="Write decoded pixels even where the target could keep encoded records."
)
@skip_bad_opt
@workers_opt
@overwrite_opt
@json_opt
@max_pixels_opt
@common_options
def convert_cmd(store, out, kind, decode, skip_bad, workers, overwrite, as_json):
    """Copy every record of STORE (any store dataprep reads, Caffe's own LMDB and LevelDB
    included) into a new store OUT of another kind, in order, keys kept, with a new
    manifest: the way to move a dataset between Caffe and other tools. Float labels going
    into LMDB/LevelDB get an OUT_labels companion store. uint8 pixels stay uint8 (HDF5
    too: Caffe's HDF5Data reads integer data), so LMDB -> HDF5 -> LMDB gives the same
    Datums; encoded records (JPEG/PNG bytes) stay encoded in LMDB, LevelDB and WebDataset
    unless --decode. A record that does not match its manifest's checksum (bit rot) stops
    the copy, or with --skip-bad is left out and counted.

    \b
    dataprep convert caffe_train_lmdb train.h5 --to hdf5
    dataprep convert train_leveldb train_lmdb --to lmdb
    """
    start_workers(workers)
    from ..convert import convert_store
    from ..errors import OnError

    on_error = OnError(skip_bad)
    with progress(None, "convert") as update:
        result = convert_store(store, out, kind, workers, overwrite, update, on_error, decode)
        update.finish(result.written)
    report_skipped(on_error)
    echo_written(as_json, result)
