"""What runs a trained net forward over prepared batches: dataprep's own layers
(``native``, NumPy or CuPy) or onnxruntime over the graph ``dataprep export`` writes
(``onnxruntime``). Both take the batches ``Preparation.prepare`` made, so the two differ
only in the net's arithmetic (within the export tests' tolerance), and both hand back the
blobs asked for by their Caffe names.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import MissingPackage, UsageError
from ..gpu import host

ENGINES = ("native", "onnxruntime")


class NativeEngine:
    """dataprep's layers, one net per batch shape (weights loaded once per shape)."""

    name = "native"

    def __init__(self, model, xp=np) -> None:
        self.model, self.xp = model, xp
        self.nets: dict[tuple, Any] = {}

    def run(self, data: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
        key = data.shape
        if key not in self.nets:
            self.nets = {key: self.model.net(len(data), data.shape[1:], self.xp)}
        net = self.nets[key]
        net.forward({self.model.input: data}, train=False)
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
        from .export import Deploy
        from .onnx_export import onnx_model
        from .preparation import Preparation

        self.model, self.blobs, self.session = model, list(blobs), None
        self._ort, self._onnx_model, self._deploy = ort, onnx_model, Deploy
        self._identity = Preparation()

    def _open(self, chw: tuple[int, ...]) -> None:
        model = self.model
        net = model.net(1, chw)
        deploy = self._deploy(model.name, model.specs, model.input, tuple(chw), self._identity, net)
        graph = self._onnx_model(deploy, extra_outputs=self.blobs, check=False)
        options = self._ort.SessionOptions()
        options.log_severity_level = 3
        self.session = self._ort.InferenceSession(
            graph.SerializeToString(), options, providers=["CPUExecutionProvider"]
        )
        self.chw = tuple(chw)

    def run(self, data: np.ndarray, blobs: list[str]) -> dict[str, np.ndarray]:
        if self.session is None or tuple(data.shape[1:]) != self.chw:
            self._open(data.shape[1:])
        values = self.session.run(list(blobs), {self.model.input: np.ascontiguousarray(data, np.float32)})
        return dict(zip(blobs, values))


def make_engine(name: str, model, blobs: list[str], xp=np):
    """The engine ``name`` (ENGINES) for ``model``, to hand back ``blobs``."""
    if name == "native":
        return NativeEngine(model, xp)
    if name == "onnxruntime":
        if xp is not np:
            raise UsageError("--engine onnxruntime runs on the CPU: leave out --device gpu")
        return OnnxEngine(model, blobs)
    raise UsageError(f"--engine {name}: choose from {', '.join(ENGINES)}")
