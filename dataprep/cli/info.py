"""``dataprep info``: a store's summary, and a montage of its samples."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, json_opt, max_pixels_opt, overwrite_opt, seed_opt, shape_opt


@click.command("info")
@click.argument("store", required=False)
@click.option(
    "--grid",
    type=click.Path(dir_okay=False),
    default=None,
    help="Also write a montage of samples with their labels (PNG).",
)
@click.option(
    "--count", type=click.IntRange(min=1), default=64, show_default=True, help="Samples in the montage."
)
@click.option("--random", is_flag=True, help="Pick the montage's samples at random (seeded).")
@seed_opt
@shape_opt
@overwrite_opt
@json_opt
@max_pixels_opt
@common_options
def info_cmd(store, grid, count, random, seed, shape, overwrite, as_json):
    """Summarize STORE (LMDB/LevelDB folder, .h5 file or _h5.txt list): type, record count,
    data shape and dtype, encoding, label ranges (class histogram for integer labels),
    size on disk and the first keys. Given a model (a .npz snapshot or export, a net
    prototxt, a recipe), print its net as Caffe logs it at set-up: each layer's tops with
    their shapes and counts, its parameter shapes, the memory for data (--shape CxHxW where
    the model names no input size).

    STORE may be left out: it is then the first store among the paths piped on standard
    input (`dataprep lmdb train.txt train_lmdb | dataprep info`), or on a terminal the
    current folder's training store (exactly one), named on stderr.

    \b
    dataprep info train_lmdb
    dataprep info train_h5.txt --json
    dataprep info train_lmdb --grid grid.png --count 36 --random
    dataprep info bvlc_reference_caffenet_deploy.prototxt
    """
    from ..piped import is_store, missing_source

    if store is None:
        store = missing_source("info", is_store, "dataprep info STORE")
    import json

    if _is_model(store):  # a net: Caffe's set-up summary
        from ..train.summary import model_summary, summary_lines

        summary = model_summary(store, 1, shape)
        click.echo(json.dumps(summary, indent=2) if as_json else "\n".join(summary_lines(summary)))
        return

    from ..info import make_grid, summarize

    summary = summarize(store)
    if grid:
        from ..images import encode
        from ..staging import Staging

        with Staging(overwrite=overwrite) as staging:
            staging.path(Path(grid)).write_bytes(encode(make_grid(store, count, random, seed), "png"))
        summary["grid"] = grid
    if as_json:
        click.echo(json.dumps(summary, indent=2))
        return
    click.echo(_text(summary))


def _text(s: dict) -> str:
    if s["encoded"]:
        kind = "encoded images"
    elif s["type"] == "hdf5":
        kind = f"{s['dtype']} arrays"
    else:  # Datums: pixels, or float_data (extract's features)
        kind = "raw pixels" if s["dtype"] == "uint8" else f"{s['dtype']} features"
    if s["shape"]:
        c, h, w = s["shape"]
        data = f"{h}x{w} (HxW), {c} channel{'s' if c != 1 else ''}, {s['dtype']}"
    elif s.get("shape_min"):
        (c0, h0, w0), (c1, h1, w1) = s["shape_min"], s["shape_max"]
        channels = f"{c0}" if c0 == c1 else f"{c0} to {c1}"
        data = f"sizes vary: H {h0} to {h1}, W {w0} to {w1}, {channels} channel(s), {s['dtype']}"
    else:
        data = "no records"
    lines = [
        f"{s['path']}: {s['type']}, {s['count']:,} records, {kind}",
        f"  data: {data}",
        f"  size on disk: {s['bytes_on_disk'] / 1e6:.1f} MB",
    ]
    for name, st in zip(s["labels"]["columns_named"], s["labels"]["stats"]):
        line = f"  {name}: min {st['min']:.4g}  max {st['max']:.4g}  mean {st['mean']:.4g}"
        if "histogram" in st and len(st["histogram"]) <= 20:
            line += "  classes " + " ".join(f"{c}:{n}" for c, n in st["histogram"].items())
        lines.append(line)
    lines.append("  first keys: " + ", ".join(s["first_keys"]))
    if not s["manifest"]:
        lines.append("  no dataprep manifest (written by another tool)")
    if s.get("grid"):
        lines.append(f"  grid: {s['grid']}")
    return "\n".join(lines)


def _is_model(path: str) -> bool:
    """A model rather than a store: a snapshot or export (.npz), a net prototxt, a recipe."""
    return str(path).endswith((".npz", ".prototxt", ".yaml", ".yml"))
