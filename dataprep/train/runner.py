"""The training loop of ``dataprep train``: batches from the loader, forward, backward, a
solver step; Caffe's log lines (so ``tools/extra/parse_log.py`` reads them), tests at
``test_interval``, snapshots, and metrics at the end."""

from __future__ import annotations

import contextlib
import glob
import json
import threading
import time
import warnings
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Callable, ContextManager, Iterator

import numpy as np
import yaml

from ..errors import DataprepError, OnError, StoreExistsError, UsageError
from ..gpu import array_module, host
from ..parallel import default_workers
from ..plotting import plot_panels, training_series
from ..staging import Staging, release_claim, signals_held, take_claim
from .caffemodel import (
    caffemodel_bytes,
    caffemodel_h5,
    copy_weights,
    data_layers,
    is_caffe_state,
    load_snapshot,
    read_solverstate,
    read_weights,
    solverstate_h5,
    write_caffemodel,
)
from .gil import quick_switches
from .inference import model_head
from .loader import BatchLoader, SelfFed
from .net import Net
from .preparation import of_training
from .recipe import Recipe
from .solver import TWO_HISTORIES, Solver


def caffe_line(message: str, where: str = "solver.cpp:239", level: str = "I") -> str:
    """``message`` with glog's prefix as Caffe prints it: level (I, W), MMDD, time with
    microseconds, thread id, source:line (parse_log.py reads the MMDD form)."""
    now = datetime.now()
    return f"{level}{now:%m%d %H:%M:%S.%f} {threading.get_native_id() % 100000:5d} {where}] {message}"


@dataclass
class TrainResult:
    """What a run made and measured."""

    iterations: int
    seconds: float
    train_loss: float
    test: dict[str, float] = field(default_factory=dict)
    metrics: list[dict] = field(default_factory=list)
    outputs: list[Path] = field(default_factory=list)
    snapshot: Path | None = None  # the last one
    final: Path | None = None  # the model to use: the best with keep_best, else the last snapshot


def _text(value) -> np.ndarray:
    return np.array(json.dumps(value))


class Training:
    """One run of a recipe: net, solver, loaders and what was measured; ``run`` trains to
    ``max_iter``. A snapshot holds everything a resumed run needs to continue exactly."""

    def __init__(
        self,
        recipe: Recipe,
        say: Callable[[str], object] = print,
        progress: Callable[[int], object] | None = None,
        resume: str | Path | None = None,
        weights: str | Path | None = None,
        on_error: OnError | None = None,
        overwrite: bool = False,
        bars: Callable[[int, str], ContextManager[Callable[[int], object]]] | None = None,
        tensorboard: str | Path | None = None,
        workers: int | None = None,
    ) -> None:
        self.recipe, self.say, self.progress = recipe, say, progress
        self.workers = default_workers() if workers is None else workers  # decoding an image list
        self.events = self.train_loader = self.val_loader = None
        self.extra: list = []  # further test nets (#1 on): their loaders, test batches, metrics
        self.extra_batches: list[int] = []
        self.extra_metrics: list[dict] = []  # {"iteration", "net", outputs...}
        self.bars = bars or _no_bar  # a bar for each test pass (on a terminal)
        self.prefix = Path(recipe.run.snapshot_prefix)
        claim_prefix(self.prefix)  # one run per prefix for its whole life
        try:  # the claim and the loaders' threads end before an error leaves
            self._setup(resume, weights, on_error, overwrite, tensorboard)
        except BaseException:
            self.close()
            raise

    def _setup(self, resume, weights, on_error, overwrite, tensorboard) -> None:
        recipe = self.recipe
        run, data = recipe.run, recipe.data
        if resume is None and not overwrite:
            refuse_earlier_run(run.snapshot_prefix)
        self.xp = array_module(run.device)
        self.rng = np.random.default_rng(run.random_seed)
        caffe_state = resume is not None and is_caffe_state(resume)
        saved = (
            load_snapshot(resume, ("positions", "iteration", "rng")) if resume and not caffe_state else None
        )
        if saved is not None:
            same_net(saved, recipe.net, resume)
        position = json.loads(str(saved["positions"])) if saved is not None else {"train": 0, "val": 0}
        if data.train is None:  # DummyData makes the inputs (caffe time's nets, trained)
            self._setup_self_fed(resume, weights, saved, caffe_state, tensorboard)
            return
        self.train_loader = BatchLoader(
            data.train,
            data.batch_size,
            data.transform,
            data.input,
            data.target,
            data.shuffle,
            run.random_seed,
            train=True,
            start=position["train"],
            augment=recipe.augment.spec() if recipe.augment else None,
            augment_seed=recipe.augment.seed if recipe.augment else 0,
            on_error=on_error,
            workers=self.workers,
        )

        def test_loader(source, batch: int | None, start: int) -> BatchLoader:
            """A test net's batches: in store order, never augmented."""
            batch = batch or data.val_batch_size or data.batch_size
            return BatchLoader(
                source, batch, data.transform, data.input, data.target, False, run.random_seed,
                train=False, start=start, on_error=on_error, workers=self.workers,
            )  # fmt: skip

        if data.val is not None:
            self.val_loader = test_loader(data.val, data.val_batch_size, position["val"])
        starts = position.get("tests") or [0] * len(data.tests)
        self.extra = [  # further test nets (#1 on): (loader, test batches)
            test_loader(test.source, test.batch_size, starts[k]) for k, test in enumerate(data.tests)
        ]
        self.extra_batches = [
            test.test_iter or max(1, -(-loader.n // loader.batch_size))
            for test, loader in zip(data.tests, self.extra)
        ]
        self.first = self.train_loader.next()
        self._setup_net()
        samples = self.train_loader.samples
        self.preparation = of_training(
            samples.preprocessing(),
            data.transform,
            self.train_loader.record_shape[:2],
            self.net.shapes[data.input][1:],
            model_head(recipe.net),
            samples.labels(),
        )
        self._setup_rest(resume, weights, saved, caffe_state, tensorboard)

    def _setup_self_fed(self, resume, weights, saved, caffe_state, tensorboard) -> None:
        """A net whose DummyData layers make its inputs: no loaders (a test net too when
        the solver tests), the batch size of the layers' first top."""
        recipe = self.recipe
        self.first = {}
        self._setup_net()
        first = next(node for node in self.net.nodes if node.layer.type == "DummyData")
        shape = self.net.shapes[first.tops[0]]
        self.train_loader = SelfFed(shape[0] if shape else 1)
        if recipe.run.test_iter:
            self.val_loader = SelfFed(self.train_loader.batch_size)
        self.preparation = of_training({}, recipe.data.transform, None, shape[1:], model_head(recipe.net), {})
        self._setup_rest(resume, weights, saved, caffe_state, tensorboard)

    def _setup_net(self) -> None:
        """The net over the first batch's shapes, and Caffe's set-up lines."""
        shapes = {name: tuple(array.shape) for name, array in self.first.items()}
        self.net = Net(self.recipe.net, shapes, target=self.recipe.data.target, xp=self.xp, rng=self.rng)
        for message, where in setup_lines(self.net):
            self.say(caffe_line(message, where))
        self.solver = Solver(self.recipe.solver)

    def _setup_rest(self, resume, weights, saved, caffe_state, tensorboard) -> None:
        """What follows the net: weights or a snapshot restored, events, the test passes."""
        run = self.recipe.run
        self.result = TrainResult(0, 0.0, float("nan"))
        self.curve: list[tuple[int, float]] = []  # (iteration, train loss) at each display
        self.best: dict | None = None
        if weights is not None and saved is None:  # fine-tuning: layers matched by name
            copied = copy_weights(self.net, read_weights(weights), weights)
            self.say(
                caffe_line(
                    f"Copying weights of {', '.join(copied) or 'no layer'} from {weights}", "net.cpp:744"
                )
            )
        if saved is not None:
            self._restore(saved, resume)
        if caffe_state:
            self._restore_caffe(resume)
        if tensorboard is not None:
            from .events import Events

            self.events = Events(tensorboard, run.snapshot_prefix, self.solver.iteration)
        self._iteration_rng = self.rng.bit_generator.state
        val = self.val_loader
        self.test_batches = run.test_iter or (max(1, -(-val.n // val.batch_size)) if val else 0)
        if (
            val is not None
            and val.samples is not None
            and run.test_iter
            and run.test_iter * val.batch_size > val.n
        ):
            self.say(caffe_line(_cycling(run.test_iter, val.batch_size, val.n), "solver.cpp:60", "W"))

    def close(self) -> None:
        for loader in (self.train_loader, self.val_loader, *self.extra):
            if loader is not None:
                loader.close()
        if self.events is not None:
            self.events.close()
        release_claim(self.prefix)

    def snapshot(self, path: Path) -> Path:
        """``{prefix}_iter_{N}.npz``: weights by ``layer/index``, the solver's state, the
        random generator, the loaders' positions, the curves so far and the resolved
        recipe; plain arrays and JSON text, loaded without pickle."""
        arrays: dict[str, np.ndarray] = {}
        for layer, i in self.net.params():
            arrays[f"param/{layer.name}/{i}"] = host(layer.params[i])
        for k, history in enumerate(self.solver.history):
            arrays[f"history/{k}"] = host(history)
        for k, history in enumerate(self.solver.history2):
            arrays[f"history2/{k}"] = host(history)
        arrays["iteration"] = np.array(self.solver.iteration)
        arrays["rng"] = _text(self._iteration_rng)
        # one batch per finished iteration, test_batches per finished test: what an
        # uninterrupted run has read at this point, wherever an interrupt landed
        val = self.val_loader
        arrays["positions"] = _text(
            {
                "train": self.solver.iteration * self.train_loader.batch_size * self.recipe.solver.iter_size,
                "val": len(self.result.metrics) * self.test_batches * val.batch_size if val else 0,
                "tests": [
                    sum(1 for m in self.extra_metrics if m["net"] == k + 1) * batches * loader.batch_size
                    for k, (loader, batches) in enumerate(zip(self.extra, self.extra_batches))
                ],
            }
        )
        arrays["extra_metrics"] = _text(self.extra_metrics)
        arrays["metrics"] = _text(self.result.metrics)
        arrays["curve"] = _text(self.curve)
        arrays["best"] = _text(self.best)
        arrays["recipe"] = np.array(yaml.safe_dump(self.recipe.raw, sort_keys=False))
        # the whole preparation by value, so the model gives the same answers anywhere
        fields, means = self.preparation.record()
        arrays["preparation"] = np.array(yaml.safe_dump(fields, sort_keys=False))
        arrays.update(means)
        with Staging(overwrite=True, after_interrupt=True) as staging:  # Ctrl-C saves one too
            with open(staging.path(path), "wb") as f:
                np.savez(f, **arrays)
        return path

    def _snapshots(self, stem: str) -> list[Path]:
        """The snapshot ``{stem}.npz`` (what --resume reads), and ``{stem}.caffemodel`` too
        with ``snapshot_format: caffemodel`` (the weights, for Caffe)."""
        self._check_parameters()  # no non-finite snapshot is ever written
        paths = [self.snapshot(Path(f"{stem}.npz"))]
        self.say(caffe_line(f"Snapshotting to NumPy archive {paths[0]}", "sgd_solver.cpp:273"))
        if self.recipe.run.snapshot_format == "hdf5":  # Caffe's HDF5 snapshots, beside the .npz
            paths += self._hdf5_snapshot(stem)
        if self.recipe.run.snapshot_format == "caffemodel":
            data = caffemodel_bytes(
                self.net, self.recipe.name, self.recipe.raw["net"], data_layers(self.recipe)
            )
            paths.append(write_caffemodel(Path(f"{stem}.caffemodel"), data))
            self.say(caffe_line(f"Snapshotting to binary proto file {paths[-1]}", "sgd_solver.cpp:273"))
        return paths

    def _hdf5_snapshot(self, stem: str) -> list[Path]:
        """``{stem}.caffemodel.h5`` and ``{stem}.solverstate.h5`` as Caffe writes them."""
        weights, state = Path(f"{stem}.caffemodel.h5"), Path(f"{stem}.solverstate.h5")
        with Staging(overwrite=True, after_interrupt=True) as staging:
            caffemodel_h5(self.net, staging.path(weights))
            step = sum(1 for v in self.recipe.solver.stepvalue if self.solver.iteration >= v)
            histories = self.solver.history + self.solver.history2  # Caffe's order: Adam's v after m
            solverstate_h5(staging.path(state), self.solver.iteration, weights, step, histories)
        self.say(caffe_line(f"Snapshotting to HDF5 file {weights}", "sgd_solver.cpp:283"))
        self.say(caffe_line(f"Snapshotting solver state to HDF5 file {state}", "sgd_solver.cpp:290"))
        return [weights, state]

    def _restore(self, saved, path) -> None:
        for layer, i in self.net.params():
            key = f"param/{layer.name}/{i}"
            if key not in saved or saved[key].shape != layer.params[i].shape:
                raise UsageError(
                    f"{path}: no weights of shape {layer.params[i].shape} for {key}: "
                    "a snapshot of another net"
                )
            layer.params[i] = self.xp.asarray(saved[key])
        count = len(self.net.params())
        self.solver.history = [
            self.xp.asarray(saved[f"history/{k}"]) for k in range(count) if f"history/{k}" in saved
        ]
        self.solver.history2 = [
            self.xp.asarray(saved[f"history2/{k}"]) for k in range(count) if f"history2/{k}" in saved
        ]
        self.solver.iteration = int(saved["iteration"])
        self.rng.bit_generator.state = json.loads(str(saved["rng"]))
        self.result.metrics = json.loads(str(saved["metrics"]))
        self.curve = [tuple(point) for point in json.loads(str(saved["curve"]))]
        if "extra_metrics" in saved:
            self.extra_metrics = json.loads(str(saved["extra_metrics"]))
        self.best = json.loads(str(saved["best"]))

    def _restore_caffe(self, path) -> None:
        """Caffe's own solver state: its weights file, iteration and histories (Adam's and
        AdaDelta's second half their second histories, Caffe's order). Nothing more is in
        it: the loaders start at their first record and the random state from the seed."""
        iteration, weights, history = read_solverstate(path)
        copy_weights(self.net, read_weights(weights), weights)
        params = self.net.params()
        copies = 2 if self.recipe.solver.type in TWO_HISTORIES else 1
        if len(history) != len(params) * copies:
            raise DataprepError(
                f"{path}: {len(history)} histories; this net's {len(params)} parameters with "
                f"{self.recipe.solver.type} need {len(params) * copies}: a state of another net or solver"
            )
        arrays = [
            self.xp.asarray(h.reshape(layer.params[i].shape).astype(layer.params[i].dtype))
            for h, (layer, i) in zip(history, params * copies)
        ]
        self.solver.history, self.solver.history2 = arrays[: len(params)], arrays[len(params) :]
        self.solver.iteration = iteration
        self.say(
            caffe_line(
                f"Restoring previous solver status from {path} (Caffe's: iteration {iteration} and the "
                "histories; the loaders start at their first record and the random state from the seed, "
                "so the run is not bit-identical to one never stopped)",
                "sgd_solver.cpp:318",
            )
        )

    def run(self) -> TrainResult:
        try:
            with warnings.catch_warnings(), quick_switches():  # non-finite values are checked,
                warnings.simplefilter("ignore", RuntimeWarning)  # never warned raw
                return self._loop()
        except KeyboardInterrupt:  # keep what was learned: a snapshot to --resume from
            path = Path(f"{self.recipe.run.snapshot_prefix}_iter_{self.solver.iteration}.npz")
            if not self._finite():
                raise
            self.snapshot(path)
            self.say(caffe_line(f"Snapshotting to NumPy archive {path}", "sgd_solver.cpp:273"))
            raise
        finally:
            self.close()

    def _loop(self) -> TrainResult:
        run, net, solver, result = self.recipe.run, self.net, self.solver, self.result
        prefix = Path(run.snapshot_prefix)
        self.say(caffe_line(f"Solving {self.recipe.name}", "solver.cpp:280"))
        started = last_display = time.perf_counter()
        smoothed: list[float] = []
        batch_size = self.train_loader.batch_size
        while solver.iteration < run.max_iter:
            it = solver.iteration
            self._iteration_rng = self.rng.bit_generator.state  # what a snapshot of this point holds
            initial = it > 0 or run.test_initialization  # Caffe's test_initialization
            due = self.val_loader is not None and run.test_interval and it % run.test_interval == 0
            if due and initial and not self._tested(it):
                self._test(it)
            outputs, loss = self._passes(it)
            with signals_held():  # an update is applied to every parameter or to none
                rate = solver.step(net.params(), lambda line: self.say(caffe_line(line, "sgd_solver.cpp:97")))
            if run.debug_info:
                self._debug_update()
            smoothed = (smoothed + [loss])[-max(1, run.average_loss) :]
            result.train_loss = float(np.mean(smoothed))
            if run.display and it % run.display == 0:
                self._check_parameters()
                now = time.perf_counter()
                done = min(run.display, it) if it else 1
                rate_per_s = done / max(now - last_display, 1e-9)
                self.say(
                    caffe_line(
                        f"Iteration {it} ({rate_per_s:.5g} iter/s, {rate_per_s * batch_size:.4g} images/s, "
                        f"{now - last_display:.3f}s/{run.display} iters), loss = {result.train_loss:.6g}"
                    )
                )
                for k, (name, value) in enumerate(outputs.items()):
                    self.say(caffe_line(f"    Train net output #{k}: {_output(name, value, net)}"))
                self.say(caffe_line(f"Iteration {it}, lr = {rate:.6g}", "sgd_solver.cpp:105"))
                if self.events is not None:
                    self.events.scalars("train", outputs, it)
                    self.events.scalars(
                        "train", {"lr": rate, "images_per_second": rate_per_s * batch_size}, it
                    )
                if self.curve and self.curve[-1][0] == it:  # a resumed run's first display
                    self.curve.pop()  # replaces the point its end of run left there
                self.curve.append((it, result.train_loss))
                last_display = now
            self._iteration_rng = self.rng.bit_generator.state
            if run.snapshot and solver.iteration % run.snapshot == 0 and solver.iteration < run.max_iter:
                result.outputs.extend(self._snapshots(f"{prefix}_iter_{solver.iteration}"))
                signal_point("after-snapshot", solver.iteration)
            if self.progress is not None:
                self.progress(1)
        result.iterations = solver.iteration
        if smoothed and (not self.curve or self.curve[-1][0] != solver.iteration):  # the last point too
            self.curve.append((solver.iteration, result.train_loss))
            self.say(
                caffe_line(f"Iteration {solver.iteration}, loss = {result.train_loss:.6g}", "solver.cpp:445")
            )
        if self.val_loader is not None and not self._tested(solver.iteration):
            self._test(solver.iteration)
        result.seconds = time.perf_counter() - started
        if run.snapshot_after_train:
            saved = self._snapshots(f"{prefix}_iter_{solver.iteration}")
            result.snapshot = saved[0]
            result.outputs.extend(saved)
        else:  # Caffe's snapshot_after_train: false: the last interval snapshot stands
            result.snapshot = _last_snapshot(prefix)
        result.outputs.extend(self._write_metrics(prefix))
        result.final = Path(f"{prefix}_best.npz") if self.best else result.snapshot
        self.say(caffe_line("Optimization Done.", "solver.cpp:464"))
        return result

    def _passes(self, it: int) -> tuple[dict, float]:
        """Caffe's iteration: ``iter_size`` forward-backward passes over as many batches,
        their gradients summed (the solver divides by ``iter_size``), the loss averaged;
        the last pass's outputs for the display."""
        net, run, passes = self.net, self.recipe.run, self.recipe.solver.iter_size
        watch = self._debug_backward if run.debug_info else None
        total, summed = 0.0, None
        for _ in range(passes):
            batch, self.first = (self.first if self.first is not None else self.train_loader.next()), None
            outputs = net.forward(batch, train=True)
            loss = net.loss(outputs)
            if run.on_nan == "stop" and not np.isfinite(loss):
                raise NonFiniteError(self._non_finite_line(it, f"the loss ({loss})"))
            if run.debug_info:
                self._debug_forward()
            net.backward(watch=watch)
            total += loss
            if passes > 1:
                grads = [layer.grads[i] for layer, i in net.params()]
                summed = (
                    [g if g is None else g.copy() for g in grads]
                    if summed is None
                    else [
                        s if g is None else (g.copy() if s is None else s + g) for s, g in zip(summed, grads)
                    ]
                )
        if summed is not None:
            for (layer, i), g in zip(net.params(), summed):
                layer.grads[i] = g
        return outputs, total / passes

    def _debug_forward(self) -> None:
        """Caffe's debug_info after a forward pass: each top blob's and parameter's mean
        absolute value."""
        for node in self.net.nodes:
            name = node.layer.name
            tops = [(top, self.net.blobs.get(top)) for top in node.tops]
            self._debug_lines("Forward", name, "top", tops, "data", "net.cpp:604")
            self._debug_lines("Forward", name, "param", enumerate(node.layer.params), "data", "net.cpp:615")

    def _debug_backward(self, node, bottom_diffs) -> None:
        name = node.layer.name
        bottoms = zip(node.bottoms, bottom_diffs)
        self._debug_lines("Backward", name, "bottom", bottoms, "diff", "net.cpp:632")
        self._debug_lines("Backward", name, "param", enumerate(node.layer.grads), "diff", "net.cpp:643")

    def _debug_lines(self, direction: str, name: str, kind: str, blobs, what: str, where: str) -> None:
        """One debug_info line per (label, array) of ``blobs``: its mean absolute value."""
        for label, value in blobs:
            if value is not None:
                message = f"    [{direction}] Layer {name}, {kind} blob {label} {what}: {_mean_abs(value):g}"
                self.say(caffe_line(message, where))

    def _debug_update(self) -> None:
        """Caffe's net-wide line: the L1 and L2 norms of every parameter and its gradient."""
        data = diff = square_data = square_diff = 0.0
        for layer, i in self.net.params():
            value = host(layer.params[i]).astype(np.float64)
            data, square_data = data + np.abs(value).sum(), square_data + (value * value).sum()
            if layer.grads[i] is not None:
                grad = host(layer.grads[i]).astype(np.float64)
                diff, square_diff = diff + np.abs(grad).sum(), square_diff + (grad * grad).sum()
        self.say(
            caffe_line(
                f"    [Backward] All net params (data, diff): L1 norm = ({data:g}, {diff:g}); "
                f"L2 norm = ({np.sqrt(square_data):g}, {np.sqrt(square_diff):g})",
                "net.cpp:697",
            )
        )

    def _tested(self, it: int, net: int = -1) -> bool:
        """Whether the test at ``it`` is done already (a run resumed just after it): of test
        net ``net``, or of every test net."""
        if net == 0 or (net < 0 and not self.extra):
            metrics = self.result.metrics
            return bool(metrics) and metrics[-1]["iteration"] == it
        if net < 0:
            return all(self._tested(it, k) for k in range(len(self.extra) + 1))
        return any(m["iteration"] == it and m["net"] == net for m in self.extra_metrics)

    def _finite(self) -> bool:
        xp = self.xp
        return all(bool(xp.isfinite(layer.params[i]).all()) for layer, i in self.net.params())

    def _check_parameters(self) -> None:
        """Stop at a non-finite parameter (at each display and before each snapshot)."""
        if self.recipe.run.on_nan == "stop" and not self._finite():
            bad = next(
                layer.name for layer, i in self.net.params() if not self.xp.isfinite(layer.params[i]).all()
            )
            raise NonFiniteError(self._non_finite_line(self.solver.iteration, f"layer {bad}'s parameters"))

    def _non_finite_line(self, it: int, what: str) -> str:
        """The one line of a run stopped by non-finite values: where, the first layer whose
        output or gradient went non-finite (this batch's blobs), what is kept."""
        first = first_non_finite(self.net)
        kept = sorted(self.prefix.parent.glob(glob.escape(self.prefix.name) + "_iter_*.npz"))
        return (
            f"iteration {it}: {what} went non-finite"
            + (f" (first non-finite: {first})" if first else "")
            + "; the run stops without a snapshot of it"
            + (f" (the last finite one: {kept[-1]})" if kept else "")
            + ": lower base_lr or check the data; solver.on_nan: continue trains on as Caffe does"
        )

    def _test_net(self, it: int, net: int, loader, batches: int) -> dict[str, float]:
        """One test net's pass: the mean of every test output over its batches, logged as
        Caffe logs test net #``net``."""
        self.say(caffe_line(f"Iteration {it}, Testing net (#{net})", "solver.cpp:347"))  # when it starts
        sums: dict[str, float] = {}
        with self.bars(batches, f"test #{net} at {it}" if net else f"test at {it}") as update:
            for _ in range(batches):
                outputs = self.net.forward(loader.next(), train=False)
                for name, value in {**outputs, **self.net.absolute_errors()}.items():
                    sums[name] = sums.get(name, 0.0) + value
                update(1)
                signal_point("during-test", it)
        outputs = {name: total / batches for name, total in sums.items()}
        for k, (name, value) in enumerate(outputs.items()):
            self.say(
                caffe_line(f"    Test net output #{k}: {_output(name, value, self.net)}", "solver.cpp:414")
            )
        return outputs

    def _test(self, it: int) -> None:
        """Every test net at ``it`` (those not done before an interrupt): logged, recorded,
        and kept as the best snapshot when ``keep_best`` names an output of test net #0 that
        improved."""
        signal_point("before-test", it)
        if not self._tested(it, 0):
            self._test_first(it, self._test_net(it, 0, self.val_loader, self.test_batches))
            self._iteration_rng = self.rng.bit_generator.state  # a test's DummyData draws from it
        for k, (loader, batches) in enumerate(zip(self.extra, self.extra_batches), 1):
            if not self._tested(it, k):
                self.extra_metrics.append(
                    {"iteration": it, "net": k, **self._test_net(it, k, loader, batches)}
                )
                self._iteration_rng = self.rng.bit_generator.state

    def _test_first(self, it: int, outputs: dict[str, float]) -> None:
        self.result.test = dict(outputs)
        self.result.metrics.append({"iteration": it, **outputs})
        signal_point("after-test", it)
        if self.events is not None:
            self.events.scalars("test", outputs, it)
        key = self.recipe.run.keep_best
        if key is not None:
            if key not in outputs:
                raise UsageError(f"recipe solver.keep_best: {key!r} is no test output ({', '.join(outputs)})")
            lower = "loss" in key  # losses improve downwards, metrics (accuracy) upwards
            value = outputs[key]
            if self.best is None or (value < self.best["value"] if lower else value > self.best["value"]):
                self.best = {"output": key, "value": value, "iteration": it}
                self.snapshot(Path(f"{self.recipe.run.snapshot_prefix}_best.npz"))

    def _write_metrics(self, prefix: Path) -> list[Path]:
        metrics, plot = Path(f"{prefix}_metrics.json"), Path(f"{prefix}_loss.png")
        record = {
            "recipe": self.recipe.name,
            "tests": self.result.metrics,
            **({"more_tests": self.extra_metrics} if self.extra else {}),
            "train": self.curve,
            "best": self.best,
        }
        with Staging(overwrite=True) as staging:
            staging.path(metrics).write_text(json.dumps(record, indent=1))
            series = training_series(self.curve, self.result.metrics)
            plot_panels(series, staging.path(plot), f"{self.recipe.name}: {self.solver.iteration} iterations")
        return [metrics, plot] + ([Path(f"{prefix}_best.npz")] if self.best else [])


def train(
    recipe: Recipe,
    say: Callable[[str], object] = print,
    progress: Callable[[int], object] | None = None,
    resume: str | Path | None = None,
    weights: str | Path | None = None,
    on_error: OnError | None = None,
    overwrite: bool = False,
    bars: Callable[[int, str], ContextManager[Callable[[int], object]]] | None = None,
    tensorboard: str | Path | None = None,
    workers: int | None = None,
) -> TrainResult:
    """Train ``recipe``'s net (from a snapshot with ``resume``, or starting from the layers
    of ``weights`` that share a name); ``say`` receives each log line, in Caffe's form;
    damaged records follow ``on_error``. An earlier run's outputs under the same
    ``snapshot_prefix`` are refused unless ``overwrite`` (a resumed run extends its own);
    ``bars(total, desc)`` draws each test pass; ``tensorboard`` names a folder for event files;
    ``workers`` processes decode an image list (default: all cores; the same batches for any)."""
    return Training(
        recipe, say, progress, resume, weights, on_error, overwrite, bars, tensorboard, workers
    ).run()


def _mean_abs(value) -> float:
    """Caffe's asum / count of a blob."""
    value = host(value)
    return float(np.abs(value).mean()) if np.size(value) else 0.0


def _last_snapshot(prefix: Path) -> Path | None:
    found = prefix.parent.glob(glob.escape(prefix.name) + "_iter_*.npz")
    return max(found, key=lambda p: int(p.stem.rsplit("_", 1)[1]), default=None)


def setup_lines(net: Net) -> list[tuple[str, str]]:
    """Caffe's net set-up lines: each layer's creation, bottoms and tops, its top shapes
    with their counts, and the memory its data takes so far (float32 values, as Caffe
    counts them), after the inputs' own."""
    lines, memory = [], 0
    for name, shape in net.inputs.items():
        count = int(np.prod(shape))
        memory += count * 4
        lines += [
            (f"Top shape: {''.join(f'{d} ' for d in shape)}({count}) [input {name}]", "net.cpp:121"),
            (f"Memory required for data: {memory}", "net.cpp:129"),
        ]
    for node in net.nodes:
        name = node.layer.name
        lines.append((f"Creating Layer {name}", "net.cpp:84"))
        lines += [(f"{name} <- {bottom}", "net.cpp:380") for bottom in node.bottoms]
        lines += [(f"{name} -> {top}", "net.cpp:338") for top in node.tops]
        lines.append((f"Setting up {name}", "net.cpp:113"))
        for top in node.tops:
            shape = net.shapes[top]
            count = int(np.prod(shape)) if shape else 1
            dims = "".join(f"{d} " for d in shape)  # Caffe's shape_string: "64 20 24 24 (737280)"
            lines.append((f"Top shape: {dims}({count})", "net.cpp:121"))
            if top not in node.bottoms:
                memory += count * 4
        lines.append((f"Memory required for data: {memory}", "net.cpp:129"))
    return lines


class NonFiniteError(DataprepError):
    """The loss or a parameter went NaN or infinite."""


def first_non_finite(net: Net) -> str | None:
    """The first layer (in net order) whose output, or else whose parameter gradient,
    holds a non-finite value after the last pass."""
    xp = net.xp
    for node in net.nodes:
        for top in node.tops:
            blob = net.blobs.get(top)
            if blob is not None and not bool(xp.isfinite(blob).all()):
                return f"layer {node.layer.name}'s output {top}"
    for node in net.nodes:
        for grad in node.layer.grads:
            if grad is not None and not bool(xp.isfinite(grad).all()):
                return f"layer {node.layer.name}'s gradient"
    return None


def claim_prefix(prefix: Path) -> None:
    """Claim ``prefix`` for this run's whole life, as the stores claim their destination: a
    second run on it is refused at once, naming the holder (``--overwrite`` too: a training
    run is hours long, so two are never merged); a dead run's claim is removed."""
    prefix.parent.mkdir(parents=True, exist_ok=True)
    take_claim(prefix, wait=False, refusal="snapshot_prefix {dest}: another training run")


def same_net(saved: dict, net: list[dict], path) -> None:
    """Refuse to resume from a snapshot of another net (layer names and types; shapes are
    checked as the weights load)."""
    theirs = (yaml.safe_load(str(saved["recipe"])) or {}).get("net") or []
    mine = [(layer.get("name"), layer.get("type")) for layer in net]
    found = [(layer.get("name"), layer.get("type")) for layer in theirs]
    if mine != found:
        differ = next((f"{a} against {b}" for a, b in zip(mine, found) if a != b), f"{len(found)} layers")
        raise UsageError(
            f"--resume {path}: a snapshot of another net ({differ}); resume the net it was taken of"
        )


SIGNAL_HOOK = "DATAPREP_TEST_SIGNAL_AT"  # tests: POINT:ITERATION:INT|TERM sends that signal there


def signal_point(point: str, iteration: int) -> None:
    """With DATAPREP_TEST_SIGNAL_AT=POINT:ITERATION:SIG, signal this process at that point
    (before-test, during-test, after-test, after-snapshot) once: interrupts land exactly."""
    import os
    import signal

    wanted = os.environ.get(SIGNAL_HOOK)
    if wanted and wanted.rsplit(":", 1)[0] == f"{point}:{iteration}":
        os.environ.pop(SIGNAL_HOOK)
        os.kill(os.getpid(), getattr(signal, "SIG" + wanted.rsplit(":", 1)[1]))


def refuse_earlier_run(prefix: str) -> None:
    """StoreExistsError when files of an earlier run carry ``prefix`` (snapshots, best,
    metrics, loss plot): a rerun would silently replace them."""
    base = Path(prefix)
    patterns = ("_iter_*.npz", "_iter_*.caffemodel", "_iter_*.h5", "_best.npz", "_metrics.json", "_loss.png")
    found = sorted(p for pattern in patterns for p in base.parent.glob(glob.escape(base.name) + pattern))
    if found:
        raise StoreExistsError(
            f"{found[0]} exists: an earlier run used snapshot_prefix {prefix}; pass --overwrite to "
            "replace it, --resume SNAPSHOT to extend it, or --set solver.snapshot_prefix=NEW"
        )


@contextlib.contextmanager
def _no_bar(total: int, desc: str) -> Iterator[Callable[[int], object]]:
    yield lambda n: None


def _cycling(test_iter: int, batch: int, count: int) -> str:
    """The warning for an explicit ``test_iter`` that reads the validation set more than
    once per test (Caffe's meaning: it cycles)."""
    images = test_iter * batch
    return (
        f"test_iter {test_iter} x batch {batch} = {images} images cycles the {count} validation "
        f"images {images / count:.3g} times; one pass is test_iter {-(-count // batch)}"
    )


def _output(name: str, value: float, net: Net) -> str:
    """``loss = 0.07 (* 1 = 0.07 loss)`` for a loss, ``accuracy = 0.9`` for a metric (Caffe's)."""
    weight = net.loss_weights().get(name, 0.0)
    return f"{name} = {value:.6g}" + (f" (* {weight:g} = {weight * value:.6g} loss)" if weight else "")
