"""``dataprep recipe``: a recipe as Caffe's prototxt files, and Caffe's files as a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, json_opt, overwrite_opt, shape_opt
from .running import echo_result


@click.group("recipe")
@common_options
def recipe_cmd():
    """The shipped recipes (list, copy), and conversions between dataprep recipes (YAML)
    and Caffe's solver and net prototxt."""


@recipe_cmd.command("list")
@json_opt
@common_options
def list_cmd(as_json):
    """The shipped recipes: each name (what `dataprep train NAME` takes) and what it trains."""
    from ..train.recipe import shipped_recipes

    found = shipped_recipes()
    width = max(map(len, found), default=0)
    echo_result(as_json, found, [f"{name:<{width}}  {line}" for name, line in found.items()])


@recipe_cmd.command("copy")
@click.argument("name")
@click.argument("dest", type=click.Path(), default=".")
@overwrite_opt
@common_options
def copy_cmd(name, dest, overwrite):
    """Copy the shipped recipe NAME, with the comments that explain it, to DEST (a file, or
    a folder for NAME.yaml; the current folder by default), to edit and train.

    \b
    dataprep recipe copy cifar10_quick            # ./cifar10_quick.yaml
    dataprep recipe copy lenet my_lenet.yaml
    """
    from ..staging import Staging
    from ..train.recipe import shipped_recipe, shipped_recipes

    source = shipped_recipe(name)
    if source is None:
        raise click.UsageError(f"no shipped recipe {name!r}; there are {', '.join(shipped_recipes())}")
    path = Path(dest) / f"{name}.yaml" if Path(dest).is_dir() else Path(dest)
    with Staging(overwrite=overwrite) as staging:
        staging.path(path).write_text(source.read_text())
    click.echo(path)


@recipe_cmd.command("to-prototxt")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False), default=".")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key first.")
@shape_opt
@overwrite_opt
@common_options
def to_prototxt_cmd(recipe_path, out, overrides, shape, overwrite):
    """Write RECIPE (a file, or a shipped recipe by name) as Caffe's
    OUT/NAME_solver.prototxt and OUT/NAME_train_val.prototxt, which `caffe train -solver`
    runs (from OUT's folder: paths are as in the recipe). A generator source, online
    augmentation or a layer Caffe lacks (SmoothL1Loss) is refused with a line naming it.
    data.shuffle becomes HDF5Data's shuffle, or for a Data layer (which cannot shuffle) a
    comment that to-yaml reads back. Kernels set by fixed fillers (range, values: Caffe has
    neither) go into OUT/NAME_init.caffemodel, which the solver's `weights` names (older
    builds: caffe train -weights NAME_init.caffemodel); --shape gives the input's size for
    it when the training store is not here.

    \b
    dataprep recipe to-prototxt recipes/noise_regression.yaml recipes/caffe
    """
    from ..staging import Staging
    from ..train.export import init_caffemodel
    from ..train.prototxt import fixed_layers, recipe_prototxt
    from ..train.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    solver, net = recipe_prototxt(recipe)
    paths = [Path(out) / f"{recipe.name}_solver.prototxt", Path(out) / f"{recipe.name}_train_val.prototxt"]
    init = Path(out) / f"{recipe.name}_init.caffemodel" if fixed_layers(recipe) else None
    Path(out).mkdir(parents=True, exist_ok=True)
    with Staging(overwrite=overwrite) as staging:
        for path, text in zip(paths, (solver, net)):
            staging.path(path).write_text(text)
        if init is not None:
            staging.path(init).write_bytes(init_caffemodel(recipe, shape))
    for path in paths + ([init] if init else []):
        click.echo(path)
    if init is not None:
        click.echo(
            f"the solver starts from {init.name} (its weights field); Caffe builds without that field: "
            f"caffe train -solver {paths[0].name} -weights {init.name}",
            err=True,
        )


@recipe_cmd.command("to-yaml")
@click.argument("solver_path", metavar="SOLVER", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False), default="-")
@click.option(
    "-o",
    "--out",
    "--out-file",
    "out_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="Write this file instead (--out-file: its older name).",
)
@overwrite_opt
@common_options
def to_yaml_cmd(solver_path, out, out_file, overwrite):
    """Write Caffe's SOLVER prototxt (and the net it names: from the current folder as
    Caffe finds it, or else beside the solver) as a dataprep recipe: YAML on stdout, or
    OUT/NAME.yaml in the folder OUT (as to-prototxt takes one), or the file -o/--out.

    
    dataprep recipe to-yaml caffe/noise_regression_solver.prototxt back/
    dataprep recipe to-yaml solver.prototxt -o recipe.yaml
    """
    import yaml

    from ..staging import Staging
    from ..train.recipe import load_recipe

    recipe = load_recipe(solver_path)
    text = yaml.safe_dump(recipe.raw, sort_keys=False)
    if out == "-" and out_file is None:
        click.echo(text, nl=False)
        return
    path = Path(out_file) if out_file else Path(out) / f"{recipe.name}.yaml"
    with Staging(overwrite=overwrite) as staging:
        staging.path(path).write_text(text)
    click.echo(path)
