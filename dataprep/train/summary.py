"""A model's net as Caffe logs it at set-up, for ``dataprep info MODEL``: each layer's tops
with their shapes and counts, its parameter blobs' shapes, and the memory its data takes
(what pycaffe users print with ``[(k, v.data.shape) for k, v in net.blobs.items()]``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np


def model_summary(path: str | Path, batch: int | None = 1, shape: tuple[int, ...] | None = None) -> dict:
    """The TEST net of MODEL (a snapshot or export, a net prototxt, a recipe) at ``batch``;
    the input's C x H x W from ``shape``, the model itself, or its training store."""
    from .inference import read_model
    from .timing import bench_net

    found = read_model(path)
    chw = shape or found.preparation.input_shape
    bench = bench_net(path, batch, "test", tuple(chw) if chw else None)
    net = bench.net
    layers = []
    memory = sum(int(np.prod(value.shape)) * 4 for value in bench.batch.values())
    for node in net.nodes:
        if node.phase == "TRAIN":
            continue
        tops = {top: list(net.shapes[top]) for top in node.tops}
        memory += sum(int(np.prod(s)) * 4 for top, s in tops.items() if top not in node.bottoms)
        layers.append(
            {
                "name": node.layer.name,
                "type": node.layer.type,
                "bottoms": list(node.bottoms),
                "tops": tops,
                "params": [list(p.shape) for p in node.layer.params],
            }
        )
    params = sum(int(np.prod(p.shape)) for layer in net.layers for p in layer.params)
    return {
        "model": str(path),
        "name": bench.name,
        "inputs": {name: list(value.shape) for name, value in bench.batch.items()},
        "layers": layers,
        "parameters": params,
        "memory_for_data": memory,
    }


def summary_lines(summary: dict) -> list[str]:
    """The summary as text: Caffe's ``Top shape: 1 96 55 55 (290400)`` per top."""
    lines = [f"{summary['model']}: net {summary['name']}"]
    for name, shape in summary["inputs"].items():
        lines.append(f"  input {name}: {' '.join(map(str, shape))} ({int(np.prod(shape))})")
    for layer in summary["layers"]:
        params = ", ".join("x".join(map(str, p)) for p in layer["params"])
        lines.append(f"  {layer['name']} ({layer['type']})" + (f"  params {params}" if params else ""))
        for top, shape in layer["tops"].items():
            dims = "".join(f"{d} " for d in shape)
            lines.append(f"    {top}: Top shape: {dims}({int(np.prod(shape)) if shape else 1})")
    lines.append(
        f"  {summary['parameters']:,} parameters; Memory required for data: {summary['memory_for_data']}"
    )
    return lines
