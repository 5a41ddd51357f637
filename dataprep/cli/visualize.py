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
@overwrite_opt
@max_pixels_opt
@common_options
def visualize_cmd(model, layer, image, out, overwrite):
    """Write a picture of LAYER of MODEL: its kernels normalized and tiled in a grid (the
    tutorial's vis_square figure; color for a first layer on color images), or with
    --image the layer's activation maps for that image, tiled the same way.

    \b
    dataprep visualize noise_regression_iter_2000.npz --layer conv1 -o kernels.png
    dataprep visualize deploy.prototxt --weights m.caffemodel --layer conv2 --image cat.jpg -o maps.png
    """
    from ..images import encode
    from ..staging import Staging
    from ..train.visualize import picture

    data = encode(picture(model, layer, image), "png")
    with Staging(overwrite=overwrite) as staging:
        staging.path(Path(out)).write_bytes(data)
    click.echo(out)
