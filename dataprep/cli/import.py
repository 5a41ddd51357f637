"""``dataprep import``: CIFAR-10, CIFAR-100 and MNIST from the files users have."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, json_opt, overwrite_opt, workers_opt
from .running import echo_result, progress, start_workers


@click.command("import")
@click.argument("dataset", type=click.Choice(["cifar10", "cifar100", "mnist"]))
@click.argument("src", type=click.Path())
@click.argument("out", type=click.Path(file_okay=False), default=".")
@click.option(
    "--to",
    "kind",
    type=click.Choice(["lmdb", "leveldb", "hdf5", "wds", "files"]),
    default="lmdb",
    show_default=True,
    help="Stores, or PNG files in class folders with list files.",
)
@click.option(
    "--bgr",
    is_flag=True,
    help="CIFAR: store B, G, R planes (the order the rest of dataprep uses) instead of the file's R, G, B.",
)
@click.option(
    "--label",
    type=click.Choice(["fine", "coarse"]),
    default="fine",
    show_default=True,
    help="CIFAR-100: which labels.",
)
@workers_opt
@overwrite_opt
@json_opt
@common_options
def import_cmd(dataset, src, out, kind, bgr, label, workers, overwrite, as_json):
    """Write DATASET's train and test splits from SRC (the extracted folder or the official
    .tar.gz; nothing is downloaded) into OUT, as Caffe's convert_cifar_data and
    convert_mnist_data did: the files' pixel bytes unchanged (CIFAR keeps R, G, B planes
    unless --bgr; the manifest records the order), keys %05d (CIFAR) or %08d (MNIST), stores
    NAME_train_KIND and NAME_test_KIND, class names in NAME_classes.txt.

    \b
    dataprep import cifar10 cifar-10-python.tar.gz data/ --to lmdb
    dataprep import cifar100 cifar-100-binary/ data/ --label coarse
    dataprep import mnist mnist/ data/ --to files
    """
    start_workers(workers)
    from ..importers import open_dataset, write_dataset
    from ..parallel import make_executor
    from ..staging import remove_stale_partials, scratch_beside

    if label != "fine" and dataset != "cifar100":
        raise click.UsageError("--label goes with cifar100")
    out_path = Path(out)
    # an archive unpacks hidden in OUT, or beside it while OUT does not exist yet (the next
    # run removes what a kill -9 left there)
    if out_path.name:  # what a killed run left beside OUT while OUT was new
        remove_stale_partials(out_path)
    with scratch_beside(out_path / "unpacked" if out_path.is_dir() else out_path) as tmp:
        sources = open_dataset(dataset, Path(src), tmp, label, bgr)
        total = sum(len(s) for s in sources.values())
        with progress(total, "import") as update:
            outputs = write_dataset(
                dataset, sources, out_path, kind, make_executor(workers), overwrite, update
            )
    summary = {"outputs": [str(p) for p in outputs], "counts": {k: len(v) for k, v in sources.items()}}
    echo_result(as_json, summary, [str(p) for p in outputs])
