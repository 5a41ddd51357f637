"""Where one image's time goes in `dataprep lmdb --resize`, stage by stage (issue 27):
read the file, decode, resize (bilinear, as convert_imageset), serialize the Datum,
checksum, and the LMDB write, each timed over the same N photos in one process, with the
whole command's per-image cost (two workers) beside them.

Run: python bench/lmdb_stages.py [--n 1500] [--dir DIR]. The photos are 500 x 375 JPEGs cut
from the ones scikit-image ships (the `bench` extra), as in bench/stores.py.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

import cv2
import lmdb

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, measure, scratch_args, scratch_dir  # noqa: E402

from dataprep.images import decode, read_image_file, resize  # noqa: E402
from dataprep.stores.base import checksum  # noqa: E402
from dataprep.stores.caffe_pb import datum_raw  # noqa: E402


def photos(folder: Path, n: int) -> Path:
    """``n`` JPEGs of 500 x 375 from scikit-image's photos (shifted crops), and their list."""
    from skimage import data

    sources = [data.astronaut(), data.coffee(), data.chelsea(), data.rocket()]
    folder.mkdir(parents=True, exist_ok=True)
    lines = []
    for i in range(n):
        image = cv2.resize(sources[i % len(sources)], (520, 400))[
            i % 20 : i % 20 + 375, i % 17 : i % 17 + 500
        ]
        path = folder / f"{i:05d}.jpg"
        cv2.imwrite(str(path), image[:, :, ::-1], [cv2.IMWRITE_JPEG_QUALITY, 90])
        lines.append(f"{path} {i % 10}")
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    return folder / "list.txt"


def stages(paths: list[Path], folder: Path) -> dict[str, float]:
    """Microseconds per image of each stage, one process, one thread."""
    cv2.setNumThreads(1)
    spent = dict.fromkeys(("read", "decode", "resize", "datum", "checksum", "lmdb put"), 0.0)
    folder.mkdir(parents=True, exist_ok=True)
    env = lmdb.open(str(folder / "stage_lmdb"), map_size=1 << 32, sync=False)
    txn = env.begin(write=True)
    for k, path in enumerate(paths):
        t0 = time.perf_counter()
        data = read_image_file(path)
        t1 = time.perf_counter()
        image = decode(data, "color")
        t2 = time.perf_counter()
        image = resize(image, (256, 256), "linear")
        t3 = time.perf_counter()
        value = datum_raw(image, k % 10)
        t4 = time.perf_counter()
        checksum(value)
        t5 = time.perf_counter()
        txn.put(f"{k:08d}_{path.name}".encode(), value, append=True)
        if k % 1000 == 999:
            txn.commit()
            txn = env.begin(write=True)
        t6 = time.perf_counter()
        for name, a, b in zip(spent, (t0, t1, t2, t3, t4, t5), (t1, t2, t3, t4, t5, t6)):
            spent[name] += b - a
    txn.commit()
    env.close()
    return {name: seconds / len(paths) * 1e6 for name, seconds in spent.items()}


def main() -> None:
    args = scratch_args(__doc__, n=1500, repeat=3)
    with scratch_dir("lmdb-stages-", args.dir) as base:
        listed = photos(base / "photos", args.n)
        paths = [Path(line.split()[0]) for line in listed.read_text().splitlines()]
        rounds = []
        walls = []
        for r in range(args.repeat):
            rounds.append(stages(paths, base / f"round{r}"))
            cmd = dataprep("lmdb", listed, base / f"cmd{r}_lmdb", "--resize", "256x256", "-j", 2, "-q")
            walls.append(measure(cmd)["wall"])
        print(f"per image, one process (median of {args.repeat} rounds, {args.n} photos of 500 x 375):")
        total = 0.0
        for name in rounds[0]:
            us = statistics.median(r[name] for r in rounds)
            total += us
            print(f"  {name:<10} {us:8.1f} us")
        print(f"  {'sum':<10} {total:8.1f} us: {1e6 / total:.0f} images/s on one core")
        wall = statistics.median(walls)
        print(f"dataprep lmdb --resize 256x256 -j 2: {wall:.2f} s, {wall / args.n * 1e6:.0f} us per image")


if __name__ == "__main__":
    main()
