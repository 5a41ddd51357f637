"""``dataprep predict``: a trained net's predictions for a list of images or a store."""

from __future__ import annotations

import logging
from pathlib import Path

import click

from .options import common_options, engine_opt, json_opt, max_pixels_opt, model_options
from .running import echo_result, progress

ERRORS_MAX = 64  # cells of --errors-grid


@click.command("predict")
@model_options
@click.argument("source", metavar="INPUT", type=click.Path())
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
    help="Names of the classes, class 0 first: one per line, `0 name` lines (list's and "
    "import's classes files) or synset_words.txt [default: the model's own, where it has them].",
)
@click.option("--top-k", type=click.IntRange(min=1), default=1, show_default=True, help="Classes per input.")
@click.option(
    "--oversample",
    is_flag=True,
    help="pycaffe's ten crops (the corners and the centre, and their mirrors) of a model "
    "with a crop, their probabilities (or values) averaged.",
)
@click.option("--csv", "as_csv", is_flag=True, help="Print CSV rows (key, values) instead of sentences.")
@click.option(
    "--errors-grid",
    type=click.Path(dir_okay=False),
    default=None,
    metavar="PNG",
    help=f"Also draw the first {ERRORS_MAX} misclassified inputs, each captioned TRUE as PREDICTED "
    "(a classifier with ground truth).",
)
@engine_opt
@json_opt
@max_pixels_opt
@common_options
def predict_cmd(
    model, source, batch_size, labels, class_names, top_k, oversample, as_csv, errors_grid, engine, as_json
):
    """Run MODEL (a .npz snapshot or export, a Caffe net prototxt, a recipe, or an .onnx graph
    `dataprep export` wrote, which runs on onnxruntime) on INPUT and print what it predicts:
    "Predicted frequencies for samples/04349_0.77_0.31.jpg is 0.76 and 0.31" for a
    regression, the top classes for a classifier. INPUT is one image, a
    folder (a store, or else its images, recursively and sorted), a list file (`path
    [labels...]`; - reads one on stdin) or a store. With ground truth (--labels, or labels
    in the list or store) a last line gives the mean absolute error or the accuracy.

    The preparation, one rule: the model's own is applied exactly once. A snapshot or
    export carries all of it by value (channels and their order, resize, crop, mean, scale);
    a prototxt carries its transform_param (and what `dataprep export` notes). --resize,
    --gray/--color and --channel-order fill in what the model does not say; --mean, --scale
    and --crop only where it has none (given for a model that has one, they are refused).
    Images are converted to the model's channel order (an RGB-trained model gets RGB from
    JPEG files); an image of another size than the model's stops with both sizes and the
    option that fixes it. A store's records are used as stored, with the steps the store
    did not apply.

    \b
    dataprep predict noise_regression_iter_2000.npz test.txt --labels test_labels.txt
    dataprep predict deploy.prototxt --weights model.caffemodel val_lmdb --class-names classes.txt
    dataprep predict cifar10_quick_iter_4000.npz photo.jpg --top-k 3
    dataprep predict cifar10_quick_iter_4000.npz cifar10_test_lmdb --errors-grid wrong.png
    find photos -name '*.jpg' | dataprep predict model.npz -
    dataprep predict model.onnx photos.txt --batch-size 10
    """
    from ..listfile import read_class_names
    from ..train.inference import Score, open_inputs, predict, read_truth, remembering

    if as_csv and as_json:
        raise click.UsageError("--csv and --json are exclusive")
    if oversample and not model.prepare.crop:
        raise click.UsageError("--oversample takes ten crops: the model has no crop (crop_size)")
    inputs = open_inputs(source, model, batch_size)
    names = (read_class_names(class_names) if class_names else None) or (
        list(model.prepare.classes) if model.prepare.classes else None
    )
    # a store without labels (an HDF5 of data only) has nothing to score against
    truth = read_truth(labels) if labels else {k: v for k, v in zip(inputs.keys, inputs.labels) if len(v)}
    scorer = Score(truth) if truth else None
    if errors_grid:
        if not model.classifier or not truth:
            raise click.UsageError(
                "--errors-grid draws a classifier's mistakes: it needs ground truth labels"
            )
        inputs, seen = remembering(inputs)
    wrong: list[tuple] = []  # (picture, caption) of the first misclassified inputs
    rows = []  # --json only: the other forms print as they go
    with progress(inputs.count, "predict") as update:
        for k, p in enumerate(predict(model, inputs, top_k, update, engine, oversample)):
            if scorer is not None:
                scorer.add(p)
            if (
                errors_grid
                and len(wrong) < ERRORS_MAX
                and p.key in truth
                and p.classes[0] != int(truth[p.key][0])
            ):
                from ..info import picture  # the drawing modules only where a grid is drawn

                rgb = not inputs.raw and model.prepare.channel_order == "RGB"
                caption = f"{_name(int(truth[p.key][0]), names)} as {_name(p.classes[0], names)}"
                wrong.append((picture(seen[k].transpose(2, 0, 1), rgb), caption))
            if as_json:
                rows.append({"key": p.key, "values": p.values, "classes": p.classes})
            elif as_csv:
                if k == 0:
                    click.echo(",".join(["key", *_csv_header(p)]))
                click.echo(_csv(p, names))
            else:
                click.echo(_sentence(p, model.target, names))
    if errors_grid:
        from ..images import write_image
        from ..info import montage

        write_image(Path(errors_grid), montage(*zip(*wrong)) if wrong else montage([], []))
        logging.getLogger("dataprep").info("%s: %d misclassified inputs drawn", errors_grid, len(wrong))
    scores = scorer.result() if scorer is not None else None
    if as_json:
        echo_result(True, {"predictions": rows, "score": scores}, [])
    elif scores is not None:
        if as_csv:  # stdout stays one table
            logging.getLogger("dataprep").info(_score_line(scores))
        else:
            click.echo(_score_line(scores))


def _name(cls: int, names: list[str] | None) -> str:
    return names[cls] if names and cls < len(names) else str(cls)


def _and(values: list[str]) -> str:
    return values[0] if len(values) == 1 else ", ".join(values[:-1]) + " and " + values[-1]


def _sentence(p, target: str, names: list[str] | None) -> str:
    """The tutorial's line: "Predicted frequencies for X is 0.76 and 0.31"."""
    if p.classes is None:
        what = {"freq": "frequencies", "label": "values"}.get(target, target)  # "label": no name known
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
