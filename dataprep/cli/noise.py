"""``dataprep noise``: the regression tutorial's noise dataset, as image files or stores."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import click

from .options import SIZE, common_options, json_opt, overwrite_opt, seed_opt, store_options, workers_opt
from .running import echo_result, progress, start_workers


@click.command("noise")
@click.option(
    "-n", "--n", "n", type=click.IntRange(min=1), default=70000, show_default=True, help="Number of samples."
)
@click.option(
    "--out",
    type=click.Path(file_okay=False),
    default="samples",
    show_default=True,
    help="Folder for the images (with --to: for the stores).",
)
@click.option("--size", type=SIZE, default="100x100", show_default=True, metavar="HxW", help="Image size.")
@click.option(
    "--split",
    default=None,
    metavar="TRAIN,VAL[,TEST]",
    help="Counts (50000,10000,10000) or ratios (0.8,0.1,0.1) [default: 5/7,1/7,1/7]. "
    "Two values make train and val only: no test list.",
)
@click.option(
    "--format",
    "fmt",
    type=click.Choice(["jpg", "png"]),
    default="jpg",
    show_default=True,
    help="Image file format (png is lossless).",
)
@click.option("--quality", type=click.IntRange(0, 100), default=95, show_default=True, help="JPEG quality.")
@click.option(
    "--classes",
    type=click.IntRange(min=1),
    default=None,
    metavar="K",
    help="Integer labels: fx binned into K equal bins (named in classes.txt).",
)
@click.option(
    "--label",
    type=click.Choice(["freq", "age"]),
    default="freq",
    show_default=True,
    help="freq: fx fy floats; age: fx as an integer 0..99 (bounded-integer regression; the Datum's label).",
)
@click.option(
    "--classes-out",
    type=click.Path(dir_okay=False),
    default=None,
    help="Where the class names go [default: classes.txt beside the lists, or in OUT with --to].",
)
@click.option(
    "--lists-dir",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder for the list files [default: the folder containing --out].",
)
@click.option(
    "--to",
    "to",
    type=click.Choice(["files", "hdf5", "lmdb", "leveldb", "wds"]),
    default="files",
    show_default=True,
    help="Write image files and lists, or stream straight into stores.",
)
@store_options(None, "freq, or label with --classes")
@seed_opt
@workers_opt
@overwrite_opt
@json_opt
@common_options
def noise_cmd(
    n,
    out,
    size,
    split,
    fmt,
    quality,
    classes,
    label,
    classes_out,
    lists_dir,
    to,
    hdf5,
    seed,
    workers,
    overwrite,
    as_json,
):
    """Generate random-frequency noise images labelled with their frequencies.

    Sample i depends only on (--seed, i), so output is byte-identical for any --workers.
    Writes OUT/NNNNN_fx_fy.jpg (1-channel gray) and, in --lists-dir, train.txt and
    val.txt (path fx fy), test.txt (paths) and test_labels.txt (path fx fy).

    With --to hdf5|lmdb|leveldb no image files are made: the samples stream straight into
    OUT/{train,val,test}.h5 (+ _h5.txt; labels in `freq`) or OUT/{split}_lmdb with the
    float labels in OUT/{split}_lmdb_labels (integer labels in the Datum with --classes),
    or WebDataset shards OUT/{split}-000000.tar with OUT/{split}.manifest.json.
    The pixels equal those of the PNG file route. The HDF5 options apply to --to hdf5.

    \b
    dataprep noise --n 70000 --size 100x100 --split 50000,10000,10000
    dataprep noise --n 7000 --classes 4 --format png
    dataprep noise --n 70000 --to hdf5 --out noise_h5 --mean 128
    """
    start_workers(workers)
    from ..noise import NoiseSource, write_noise_files
    from ..parallel import make_executor
    from ..splits import default_split, parse_split, split_counts

    out_path = Path(out)
    lists = Path(lists_dir) if lists_dir else out_path.absolute().parent
    source = NoiseSource(n=n, size=size, seed=seed, classes=classes, ext=fmt, label=label)
    counts = split_counts(parse_split(split), n) if split else default_split(n)
    executor = make_executor(workers, n)
    if to != "files":
        from ..listfile import class_lines, write_list
        from ..noise import class_names, write_noise_stores
        from ..staging import Staging

        source = replace(source, ext="png")
        with Staging(overwrite) as staging:  # the class names, claimed first, land after the stores
            names = Path(classes_out) if classes_out else out_path / "classes.txt"
            names_tmp = staging.path(names) if classes else None
            with progress(n, f"noise -> {to}") as update:
                stores = write_noise_stores(
                    source, out_path, counts, to, executor, overwrite=overwrite, hdf5=hdf5, progress=update
                )
            if names_tmp is not None:
                write_list(names_tmp, class_lines(class_names(classes)))
        outputs = [str(p) for paths in stores.values() for p in paths] + ([str(names)] if classes else [])
        echo_result(
            as_json,
            {"n": n, "counts": dict(zip(("train", "val", "test"), counts)), "outputs": outputs},
            outputs,
        )
        return
    with progress(n, "noise") as update:
        result = write_noise_files(
            source,
            out_path,
            lists,
            counts,
            executor,
            fmt=fmt,
            quality=quality,
            overwrite=overwrite,
            progress=update,
            classes_out=Path(classes_out) if classes_out else None,
        )
    summary = {
        "images": str(result.folder),
        "n": n,
        "counts": result.counts,
        "lists": {k: str(v) for k, v in result.lists.items()},
    }
    echo_result(as_json, summary, [str(p) for p in result.lists.values()])
