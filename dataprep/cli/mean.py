"""``dataprep mean``: the mean image of a store or an image list, like compute_image_mean."""

from __future__ import annotations

import click

from .options import (
    channels_options,
    common_options,
    json_opt,
    max_pixels_opt,
    overwrite_opt,
    resize_opt,
    root_opt,
    skip_bad_opt,
    workers_opt,
)
from .running import echo_result, progress, report_skipped, start_workers


@click.command("mean")
@click.argument("source", required=False)
@click.option(
    "-o",
    "--out",
    type=click.Path(dir_okay=False),
    default="mean.binaryproto",
    show_default=True,
    help="The BlobProto (1 x C x H x W) for a layer's mean_file.",
)
@click.option(
    "--npy",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write the C x H x W mean as NumPy (.npy).",
)
@click.option(
    "--per-channel-only",
    is_flag=True,
    help="Print the per-channel means over every pixel; write no image (any sizes).",
)
@click.option(
    "--type",
    "kind",
    type=click.Choice(["store", "list"]),
    default=None,
    help="Force how SOURCE is read [default: detected; a .txt of images is a list].",
)
@root_opt
@channels_options
@resize_opt
@skip_bad_opt
@workers_opt
@overwrite_opt
@json_opt
@max_pixels_opt
@common_options
def mean_cmd(
    source, out, npy, per_channel_only, kind, root, channels, resize, skip_bad, workers, overwrite, as_json
):
    """Compute the mean image of SOURCE: an LMDB/LevelDB folder, an .h5 file, an _h5.txt list,
    or a list file of images (channels as the store commands decode them: --gray, --color).

    Sums the uint8 pixels exactly as integers and divides once, so the mean does not drift
    over millions of images and is identical for any --workers. Prints the per-channel
    means (B G R for color, R G B for a store in RGB order) on stdout. A damaged record
    (checksum mismatch) or a bad image stops it, or with --skip-bad is left out and counted.

    SOURCE may be left out: it is then the first store or list among the paths piped on
    standard input, as another dataprep command prints them, or on a terminal the current
    folder's training store (train_h5.txt, train.h5, train_lmdb, *_train_lmdb, ...;
    exactly one), named on stderr.

    \b
    dataprep mean train_lmdb                      # mean.binaryproto
    dataprep hdf5 train.txt | dataprep mean
    dataprep mean train_lmdb --npy mean.npy -o mean.binaryproto
    dataprep mean train.txt --resize 256x256 --per-channel-only
    """
    start_workers(workers)
    from ..errors import OnError
    from ..piped import is_store_or_list, missing_source

    if source is None:
        source = missing_source("mean", is_store_or_list, "dataprep mean STORE|LIST")
    from ..images import Channels
    from ..mean import array_source, channel_order, compute_mean, stage_mean, write_mean
    from ..parallel import make_executor
    from ..staging import Staging

    on_error = OnError(skip_bad)
    src = array_source(source, kind, root, Channels(channels), resize, on_error)
    with Staging(overwrite) as staging:
        staged = {} if per_channel_only else stage_mean(staging, out, npy)
        with progress(len(src), "mean") as update:
            result = compute_mean(src, make_executor(workers, len(src)), update, per_channel_only, on_error)
            result.order = channel_order(source)
            update.finish(result.count)
        outputs = write_mean(result, staged)
    skipped = report_skipped(on_error)
    summary = {
        "count": result.count,
        "skipped": skipped,
        "shape": list(result.mean.shape),
        "channels": dict(result.channels),
        "outputs": [str(p) for p in outputs],
    }
    echo_result(as_json, summary, ["  ".join(f"{name} {value:.2f}" for name, value in result.channels)])


def caffe_order(params: dict, extra: list[str]) -> str | None:
    """compute_image_mean's SOURCE OUT, as dataprep writes it."""
    if params.get("source") and len(extra) == 1:
        return f"dataprep mean {params['source']} -o {extra[0]} (compute_image_mean's order is SOURCE OUT)"
    return None
