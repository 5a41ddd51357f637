"""Training speed against BVLC Caffe on this machine, net by net (issue 19).

Run: python bench/train.py [--net lenet|cifar10_quick|noise_regression|caffenet ...]
[--rounds 3]. Stores of the real shapes are made from synthetic images in a scratch
folder (the MNIST and CIFAR files are not on this machine): LMDB for LeNet and CIFAR-10
quick (with its mean file), HDF5 for the tutorial's regression net. Each round is a whole
`dataprep train` run of the shipped recipe, testing off; its s/iter comes from the log's
`train` rate lines after the first display (as Caffe's figures were read), and the median of
the rounds is compared with Caffe's. CaffeNet is timed as `caffe time` was: `dataprep time`
on the zoo's deploy net at batch 32.

With --peer torch (PyTorch from the `bench` extra, or --peer-python an interpreter that has
it) each net is also timed forward plus backward in PyTorch (bench/torch_peer.py: the same
layers and shapes as torch.nn modules, the recipe's loss, parameter gradients only), in
interleaved rounds with dataprep's in-process timer, and the ratio printed.

Per net it also prints the split by layer (in-process, `dataprep time`'s timer), the
GEMM FLOPs the net runs per iteration (forward and the backward products it computes:
no data gradient for a layer whose bottom is an input), the sgemm rate of this NumPy's
BLAS measured in the same run, the time that rate bounds, the fraction of it reached, and
the training process's peak RSS at two run lengths (it must not grow with iterations).
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

# first: importing dataprep chooses OpenBLAS's kernels as every command does (blas.py)
from dataprep import blas  # noqa: F401

# isort: split
import numpy as np

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, measure, scratch_dir  # noqa: E402

# BVLC Caffe (CPU) rebuilt against the system's OpenBLAS 0.3.21 (AVX-512 kernels) on this
# machine kind, 2026-12-07 (../shared/PERF_NOTES.md, issue 27): `caffe train` rates of the
# tutorial net, LeNet and CIFAR-10 quick (testing off), `caffe time` of CaffeNet at batch 32
# (its default is 50 iterations; dataprep's CaffeNet is timed over 10, after the warm-up:
# its heap takes the first three passes to settle, each page faulted in then costing up to
# 4 ms on this machine, so 3 iterations measured 5% over the steady state)
CAFFE = {
    "noise_regression": {"batch": 50, "s_per_iter": 0.415, "shape": (1, 100, 100), "iterations": 30},
    "lenet": {"batch": 64, "s_per_iter": 1 / 42.2, "shape": (1, 28, 28), "iterations": 300},
    "cifar10_quick": {"batch": 100, "s_per_iter": 1 / 5.93, "shape": (3, 32, 32), "iterations": 60},
    "caffenet": {"batch": 32, "s_per_iter": 1.004, "shape": (3, 227, 227), "iterations": 10},
}
CAFFENET = ROOT / "tests" / "fixtures" / "zoo" / "bvlc_reference_caffenet_deploy.prototxt"
RATE = re.compile(r"Iteration (\d+) \(([0-9.e+]+) iter/s")


def gemm_rate(n: int = 2048, repeat: int = 5) -> float:
    """GFLOP/s of a float32 n x n product with this NumPy's BLAS on every core."""
    a = np.random.default_rng(0).random((n, n), dtype=np.float32)
    a @ a
    started = time.perf_counter()
    for _ in range(repeat):
        a @ a
    return 2 * n**3 * repeat / (time.perf_counter() - started) / 1e9


def product_flops(net) -> float:
    """FLOPs of the matrix products one training iteration runs: every Convolution and
    InnerProduct forward, its weight gradient, and its data gradient where the layer
    below needs one."""
    total = 0.0
    for node in net.nodes:
        layer = node.layer
        if layer.type not in ("Convolution", "InnerProduct"):
            continue
        out = net.shapes[node.tops[0]]
        inner = int(np.prod(layer.params[0].shape[1:]))
        one = 2.0 * int(np.prod(out)) * inner  # each output: a dot product of `inner` terms
        total += one * (3 if layer.propagate else 2)
    return total


def make_stores(name: str, folder: Path) -> list[str]:
    """Synthetic stores of the net's real shapes; returns the recipe overrides naming them."""
    run = lambda *args: subprocess.run(dataprep(*args), cwd=folder, check=True, stdout=subprocess.DEVNULL)  # noqa: E731
    if name == "lenet":
        run("noise", "--n", 3000, "--size", "28x28", "--classes", 10, "--to", "lmdb", "--out", "s", "-q")
        return ["data.train=s/train_lmdb", "data.val=s/val_lmdb"]
    if name == "noise_regression":
        run("noise", "--n", 1500, "--size", "100x100", "--to", "hdf5", "--out", "s", "--mean", 128, "-q")
        return ["data.train=s/train_h5.txt", "data.val=s/val_h5.txt"]
    import cv2

    rng = np.random.default_rng(0)
    (folder / "img").mkdir()
    lines = []
    for i in range(2000):
        image = cv2.resize(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), (32, 32))
        cv2.imwrite(str(folder / "img" / f"{i}.png"), image)
        lines.append(f"img/{i}.png {i % 10}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    run("lmdb", "list.txt", "train_lmdb", "-q")
    run("mean", "train_lmdb", "-o", "mean.binaryproto", "-q")
    return ["data.train=train_lmdb", "data.val=train_lmdb", "data.transform.mean_file=mean.binaryproto"]


def train_round(
    name: str, folder: Path, sets: list[str], iterations: int, display: int, round_: int
) -> tuple[float, float, float]:
    """One `dataprep train` run, under its own snapshot prefix (a rerun on one prefix is
    refused): (s/iter from the log after the first display, the best display rate, peak
    RSS in MB)."""
    settings = sets + [
        f"solver.max_iter={iterations}",
        f"solver.display={display}",
        "solver.test_interval=0",
        "solver.snapshot=0",
        f"solver.snapshot_prefix=out/run{round_}",
    ]
    cmd = dataprep("train", ROOT / "recipes" / f"{name}.yaml", *[a for s in settings for a in ("--set", s)])
    log = folder / "train.log"
    peak = measure(cmd, cwd=folder, log=log)["peak_mb"]
    rates = [(int(it), float(r)) for it, r in RATE.findall(log.read_text()) if int(it) > 0]
    seconds = sum(display / r for _, r in rates) / (display * len(rates))
    return seconds, max(r for _, r in rates), peak


def time_caffenet(batch: int, iterations: int) -> float:
    """`dataprep time` of the zoo's CaffeNet: the forward-backward milliseconds, as s."""
    out = subprocess.run(
        dataprep("time", CAFFENET, "--batch", batch, "--iterations", iterations, "--json"),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return json.loads(out)["forward_backward_ms"] / 1e3


def layer_split(name: str, shape: tuple[int, ...], batch: int, iterations: int):
    """The net of the recipe (or the zoo's CaffeNet) timed in this process, by layer, with
    the malloc settings every dataprep command runs with (``heap.keep_freed_memory``)."""
    from dataprep.heap import keep_freed_memory
    from dataprep.train.timing import bench_net, time_net

    keep_freed_memory()

    model = CAFFENET if name == "caffenet" else ROOT / "recipes" / f"{name}.yaml"
    bench = bench_net(model, batch, "train", shape)
    return bench, time_net(bench, iterations)


def peer_request(bench, iterations: int) -> dict:
    """The net as torch_peer.py builds it: the TRAIN net's layers wired, the input shapes."""
    layers = []
    for node in bench.net.nodes:
        if node.phase == "TEST":
            continue
        layer = node.layer
        layers.append(
            {**layer.p, "name": layer.name, "type": layer.type, "bottom": node.bottoms, "top": node.tops}
        )
    classifier = any(spec["type"] == "SoftmaxWithLoss" for spec in layers)
    products = [spec for spec in layers if spec["type"] == "InnerProduct"]
    classes = int(products[-1]["num_output"]) if classifier and products else None
    inputs = {name: list(bench.batch[name].shape) for name in bench.batch}
    target = next((n for n in inputs if n != next(iter(inputs))), None)
    return {
        "layers": layers,
        "inputs": inputs,
        "target": target,
        "classes": classes,
        "iterations": iterations,
        "threads": os.cpu_count() or 2,
    }


def torch_ms(python: str, request: dict) -> tuple[float, str]:
    """The PyTorch peer's median forward-backward milliseconds, and its version."""
    out = subprocess.run(
        [python, str(Path(__file__).parent / "torch_peer.py")],
        input=json.dumps(request),
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    found = json.loads(out)
    return found["ms"], found["torch"]


def peer_report(name: str, rounds: int, python: str) -> None:
    """dataprep's and PyTorch's forward-backward of the same net, interleaved rounds."""
    spec = CAFFE[name]
    iterations = spec["iterations"] if name == "caffenet" else 10  # CaffeNet: its heap settled, as above
    ours, theirs, version = [], [], ""
    for _ in range(rounds):
        bench, timing = layer_split(name, spec["shape"], spec["batch"], iterations)
        ours.append(timing.forward_backward_ms)
        ms, version = torch_ms(python, peer_request(bench, iterations))
        theirs.append(ms)
    a, b = statistics.median(ours), statistics.median(theirs)
    rate = gemm_rate()
    bound = product_flops(bench.net) / rate / 1e6
    print(
        f"  PyTorch {version} forward-backward {b:.1f} ms, dataprep {a:.1f} ms: ratio {b / a:.2f}x "
        f"(goal 0.8x); the GEMM bound {bound:.1f} ms: dataprep reaches {bound / a:.0%}, "
        f"PyTorch {bound / b:.0%}"
    )


def report(name: str, rounds: int) -> None:
    spec = CAFFE[name]
    batch, caffe = spec["batch"], spec["s_per_iter"]
    with scratch_dir(f"bench-train-{name}-") as folder:
        runs, best, peaks = [], [], {}
        if name == "caffenet":
            runs = [time_caffenet(batch, spec["iterations"]) for _ in range(rounds)]
        else:
            sets = make_stores(name, folder)
            iterations = spec["iterations"]
            display = max(1, iterations // 6)
            for k in range(rounds):
                seconds, top, peak = train_round(name, folder, sets, iterations, display, k)
                runs.append(seconds)
                best.append(top)
                peaks[iterations] = max(peaks.get(iterations, 0), peak)
            _, _, peaks[3 * iterations] = train_round(name, folder, sets, 3 * iterations, display, rounds)
        bench, timing = layer_split(name, spec["shape"], batch, 2 if name == "caffenet" else 5)
    rate = gemm_rate()
    flops = product_flops(bench.net)
    median = statistics.median(runs)
    what = "forward-backward (dataprep time)" if name == "caffenet" else "s/iter (dataprep train)"
    print(
        f"{name}, batch {batch}: median {what} {median * 1e3:.1f} ms over {rounds} rounds "
        f"({', '.join(f'{r * 1e3:.1f}' for r in runs)})"
    )
    if best:
        print(f"  best display rate {max(best):.3g} iter/s; Caffe {1 / caffe:.3g} iter/s")
    print(f"  Caffe {caffe * 1e3:.0f} ms: ratio {caffe / median:.2f}x (floor 1.3x)")
    print(
        f"  GEMM: {flops / 1e9:.3f} GFLOP per iteration, sgemm {rate:.0f} GFLOP/s here now, "
        f"bound {flops / rate / 1e6:.1f} ms, reached {flops / rate / 1e9 / median:.0%} of it"
    )
    total = sum(layer.forward_ms + layer.backward_ms for layer in timing.layers)
    products = sum(
        layer.forward_ms + layer.backward_ms
        for layer in timing.layers
        if layer.type in ("Convolution", "InnerProduct")
    )
    print(
        f"  in-process forward-backward {timing.forward_backward_ms:.1f} ms; "
        f"{1 - products / total:.0%} of the layer time outside Convolution and InnerProduct"
    )
    for layer in sorted(timing.layers, key=lambda t: -(t.forward_ms + t.backward_ms))[:8]:
        strategy = getattr(_layer(bench, layer.name), "strategy", "")
        print(
            f"    {layer.name:<8} {layer.type:<14} forward {layer.forward_ms:7.2f} ms  "
            f"backward {layer.backward_ms:7.2f} ms  {strategy}"
        )
    if peaks:
        print(
            "  peak RSS: " + ", ".join(f"{mb:.0f} MB at {it} iterations" for it, mb in sorted(peaks.items()))
        )


def _layer(bench, name: str):
    return next(layer for layer in bench.net.layers if layer.name == name)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--net", action="append", choices=sorted(CAFFE), help="repeatable [default: all]")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--peer", choices=["torch"], default=None, help="also time PyTorch on the same nets")
    ap.add_argument(
        "--peer-python",
        default=sys.executable,
        help="an interpreter with torch (the bench extra) [default: this one]",
    )
    ap.add_argument("--peer-only", action="store_true", help="only the forward-backward comparison")
    args = ap.parse_args()
    for name in args.net or list(CAFFE):
        if args.peer_only:
            print(name)
        else:
            report(name, args.rounds)
        if args.peer:
            peer_report(name, args.rounds, args.peer_python)


if __name__ == "__main__":
    main()
