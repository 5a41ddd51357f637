"""`dataprep predict` and `dataprep extract` on the model zoo's nets, against onnxruntime
running the same net exported with `dataprep export` (the baseline a user would pick).

Run: python bench/zoo.py [--n 32] [--repeat 5]. For each zoo net (random weights: the
speed does not depend on them) it writes N color photos of the net's input size and a
list, exports the net to .caffemodel and .onnx, then times, interleaved, median of
--repeat rounds: the whole `predict` command on the native engine, with `--engine
onnxruntime` (its graph kept from the first run, which is timed apart: graph_cache), and
on the exported .onnx as MODEL (both in batches of 10, as the script's; the native engine
in its default batches of 100, which it runs in forward-only steps whose blobs fit 512 MB); the
whole `extract` command (the last pooling layer's features into an LMDB); and a script
that decodes the same files with OpenCV and runs onnxruntime on them in batches of 10 (its
imports and session included, as a command's are). Prints images per second (from the
medians) and dataprep's ratios to that script, each the median of the rounds' own ratios.
"""

from __future__ import annotations

import os
import shutil
import statistics
import sys
from pathlib import Path

import cv2
import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, measure, scratch_args, scratch_dir  # noqa: E402

ROOT = Path(__file__).parents[1]
ZOO = ROOT / "tests" / "fixtures" / "zoo"
NETS = {  # prototxt: (side, the features extract writes)
    "bvlc_reference_caffenet_deploy": (227, "pool5"),
    "bvlc_googlenet_deploy": (224, "pool5/7x7_s1"),
    "squeezenet_v1.1_deploy": (227, "pool10"),
    "resnet50_deploy": (224, "pool5"),
}
ORT = r"""
import sys, cv2, numpy as np, onnxruntime as ort
session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
paths = open(sys.argv[2]).read().split()
name = session.get_inputs()[0].name
for start in range(0, len(paths), 10):
    batch = np.stack([cv2.imread(p, cv2.IMREAD_COLOR).transpose(2, 0, 1) for p in paths[start:start + 10]])
    session.run(None, {name: batch.astype(np.float32)})
"""


def photos(folder: Path, n: int, side: int) -> Path:
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        path = folder / f"{i:04d}.jpg"
        cv2.imwrite(str(path), rng.integers(0, 256, (side, side, 3), dtype=np.uint8))
        lines.append(str(path))
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def main() -> None:
    args = scratch_args(__doc__, n=32, repeat=5)
    print(
        f"{'net':<34} {'predict':>12} {'predict ort':>12} {'predict .onnx':>12} {'extract':>12} "
        f"{'script':>12}   native/script  ort/script  .onnx/script  extract/script"
    )
    with scratch_dir("zoo-bench-", args.dir) as base:
        os.environ["DATAPREP_CACHE"] = str(base / "cache")  # the kept graphs: not the user's
        for net, (side, layer) in NETS.items():
            work = base / net
            images = photos(work / "img", args.n, side)
            prototxt = ZOO / f"{net}.prototxt"
            for suffix in ("caffemodel", "onnx"):
                measure(dataprep("export", prototxt, "--random-init", 0, "-o", work / f"m.{suffix}"))
            weights = work / "m.caffemodel"
            commands = {
                "predict": dataprep("predict", prototxt, "--weights", weights, images, "-q", "--json"),
                "predict_ort": dataprep(
                    "predict",
                    prototxt,
                    "--weights",
                    weights,
                    images,
                    "-q",
                    "--json",
                    "--engine",
                    "onnxruntime",
                    "--batch-size",  # the script's batches: the next one decodes while one runs
                    10,
                ),
                # the exported graph as MODEL: opened by onnxruntime while the command starts
                "predict_onnx": dataprep(
                    "predict", work / "m.onnx", images, "-q", "--json", "--batch-size", 10
                ),
                "extract": dataprep(
                    "extract", prototxt, "--weights", weights, "--layer", layer, images, work / "f", "-q"
                ),
                "ort": [sys.executable, "-c", ORT, work / "m.onnx", images],
            }
            first = measure(commands["predict_ort"])["wall"]  # builds and keeps the graph
            walls: dict[str, list[float]] = {name: [] for name in commands}
            for _ in range(args.repeat):
                for name, cmd in commands.items():
                    if name == "extract":  # its output from the round before
                        shutil.rmtree(work / "f", ignore_errors=True)
                    walls[name].append(measure(cmd)["wall"])
            rate = {name: args.n / statistics.median(w) for name, w in walls.items()}
            # each ratio the median of the rounds' own (a round runs every command in turn), so
            # the machine's drift between rounds does not enter it
            ratio = {
                name: statistics.median(script / own for script, own in zip(walls["ort"], w))
                for name, w in walls.items()
            }
            print(
                f"{net:<34} {rate['predict']:9.1f}/s {rate['predict_ort']:9.1f}/s "
                f"{rate['predict_onnx']:9.1f}/s {rate['extract']:9.1f}/s {rate['ort']:9.1f}/s   "
                f"{ratio['predict']:12.2f}x {ratio['predict_ort']:10.2f}x "
                f"{ratio['predict_onnx']:10.2f}x {ratio['extract']:14.2f}x"
                f"   (predict ort's first run, building the graph: {first:.2f} s)"
            )


if __name__ == "__main__":
    main()
