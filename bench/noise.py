"""`dataprep noise` against the regression tutorial's make_noise script and the file-writing bound.

Run: python bench/noise.py [--n 5000] [--workers 2]. Prints images/s of
  1. a faithful port of the tutorial (per-process np.random seeded from the clock,
     cv2.resize cubic, plt.imsave(cmap='gray'), one multiprocessing.Process per core);
  2. `dataprep noise --n N --workers W` (the whole command, interpreter start-up included);
  3. writing the same JPEG bytes to the same number of files with W processes into one
     shared folder: the bound that file creation puts on any file-producing generator;
  4. `dataprep noise --to hdf5` and `--to lmdb`, which make no small files;
and the ratios. All in one run, on the same disk.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, measure, row, scratch_dir  # noqa: E402

H = W = 100


def tutorial_make_noise(indices, folder):
    """The tutorial's generator, ported to Python 3 as written (seeded from the clock)."""
    import cv2
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    np.random.seed(int(time.time() * 1e6) % 2**32)
    for i in indices:
        h = np.random.randint(1, H)
        w = np.random.randint(1, W)
        noise = np.random.random((h, w))
        noise = cv2.resize(noise, (W, H), interpolation=cv2.INTER_CUBIC)
        fx, fy = float(w) / W, float(h) / H
        plt.imsave(f"{folder}/{i:05d}_{fx:.2f}_{fy:.2f}.jpg", noise, cmap="gray")


def _timed_processes(target, arg_lists) -> float:
    """Seconds to run one process per argument tuple, all at once, as the tutorial does."""
    procs = [mp.Process(target=target, args=args) for args in arg_lists]
    t = time.perf_counter()
    for p in procs:
        p.start()
    for p in procs:
        p.join()
    return time.perf_counter() - t


def run_tutorial(n, workers, folder):
    folder.mkdir()
    return _timed_processes(tutorial_make_noise, [(range(k, n, workers), folder) for k in range(workers)])


def _write_files(blobs, folder):
    for name, data in blobs:
        (folder / name).write_bytes(data)


def run_file_bound(source: Path, workers: int, folder: Path) -> float:
    """Write the bytes of every file in ``source`` to ``folder`` with ``workers`` processes."""
    folder.mkdir()
    blobs = [(p.name, p.read_bytes()) for p in sorted(source.iterdir())]
    return _timed_processes(_write_files, [(blobs[k::workers], folder) for k in range(workers)])


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=5000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=3, help="rounds; medians are reported")
    ap.add_argument("--dir", type=Path, default=None, help="scratch folder (default: a temp dir)")
    args = ap.parse_args()
    n, j = args.n, args.workers
    runs = {k: [] for k in ("tutorial", "files", "bound", "hdf5", "lmdb")}
    peaks = {}
    for _ in range(args.repeat):
        with scratch_dir("bench_noise_", args.dir) as base:
            settle()
            runs["tutorial"].append(run_tutorial(n, j, base / "tutorial"))
            for kind, extra in (("files", []), ("hdf5", ["--to", "hdf5"]), ("lmdb", ["--to", "lmdb"])):
                settle()
                m = measure(
                    dataprep(
                        "noise", "--n", n, "--out", base / kind / "samples", "--workers", j, "-q", *extra
                    )
                )
                runs[kind].append(m["wall"])
                peaks[kind] = max(peaks.get(kind, 0), m["peak_mb"])
            settle()
            runs["bound"].append(run_file_bound(base / "files/samples", j, base / "bound"))
    t = {k: statistics.median(v) for k, v in runs.items()}
    print(f"noise, n = {n}, {j} worker processes, median of {args.repeat} rounds (sync before each step)")
    print(row("tutorial make_noise (plt.imsave)", n, t["tutorial"]))
    print(row(f"dataprep noise --workers {j}", n, t["files"], peaks["files"]))
    print(row("file-writing bound (same bytes, same files)", n, t["bound"]))
    print(row("dataprep noise --to hdf5", n, t["hdf5"], peaks["hdf5"]))
    print(row("dataprep noise --to lmdb", n, t["lmdb"], peaks["lmdb"]))
    print(f"dataprep / tutorial:        {t['tutorial'] / t['files']:.2f}x")
    print(f"dataprep / file bound:      {t['bound'] / t['files']:.0%}")
    print(f"--to hdf5 / tutorial:       {t['tutorial'] / t['hdf5']:.2f}x")
    print(f"--to lmdb / tutorial:       {t['tutorial'] / t['lmdb']:.2f}x")


def settle():
    """Flush dirty pages so each step starts from the same disk state."""
    os.sync()
    time.sleep(0.5)


if __name__ == "__main__":
    main()
