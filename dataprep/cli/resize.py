"""``dataprep resize``: resize a folder or a list of images to files, resumably."""

from __future__ import annotations

from pathlib import Path

import click

from .options import echo_result, image_output_options, progress, report_skipped, start_workers


@click.command("resize")
@click.argument("src")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--size", default=None, metavar="HxW", help="Exact size, squashing the aspect ratio.")
@click.option("--shorter-side", type=click.IntRange(min=1), default=None, metavar="S",
              help="Scale so the shorter side is S, keeping the aspect ratio.")
@click.option("--center-crop", default=None, metavar="HxW",
              help="With --shorter-side: then crop the central HxW.")
@click.option("--interpolation", type=click.Choice(["area", "linear", "cubic", "lanczos"]), default=None,
              help="[default: area when shrinking, cubic when enlarging]")
@click.option("--device", type=click.Choice(["cpu", "gpu", "auto"]), default="cpu", show_default=True,
              help="Where images are resized: gpu needs CuPy and a CUDA device (never falls back).")
@image_output_options
def resize_cmd(src, out, size, shorter_side, center_crop, interpolation, device, fmt, quality, gray,
               root, skip_bad, workers, overwrite, as_json):
    """Resize the images of SRC (a folder, mirrored, or a list file) into OUT.

    A list's images keep their relative paths under OUT, and the list is rewritten as
    OUT/<list name> with the same labels. Each output is written under a temporary name
    and renamed when complete, so rerunning a killed job skips exactly the finished
    images; --overwrite redoes all. Outputs never land outside OUT. --device gpu decodes
    on the CPU workers and resizes each chunk on the GPU (area or linear).

    \b
    dataprep resize photos/ photos_256 --size 256x256
    dataprep resize train.txt train_256 --shorter-side 256 --center-crop 256x256
    """
    start_workers(workers)
    from ..handlers import OnError
    from ..images import parse_size
    from ..parallel import make_executor
    from ..resize import ResizeSpec, resize_all

    spec = ResizeSpec(size=parse_size(size) if size else None, shorter=shorter_side,
                      crop=parse_size(center_crop) if center_crop else None,
                      interpolation=interpolation, gray=gray, fmt=fmt, quality=quality)
    on_error = OnError(skip_bad)
    with progress(None, "resize") as update:
        result = resize_all(Path(src) if src != "-" else Path("-"), Path(out), spec,
                            make_executor(workers), root=root, overwrite=overwrite, device=device,
                            on_error=on_error, progress=update)
    summary = {"out": out, "written": result.done, "already_done": result.kept,
               "skipped": result.skipped, "list": str(result.list_path) if result.list_path else None}
    report_skipped(result.skipped)
    echo_result(as_json, summary, [str(result.list_path or out)])
