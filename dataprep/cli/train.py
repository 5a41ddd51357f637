"""``dataprep train``: train a recipe's net on its data, with Caffe's log lines."""

from __future__ import annotations

import click

from .options import (
    common_options,
    json_opt,
    max_memory_opt,
    max_pixels_opt,
    overwrite_opt,
    skip_bad_opt,
    workers_count,
)
from .running import Settings, echo_result, progress, report_skipped


@click.command("train")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="KEY=VALUE",
    help="Override a recipe key (solver.max_iter=200, net[2].num_output=64); repeatable.",
)
@click.option("--print-recipe", is_flag=True, help="Print the resolved recipe (YAML) and stop.")
@click.option(
    "--resume",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="SNAPSHOT",
    help="Continue from a snapshot (.npz): the same result as an uninterrupted run. Caffe's "
    ".solverstate or .solverstate.h5 restores its iteration, weights and histories only.",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    metavar="MODEL",
    help="Start from these weights (.caffemodel or .npz), layers matched by name (fine-tuning).",
)
@click.option(
    "--caffemodel", is_flag=True, help="Also write snapshots as .caffemodel (solver.snapshot_format)."
)
@click.option(
    "--device",
    type=click.Choice(["cpu", "gpu"]),
    default=None,
    help="Where to train [default: the recipe's solver.device, cpu].",
)
@click.option(
    "--tensorboard",
    type=click.Path(file_okay=False),
    default=None,
    metavar="DIR",
    help="Also write TensorBoard events into DIR/PREFIX (needs tensorboardX).",
)
@click.option(
    "--log",
    "log_path",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="FILE",
    help="Also write the full Caffe-form log to FILE, whatever -q says (appended to on --resume).",
)
@workers_count(
    "Processes decoding an image list (ImageData) ahead of the net, this one included; "
    "the batches are identical for any value."
)
@skip_bad_opt
@overwrite_opt
@json_opt
@max_pixels_opt
@max_memory_opt
@common_options
def train_cmd(
    recipe_path,
    log_path,
    overrides,
    print_recipe,
    resume,
    weights,
    caffemodel,
    device,
    tensorboard,
    workers,
    skip_bad,
    overwrite,
    as_json,
):
    """Train the net of RECIPE on its data, as `caffe train` does. RECIPE is YAML (data,
    net, solver) or Caffe's solver.prototxt with the net prototxt it names (relative
    paths resolve against the current folder, as in Caffe). Log lines go to stderr in
    Caffe's form (parse_log.py reads them); the final snapshot {prefix}_iter_{max_iter}.npz
    (and .caffemodel with --caffemodel or a prototxt solver), {prefix}_metrics.json and
    the loss plot {prefix}_loss.png are written, and one summary line goes to stdout,
    ending with the model to use (the last snapshot, or {prefix}_best.npz with keep_best;
    --json: "final").
    Ctrl-C writes a snapshot first; --resume continues from it. An earlier run's files
    under the same snapshot_prefix are refused without --overwrite. A damaged record (checksum
    mismatch) stops the run, or with --skip-bad is logged once and its place in a batch
    taken by the next sound record.

    \b
    dataprep train recipes/noise_stream.yaml --set solver.max_iter=200
    dataprep train solver.prototxt --weights pretrained.caffemodel
    dataprep train recipe.yaml --print-recipe
    """
    import functools
    import sys

    import yaml

    from ..errors import OnError
    from ..train.recipe import load_recipe
    from ..train.runner import train

    if resume and weights:
        raise click.UsageError("--resume continues a run; --weights starts one: give one of them")
    overrides = list(overrides)
    if caffemodel:
        overrides.append("solver.snapshot_format=caffemodel")
    if device:
        overrides.append(f"solver.device={device}")
    recipe = load_recipe(recipe_path, overrides)
    if print_recipe:
        click.echo(yaml.safe_dump(recipe.raw, sort_keys=False), nl=False)
        return

    quiet = Settings.get().verbosity < 0
    log_file = _open_log(log_path, resume is not None, overwrite) if log_path else None

    def say(line: str) -> None:
        if log_file is not None:
            log_file.write(line + "\n")
            log_file.flush()  # plot --watch reads it as it grows
        if quiet and line[:1] == "I":  # -q: warnings and errors only
            return
        bars = sys.modules.get("tqdm")
        (bars.tqdm.write if bars is not None else click.echo)(line, file=sys.stderr)

    try:
        with progress(recipe.run.max_iter, "train", unit="iter", closing=False) as update:
            on_error = OnError(skip_bad)
            bars = functools.partial(progress, unit="batch", closing=False)  # each test pass
            result = train(
                recipe, say, update, resume, weights, on_error, overwrite, bars, tensorboard, workers
            )
    finally:
        if log_file is not None:
            log_file.close()
    skipped = report_skipped(on_error)
    summary = {
        "recipe": recipe.name,
        "iterations": result.iterations,
        "seconds": round(result.seconds, 3),
        "train_loss": result.train_loss,
        "test": result.test,
        "skipped": skipped,
        "outputs": [str(p) for p in result.outputs],
        "final": str(result.final),
    }
    tests = ", ".join(f"{k} {v:.4g}" for k, v in result.test.items())
    line = (
        f"{recipe.name}: {result.iterations} iterations in {result.seconds:.1f} s, train loss "
        f"{result.train_loss:.4g}"
        + (f"; test {tests}" if tests else "")
        + (f"; {result.final}" if result.final else "")
    )
    echo_result(as_json, summary, [line])


def _open_log(path: str, resume: bool, overwrite: bool):
    """The --log file: new (an existing one refused unless --overwrite), or appended to on
    --resume, as Caffe's logs hold a resumed run after the first (plot draws it so)."""
    from pathlib import Path

    from ..staging import refuse_existing, refuse_over_inputs

    refuse_over_inputs(path)
    if not resume:
        refuse_existing(Path(path), overwrite)
    return open(path, "a" if resume else "w")
