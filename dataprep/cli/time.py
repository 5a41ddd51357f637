"""``dataprep time``: Caffe's ``caffe time`` for a model, layer by layer."""

from __future__ import annotations

import click

from .options import common_options, json_opt, max_memory_opt, shape_opt
from .running import echo_result


@click.command("time")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option(
    "--iterations", type=click.IntRange(min=1), default=50, show_default=True, help="Timed iterations."
)
@click.option("--batch", type=click.IntRange(min=1), default=None, help="Batch size [default: the model's].")
@click.option(
    "--phase",
    type=click.Choice(["train", "test"], case_sensitive=False),
    default="train",
    show_default=True,
    help="The net of this phase (TRAIN or TEST, as Caffe writes them, or lower case).",
)
@shape_opt
@click.option(
    "--device", type=click.Choice(["cpu", "gpu"]), default="cpu", show_default=True, help="Where to run."
)
@json_opt
@max_memory_opt
@common_options
def time_cmd(model_path, iterations, batch, phase, shape, device, as_json):
    """Time MODEL's forward and backward passes layer by layer, as `caffe time` does: random
    inputs of the net's input shapes (labels within the classifier's range, so no store
    is needed), one warm-up iteration, then the average milliseconds of each layer over
    --iterations. MODEL is a recipe, a net prototxt (train_val or deploy) or a snapshot.
    The report goes to stderr with Caffe's log prefix and line forms, so scripts written
    for `caffe time` read it; --json prints the same numbers on stdout.

    \b
    dataprep time recipes/lenet.yaml --shape 1x28x28
    dataprep time bvlc_reference_caffenet_deploy.prototxt --batch 32 --iterations 10
    """
    import sys

    from ..gpu import array_module
    from ..train.runner import caffe_line
    from ..train.timing import bench_net, caffe_lines, time_net

    bench = bench_net(model_path, batch, phase, shape, array_module(device))
    timing = time_net(bench, iterations)
    for line in caffe_lines(timing):
        click.echo(caffe_line(line, "caffe.cpp:404"), file=sys.stderr)
    if as_json:
        echo_result(True, timing.as_dict(), [])
