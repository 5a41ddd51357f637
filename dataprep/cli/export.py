"""``dataprep export``: a model out as ONNX, a .caffemodel, or a dataprep .npz."""

from __future__ import annotations

import click

from .options import common_options, json_opt, max_memory_opt, overwrite_opt, shape_opt
from .running import echo_result


@click.command("export")
@click.argument("model_path", metavar="MODEL", type=click.Path(dir_okay=False))
@click.option(
    "-o",
    "--out",
    required=True,
    type=click.Path(dir_okay=False),
    help="OUT.onnx, OUT.caffemodel, OUT.npz or OUT.prototxt (the deploy net).",
)
@click.option(
    "--weights",
    type=click.Path(exists=True, dir_okay=False),
    default=None,
    help="A .caffemodel or .npz snapshot.",
)
@click.option(
    "--random-init",
    type=int,
    default=None,
    metavar="SEED",
    help="Fill every learnable blob from SEED instead (a model that has no weights).",
)
@click.option(
    "--no-deploy",
    is_flag=True,
    help="With OUT.caffemodel: do not write OUT_deploy.prototxt (and its mean) beside it.",
)
@shape_opt
@overwrite_opt
@max_memory_opt
@json_opt
@common_options
def export_cmd(model_path, out, weights, random_init, no_deploy, shape, overwrite, as_json):
    """Write MODEL (a recipe or shipped recipe name, a Caffe prototxt, or a .npz snapshot)
    with its weights as OUT, whose suffix chooses the format:

    \b
    .onnx        the deploy net for onnxruntime, OpenCV's dnn, OpenVINO, TensorRT,
                 PyTorch (onnx2torch); opset 17, the batch free, Caffe's blob names;
                 it takes pixels as OpenCV decodes them (BGR, the training images'
                 size) and does the channel order, crop, mean and scale itself;
                 outputs: the net's last blobs, then `prob` for a classifier (the
                 logits keep their name); the resize as metadata (needs onnx)
    .caffemodel  Caffe's binary weights, the deploy net's layers and blobs, with
                 OUT_deploy.prototxt beside it (unless --no-deploy)
    .prototxt    Caffe's deploy net: an Input layer whose transform_param holds the
                 preparation (crop, mean, scale; a mean image as OUT_mean.binaryproto)
    .npz         weights and the whole preparation, as predict, extract, visualize
                 and train --weights take them

    \b
    dataprep export deploy.prototxt --weights model.caffemodel -o model.onnx
    dataprep export model.caffemodel.prototxt --weights model.caffemodel -o model.npz
    dataprep export resnet50_deploy.prototxt --random-init 0 -o random.caffemodel
    """
    from ..train.export import export

    paths = export(model_path, out, weights, random_init, shape, overwrite, not no_deploy)
    written = [str(p) for p in paths]
    echo_result(as_json, {"outputs": written}, written)
