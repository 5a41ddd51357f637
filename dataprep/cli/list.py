"""``dataprep list``: a list file from a folder tree of images."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, json_opt, overwrite_opt, seed_opt
from .running import echo_result


@click.command("list")
@click.argument("root", type=click.Path(exists=True, file_okay=False))
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False, allow_dash=True),
    default="train.txt",
    show_default=True,
    help="The list file (- for stdout); with --split it holds the whole list and "
    "train/val/test.txt go in its folder.",
)
@click.option(
    "--classes-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="The class names file (index name) [default: classes.txt beside the list; with "
    "-o -, none unless given].",
)
@click.option(
    "--split",
    default=None,
    metavar="TRAIN,VAL,TEST",
    help="Ratios such as 0.8,0.1,0.1, stratified by class and seeded.",
)
@click.option(
    "--extensions",
    default=",".join(("jpg", "jpeg", "png", "bmp", "ppm", "pgm", "tif", "tiff", "webp")),
    show_default=True,
    help="Image file extensions to include (case-insensitive).",
)
@click.option("--flat", is_flag=True, help="A folder of images without classes: every label is 0.")
@seed_opt
@overwrite_opt
@json_opt
@common_options
def list_cmd(root, out, classes_out, split, extensions, flat, seed, overwrite, as_json):
    """Write ``path label`` lines for the images under ROOT.

    Each subfolder of ROOT is a class; labels are assigned by sorted class name and named
    in classes.txt (index name). Paths are relative to the list file's folder (with -o -,
    to the current folder), so ``dataprep lmdb train.txt DB`` finds the images without
    --root. A path with spaces is written as Caffe's convert_imageset and ImageData read
    it (unquoted: they split a line at its last space).

    \b
    dataprep list images/ --out lists/train.txt
    dataprep list images/ --split 0.8,0.1,0.1 --seed 1
    dataprep list images/ -o - | head
    dataprep list photos/ --flat --out photos.txt
    """
    from ..scan import write_image_lists
    from ..splits import parse_split

    ratios = parse_split(split) if split else None
    exts = [e for e in extensions.split(",") if e.strip()]
    result = write_image_lists(
        Path(root),
        out,
        split=ratios,
        seed=seed,
        extensions=exts,
        flat=flat,
        overwrite=overwrite,
        classes_out=Path(classes_out) if classes_out else None,
    )
    if result.text is not None:
        click.echo(result.text, nl=False)
        return
    summary = {
        "lists": {k: str(v) for k, v in result.lists.items()},
        "counts": result.counts,
        "classes": result.classes,
    }
    echo_result(as_json, summary, [str(p) for p in result.lists.values()])
