"""Caffe's ``extract_features``: a layer's output for every input, one float Datum each
(``float_data``, C x H x W, 1 x 1 for fully connected layers), keyed like the input, in an
LMDB or LevelDB store with a manifest; the stores' read API, ``info`` and ``verify`` read
it, and so does Caffe's Data layer."""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from ..errors import DataprepError
from ..stores.datum import DatumWriter, feature_payload
from .inference import Inputs, Model, run_batches


def extract_features(
    model: Model,
    inputs: Inputs,
    source: str,
    layer: str,
    out: str | Path,
    backend: str = "lmdb",
    overwrite: bool = False,
    progress: Callable[[int], object] | None = None,
    engine: str | None = None,
) -> list[Path]:
    """Write ``layer``'s outputs for ``inputs`` to the store ``out``, computed by
    ``engine`` (recorded in the manifest: a store's bytes never depend on what happens
    to be installed); returns its path."""
    from .engines import engine_name

    engine = engine_name(engine, model)
    spec = next((s for s in model.specs if s["name"] == layer), None)
    if spec is None:
        raise DataprepError(f"no layer {layer!r} in the net ({', '.join(s['name'] for s in model.specs)})")
    blob_name = spec["top"][0]
    integer = _integer_labels(inputs)
    meta = {
        "source": str(source),
        "labels": {"count": 1, "kind": "int"} if integer else {"count": 0, "kind": "int"},
        "features": {"model": model.name, "layer": layer, "blob": blob_name, "engine": engine},
        "preprocessing": model.prepare.metadata(),
    }
    writer = DatumWriter(out, backend=backend, overwrite=overwrite, meta=meta, dtype="float32")
    with writer:
        for start, found in run_batches(model, inputs, [blob_name], engine):
            values = found[blob_name].astype(np.float32, copy=False)
            for k, row in enumerate(values):
                index = start + k
                label = int(inputs.labels[index][0]) if integer else 0
                writer.put(index, inputs.keys[index], feature_payload(row.reshape(_chw(row.shape)), label))
            if progress is not None:
                progress(len(values))
    return writer.outputs


def _chw(shape: tuple[int, ...]) -> tuple[int, int, int]:
    """A per-input output shape as Datum's C x H x W (fully connected: C x 1 x 1)."""
    return (shape + (1, 1, 1))[:3] if len(shape) < 3 else (shape[0], shape[1], int(np.prod(shape[2:])))


def _integer_labels(inputs: Inputs) -> bool:
    labels = inputs.labels
    return bool(labels) and all(len(v) == 1 and float(v[0]).is_integer() for v in labels)
