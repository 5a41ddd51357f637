"""The PyTorch peer of `bench/train.py --peer torch`: a net given as dataprep's wired
layer list (JSON on stdin: the layers with their bottoms and tops, the input shapes),
built from the same layers and shapes as ``torch.nn`` modules (ceil-mode pooling with
Caffe's average areas, grouped convolutions, LRN), timed forward plus backward with the
recipe's loss, parameter gradients only (no gradient for the input image, as `caffe time`),
on the thread count asked for. Prints the median milliseconds of the timed iterations.

Run by bench/train.py with an interpreter that has torch (the `bench` extra); not part
of the tool.
"""

from __future__ import annotations

import json
import math
import statistics
import sys
import time

import torch
from torch import nn
from torch.nn import functional as F


def _pool(spec: dict, shape: tuple[int, ...]):
    """Caffe's pooling: output size rounded up, windows clipped to the padded input; AVE
    divides by the window clipped to input plus padding (count_include_pad for the pad)."""
    k, s, p = spec.get("kernel_size", 1), spec.get("stride", 1), spec.get("pad", 0)
    if spec.get("global_pooling"):
        k, s, p = shape[2], 1, 0
    h = shape[2]
    out = math.ceil((h + 2 * p - k) / s) + 1
    if p and (out - 1) * s >= h + p:
        out -= 1
    ceil = out > (h + 2 * p - k) // s + 1
    if spec.get("pool", "MAX") == "MAX":
        return nn.MaxPool2d(k, s, p, ceil_mode=ceil)
    return nn.AvgPool2d(k, s, p, ceil_mode=ceil, count_include_pad=True)


class Net(nn.Module):
    def __init__(self, layers: list[dict], inputs: dict[str, list[int]]) -> None:
        super().__init__()
        self.layers, self.mods = layers, nn.ModuleDict()
        shapes = {name: tuple(s) for name, s in inputs.items()}
        for spec in layers:
            kind, name = spec["type"], spec["name"]
            x = shapes[spec["bottom"][0]]
            if kind == "Convolution":
                k = spec["kernel_size"]
                mod = nn.Conv2d(
                    x[1],
                    spec["num_output"],
                    k,
                    spec.get("stride", 1),
                    spec.get("pad", 0),
                    groups=spec.get("group", 1),
                )
            elif kind == "InnerProduct":
                mod = nn.Linear(int(math.prod(x[1:])), spec["num_output"])
            elif kind == "Pooling":
                mod = _pool(spec, x)
            elif kind == "LRN":
                mod = nn.LocalResponseNorm(
                    spec.get("local_size", 5), spec.get("alpha", 1e-4), spec.get("beta", 0.75)
                )
            else:
                mod = None
            if mod is not None:
                self.mods[name.replace("/", "_")] = mod
            with torch.no_grad():
                y = self._apply(spec, [torch.zeros(shapes[b]) for b in spec["bottom"]])
            for top, value in zip(spec["top"], y if isinstance(y, tuple) else (y,)):
                shapes[top] = tuple(value.shape)

    def _apply(self, spec: dict, xs: list[torch.Tensor]):
        kind, name = spec["type"], spec["name"].replace("/", "_")
        x = xs[0]
        if kind == "InnerProduct":
            return self.mods[name](x.flatten(1))
        if name in self.mods:
            return self.mods[name](x)
        if kind == "ReLU":
            return F.relu(x)
        if kind == "Sigmoid":
            return torch.sigmoid(x)
        if kind == "Dropout":
            return F.dropout(x, spec.get("dropout_ratio", 0.5), self.training)
        if kind == "Softmax":
            return F.softmax(x, 1)
        if kind == "SoftmaxWithLoss":
            return F.cross_entropy(x.flatten(1), xs[1].long().flatten())
        if kind == "EuclideanLoss":
            return ((x - xs[1].reshape(x.shape)) ** 2).sum() / (2 * x.shape[0])
        if kind == "Accuracy":
            return torch.zeros(())
        raise SystemExit(f"torch_peer: layer type {kind} is not mapped")

    def forward(self, blobs: dict[str, torch.Tensor]) -> torch.Tensor:
        blobs = dict(blobs)
        loss = None
        for spec in self.layers:
            y = self._apply(spec, [blobs[b] for b in spec["bottom"]])
            blobs[spec["top"][0]] = y
            if spec["type"] in ("SoftmaxWithLoss", "EuclideanLoss"):
                loss = y if loss is None else loss + y
        return loss if loss is not None else blobs[self.layers[-1]["top"][0]].sum()


def main() -> None:
    request = json.load(sys.stdin)
    torch.set_num_threads(request["threads"])
    net = Net(request["layers"], request["inputs"])
    net.train()
    generator = torch.Generator().manual_seed(0)
    blobs = {}
    for name, shape in request["inputs"].items():
        if name == request["target"]:
            high = request.get("classes") or 1
            blobs[name] = torch.randint(0, high, shape, generator=generator).float()
            if not request.get("classes"):
                blobs[name] = torch.rand(shape, generator=generator)
        else:
            blobs[name] = torch.randn(shape, generator=generator)  # no gradient: as caffe time
    times = []
    for k in range(request["iterations"] + 1):
        started = time.perf_counter()
        net.zero_grad(set_to_none=True)
        net(blobs).backward()
        if k:  # the first: warm-up
            times.append(time.perf_counter() - started)
    print(json.dumps({"torch": torch.__version__, "ms": statistics.median(times) * 1e3}))


if __name__ == "__main__":
    main()
