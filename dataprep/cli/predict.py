"""``dataprep predict``: a trained net's predictions for a list of images or a store."""

from __future__ import annotations

import logging

import click

from .options import common_options, json_opt, max_pixels_opt, model_options
from .running import echo_result, progress


@click.command("predict")
@model_options
@click.argument("source", metavar="LIST|STORE", type=click.Path())
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--labels",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="Ground truth (`path label...` lines): print the mean absolute error or the accuracy "
    "[default: the list's or the store's own labels, when it has them].",
)
@click.option(
    "--class-names",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="classes.txt (one name per line, class 0 first) to name predicted classes.",
)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="Classes per input.")
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows (key, values) instead of sentences.")
@json_opt
@max_pixels_opt
@common_options
def predict_cmd(model, source, batch_size, labels, class_names, top_k, as_csv, as_json):
    """Run MODEL (a recipe YAML, a Caffe net prototxt, or a .npz snapshot) on every image of
    LIST or every record of STORE and print what it predicts: "Predicted frequencies for
    samples/04349_0.77_0.31.jpg is 0.76 and 0.31" for a regression, the top classes for a
    classifier. Raw images are prepared as the training data was (a snapshot records how;
    for a prototxt give --mean, --scale, --resize, --gray/--color). With ground truth
    (--labels, or labels in LIST or STORE) a last line gives the mean absolute error or
    the accuracy.

    \b
    dataprep predict noise_regression_iter_2000.npz test.txt --labels test_labels.txt
    dataprep predict deploy.prototxt --weights model.caffemodel val_lmdb --class-names classes.txt
    """
    from ..train.inference import Score, open_inputs, predict, read_truth

    if as_csv and as_json:
        raise click.UsageError("--csv and --json are exclusive")
    inputs = open_inputs(source, model, batch_size)
    names = _class_names(class_names)
    # a store without labels (an HDF5 of data only) has nothing to score against
    truth = read_truth(labels) if labels else {k: v for k, v in zip(inputs.keys, inputs.labels) if len(v)}
    scorer = Score(truth) if truth else None
    rows = []  # --json only: the other forms print as they go
    with progress(inputs.count, "predict") as update:
        for k, p in enumerate(predict(model, inputs, top_k, update)):
            if scorer is not None:
                scorer.add(p)
            if as_json:
                rows.append({"key": p.key, "values": p.values, "classes": p.classes})
            elif as_csv:
                if k == 0:
                    click.echo(",".join(["key", *_csv_header(p)]))
                click.echo(_csv(p, names))
            else:
                click.echo(_sentence(p, model.target, names))
    scores = scorer.result() if scorer is not None else None
    if as_json:
        echo_result(True, {"predictions": rows, "score": scores}, [])
    elif scores is not None:
        if as_csv:  # stdout stays one table
            logging.getLogger("dataprep").info(_score_line(scores))
        else:
            click.echo(_score_line(scores))


def _class_names(path: str | None) -> list[str] | None:
    if path is None:
        return None
    with open(path) as f:
        return [line.strip() for line in f if line.strip()]


def _name(cls: int, names: list[str] | None) -> str:
    return names[cls] if names and cls < len(names) else str(cls)


def _and(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _sentence(p, target: str, names: list[str] | None) -> str:
    """The tutorial's line: "Predicted frequencies for X is 0.76 and 0.31"."""
    if p.classes is None:
        what = {"freq": "frequencies"}.get(target, target)
        return f"Predicted {what} for {p.key} is {_and([f'{v:.2f}' for v in p.values])}"
    ranked = [f"{_name(c, names)} ({v:.2f})" for c, v in zip(p.classes, p.values)]
    return f"Predicted class for {p.key} is {ranked[0]}" + (
        f"; then {', '.join(ranked[1:])}" if ranked[1:] else ""
    )


def _csv_header(p) -> list[str]:
    if p.classes is None:
        return [f"value{k}" for k in range(len(p.values))]
    return [f"{kind}{k}" for k in range(len(p.classes)) for kind in ("class", "probability")]


def _csv(p, names: list[str] | None) -> str:
    key = f'"{p.key}"' if "," in p.key else p.key
    if p.classes is None:
        return ",".join([key, *(f"{v:.6g}" for v in p.values)])
    return ",".join([key, *(f"{_name(c, names)},{v:.6g}" for c, v in zip(p.classes, p.values))])


def _score_line(scores: dict) -> str:
    if "mae" in scores:
        columns = " and ".join(f"{v:.4f}" for v in scores["mae_per_column"])
        return (
            f"Mean absolute error: {scores['mae']:.4f} ({columns} per column) over {scores['count']} inputs"
        )
    extra = [f"{k} {v:.4f}" for k, v in scores.items() if k.startswith("top")]
    return f"Accuracy: {scores['accuracy']:.4f} over {scores['count']} inputs" + (
        f" ({', '.join(extra)})" if extra and extra[0] != f"top1 {scores['accuracy']:.4f}" else ""
    )
