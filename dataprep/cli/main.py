"""The ``dataprep`` root group: logging, error mapping, ``--version``, lazy subcommands."""

from __future__ import annotations

import atexit
import importlib
import logging
import os
import signal
import sys
import threading

import click

from .. import __version__
from ..errors import DataprepError, UsageError
from ..heap import keep_freed_memory
from ..staging import command_inputs
from .options import Settings, common_options

# name -> (module, one-line summary); modules are imported only when their command runs,
# so ``dataprep --help`` stays fast and a missing optional dependency breaks one command only.
COMMANDS = {
    "noise": "Generate the random-frequency noise dataset and its train/val/test lists.",
    "list": "Write a list file (path label) from a folder of images, one subfolder per class.",
    "hdf5": "Convert a list of images to HDF5 files for Caffe's HDF5Data layer.",
    "lmdb": "Convert a list of images to Caffe Datum records in LMDB or LevelDB.",
    "mean": "Compute the mean image (mean.binaryproto, .npy) and per-channel means.",
    "info": "Summarize a store: count, shapes, labels, size; --grid draws samples.",
    "verify": "Check every record of a store (and against its list); exit 1 on problems.",
    "resize": "Resize a folder or list of images to files (exact, shorter side, crop); resumable.",
    "augment": "Write K seeded random variants (crop, mirror, rotate, color, lighting) per image.",
    "convert": "Copy a store into another kind (HDF5, LMDB, LevelDB), records and order kept.",
    "import": "Import CIFAR-10, CIFAR-100 or MNIST from the official files into stores or PNG files.",
    "example": "Write a small made-up MNIST, CIFAR-10 or photo folder, in the formats users hold.",
    "predict": "Predict with a trained net (snapshot, recipe or Caffe model) on a list or a store.",
    "visualize": "Picture a trained layer's kernels, or its activation maps for one image.",
    "extract": "Write a layer's outputs as Datum features (Caffe's extract_features).",
    "recipe": "Convert recipes to Caffe's solver and net prototxt, and back.",
    "wds": "Convert a list of images to WebDataset tar shards with an index manifest.",
    "time": "Time a model's forward and backward passes layer by layer (Caffe's `caffe time`).",
    "plot": "Draw training curves from Caffe's or dataprep's logs; parse_log.py's tables with --csv.",
    "export": "Write a model with its weights as ONNX, a .caffemodel or a .npz (--random-init for none).",
    "train": "Train a recipe's net (YAML, or Caffe's solver prototxt) with Caffe's log lines and snapshots.",
}

# commands whose first argument is the store they read
READS_FIRST = {"mean", "info", "verify", "convert"}

log = logging.getLogger("dataprep")


class _StderrHandler(logging.Handler):
    """Writes to whatever ``sys.stderr`` is at emit time (test runners swap it), through
    tqdm when a bar may be showing, so that a log line does not tear it."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
            bars = sys.modules.get("tqdm")  # imported only when a bar is shown
            if bars is not None:
                bars.tqdm.write(line, file=sys.stderr)
            else:
                sys.stderr.write(line + "\n")
        except Exception:
            self.handleError(record)


class LazyGroup(click.Group):
    """Loads each command's module on first use and maps errors to one line: exit 2 for
    usage errors, 1 for data errors, 130 for Ctrl-C."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMANDS)

    def resolve_command(self, ctx: click.Context, args: list[str]):
        if args and args[0] in READS_FIRST:
            _walk_ahead(args[1:])
        return super().resolve_command(ctx, args)

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        if name not in COMMANDS:
            return None
        module = importlib.import_module(f"dataprep.cli.{name}")
        return getattr(module, name.replace("-", "_") + "_cmd")

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        with formatter.section("Commands"):
            formatter.write_dl(sorted(COMMANDS.items()))

    def invoke(self, ctx: click.Context):
        settings = ctx.ensure_object(Settings)
        hooks = _process_hooks()
        try:
            with command_inputs():  # no output may replace what the command reads
                result = super().invoke(ctx)
                sys.stdout.flush()  # a closed pipe shows here, not in the interpreter's exit
                return result
        except click.UsageError as exc:
            hint = caffe_order_hint(exc)
            if hint:
                exc.message += f"; did you mean: {hint}"
            raise
        except (click.ClickException, click.Abort, click.exceptions.Exit):
            raise
        except BrokenPipeError:  # `dataprep predict ... | head -1`: end quietly, as Unix tools do
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # nothing left to flush
            raise click.exceptions.Exit(PIPE_EXIT) from None
        except KeyboardInterrupt:
            code = _interrupt_exit()
            click.echo("Terminated." if code == TERM_EXIT else "Interrupted.", err=True)
            _close_executors()  # before a quick exit, which would leave a Dask cluster's semaphores
            _exit_interrupted(code)
            raise click.exceptions.Exit(code) from None
        except UsageError as exc:
            if settings.debug:
                raise
            raise click.UsageError(str(exc)) from None
        except DataprepError as exc:
            if settings.debug:
                raise
            raise click.ClickException(str(exc)) from None
        except OSError as exc:
            if settings.debug:
                raise
            where = f"{exc.filename}: " if exc.filename else ""  # the file first, as every line
            raise click.ClickException(f"{where}{exc.strerror or exc}") from None
        except Exception as exc:
            if settings.debug:
                raise
            raise click.ClickException(
                f"internal error: {type(exc).__name__}: {exc} (run with --debug for the traceback)"
            ) from None
        finally:
            _close_executors()
            _abandon_walks()
            _drop_openings()
            _restore_process_hooks(hooks)


def _walk_ahead(args: list[str]) -> None:
    """Start the page walk of the LMDB folder a command will read (its first argument, when
    no option comes before it), while the command's modules load: the walk is most of the
    opening of a store (25 ms of `mean`'s 0.25 s on 1500 records) and needs only a core."""
    if args and not args[0].startswith("-") and os.path.isfile(os.path.join(args[0], "data.mdb")):
        from ..lmdb_walk import walk_ahead

        walk_ahead(args[0])


def caffe_order_hint(exc: click.UsageError) -> str | None:
    """The dataprep form of a command typed in a Caffe tool's argument order (the command
    module's ``caffe_order``: compute_image_mean's, convert_imageset's)."""
    ctx = exc.ctx
    if ctx is None or "unexpected extra argument" not in exc.message or ctx.info_name not in COMMANDS:
        return None
    extra = exc.message.split("(", 1)[-1].rstrip(")").split()
    hint = getattr(importlib.import_module(f"dataprep.cli.{ctx.info_name}"), "caffe_order", None)
    return hint(ctx.params, extra) if hint is not None else None


def _close_executors() -> None:
    """Close a Dask client and its local cluster, if one started."""
    parallel = sys.modules.get("dataprep.parallel")
    if parallel is not None:
        parallel.close_executors()


def _abandon_walks() -> None:
    """Stop the page walks started ahead that the command did not wait for (it ended before
    opening its store: a usage error, --help); a process that runs commands in-process
    keeps no walking child."""
    walks = sys.modules.get("dataprep.lmdb_walk")
    if walks is not None:
        walks.abandon_walks()


def _drop_openings() -> None:
    """Drop the onnxruntime sessions opened ahead that the command did not take (it ended
    first, or a kept graph's hint named another graph): a process that runs commands
    in-process keeps none."""
    engines = sys.modules.get("dataprep.train.engines")
    if engines is not None:
        engines.drop_openings()


def _process_hooks() -> tuple:
    """The signal handlers and unraisable hook a command replaces while it runs."""
    return signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM), sys.unraisablehook


def _restore_process_hooks(hooks: tuple) -> None:
    """Give a process that runs commands in-process (tests, Python callers) its own handlers
    back: processes it forks later must not inherit ours (a multiprocessing pool terminated
    its forks with SIGTERM, which our handler turned into an exception in the fork, and
    one pool hung)."""
    sigint, sigterm, sys.unraisablehook = hooks
    for signum, handler in ((signal.SIGINT, sigint), (signal.SIGTERM, sigterm)):
        if handler is not None:  # None: a handler not set from Python, which stays as it was
            signal.signal(signum, handler)


INTERRUPT_EXIT = 130  # 128 + SIGINT, the shell's convention
PIPE_EXIT = 141  # 128 + SIGPIPE: the reader of stdout went away
TERM_EXIT = 143  # 128 + SIGTERM: a kill
_received: list[int] = []  # the signal that interrupted the running command


def _interrupt_exit() -> int:
    """130 for Ctrl-C (and an interrupt raised in-process), 143 for SIGTERM."""
    return TERM_EXIT if _received and _received[-1] == signal.SIGTERM else INTERRUPT_EXIT


def _exit_interrupted(code: int) -> None:
    """After a real Ctrl-C or SIGTERM, end the process now with ``code``. Partial outputs
    are already removed and workers stopped (the stack unwound through them). A normal exit
    still ran interpreter shutdown, which in about 1 of 30 early interrupts here ended in
    the process being killed by SIGINT (exit -2) instead of exiting 130."""
    from ..staging import INTERRUPTED

    if INTERRUPTED.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)


def _interrupt(signum: int, frame: object) -> None:
    from ..staging import INTERRUPTED

    INTERRUPTED.set()
    _received.append(signum)
    raise KeyboardInterrupt


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="dataprep")
@common_options
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Turn raw images into Caffe-compatible training datasets.

    \b
    dataprep noise --n 7000                 # noise images + train/val/test lists
    dataprep hdf5 train.txt --mean 128      # HDF5 for an HDF5Data layer
    dataprep lmdb train.txt train_lmdb      # Caffe Datum records in LMDB

    Results go to stdout, logs and progress bars to stderr. Errors are one line
    (--debug shows the traceback). Exit codes: 0 success; 1 data or environment error
    found while working (a bad image or list line, a store that exists, a missing optional
    package); 2 usage error (a bad or conflicting option, a missing input named on the
    command line); 130 Ctrl-C (SIGINT); 141 the reader of stdout went away (SIGPIPE); 143
    killed by SIGTERM. Interrupted or killed, nothing half-written is left.
    """
    from ..staging import INTERRUPTED

    INTERRUPTED.clear()  # a fresh run (tests invoke the CLI many times in one process)
    _received.clear()
    ctx.ensure_object(Settings)
    if not log.handlers:
        handler = _StderrHandler()
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        log.addHandler(handler)
        log.propagate = False
    Settings.apply(ctx)
    keep_freed_memory()  # image loops reuse freed buffers instead of faulting in new pages
    # Ctrl-C and a kill (SIGTERM) unwind alike, so writers remove their partial outputs
    signal.signal(signal.SIGINT, _interrupt)
    signal.signal(signal.SIGTERM, _interrupt)
    if not Settings.get(ctx).debug:
        sys.unraisablehook = _quiet_interrupts


def _quiet_interrupts(unraisable) -> None:
    """An interrupt that lands in a finalizer (h5py's weakref callbacks) cannot propagate and
    would be printed as "Exception ignored in ...": the interrupt flag already stops the run,
    so say nothing. Anything else is reported as Python would."""
    if isinstance(unraisable.exc_value, KeyboardInterrupt):
        return
    sys.__unraisablehook__(unraisable)


def main() -> None:
    """The console entry point: the command, then an exit without the interpreter's
    teardown (freeing every object and module, 25 ms of a 0.25 s `mean`) once what an exit
    must do is done: threads joined as the interpreter joins them, atexit callbacks run, the
    standard streams flushed. Every output is complete before a command returns."""
    try:
        cli()
        code = 0
    except SystemExit as exc:
        code = exc.code
    shutdown = getattr(threading, "_shutdown", None)  # what the interpreter's exit calls first
    if shutdown is None or not isinstance(code, (int, type(None))):
        raise SystemExit(code)
    shutdown()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe or stream: as the interpreter's exit
            code = code or 120
    os._exit(code or 0)


if __name__ == "__main__":
    main()
