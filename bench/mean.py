"""`dataprep mean` against a single-process decode-and-sum loop, on raw and encoded LMDBs.

Run: python bench/mean.py [--n 5000]. Builds two LMDBs of 256 x 256 color Datums from the
photos scikit-image ships (raw pixels, and JPEG-encoded), then times in one run, median of
--repeat interleaved rounds:
  * a loop that reads every Datum, decodes it and adds it to a float64 sum in NumPy;
  * `dataprep mean --workers 1` and `--workers 2`.
Targets: at least 1.6x the loop on encoded records with 2 workers; at least 1 GB/s of pixel
data on raw records.

`python bench/mean.py --caffe` instead compares with BVLC Caffe's compute_image_mean as
measured on this machine kind (issue 27: 0.22 s for a raw LMDB of 1500 records of 256 x 256 x 3,
the whole command): it times the whole `dataprep mean` command on raw stores of 1500 and
20000 such records, with the page cache warm and (as root) dropped first. Caffe's time at
20000 is its 1500-record time scaled by the record count (a lower bound on a cold cache).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, interleaved, measure, print_rows, scratch_args, scratch_dir  # noqa: E402
from stores import make_photos, settle  # noqa: E402

LOOP = r"""
import sys, cv2, lmdb, numpy as np
from dataprep.stores.caffe_pb import Datum
env = lmdb.open(sys.argv[1], readonly=True, lock=False)
total, n = None, 0
with env.begin() as txn:
    for key, value in txn.cursor():
        datum = Datum()
        datum.ParseFromString(value)
        if datum.encoded:
            image = cv2.imdecode(np.frombuffer(datum.data, np.uint8), cv2.IMREAD_COLOR).transpose(2, 0, 1)
        else:
            image = np.frombuffer(datum.data, np.uint8).reshape(datum.channels, datum.height, datum.width)
        total = image.astype(np.float64) if total is None else total + image
        n += 1
np.save(sys.argv[2], (total / n).astype(np.float32))
"""


CAFFE_1500 = 0.22  # s, compute_image_mean on 1500 raw 256 x 256 x 3 records, rebuilt Caffe here (issue 27)


def raw_store(base: Path, n: int) -> str:
    """A raw LMDB of ``n`` 256 x 256 color Datums (300 distinct images, repeated)."""
    import cv2
    import numpy as np

    images = base / "img"
    if not images.exists():
        images.mkdir()
        rng = np.random.default_rng(0)
        for i in range(300):
            cv2.imwrite(
                str(images / f"{i}.png"), cv2.resize(rng.integers(0, 256, (16, 16, 3), np.uint8), (256, 256))
            )
    (base / f"l{n}.txt").write_text("".join(f"img/{i % 300}.png 0\n" for i in range(n)))
    measure(dataprep("lmdb", f"l{n}.txt", f"raw{n}", "-q"), cwd=base)
    return f"raw{n}"


def drop_caches() -> bool:
    """Empty the page cache (root only); False where that is not allowed."""
    os.sync()
    try:
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def against_caffe(args) -> None:
    import statistics

    with scratch_dir("bench_mean_caffe_", args.dir) as base:
        for n in (1500, 20000):
            db = raw_store(base, n)
            cmd = dataprep("mean", db, "-o", "m.bp", "--overwrite", "-q")
            measure(cmd, cwd=base)  # warm the page cache
            warm = statistics.median(measure(cmd, cwd=base)["wall"] for _ in range(args.repeat))
            cold = [measure(cmd, cwd=base)["wall"] for _ in range(2) if drop_caches()]
            caffe = CAFFE_1500 * n / 1500
            line = f"mean of {n} raw 256x256x3 Datums: dataprep {warm:.2f} s warm"
            if cold:
                line += f", {min(cold):.2f} s cold"
            scaled = "" if n == 1500 else ", scaled from 1500"
            print(
                f"{line}; Caffe {caffe:.2f} s{scaled}: {caffe / warm:.2f}x warm"
                + (f", {caffe / min(cold):.2f}x cold" if cold else "")
            )


def main():
    if "--caffe" in sys.argv:
        sys.argv.remove("--caffe")
        return against_caffe(scratch_args(__doc__, repeat=3))
    args = scratch_args(__doc__, n=5000, repeat=3)
    py, n = sys.executable, args.n
    with scratch_dir("bench_mean_", args.dir) as base:
        photos = make_photos(base / "photos", n)
        for name, extra in (("raw", []), ("enc", ["--encoded", "--encode-type", "jpg"])):
            measure(
                dataprep("lmdb", photos.name, f"{name}_db", "--resize", "256x256", "-q", *extra), cwd=base
            )
        pixel_gb = n * 3 * 256 * 256 / 1e9
        for name in ("raw", "enc"):
            db = f"{name}_db"
            cmds = {
                "loop": ([py, "-c", LOOP, db, "loop.npy"], base, [base / "loop.npy"]),
                "dp1": (dataprep("mean", db, "-o", "m1.bp", "-j", 1, "-q"), base, [base / "m1.bp"]),
                "dp2": (dataprep("mean", db, "-o", "m2.bp", "-j", 2, "-q"), base, [base / "m2.bp"]),
            }
            t = interleaved(cmds, args.repeat, settle)
            label = "raw Datums" if name == "raw" else "JPEG-encoded Datums"
            print(f"mean of {n} 256x256 color {label}, median of {args.repeat} rounds")
            print_rows(
                t,
                {
                    "loop": "single-process decode + NumPy sum loop",
                    "dp1": "dataprep mean --workers 1",
                    "dp2": "dataprep mean --workers 2",
                },
                n,
            )
            print(
                f"  speed-up (2 workers): {t['loop']['wall'] / t['dp2']['wall']:.2f}x; pixel data "
                f"{pixel_gb / t['dp2']['wall']:.2f} GB/s (loop {pixel_gb / t['loop']['wall']:.2f} GB/s)"
            )


if __name__ == "__main__":
    main()
