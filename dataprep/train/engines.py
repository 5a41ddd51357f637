"""What runs a trained net forward over prepared batches: dataprep's own layers
(``native``, NumPy or CuPy) or onnxruntime over the graph ``dataprep export`` writes
(``onnxruntime``). Both take the batches ``Preparation.prepare`` made, so the two differ
only in the net's arithmetic (within the export tests' tolerance), and both hand back the
blobs asked for by their Caffe names.
"""

from __future__ import annotations

import functools
import os
import threading
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from ..errors import DataprepError, MissingPackage, UsageError
from ..gpu import host

ENGINES = ("native", "onnxruntime")
_OPENING: dict[tuple, Any] = {}  # an .onnx file (path, size, mtime) -> the future of its session


def _file_key(path: str) -> tuple:
    """``path`` as it is now: a file rewritten since (re-exported) is another key."""
    try:
        st = os.stat(path)
    except OSError:
        return (os.path.abspath(path),)
    return (os.path.abspath(path), st.st_size, st.st_mtime_ns)


def open_onnx(path: str) -> Any:
    """The future of an onnxruntime session of the ONNX file ``path``, opened in a thread
    (half a second for a 240 MB graph, mostly without the GIL): started as soon as the
    command line names the file, so the command's imports and its first inputs overlap it;
    the model's load takes it (``onnx_session``)."""
    key = _file_key(path)
    if key not in _OPENING:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingPackage(f"an ONNX MODEL ({path})", "onnx", "onnxruntime") from None

        def opened():
            try:
                return cpu_session(ort, path)
            except Exception as exc:  # onnxruntime's own exception types: a damaged graph
                raise DataprepError(
                    f"{path}: onnxruntime cannot open it: {str(exc).splitlines()[0]}"
                ) from None

        _OPENING[key] = in_thread(opened)
    return _OPENING[key]


def cpu_session(ort, graph: str | bytes) -> Any:
    """An onnxruntime session of ``graph`` (a path or serialized bytes) on the CPU, quiet
    but for errors."""
    settings = ort.SessionOptions()
    settings.log_severity_level = 3
    return ort.InferenceSession(graph, settings, providers=["CPUExecutionProvider"])


def in_thread(task: Callable[..., Any], *args: Any) -> Future:
    """The future of ``task(*args)``, run in a thread the interpreter waits for at exit: one
    still creating an onnxruntime session when the process ends aborts it (SIGABRT, "terminate
    called without an active exception") where a usage error exits 2 and Ctrl-C 130. The
    tasks are bounded: opening a kept or given graph (half a second for CaffeNet's)."""
    future: Future = Future()

    def work() -> None:
        try:
            future.set_result(task(*args))
        except BaseException as exc:  # handed to whoever takes the result
            future.set_exception(exc)

    threading.Thread(target=work, name="onnxruntime").start()
    return future


def onnx_session(path: str) -> Any:
    """The session future ``open_onnx`` started for the file as it is now, taken: each load
    gets its own, and nothing holds a session past the model that uses it."""
    open_onnx(path)
    return _OPENING.pop(_file_key(path))


def drop_openings() -> None:
    """Forget the sessions opened ahead and not taken; their threads finish (a bounded
    opening) and the sessions go with them."""
    _OPENING.clear()


STEP_BYTES = 512 << 20  # the blobs one forward pass of the native engine may hold


class NativeEngine:
    """dataprep's layers, one net per batch shape (weights loaded once per shape), each
    batch in forward-only passes over steps of images (``step``)."""

    name = "native"

    def __init__(self, model, xp=np) -> None:
        self.model, self.xp = model.folded(), xp
        self.nets: dict[tuple, Any] = {}
        self.steps: dict[tuple, int] = {}

    def step(self, chw: tuple[int, ...]) -> int:
        """Images per pass: a power of two whose blobs fit STEP_BYTES (ResNet-50, 63 MB of
        blobs an image: 8; SqueezeNet 16; CaffeNet 64). Fresh pages cost this machine
        about 1.6 ms a MB: ResNet-50 on 32 photos took 8.4 s in one pass, 3.2 s in passes
        of 8; SqueezeNet 563 ms in one, 359 in two. Padded to a whole step, a last short
        part reuses the same net."""
        if chw not in self.steps:
            from .net import Net

            shapes = Net(self.model.specs, {self.model.input: (1, *chw)}, train=False, fill=False).shapes
            per_image = sum(int(np.prod(s)) * np.dtype(np.float32).itemsize for s in shapes.values())
            self.steps[chw] = 1 << max(0, (STEP_BYTES // max(per_image, 1)).bit_length() - 1)
        return self.steps[chw]

    def run(self, data: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
        step = self.step(tuple(data.shape[1:]))
        if len(data) <= step:
            return self._pass(data, blobs)
        found = []
        for start in range(0, len(data), step):
            part = data[start : start + step]
            if len(part) < step:
                part = np.concatenate([part, np.zeros((step - len(part), *part.shape[1:]), part.dtype)])
            found.append(self._pass(part, blobs))
        return {blob: np.concatenate([f[blob] for f in found])[: len(data)] for blob in blobs}

    def _pass(self, data: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
        key = data.shape
        if key not in self.nets:
            self.nets = {key: self.model.net(len(data), data.shape[1:], self.xp)}
        net = self.nets[key]
        net.forward({self.model.input: data}, train=False, keep=blobs)
        return {blob: host(net.blobs[blob]) for blob in blobs}


class OnnxEngine:
    """onnxruntime over the exported graph of the model's layers (its preparation is done
    before, as for the native engine), with the asked-for blobs as the graph's outputs; the
    batch stays free, so one session serves every batch."""

    name = "onnxruntime"

    def __init__(self, model, blobs: list[str]) -> None:
        try:
            import onnxruntime as ort
        except ImportError:
            raise MissingPackage("--engine onnxruntime", "onnx", "onnxruntime and onnx") from None
        self.model, self.blobs, self.session, self._ort = model, list(blobs), None, ort
        self._opening: tuple[tuple, str, Future] | None = None
        if model.session is None and model.input_shape:
            # a kept graph opens while the first inputs are decoded (since the command line
            # where it hinted this graph); one to build is built at the first batch, on this
            # thread (in a thread beside the decoding, the export's Python took SqueezeNet's
            # 1.8 s to 11 s)
            from .graph_cache import kept

            chw = tuple(model.input_shape)
            parts = self._parts(chw)
            graph = kept(parts) if parts["weights"] is not None else None
            if graph is not None:
                self._opening = (chw, graph, onnx_session(graph))
        if model.session is not None:  # an exported graph as MODEL: its outputs are what it has
            self.chw = tuple(model.input_shape)
            have = [spec["top"][0] for spec in model.specs]
            missing = [b for b in self.blobs if b not in have]
            if missing:
                raise UsageError(
                    f"{missing[0]}: not an output of {model.name}.onnx (it has {', '.join(have)})"
                )

    def _opened(self, chw: tuple[int, ...]) -> Any:
        """A session of the graph of the model's layers for inputs of ``chw``: kept from an
        earlier command with the same model (``graph_cache``), or exported now."""
        from .graph_cache import cached_graph, forget

        parts = self._parts(chw)
        build = functools.partial(self._graph, chw)
        graph = cached_graph(parts, build) if parts["weights"] is not None else build()
        try:
            session = cpu_session(self._ort, graph)
        except Exception:  # onnxruntime's own types: a kept file damaged since
            if isinstance(graph, bytes):
                raise
            forget(graph)
            return cpu_session(self._ort, build())
        if isinstance(graph, str):
            self._used(graph)
        return session

    def _taken(self, opening: tuple[tuple, str, Future]) -> Any:
        """The session of the kept graph opened ahead (``__init__``); a file damaged since
        is dropped and the graph built again."""
        chw, graph, future = opening
        try:
            session = future.result()
        except DataprepError:
            from .graph_cache import forget

            forget(graph)
            return self._opened(chw)
        self._used(graph)
        return session

    def _used(self, graph: str) -> None:
        """The kept ``graph`` used now; the next command with this command line opens it
        from its start."""
        from .graph_cache import used

        used(graph, self.model.hint)

    def _parts(self, chw: tuple[int, ...]) -> dict:
        """What the graph for inputs of ``chw`` is built from (``graph_cache``'s key)."""
        model = self.model
        return {
            "name": model.name,
            "specs": model.specs,
            "input": model.input,
            "chw": list(chw),
            "outputs": self.blobs,
            "weights": getattr(model.weights, "identity", None),
        }

    def _graph(self, chw: tuple[int, ...]) -> bytes:
        """The serialized graph of the model's layers (BatchNorm folded as the native engine
        runs them) for inputs of ``chw``, the asked-for blobs among its outputs."""
        from .export import Deploy
        from .onnx_export import onnx_model
        from .preparation import Preparation

        model = self.model.folded()
        net = model.net(1, chw)
        deploy = Deploy(model.name, model.specs, model.input, tuple(chw), Preparation(), net)
        return onnx_model(deploy, extra_outputs=self.blobs, check=False).SerializeToString()

    def run(self, data: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
        if self.model.session is not None:  # opened while the first inputs were decoded
            if tuple(data.shape[1:]) != self.chw:
                raise UsageError(
                    f"{self.model.name}.onnx takes {'x'.join(map(str, self.chw))} inputs: check --resize"
                )
            self.session = self.session or self.model.session.result()
        elif self.session is None or tuple(data.shape[1:]) != self.chw:
            chw = tuple(data.shape[1:])
            opening, self._opening = self._opening, None
            self.session = self._taken(opening) if opening and opening[0] == chw else self._opened(chw)
            self.chw = chw
        values = self.session.run(list(blobs), {self.model.input: np.ascontiguousarray(data, np.float32)})
        return dict(zip(blobs, values))


def engine_name(name: str | None, model) -> str:
    """``--engine`` resolved: given, or onnxruntime for an ONNX MODEL and native otherwise;
    an ONNX MODEL runs on onnxruntime only."""
    if model.session is not None:
        if name == "native":
            raise UsageError("an .onnx MODEL runs on onnxruntime: leave out --engine native")
        return "onnxruntime"
    return name or "native"


def make_engine(name: str | None, model, blobs: list[str], xp=np):
    """The engine ``name`` (ENGINES; None: ``engine_name``'s choice) for ``model``, to hand
    back ``blobs``."""
    name = engine_name(name, model)
    if name == "native":
        return NativeEngine(model, xp)
    if name == "onnxruntime":
        if xp is not np:
            raise UsageError("--engine onnxruntime runs on the CPU: leave out --device gpu")
        return OnnxEngine(model, blobs)
    raise UsageError(f"--engine {name}: choose from {', '.join(ENGINES)}")
