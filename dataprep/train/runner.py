"""The training loop of ``dataprep train``: batches from the loader, forward, backward, a
solver step; Caffe's log lines (so ``tools/extra/parse_log.py`` reads them), tests at
``test_interval``, snapshots, and metrics at the end."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable

import numpy as np
import yaml

from ..gpu import array_module
from ..staging import Staging
from .loader import BatchLoader
from .net import Net
from .recipe import Recipe
from .solver import Solver


def caffe_line(message: str, where: str = "solver.cpp:239") -> str:
    """``message`` with glog's prefix as Caffe prints it: level, MMDD, time with
    microseconds, thread id, source:line (parse_log.py reads the MMDD form)."""
    now = datetime.now()
    return f"I{now:%m%d %H:%M:%S.%f} {threading.get_native_id() % 100000:5d} {where}] {message}"


@dataclass
class TrainResult:
    """What a run made and measured."""

    iterations: int
    seconds: float
    train_loss: float
    test: dict[str, float] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    snapshot: Path | None = None  # the final one


def save_snapshot(path: Path, net: Net, solver: Solver, recipe: Recipe) -> Path:
    """``{prefix}_iter_{N}.npz``: weights by ``layer/index``, the solver's history and
    iteration, and the resolved recipe (as YAML text); plain arrays, loaded without pickle."""
    arrays: dict[str, np.ndarray] = {}
    for layer, i in net.params():
        arrays[f"param/{layer.name}/{i}"] = _host(layer.params[i])
    for k, history in enumerate(solver.history):
        arrays[f"history/{k}"] = _host(history)
    arrays["iteration"] = np.array(solver.iteration)
    arrays["recipe"] = np.array(yaml.safe_dump(recipe.raw, sort_keys=False))
    with Staging(overwrite=True) as staging:
        with open(staging.path(path), "wb") as f:
            np.savez(f, **arrays)
    return path


def _host(array) -> np.ndarray:
    return array.get() if hasattr(array, "get") else np.asarray(array)


def _test(net: Net, loader: BatchLoader, batches: int) -> dict[str, float]:
    """Mean of every test output over ``batches`` batches."""
    sums: dict[str, float] = {}
    for _ in range(batches):
        for name, value in net.forward(loader.next(), train=False).items():
            sums[name] = sums.get(name, 0.0) + value
    return {name: total / batches for name, total in sums.items()}


def train(
    recipe: Recipe, say: Callable[[str], object] = print, progress: Callable[[int], object] | None = None
) -> TrainResult:
    """Train ``recipe``'s net; ``say`` receives each log line (Caffe's form)."""
    run, data = recipe.run, recipe.data
    xp = array_module(run.device)
    rng = np.random.default_rng(run.random_seed)
    train_loader = BatchLoader(
        data.train,
        data.batch_size,
        data.transform,
        data.input,
        data.target,
        data.shuffle,
        run.random_seed,
        train=True,
    )
    val_loader = None
    if data.val is not None:
        val_loader = BatchLoader(
            data.val,
            data.val_batch_size or data.batch_size,
            data.transform,
            data.input,
            data.target,
            False,
            run.random_seed,
            train=False,
        )
    try:
        first = train_loader.next()
        shapes = {name: tuple(array.shape) for name, array in first.items()}
        net = Net(recipe.net, shapes, target=data.target, xp=xp, rng=rng)
        solver = Solver(recipe.solver)
        test_batches = run.test_iter or (
            max(1, -(-val_loader.n // val_loader.batch_size)) if val_loader else 0
        )
        return _loop(recipe, net, solver, train_loader, val_loader, first, test_batches, say, progress)
    finally:
        train_loader.close()
        if val_loader is not None:
            val_loader.close()


def _loop(recipe, net, solver, train_loader, val_loader, first, test_batches, say, progress) -> TrainResult:
    run = recipe.run
    prefix = Path(run.snapshot_prefix)
    say(caffe_line(f"Solving {recipe.name}", "solver.cpp:280"))
    result = TrainResult(0, 0.0, float("nan"))
    started = last_display = time.perf_counter()
    batch, smoothed = first, []
    for it in range(run.max_iter):
        if val_loader is not None and run.test_interval and it % run.test_interval == 0:
            _report_test(it, _test(net, val_loader, test_batches), say, result, net)
        outputs = net.forward(batch if batch is not None else train_loader.next(), train=True)
        batch = None
        net.backward()
        rate = solver.step(net.params())
        loss = net.loss(outputs)
        smoothed = (smoothed + [loss])[-max(1, run.average_loss) :]
        if run.display and it % run.display == 0:
            now = time.perf_counter()
            done = max(1, min(run.display, it) if it else 1)
            say(
                caffe_line(
                    f"Iteration {it} ({done / max(now - last_display, 1e-9):.5g} iter/s, "
                    f"{now - last_display:.3f}s/{run.display} iters), loss = {np.mean(smoothed):.6g}"
                )
            )
            for k, (name, value) in enumerate(outputs.items()):
                say(caffe_line(f"    Train net output #{k}: {_output(name, value, net)}"))
            say(caffe_line(f"Iteration {it}, lr = {rate:.6g}", "sgd_solver.cpp:105"))
            last_display = now
        if run.snapshot and (it + 1) % run.snapshot == 0 and it + 1 < run.max_iter:
            result.outputs.append(save_snapshot(Path(f"{prefix}_iter_{it + 1}.npz"), net, solver, recipe))
        if progress is not None:
            progress(1)
        result.train_loss = float(np.mean(smoothed))
    result.iterations = run.max_iter
    if val_loader is not None:
        _report_test(run.max_iter, _test(net, val_loader, test_batches), say, result, net)
    result.seconds = time.perf_counter() - started
    result.snapshot = save_snapshot(Path(f"{prefix}_iter_{run.max_iter}.npz"), net, solver, recipe)
    result.outputs.append(result.snapshot)
    metrics = Path(f"{prefix}_metrics.json")
    with Staging(overwrite=True) as staging:
        staging.path(metrics).write_text(
            json.dumps({"recipe": recipe.name, "tests": result.metrics}, indent=1)
        )
    result.outputs.append(metrics)
    say(caffe_line("Optimization Done.", "solver.cpp:464"))
    return result


def _output(name: str, value: float, net: Net) -> str:
    """``loss = 0.07 (* 1 = 0.07 loss)`` for a loss, ``accuracy = 0.9`` for a metric (Caffe's)."""
    weight = net.loss_weights().get(name, 0.0)
    return f"{name} = {value:.6g}" + (f" (* {weight:g} = {weight * value:.6g} loss)" if weight else "")


def _report_test(it: int, outputs: dict[str, float], say, result: TrainResult, net: Net) -> None:
    say(caffe_line(f"Iteration {it}, Testing net (#0)", "solver.cpp:347"))
    for k, (name, value) in enumerate(outputs.items()):
        say(caffe_line(f"    Test net output #{k}: {_output(name, value, net)}", "solver.cpp:414"))
    result.test = dict(outputs)
    result.metrics.append({"iteration": it, **outputs})
