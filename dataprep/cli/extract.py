"""``dataprep extract``: a layer's outputs as Datum features, like Caffe's extract_features."""

from __future__ import annotations

import click

from .options import common_options, engine_opt, json_opt, max_pixels_opt, model_options, overwrite_opt
from .running import echo_written, progress


@click.command("extract")
@model_options
@click.option("--layer", required=True, help="The layer whose outputs to store (fc4).")
@click.argument("source", metavar="INPUT", type=click.Path())
@click.argument("out", metavar="DB", type=click.Path())
@click.option("--backend", type=click.Choice(["lmdb", "leveldb"]), default="lmdb", show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@engine_opt
@overwrite_opt
@json_opt
@max_pixels_opt
@common_options
def extract_cmd(model, layer, source, out, backend, batch_size, engine, overwrite, as_json):
    """Run MODEL on INPUT (an image, a folder, a list, - or a store, as predict reads
    them) and write LAYER's output for each
    into DB: one Datum per input with the values in float_data (C x H x W; C x 1 x 1 for a
    fully connected layer), keyed like the input, with a manifest. `info`, `verify`, the
    stores' read API and Caffe's Data layer read it. The manifest records the engine.

    \b
    dataprep extract noise_regression_iter_2000.npz --layer fc4 test.txt fc4_lmdb
    """
    from ..convert import WriteResult
    from ..train.extract import extract_features
    from ..train.inference import open_inputs

    inputs = open_inputs(source, model, batch_size)
    with progress(inputs.count, "extract") as update:
        outputs = extract_features(model, inputs, source, layer, out, backend, overwrite, update, engine)
    echo_written(as_json, WriteResult(outputs=outputs, written=inputs.count, skipped=0))
