"""``dataprep resize``: resize a folder or a list of images to files, resumably."""

from __future__ import annotations

from pathlib import Path

import click

from .options import SIZE, image_output_options
from .running import echo_file_job, finish_file_job, progress, report_skipped, start_workers


@click.command("resize")
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--resize",
    "--size",
    "size",
    type=SIZE,
    default=None,
    metavar="HxW",
    help="Exact size, squashing the aspect ratio (--resize, as every other command names it).",
)
@click.option(
    "--shorter-side",
    type=click.IntRange(min=1),
    default=None,
    metavar="S",
    help="Scale so the shorter side is S, keeping the aspect ratio.",
)
@click.option(
    "--center-crop",
    type=SIZE,
    default=None,
    metavar="HxW",
    help="With --shorter-side: then crop the central HxW.",
)
@click.option(
    "--interpolation",
    type=click.Choice(["area", "linear", "cubic", "lanczos"]),
    default=None,
    help="[default: area when shrinking, cubic when enlarging]",
)
@image_output_options
def resize_cmd(src, out, size, shorter_side, center_crop, interpolation, output, skip_bad, workers, as_json):
    """Resize the images of SRC (a folder, or a list file) into OUT.

    Outputs mirror each image's path relative to SRC (a folder), or for a list to the
    folder all its images share (--root when given); the list is rewritten as
    OUT/<list name> with the same labels. Images keep their channels (gray stays gray)
    unless --gray or --color. Each output is written under a temporary name and renamed
    when complete, so rerunning a killed job skips exactly the finished images. OUT
    records the settings that made it: a rerun with other settings stops and says which
    differ; --overwrite redoes all. --device gpu resizes each chunk on the GPU.

    \b
    dataprep resize photos/ photos_256 --size 256x256
    dataprep resize train.txt train_256 --shorter-side 256 --center-crop 256x256
    """
    start_workers(workers)
    from ..errors import OnError
    from ..parallel import make_executor
    from ..resize import ResizeSpec, resize_all

    spec = ResizeSpec(size=size, shorter=shorter_side, crop=center_crop, interpolation=interpolation)
    on_error = OnError(skip_bad)
    with progress(None, "resize") as update:
        result = resize_all(Path(src), Path(out), spec, make_executor(workers), output, on_error, update)
        finish_file_job(update, result)
    echo_file_job(as_json, out, result, report_skipped(on_error), written=result.done)
