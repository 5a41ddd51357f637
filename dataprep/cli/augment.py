"""``dataprep augment``: K seeded random variants of every image, as files with a list."""

from __future__ import annotations

from pathlib import Path

import click

from .options import AREA_RANGE, SIZE, image_output_options, seed_opt
from .running import echo_file_job, finish_file_job, progress, report_skipped, start_workers


@click.command("augment")
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False))
@click.option(
    "--copies",
    "-k",
    type=click.IntRange(min=1),
    default=1,
    show_default=True,
    help="Variants per input image (per list line: a repeated line gets its own).",
)
@click.option("--crop", type=SIZE, default=None, metavar="HxW|S", help="Random crop of this size.")
@click.option(
    "--pad", is_flag=True, help="Pad images smaller than --crop to its size (centred, --pad-value)."
)
@click.option(
    "--pad-value",
    type=click.IntRange(0, 255),
    default=0,
    show_default=True,
    help="Grey level --pad fills with.",
)
@click.option(
    "--crop-scale",
    type=AREA_RANGE,
    default=None,
    metavar="MIN,MAX",
    help="Random-resized-crop: area share range (0.08,1.0), resized to --size.",
)
@click.option(
    "--size",
    type=SIZE,
    default=None,
    metavar="HxW",
    help="Output size of --crop-scale [default: the input's size].",
)
@click.option("--mirror", is_flag=True, help="Flip left-right with probability 1/2.")
@click.option("--rotate", type=float, default=0.0, metavar="DEG", help="Rotate by up to DEG either way.")
@click.option(
    "--shift",
    type=click.FloatRange(0, 1),
    default=0.0,
    metavar="FRAC",
    help="Translate by up to FRAC of the height and of the width either way (Keras' "
    "height/width_shift_range); uncovered pixels are 0, as --rotate's.",
)
@click.option("--brightness", type=float, default=0.0, help="Scale by a factor in [1-b, 1+b].")
@click.option("--contrast", type=float, default=0.0, help="Contrast factor in [1-c, 1+c].")
@click.option(
    "--saturation", type=float, default=0.0, help="Saturation factor in [1-s, 1+s] (color images only)."
)
@click.option(
    "--lighting",
    type=float,
    default=0.0,
    help="AlexNet PCA lighting noise, alpha std (0.1; color images only).",
)
@click.option("--noise", type=float, default=0.0, help="Additive Gaussian noise std, grey levels.")
@click.option("--force", is_flag=True, help="Allow label-changing transforms on float labels.")
@seed_opt
@image_output_options
def augment_cmd(
    src,
    out,
    copies,
    crop,
    pad,
    pad_value,
    crop_scale,
    size,
    mirror,
    rotate,
    shift,
    brightness,
    contrast,
    saturation,
    lighting,
    noise,
    force,
    seed,
    output,
    skip_bad,
    workers,
    as_json,
):
    """Write K random variants of every image of SRC (a folder or a list) into OUT as
    NAME_aug0.ext ... NAME_aug{K-1}.ext; a list is rewritten as OUT/<list name> with each
    variant carrying its source's labels. Outputs mirror paths as `resize` does.

    Variant k of list line i depends only on (--seed, i, k): the output is identical for
    any --workers. Label-safe for float (regression) labels: --crop, --mirror, --shift,
    --brightness, --contrast, --saturation, --lighting, --noise. --crop-scale and --rotate
    change scale or orientation and are refused for float labels unless --force. A rerun
    into OUT with other settings stops (--overwrite redoes all).

    \b
    dataprep augment train_256/train.txt train_aug --copies 4 --crop 227 --mirror --lighting 0.1
    dataprep augment photos/ aug --crop-scale 0.08,1.0 --size 224x224 --brightness 0.4
    """
    start_workers(workers)
    from ..augment import augment_all
    from ..errors import OnError
    from ..parallel import make_executor
    from ..transforms import AugmentSpec

    if pad and not crop:
        raise click.UsageError("--pad goes with --crop")
    spec = AugmentSpec(
        crop=crop,
        pad=pad,
        pad_value=float(pad_value),
        crop_scale=crop_scale,
        out_size=size,
        mirror=mirror,
        rotate=rotate,
        shift=shift,
        brightness=brightness,
        contrast=contrast,
        saturation=saturation,
        lighting=lighting,
        noise=noise,
    )
    on_error = OnError(skip_bad)
    with progress(None, "augment") as update:
        result = augment_all(
            Path(src), Path(out), spec, copies, make_executor(workers), seed, output, force, on_error, update
        )
        finish_file_job(update, result)
    echo_file_job(
        as_json,
        out,
        result,
        report_skipped(on_error),
        images=result.done,
        variants=(result.done + result.kept) * copies,
    )
