"""``dataprep visualize``: a layer's kernels, or its activation maps for one image, as a PNG."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, max_pixels_opt, model_options, overwrite_opt


@click.command("visualize")
@model_options
@click.option("--layer", required=True, help="The layer to show (conv1).")
@click.option(
    "--image",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Show the layer's activation maps for this image instead of its kernels.",
)
@click.option("-o", "--out", type=click.Path(dir_okay=False), required=True, help="PNG to write.")
@click.option(
    "--max",
    "most",
    type=click.IntRange(min=1),
    default=256,
    show_default=True,
    help="Draw at most this many tiles (the first ones).",
)
@click.option(
    "--channel",
    type=click.IntRange(min=0),
    default=None,
    help="One input channel of the kernels (a tile per output), or one activation map.",
)
@click.option(
    "--cols", type=click.IntRange(min=1), default=None, help="Columns of the grid [default: square]."
)
@overwrite_opt
@max_pixels_opt
@common_options
def visualize_cmd(model, layer, image, out, most, channel, cols, overwrite):
    """Write a picture of LAYER of MODEL: its kernels normalized and tiled in a grid (the
    tutorial's vis_square figure; color for a first layer on color images), or with
    --image the layer's activation maps for that image, tiled the same way. Each tile is
    enlarged to a readable size; at most --max tiles are drawn (--channel picks one input
    channel of a deep layer's kernels). A vector layer (fc6) is plotted instead: its values,
    then the histogram of the positive ones; `--layer prob` draws a classifier's class
    probabilities as bars (a snapshot's too, whose net ends at the scores).

    \b
    dataprep visualize noise_regression_iter_2000.npz --layer conv1 -o kernels.png
    dataprep visualize deploy.prototxt --weights m.caffemodel --layer conv2 --image cat.jpg -o maps.png
    """
    from ..images import encode
    from ..staging import Staging
    from ..train.visualize import Layout, picture

    data = encode(picture(model, layer, image, Layout(most, channel, cols)), "png")
    with Staging(overwrite=overwrite) as staging:
        staging.path(Path(out)).write_bytes(data)
    click.echo(out)
