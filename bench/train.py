"""Seconds per iteration of the noise regression net (recipes/noise_regression.yaml) at batch
50 on the CPU, split into convolution (forward and backward), other layers, the solver
update and the loader wait, next to the GEMM rate of the same NumPy BLAS in the same run.

Targets (issue 11): convolution at 50% or more of the GEMM rate, loader wait under 5%, and
at most 0.64 s per iteration (BVLC Caffe, im2col + OpenBLAS, on this machine).
"""

from __future__ import annotations

import argparse
import time
from collections import Counter
from pathlib import Path

import numpy as np
import yaml

from dataprep.train.loader import BatchLoader
from dataprep.train.net import Net
from dataprep.train.recipe import parse_recipe
from dataprep.train.solver import Solver

RECIPE = Path(__file__).parents[1] / "recipes" / "noise_stream.yaml"


def gemm_rate(n: int = 1024, repeat: int = 10) -> float:
    """GFLOP/s of a float32 n x n matrix product with this NumPy's BLAS."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    b = a.copy()
    a @ b
    started = time.perf_counter()
    for _ in range(repeat):
        a @ b
    return 2 * n**3 * repeat / (time.perf_counter() - started) / 1e9


def conv_flops(net: Net) -> float:
    """Multiply-adds x 2 of every convolution's forward pass and its two backward products."""
    total = 0.0
    for node in net.nodes:
        layer = node.layer
        if layer.type == "Convolution":
            n, o, oh, ow = net.shapes[node.tops[0]]
            k = int(np.prod(layer.params[0].shape[1:]))
            total += 3 * 2 * n * o * k * oh * ow
    return total


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--iterations", type=int, default=10)
    ap.add_argument("--batch", type=int, default=50)
    args = ap.parse_args()
    recipe = parse_recipe(yaml.safe_load(RECIPE.read_text()))
    data = recipe.data
    loader = BatchLoader(data.train, args.batch, data.transform, data.input, data.target, True, 0)
    first = loader.next()
    net = Net(recipe.net, {k: v.shape for k, v in first.items()}, target=data.target)
    solver = Solver(recipe.solver)
    parts: Counter = Counter()
    total = 0.0

    def timer(layer, direction: str, seconds: float) -> None:
        parts[("convolution " if layer.type == "Convolution" else "other layers ") + direction] += seconds

    for it in range(args.iterations + 1):
        if it == 1:  # the first iteration warms up
            parts.clear()
            total = 0.0
        t0 = time.perf_counter()
        batch = first if it == 0 else loader.next()
        parts["loader wait"] += time.perf_counter() - t0
        net.forward(batch, True, timer)
        net.backward(timer)
        start = time.perf_counter()
        solver.step(net.params())
        parts["solver"] += time.perf_counter() - start
        total += time.perf_counter() - t0
    loader.close()
    n = args.iterations
    gemm = gemm_rate()
    print(
        f"noise regression net, batch {args.batch}, {n} iterations: {total / n:.3f} s/iteration, "
        f"{args.batch * n / total:.0f} images/s (BVLC Caffe here: 0.64 s)"
    )
    for name, seconds in sorted(parts.items(), key=lambda kv: -kv[1]):
        print(f"  {name:<24} {seconds / n:.3f} s  {100 * seconds / total:5.1f}%")
    flops = conv_flops(net)
    print(
        f"  convolution GFLOP per iteration (forward + backward): {flops / 1e9:.1f}; "
        f"BLAS float32 GEMM rate: {gemm:.0f} GFLOP/s; convolutions at that rate: {flops / gemm / 1e9:.3f} s"
    )


if __name__ == "__main__":
    main()
