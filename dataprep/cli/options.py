"""Options shared by the commands, one spelling per concept, each declared once here.

* ``common_options`` (``--quiet``, ``--verbose``, ``--debug``): the root group and every command.
* ``workers_opt`` (``--workers``, ``--executor local|dask``, ``--scheduler``): noise, hdf5,
  lmdb, wds, mean, resize, augment, convert, import; ``seed_opt``: noise, list, hdf5,
  lmdb, info, augment; ``overwrite_opt``: every command that writes; ``json_opt``: every
  command but info's picture.
* ``SIZE`` (the ``HxW`` / ``S`` grammar of ``images.parse_size``): every size option.
* ``root_opt``: hdf5, lmdb, mean, verify, resize, augment; ``channels_options``
  (``--gray``/``--color``): hdf5, lmdb, mean, resize, augment; ``device_opt``: resize, augment.
* ``input_options`` (``--root``, ``--gray``/``--color``, ``--resize``, ``--check-size``,
  ``--shuffle``, ``--skip-bad`` and the above): hdf5, lmdb.
* ``store_options`` (``--label-names``, ``--mean``, ``--mean-file``, ``--scale``,
  ``--shard-size``, ``--compression``, ``--relative``, parsed into one ``Hdf5Options``):
  hdf5, and noise ``--to hdf5``.
* ``model_options`` (MODEL, ``--weights``, ``--mean``, ``--scale``, ``--resize``,
  ``--gray``/``--color``, loaded into one ``inference.Model``): predict, visualize, extract.
* ``image_output_options`` (``--format``, ``--quality``, ``--gray``/``--color``, ``--root``,
  ``--device``, ``--skip-bad``, ``--workers``, ``--overwrite``, ``--json``): resize, augment.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import logging
import os
import sys
from typing import Any, Callable

import click


@dataclasses.dataclass
class Settings:
    """Cross-cutting settings in ``ctx.obj``: set by the root group or any command."""

    verbosity: int = 0
    debug: bool = False

    @property
    def progress(self) -> bool:
        return self.verbosity >= 0

    @staticmethod
    def get(ctx: click.Context | None = None) -> "Settings":
        ctx = ctx or click.get_current_context()
        return ctx.find_root().ensure_object(Settings)

    @staticmethod
    def apply(ctx: click.Context) -> None:
        settings = Settings.get(ctx)
        level = (
            logging.DEBUG
            if settings.debug or settings.verbosity > 0
            else (logging.ERROR if settings.verbosity < 0 else logging.INFO)
        )
        logging.getLogger("dataprep").setLevel(level)


def _setter(attr: str, value: Callable[[Settings, Any], Any]) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, given: Any) -> None:
        if given:
            settings = Settings.get(ctx)
            setattr(settings, attr, value(settings, given))
            Settings.apply(ctx)

    return callback


def _set_max_pixels(ctx: click.Context, param: click.Parameter, value: int) -> int:
    # OpenCV's own limit, behind the header checks for every format: read once, when OpenCV
    # loads (in this process and the workers it forks; Dask workers load it earlier). Not
    # where it is loaded already (a caller running commands in-process keeps its own).
    if "cv2" not in sys.modules:
        os.environ["OPENCV_IO_MAX_IMAGE_PIXELS"] = str(value or 1 << 40)
    from .. import images  # imported when the command runs: --help stays light

    images.MAX_PIXELS = value  # read by every decode, in this process and its forked workers
    return value


max_pixels_opt = click.option(
    "--max-pixels",
    type=click.IntRange(min=0),
    default=178_956_970,
    show_default=True,
    expose_value=False,
    callback=_set_max_pixels,
    help="Refuse images whose header declares more pixels, before decoding them "
    "(decompression bombs); 0: no limit.",
)


def _set_max_memory(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    from ..train import memory

    if value is None:
        memory.MAX_MEMORY = None
        return
    try:
        memory.MAX_MEMORY = memory.parse_size(value)
    except (ValueError, IndexError):
        raise click.BadParameter(f"{value!r}: give a size (8G, 512M) or 0", param=param) from None


max_memory_opt = click.option(
    "--max-memory",
    default=None,
    metavar="SIZE",
    expose_value=False,
    callback=_set_max_memory,
    help="Refuse a net whose estimated memory passes SIZE (8G, 512M; 0: no check) [default: the "
    "smallest of the cgroup's limit, ulimit -v and the physical memory].",
)


engine_opt = click.option(
    "--engine",
    type=click.Choice(["native", "onnxruntime"]),
    default=None,
    help="What runs the net: dataprep's layers (NumPy, or CuPy on a GPU), or onnxruntime over "
    "the graph export writes (the onnx extra; the same preparation, outputs within float32 "
    "tolerance; the graph, and a prototxt's parse, are kept in $DATAPREP_CACHE, default "
    "~/.cache/dataprep, for the next command with the same model and weights file; "
    "DATAPREP_CACHE=off keeps none) "
    "[default: native; onnxruntime for an .onnx MODEL].",
)


def common_options(f: Callable) -> Callable:
    """``--quiet``/``--verbose``/``--debug``, accepted before or after the command name."""
    f = click.option(
        "-q",
        "--quiet",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        help="No progress bars or info logs.",
        callback=_setter("verbosity", lambda s, v: -1),
    )(f)
    f = click.option(
        "-v",
        "--verbose",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        help="Debug logs.",
        callback=_setter("verbosity", lambda s, v: 1),
    )(f)
    f = click.option(
        "--debug",
        is_flag=True,
        expose_value=False,
        is_eager=True,
        help="Show tracebacks on errors.",
        callback=_setter("debug", lambda s, v: True),
    )(f)
    return f


class ParsedBy(click.ParamType):
    """An option value parsed by a core function (``module:function``, imported when first
    used, so ``--help`` stays light) that raises UsageError on bad text: exit 2, one line."""

    def __init__(self, name: str, parser: str) -> None:
        self.name, self.parser = name, parser

    def convert(self, value, param, ctx):
        if not isinstance(value, str):
            return value  # a default that is already parsed, or None
        import importlib

        from ..errors import UsageError

        module, function = self.parser.split(":")
        parse = getattr(importlib.import_module(f"dataprep.{module}"), function)
        try:
            return parse(value, param.opts[0] if param else self.name)
        except UsageError as exc:
            self.fail(str(exc), param, ctx)


SIZE = ParsedBy("size", "images:parse_size")
AREA_RANGE = ParsedBy("range", "transforms:parse_area_range")


def _executor(attr: str) -> Callable:
    def callback(ctx: click.Context, param: click.Parameter, value: Any) -> None:
        from ..errors import UsageError
        from ..parallel import EXECUTOR, check_scheduler

        if attr == "scheduler" and value:
            try:
                check_scheduler(value)
            except UsageError as exc:
                raise click.BadParameter(str(exc), ctx, param) from None
        EXECUTOR[attr] = value

    return callback


def workers_count(help_text: str) -> Callable:
    """``-j``/``--workers``: processes, this one included, all cores by default."""
    return click.option(
        "-j", "--workers", type=click.IntRange(min=1), default=None, show_default="all cores", help=help_text
    )


def workers_opt(f: Callable) -> Callable:
    """``--workers``, and where they run: ``--executor local|dask`` with ``--scheduler``."""
    return _apply(
        [
            workers_count(
                "Processes sharing the work, this one included (with --executor dask and "
                "no --scheduler: the local cluster's). Output is identical for any value."
            ),
            click.option(
                "--executor",
                type=click.Choice(["local", "dask"]),
                default="local",
                show_default=True,
                expose_value=False,
                callback=_executor("kind"),
                help="Run the work on this machine's processes, or on a Dask cluster (the dask extra).",
            ),
            click.option(
                "--scheduler",
                default=None,
                metavar="ADDRESS",
                envvar="DATAPREP_SCHEDULER",
                expose_value=False,
                callback=_executor("scheduler"),
                help="Dask scheduler (tcp://host:8786) [env DATAPREP_SCHEDULER; default: start a "
                "LocalCluster].",
            ),
        ],
        f,
    )


seed_opt = click.option("--seed", type=int, default=0, show_default=True, help="Random seed.")
overwrite_opt = click.option("--overwrite", is_flag=True, help="Replace existing outputs.")


def _chw(ctx: click.Context, param: click.Parameter, text: str | None) -> tuple[int, int, int] | None:
    if text is None:
        return None
    parts = text.lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
        raise click.BadParameter(f"{text!r}: give CxHxW, such as 1x28x28", param_hint="--shape")
    return tuple(int(p) for p in parts)


shape_opt = click.option(
    "--shape",
    default=None,
    metavar="CxHxW",
    callback=_chw,
    help="Input shape when the model names none and its store is not here (1x28x28).",
)
json_opt = click.option("--json", "as_json", is_flag=True, help="Print a JSON summary on stdout.")
skip_bad_opt = click.option(
    "--skip-bad",
    is_flag=True,
    help="Log and skip bad lines and images instead of stopping; print the count at the end.",
)
root_opt = click.option(
    "--root",
    type=click.Path(file_okay=False),
    default=None,
    help="Folder a list's paths are relative to [default: the list's folder].",
)
resize_opt = click.option(
    "--resize",
    "resize",
    type=SIZE,
    metavar="HxW",
    default=None,
    help="Resize every image to exactly HxW (bilinear, like convert_imageset).",
)
device_opt = click.option(
    "--device",
    type=click.Choice(["cpu", "gpu", "auto"]),
    default="cpu",
    show_default=True,
    help="Where the array work runs: gpu needs CuPy and a CUDA device (never falls back).",
)


def channels_options(f: Callable) -> Callable:
    """``--gray``/``--color`` (exclusive) as one ``channels`` argument: auto, gray or color."""

    @functools.wraps(f)
    def wrapper(*args: Any, gray: bool, color: bool, **kwargs: Any) -> Any:
        if gray and color:
            raise click.UsageError("--gray and --color are exclusive")
        return f(*args, channels="gray" if gray else "color" if color else "auto", **kwargs)

    return _apply(
        [
            click.option(
                "--gray",
                is_flag=True,
                help="Convert every image to 1-channel gray [default: images keep their own "
                "channels: gray stays 1 channel, color is 3-channel BGR].",
            ),
            click.option(
                "--color",
                is_flag=True,
                help="Make every image 3-channel BGR, gray ones expanded (convert_imageset's default).",
            ),
        ],
        wrapper,
    )


def _list_input(**values: Any) -> Any:
    from ..convert import ListInput
    from ..images import Channels

    return ListInput(**{**values, "channels": Channels(values["channels"])})


def input_options(f: Callable) -> Callable:
    """The list-input options every store command shares; the list-reading ones reach the
    command as one ``inputs`` argument (a ``convert.ListInput``)."""
    f = _apply([workers_opt, overwrite_opt, max_pixels_opt, json_opt, common_options], f)
    return bundled(
        "inputs",
        ("root", "channels", "resize", "check_size", "shuffle", "skip_bad", "seed"),
        _list_input,
        [
            root_opt,
            channels_options,
            resize_opt,
            click.option("--check-size", is_flag=True, help="Fail unless all images share one size."),
            click.option("--shuffle", is_flag=True, help="Shuffle the list (seeded by --seed)."),
            skip_bad_opt,
            seed_opt,
        ],
    )(f)


def bundled(
    name: str, names: tuple[str, ...], build: Callable[..., Any], options: list[Callable]
) -> Callable:
    """A decorator adding ``options`` whose values (the parameters ``names``) reach the
    command as one argument ``name``: ``build(**values)``, a core object that parses and
    checks them. So commands take ``hdf5``, ``inputs`` or ``output``, not a dozen values."""

    def decorate(f: Callable) -> Callable:
        @functools.wraps(f)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            values = {key: kwargs.pop(key) for key in names}
            return f(*args, **{name: build(**values)}, **kwargs)

        return _apply(options, wrapper)

    return decorate


def _hdf5_options(**values: Any) -> Any:
    from ..stores.hdf5 import Hdf5Options

    return Hdf5Options.parse(**values)


def store_options(label_names: str | None = "label", shown: str | bool = True) -> Callable:
    """HDF5 output options (label dataset names, mean/scale baking, sharding, compression),
    parsed by the core into one ``hdf5`` argument (an ``Hdf5Options``)."""
    names = ("label_names", "mean", "mean_file", "scale", "shard_size", "compression", "relative")
    return bundled(
        "hdf5",
        names,
        _hdf5_options,
        [
            click.option(
                "--label-names",
                default=label_names,
                show_default=shown,
                metavar="NAMES",
                help="HDF5 label datasets. One name: all label columns in one N x k "
                "dataset; k comma-separated names: one dataset each.",
            ),
            click.option(
                "--mean",
                "mean",
                default=None,
                metavar="V|B,G,R",
                help="Subtract a mean value, or one per channel (104,117,123).",
            ),
            click.option(
                "--mean-file",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="Subtract a mean image (mean.binaryproto or mean.npy).",
            ),
            click.option(
                "--scale",
                type=float,
                default=1.0,
                show_default=True,
                help="Multiply by this after mean subtraction (Caffe's order).",
            ),
            click.option(
                "--shard-size",
                default=None,
                metavar="N|SIZE",
                help="Images per HDF5 file (10000) or a file size (1GB): NAME_000.h5, ...",
            ),
            click.option(
                "--compression",
                type=click.Choice(["none", "gzip"]),
                default="none",
                show_default=True,
                help="gzip is slow to write; Caffe reads it.",
            ),
            click.option(
                "--relative",
                is_flag=True,
                help="Write paths in NAME_h5.txt relative to it (default: absolute).",
            ),
        ],
    )


def _apply(options: list[Callable], f: Callable) -> Callable:
    for opt in reversed(options):
        f = opt(f)
    return f


def _output_options(**values: Any) -> Any:
    from ..filejob import OutputOptions
    from ..images import Channels

    return OutputOptions(**{**values, "channels": Channels(values["channels"])})


def image_output_options(f: Callable) -> Callable:
    """Options of the commands that write image files (resize, augment); how outputs are
    written reaches the command as one ``output`` argument (a ``filejob.OutputOptions``)."""
    f = _apply([skip_bad_opt, workers_opt, max_pixels_opt, json_opt, common_options], f)
    return bundled(
        "output",
        ("fmt", "quality", "channels", "root", "device", "overwrite"),
        _output_options,
        [
            click.option(
                "--format",
                "fmt",
                type=click.Choice(["keep", "jpg", "png"]),
                default="keep",
                show_default=True,
                help="Output format (keep: the input's).",
            ),
            click.option(
                "--quality", type=click.IntRange(0, 100), default=95, show_default=True, help="JPEG quality."
            ),
            channels_options,
            root_opt,
            device_opt,
            overwrite_opt,
        ],
    )(f)


def _open_early(ctx, param, path: str | None) -> str | None:
    """An exported ONNX MODEL starts opening in onnxruntime as soon as it is parsed (it is
    the first argument), while the rest of the command line and the imports proceed."""
    if path and path.endswith(".onnx") and os.path.isfile(path):
        try:
            from ..train.engines import open_onnx

            open_onnx(path)
        except ImportError:  # said, in its own words, when the model is loaded
            pass
    return path


def _model(
    model_path: str,
    weights: str | None,
    reshape_params,
    mean,
    mean_per_channel,
    scale,
    crop,
    resize,
    channels,
    channel_order,
):
    from ..train.inference import load_model

    options = {
        "reshape_params": reshape_params,
        "mean": mean,
        "mean_per_channel": mean_per_channel,
        "scale": scale,
        "crop": crop,
        "resize": resize,
        "channels": None if channels == "auto" else channels,
        "channel_order": channel_order.upper() if channel_order else None,
    }
    hint = _graph_hint(model_path, weights, options)
    model = load_model(model_path, weights, options)
    return dataclasses.replace(model, hint=hint) if hint is not None else model


def _graph_hint(model_path: str, weights: str | None, options: dict) -> dict | None:
    """Where a command runs a prototxt, recipe or snapshot MODEL on onnxruntime: what its
    command line names (the files as they are now, the options, the command, its --layer).
    The graph the last such command used starts opening now, while the model is read (35 ms
    for SqueezeNet's prototxt); the engine takes it only if it is the model's graph
    (``graph_cache.hinted``)."""
    ctx = click.get_current_context()
    if ctx.params.get("engine") != "onnxruntime" or model_path.endswith(".onnx"):
        return None
    from ..train import graph_cache

    try:
        files = [graph_cache.file_identity(p) for p in (model_path, weights) if p]
    except OSError:  # load_model says what is missing
        return None
    request = {"files": files, "options": options, "command": ctx.info_name, "layer": ctx.params.get("layer")}
    graph = graph_cache.hinted(request)
    if graph is not None:
        with contextlib.suppress(ImportError):  # the engine says what to install
            from ..train.engines import open_onnx

            open_onnx(graph)
    return request


def model_options(f: Callable) -> Callable:
    """MODEL, ``--weights`` and what the model's preparation may lack (``--mean``,
    ``--scale``, ``--crop``, ``--resize``, ``--gray``/``--color``, ``--channel-order``),
    loaded into one ``model`` argument (an ``inference.Model``) by the one rule of
    ``preparation.with_options``: predict, visualize, extract."""
    return bundled(
        "model",
        (
            "model_path",
            "weights",
            "reshape_params",
            "mean",
            "mean_per_channel",
            "scale",
            "crop",
            "resize",
            "channels",
            "channel_order",
        ),
        _model,
        [
            click.argument(
                "model_path", metavar="MODEL", type=click.Path(dir_okay=False), callback=_open_early
            ),
            click.option(
                "--weights",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="Weights: a .npz snapshot or a .caffemodel [default: MODEL's, for a snapshot].",
            ),
            click.option(
                "--reshape-params",
                is_flag=True,
                help="Net surgery: a layer takes the blobs of its own name or of its name "
                "without -conv, reshaped to its own shape of the same count (fc6 -> fc6-conv).",
            ),
            click.option(
                "--mean",
                default=None,
                metavar="V|B,G,R|FILE",
                help="For a model without a mean: subtract a value, one per channel, or a mean "
                "file (a larger mean image is cut from its centre).",
            ),
            click.option(
                "--mean-per-channel",
                is_flag=True,
                help="Reduce the --mean file to one value per channel (pycaffe's "
                "mean.mean(1).mean(1)) instead of subtracting it pixel by pixel.",
            ),
            click.option(
                "--scale",
                type=float,
                default=None,
                help="For a model without a scale: multiply by this after the mean.",
            ),
            click.option(
                "--crop",
                type=click.IntRange(min=1),
                default=None,
                metavar="N",
                help="For a model without a crop: Caffe's centre crop to N x N.",
            ),
            resize_opt,
            channels_options,
            max_memory_opt,
            click.option(
                "--channel-order",
                type=click.Choice(["BGR", "RGB"], case_sensitive=False),
                default=None,
                help="For a prototxt that does not say: the model's channel order [default: BGR, "
                "as Caffe's convert_imageset stores images].",
            ),
        ],
    )(f)
