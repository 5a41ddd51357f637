"""Store conversion against the tutorial's scripts and a tight single-process loop.

Run: python bench/stores.py [--n 20000] [--photos 2000]. In one run, on the same inputs:
  1. `dataprep hdf5` vs a faithful port of the tutorial's gen_hdf5.py (plt.imread per
     image into one preallocated N x 1 x 100 x 100 array) at N = 5000 and N = 20000:
     images/s and peak memory (largest RSS of any process of the command);
  2. `dataprep noise --n N --to hdf5` vs the tutorial's whole pipeline (make_noise with
     plt.imsave, writing the list, gen_hdf5);
  3. `dataprep lmdb --resize 256x256 --workers 2` vs a tight single-process loop that
     decodes, resizes (bilinear) and writes the same LMDB, on JPEGs of about 500 x 375 cut
     from the photos scikit-image ships.
Each comparison reports the median of --repeat interleaved rounds (the disk here swings 2x).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, interleaved, measure, print_rows, row, scratch_dir  # noqa: E402
from noise import run_tutorial  # noqa: E402

GEN_HDF5 = r"""
import sys
import h5py, numpy as np
import matplotlib; matplotlib.use("Agg")
import matplotlib.pyplot as plt
list_file, out = sys.argv[1], sys.argv[2]
with open(list_file) as f:
    lines = f.readlines()
n = len(lines)
data = np.zeros((n, 1, 100, 100), dtype="f4")
freq = np.zeros((n, 2), dtype="f4")
for i, line in enumerate(lines):
    path, fx, fy = line.split()
    im = plt.imread(path)
    if im.ndim == 3:
        im = im[:, :, 0]
    data[i, 0] = im.astype("f4") - 128
    freq[i] = float(fx), float(fy)
with h5py.File(out, "w") as h:
    h.create_dataset("data", data=data)
    h.create_dataset("freq", data=freq)
with open(out[:-3] + "_h5.txt", "w") as f:
    f.write(out + "\n")
"""

# The tight loop, in two flavours: LMDB's defaults (what a hand-written script does), and
# tuned like dataprep's writer (no fsync per commit, appending ascending keys), so that the
# ratio against the tuned loop measures the parallelism alone.
LMDB_LOOP = r"""
import sys, cv2, lmdb
from dataprep.stores.caffe_pb import datum_raw
list_file, db, tuned = sys.argv[1], sys.argv[2], sys.argv[3] == "tuned"
entries = [line.split() for line in open(list_file)]
env = lmdb.open(db, map_size=1 << 34, sync=not tuned)
batch = []
for i, (path, label) in enumerate(entries):
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_LINEAR)
    batch.append((b"%08d_%s" % (i, path.encode()), datum_raw(img, int(label))))
    if len(batch) == 1000 or i == len(entries) - 1:
        with env.begin(write=True) as txn:
            if tuned:
                txn.cursor().putmulti(batch, append=True)
            else:
                for key, value in batch:
                    txn.put(key, value)
        batch = []
env.sync(True)
env.close()
"""


def settle():
    os.sync()
    time.sleep(0.5)


def make_photos(folder: Path, n: int, seed: int = 0) -> Path:
    """``n`` JPEGs of about 500 x 375 cut from scikit-image's photos; returns a list file."""
    import cv2
    import numpy as np
    from skimage import data

    photos = [
        getattr(data, name)()
        for name in ("astronaut", "chelsea", "coffee", "rocket", "immunohistochemistry", "hubble_deep_field")
    ]
    photos = [cv2.cvtColor(p, cv2.COLOR_RGB2BGR) for p in photos]
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True)
    lines = []
    for i in range(n):
        photo = photos[i % len(photos)]
        ph, pw = photo.shape[:2]
        ch, cw = int(ph * rng.uniform(0.5, 1)), int(pw * rng.uniform(0.5, 1))
        y, x = rng.integers(0, ph - ch + 1), rng.integers(0, pw - cw + 1)
        h, w = (375, 500) if rng.random() < 0.75 else (500, 375)
        h, w = int(h * rng.uniform(0.9, 1.1)), int(w * rng.uniform(0.9, 1.1))
        crop = cv2.resize(photo[y : y + ch, x : x + cw], (w, h), interpolation=cv2.INTER_AREA)
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        name = f"photo_{i:05d}.jpg"
        cv2.imwrite(str(folder / name), crop, [cv2.IMWRITE_JPEG_QUALITY, int(rng.integers(75, 96))])
        lines.append(f"{folder.name}/{name} {i % len(photos)}")
    list_file = folder.parent / "photos.txt"
    list_file.write_text("\n".join(lines) + "\n")
    return list_file


def head(list_file: Path, n: int, out: Path) -> Path:
    lines = list_file.read_text().splitlines()[:n]
    out.write_text("\n".join(lines) + "\n")
    return out


def same_lmdb(a: Path, b: Path) -> bool:
    import lmdb

    with (
        lmdb.open(str(a), readonly=True, lock=False) as ea,
        lmdb.open(str(b), readonly=True, lock=False) as eb,
    ):
        with ea.begin() as ta, eb.begin() as tb:
            return list(ta.cursor()) == list(tb.cursor())


def noise_list(base: Path, folder: str, list_name: str) -> Path:
    """The tutorial's list step: ``path fx fy`` for every generated image."""
    out = base / list_name
    out.write_text(
        "\n".join(
            f"{folder}/{p.name} {p.stem.split('_')[1]} {p.stem.split('_')[2]}"
            for p in sorted((base / folder).iterdir())
        )
        + "\n"
    )
    return out


def bench_hdf5(base: Path, n_max: int, j: int, repeat: int) -> None:
    py = sys.executable
    # the noise images of the pipeline a user runs: `dataprep noise` (1-channel JPEGs); with
    # channels kept (auto), `dataprep hdf5` writes N x 1 x 100 x 100 like gen_hdf5
    measure(
        dataprep(
            "noise", "--n", n_max, "--out", base / "samples", "--lists-dir", base / "lists", "-j", j, "-q"
        )
    )
    all_list = noise_list(base, "samples", "all.txt")
    print(f"HDF5 from `dataprep noise` images, {j} workers, median of {repeat} rounds")
    cmds = {}
    for n in sorted({5000, n_max}):
        lst = head(all_list, n, base / f"train{n}.txt")
        cmds[f"tut{n}"] = (
            [py, "-c", GEN_HDF5, lst.name, f"tut{n}.h5"],
            base,
            [base / f"tut{n}.h5", base / f"tut{n}_h5.txt"],
        )
        cmds[f"dp{n}"] = (
            dataprep(
                "hdf5", lst.name, "-o", f"dp{n}.h5", "--mean", 128, "--label-names", "freq", "-j", j, "-q"
            ),
            base,
            [base / f"dp{n}.h5", base / f"dp{n}_h5.txt"],
        )
    t = interleaved(cmds, repeat, settle)
    for n in sorted({5000, n_max}):
        tut, dp = t[f"tut{n}"], t[f"dp{n}"]
        print(row(f"  tutorial gen_hdf5.py, N={n}", n, tut["wall"], tut["peak_mb"]))
        print(row(f"  dataprep hdf5, N={n}", n, dp["wall"], dp["peak_mb"]))
        print(f"  speed-up at N={n}: {tut['wall'] / dp['wall']:.2f}x")


def bench_pipeline(base: Path, n: int, j: int, repeat: int) -> None:
    import statistics

    print(f"noise pipeline to HDF5, N={n}, median of {repeat} rounds")
    tutorial, ours, peaks = [], [], [0.0, 0.0]
    for _ in range(repeat):
        for old in ("pipeline_samples", "pipeline.h5", "pipeline_h5.txt", "to_h5"):
            path = base / old
            shutil.rmtree(path) if path.is_dir() else path.unlink(missing_ok=True)
        settle()
        t_make = run_tutorial(n, j, base / "pipeline_samples")
        t0 = time.perf_counter()
        noise_list(base, "pipeline_samples", "pipeline.txt")
        t_list = time.perf_counter() - t0
        settle()
        gen = measure([sys.executable, "-c", GEN_HDF5, "pipeline.txt", "pipeline.h5"], cwd=base)
        tutorial.append(t_make + t_list + gen["wall"])
        settle()
        to = measure(
            dataprep("noise", "--n", n, "--to", "hdf5", "--out", base / "to_h5", "--mean", 128, "-j", j, "-q")
        )
        ours.append(to["wall"])
        peaks = [max(peaks[0], gen["peak_mb"]), max(peaks[1], to["peak_mb"])]
    t_tut, t_dp = statistics.median(tutorial), statistics.median(ours)
    print(row("  tutorial make_noise + list + gen_hdf5", n, t_tut, peaks[0]))
    print(row("  dataprep noise --to hdf5", n, t_dp, peaks[1]))
    print(
        f"  speed-up: {t_tut / t_dp:.2f}x (rounds: tutorial {', '.join(f'{x:.2f}' for x in tutorial)} s; "
        f"dataprep {', '.join(f'{x:.2f}' for x in ours)} s)"
    )


def bench_routes(base: Path, n: int, j: int, repeat: int) -> None:
    """The two routes from noise to HDF5 that dataprep offers: image files, then `hdf5`; or
    `noise --to hdf5` straight into the store (no image files, no decode)."""
    print(f"noise to HDF5 by route, N={n}, {j} workers, median of {repeat} rounds")
    cmds = {
        "files": (
            dataprep("noise", "--n", n, "--format", "png", "--out", "r_samples", "-j", j, "-q"),
            base,
            [base / p for p in ("r_samples", "train.txt", "val.txt", "test.txt", "test_labels.txt")],
        ),
        "to": (
            dataprep("noise", "--n", n, "--to", "hdf5", "--out", "r_to", "--mean", 128, "-j", j, "-q"),
            base,
            [base / "r_to"],
        ),
    }
    times = interleaved(cmds, repeat, settle)
    hdf5 = interleaved(
        {
            "hdf5": (
                dataprep("hdf5", "train.txt", "--mean", 128, "--label-names", "freq", "-j", j, "-q"),
                base,
                [base / "train.h5", base / "train_h5.txt"],
            )
        },
        repeat,
        settle,
    )
    print(row("  noise --format png (files + lists)", n, times["files"]["wall"], times["files"]["peak_mb"]))
    n_train = len((base / "train.txt").read_text().splitlines())
    print(row("  hdf5 train.txt (after the files)", n_train, hdf5["hdf5"]["wall"], hdf5["hdf5"]["peak_mb"]))
    print(row("  noise --to hdf5", n, times["to"]["wall"], times["to"]["peak_mb"]))
    both = times["files"]["wall"] + hdf5["hdf5"]["wall"]
    print(
        f"  --to hdf5 against files alone: {times['files']['wall'] / times['to']['wall']:.2f}x; "
        f"against files + hdf5: {both / times['to']['wall']:.2f}x"
    )


def bench_lmdb(base: Path, m: int, j: int, repeat: int) -> None:
    py = sys.executable
    photos = make_photos(base / "photos", m)
    print(f"LMDB, {m} photos of about 500x375 resized to 256x256 (bilinear), median of {repeat} rounds")
    cmds = {
        "plain": ([py, "-c", LMDB_LOOP, photos.name, "plain_db", "plain"], base, [base / "plain_db"]),
        "tuned": ([py, "-c", LMDB_LOOP, photos.name, "tuned_db", "tuned"], base, [base / "tuned_db"]),
        "dp1": (
            dataprep("lmdb", photos.name, "dp1_db", "--resize", "256x256", "-j", 1, "-q"),
            base,
            [base / "dp1_db"],
        ),
        "dp": (
            dataprep("lmdb", photos.name, "dp_db", "--resize", "256x256", "-j", j, "-q"),
            base,
            [base / "dp_db"],
        ),
    }
    times = interleaved(cmds, repeat, settle)
    labels = {
        "plain": "single-process loop, LMDB defaults",
        "tuned": "single-process loop, tuned LMDB writes",
        "dp1": "dataprep lmdb --workers 1",
        "dp": f"dataprep lmdb --workers {j}",
    }
    print_rows(times, labels, m)
    print(
        f"  speed-up: {times['plain']['wall'] / times['dp']['wall']:.2f}x over the plain loop, "
        f"{times['tuned']['wall'] / times['dp']['wall']:.2f}x over the tuned loop; same records: "
        f"{same_lmdb(base / 'plain_db', base / 'dp_db')}"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=20000)
    ap.add_argument("--photos", type=int, default=2000)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--dir", type=Path, default=None)
    ap.add_argument("--only", choices=["hdf5", "pipeline", "routes", "lmdb"], default=None)
    ap.add_argument("--repeat", type=int, default=3, help="rounds of each comparison")
    args = ap.parse_args()
    with scratch_dir("bench_stores_", args.dir) as base:
        if args.only in (None, "hdf5"):
            bench_hdf5(base, args.n, args.workers, args.repeat)
        if args.only in (None, "pipeline"):
            bench_pipeline(base, args.n, args.workers, args.repeat)
        if args.only in (None, "routes"):
            bench_routes(base, args.n, args.workers, args.repeat)
        if args.only in (None, "lmdb"):
            bench_lmdb(base, args.photos, args.workers, args.repeat)


if __name__ == "__main__":
    main()
