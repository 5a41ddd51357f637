"""``dataprep lmdb``: a list of images to Caffe Datum records in LMDB or LevelDB."""

from __future__ import annotations

import click

from .options import input_options
from .running import echo_written, run_store, start_workers


@click.command("lmdb")
@click.argument("list_file", metavar="LIST")
@click.argument("db", type=click.Path())
@click.option(
    "--backend",
    type=click.Choice(["lmdb", "leveldb"]),
    default="lmdb",
    show_default=True,
    help="LevelDB needs the leveldb extra (plyvel).",
)
@click.option(
    "--encoded",
    is_flag=True,
    help="Store compressed image bytes (encoded=true): the original file when its "
    "pixels are unchanged, re-encoded after a resize or channel change.",
)
@click.option(
    "--encode-type",
    type=click.Choice(["jpg", "png"]),
    default=None,
    help="Re-encode as this format with --encoded [default: pass files through].",
)
@click.option(
    "--labels-db",
    type=click.Path(),
    default=None,
    help="Companion store for float or multi-column labels (float_data, same keys).",
)
@input_options
def lmdb_cmd(list_file, db, backend, encoded, encode_type, labels_db, inputs, workers, overwrite, as_json):
    """Convert the images of LIST (- for stdin) to Datum records in DB, like convert_imageset.

    Keys are %08d_PATH in list order (after --shuffle); each Datum holds C x H x W pixels
    (1 channel for gray images, 3 BGR for color; --color always 3, as convert_imageset
    does; --gray always 1) and the integer label. The manifest goes to DB/dataprep.json,
    not into the database.

    \b
    dataprep lmdb train.txt train_lmdb --resize 256x256 --shuffle
    dataprep lmdb train.txt train_leveldb --backend leveldb --encoded
    dataprep lmdb train.txt train_lmdb --labels-db train_lmdb_labels   # float labels
    """
    start_workers(workers)
    from ..convert import image_list_of, store_meta
    from ..errors import OnError
    from ..stores import STORES
    from ..stores.datum import check_datum_labels

    if encode_type and not encoded:
        raise click.UsageError("--encode-type needs --encoded")
    on_error = OnError(inputs.skip_bad)
    source = inputs.source(list_file, on_error)
    listfile = image_list_of(source).listfile
    check_datum_labels(listfile.label_count, listfile.integer_labels, labels_db is not None, listfile.name)
    meta = store_meta(source, encoded=encoded, encode_type=encode_type, **inputs.manifest())
    writer = STORES[backend](
        db, overwrite=overwrite, labels_path=labels_db, encoded=encoded, encode_type=encode_type, meta=meta
    )
    echo_written(as_json, run_store(source, writer, workers, on_error, inputs.check_size, backend))


def caffe_order(params: dict, extra: list[str]) -> str | None:
    """convert_imageset's ROOTFOLDER LISTFILE DB, as dataprep writes it."""
    import os

    if len(extra) == 1 and os.path.isdir(str(params.get("list_file"))):
        return (
            f"dataprep lmdb {params['db']} {extra[0]} --root {params['list_file']} "
            "(convert_imageset's order is ROOTFOLDER LISTFILE DB)"
        )
    return None
