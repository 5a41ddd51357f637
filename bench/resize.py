"""`dataprep resize` against a single-process OpenCV loop and a Pillow loop.

Run: python bench/resize.py [--n 2000]. 2000 JPEGs of about 500 x 375 cut from the photos
scikit-image ships are resized to 256 x 256 with area interpolation (the default when
shrinking) and written as JPEG q95, median of --repeat interleaved rounds:
  * `dataprep resize --workers 1` and `--workers 2`;
  * a single-process cv2 imread -> resize(INTER_AREA) -> imwrite loop;
  * a Pillow open -> resize(BOX) -> save loop.
Then where one image's time goes (decode, resize, encode, write), single process.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, interleaved, print_rows, scratch_args, scratch_dir  # noqa: E402
from stores import make_photos, settle  # noqa: E402

CV2_LOOP = r"""
import sys, os, cv2
cv2.setNumThreads(1)
src, out = sys.argv[1], sys.argv[2]
for line in open(src):
    path = line.split()[0]
    img = cv2.imread(path, cv2.IMREAD_COLOR)
    img = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
    dest = os.path.join(out, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    cv2.imwrite(dest, img, [cv2.IMWRITE_JPEG_QUALITY, 95])
"""

PIL_LOOP = r"""
import sys, os
from PIL import Image
src, out = sys.argv[1], sys.argv[2]
for line in open(src):
    path = line.split()[0]
    img = Image.open(path).convert("RGB").resize((256, 256), Image.Resampling.BOX)
    dest = os.path.join(out, path)
    os.makedirs(os.path.dirname(dest), exist_ok=True)
    img.save(dest, quality=95)
"""


def breakdown(list_file: Path, count: int = 200) -> dict:
    """Seconds per image of each step, one process, one OpenCV thread."""
    import cv2
    import numpy as np

    cv2.setNumThreads(1)
    paths = [list_file.parent / line.split()[0] for line in list_file.read_text().splitlines()[:count]]
    t = {"read": 0.0, "decode": 0.0, "resize": 0.0, "encode": 0.0}
    for p in paths:
        t0 = time.perf_counter()
        data = p.read_bytes()
        t1 = time.perf_counter()
        img = cv2.imdecode(np.frombuffer(data, np.uint8), cv2.IMREAD_COLOR)
        t2 = time.perf_counter()
        small = cv2.resize(img, (256, 256), interpolation=cv2.INTER_AREA)
        t3 = time.perf_counter()
        cv2.imencode(".jpg", small, [cv2.IMWRITE_JPEG_QUALITY, 95])
        t4 = time.perf_counter()
        for k, dt in zip(t, (t1 - t0, t2 - t1, t3 - t2, t4 - t3)):
            t[k] += dt
    return {k: v / len(paths) for k, v in t.items()}


def main():
    args = scratch_args(__doc__, n=2000, repeat=3)
    py, n = sys.executable, args.n
    with scratch_dir("bench_resize_", args.dir) as base:
        photos = make_photos(base / "photos", n)
        cmds = {
            "cv2": ([py, "-c", CV2_LOOP, photos.name, "cv2_out"], base, [base / "cv2_out"]),
            "pil": ([py, "-c", PIL_LOOP, photos.name, "pil_out"], base, [base / "pil_out"]),
            "dp1": (
                dataprep("resize", photos.name, "dp1_out", "--size", "256x256", "-j", 1, "-q"),
                base,
                [base / "dp1_out"],
            ),
            "dp2": (
                dataprep("resize", photos.name, "dp2_out", "--size", "256x256", "-j", 2, "-q"),
                base,
                [base / "dp2_out"],
            ),
        }
        t = interleaved(cmds, args.repeat, settle)
        print(
            f"resize {n} JPEGs of about 500x375 to 256x256 (area), JPEG q95, median of {args.repeat} rounds"
        )
        print_rows(
            t,
            {
                "pil": "Pillow open/resize(BOX)/save loop",
                "cv2": "cv2 imread/resize(AREA)/imwrite loop",
                "dp1": "dataprep resize --workers 1",
                "dp2": "dataprep resize --workers 2",
            },
            n,
        )
        print(
            f"  speed-up (2 workers): {t['cv2']['wall'] / t['dp2']['wall']:.2f}x over the cv2 loop, "
            f"{t['pil']['wall'] / t['dp2']['wall']:.2f}x over Pillow"
        )
        steps = breakdown(photos)
        total = sum(steps.values())
        print(
            "  one image, one process: "
            + ", ".join(f"{k} {v * 1e3:.2f} ms ({v / total:.0%})" for k, v in steps.items())
        )


if __name__ == "__main__":
    main()
