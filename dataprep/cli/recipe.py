"""``dataprep recipe``: a recipe as Caffe's prototxt files, and Caffe's files as a recipe."""

from __future__ import annotations

from pathlib import Path

import click

from .options import common_options, overwrite_opt


@click.group("recipe")
@common_options
def recipe_cmd():
    """Convert between dataprep recipes (YAML) and Caffe's solver and net prototxt."""


@recipe_cmd.command("to-prototxt")
@click.argument("recipe_path", metavar="RECIPE", type=click.Path(exists=True, dir_okay=False))
@click.argument("out", type=click.Path(file_okay=False), default=".")
@click.option("--set", "overrides", multiple=True, metavar="KEY=VALUE", help="Override a recipe key first.")
@overwrite_opt
@common_options
def to_prototxt_cmd(recipe_path, out, overrides, overwrite):
    """Write RECIPE as Caffe's OUT/NAME_solver.prototxt and OUT/NAME_train_val.prototxt,
    which `caffe train -solver` runs (from OUT's folder: paths are as in the recipe). A
    generator source, online augmentation or a layer Caffe lacks (SmoothL1Loss) is
    refused with a line naming it.

    \b
    dataprep recipe to-prototxt recipes/noise_regression.yaml recipes/caffe
    """
    from ..staging import Staging
    from ..train.prototxt import recipe_prototxt
    from ..train.recipe import load_recipe

    recipe = load_recipe(recipe_path, list(overrides))
    solver, net = recipe_prototxt(recipe)
    paths = [Path(out) / f"{recipe.name}_solver.prototxt", Path(out) / f"{recipe.name}_train_val.prototxt"]
    Path(out).mkdir(parents=True, exist_ok=True)
    with Staging(overwrite=overwrite) as staging:
        for path, text in zip(paths, (solver, net)):
            staging.path(path).write_text(text)
    for path in paths:
        click.echo(path)


@recipe_cmd.command("to-yaml")
@click.argument("solver_path", metavar="SOLVER", type=click.Path(exists=True, dir_okay=False))
@click.option("-o", "--out", type=click.Path(dir_okay=False), default="-", show_default=True)
@overwrite_opt
@common_options
def to_yaml_cmd(solver_path, out, overwrite):
    """Write Caffe's SOLVER prototxt (and the net it names, found from the current folder
    as Caffe finds it) as a dataprep recipe: YAML on stdout, or in OUT.

    \b
    dataprep recipe to-yaml solver.prototxt -o recipe.yaml
    """
    import yaml

    from ..staging import Staging
    from ..train.recipe import load_recipe

    text = yaml.safe_dump(load_recipe(solver_path).raw, sort_keys=False)
    if out == "-":
        click.echo(text, nl=False)
        return
    with Staging(overwrite=overwrite) as staging:
        staging.path(Path(out)).write_text(text)
    click.echo(out)
