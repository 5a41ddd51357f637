"""The cost of checking every record against its manifest checksum on read (issue 20): the
same `mean` and `convert` runs with the check on and off, interleaved, in one process.

Run: python bench/checks.py [--n 5000] [--repeat 3]. Builds a raw LMDB of --n 256 x 256
color Datums (the records `mean` reads fastest, where a check costs the largest share),
then times `compute_mean` (2 workers, as `dataprep mean`) and `convert_store` to LMDB (one
worker: the disk writes of a pool made the runs differ by 30 to 50% whichever went first)
with `iter_range(check=True)` (what every command does) against `check=False`. Give --dir
/dev/shm to keep the disk out. Target: under 10% of each command's time.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import scratch_args, scratch_dir  # noqa: E402
from mean import raw_store  # noqa: E402


def unchecked(reader_classes):
    """Readers whose ``iter_range`` skips the check (the baseline)."""
    originals = {cls: cls.iter_range for cls in reader_classes}

    def patch():
        for cls, original in originals.items():
            cls.iter_range = lambda self, start, stop, check=True, _o=original: _o(self, start, stop, False)

    def restore():
        for cls, original in originals.items():
            cls.iter_range = original

    return patch, restore


def main() -> None:
    from dataprep.convert import convert_store
    from dataprep.mean import array_source, close_readers, compute_mean
    from dataprep.parallel import make_executor
    from dataprep.stores.datum import DatumReader

    args = scratch_args(__doc__, n=5000, repeat=3)
    with scratch_dir("bench_checks_", args.dir) as base:
        db = str(base / raw_store(base, args.n))
        patch, restore = unchecked([DatumReader])
        times: dict[tuple[str, bool], list[float]] = {}
        for round_ in range(args.repeat):
            for checked in (True, False) if round_ % 2 else (False, True):  # either goes first
                if not checked:
                    patch()
                try:
                    started = time.perf_counter()
                    compute_mean(array_source(db), make_executor(2, args.n))
                    close_readers()
                    times.setdefault(("mean", checked), []).append(time.perf_counter() - started)
                    out = base / f"c{int(checked)}"
                    started = time.perf_counter()
                    convert_store(db, str(out), "lmdb", workers=1, overwrite=True)
                    times.setdefault(("convert", checked), []).append(time.perf_counter() - started)
                finally:
                    restore()
        gb = args.n * 3 * 256 * 256 / 1e9
        print(f"{args.n} raw 256x256x3 Datums ({gb:.2f} GB of pixels), median of {args.repeat} rounds")
        for command in ("mean", "convert"):
            on = statistics.median(times[(command, True)])
            off = statistics.median(times[(command, False)])
            cost = 100 * (on / off - 1)
            print(f"  {command:<8} checked {on:6.2f} s  unchecked {off:6.2f} s  cost {cost:+.1f}%")


if __name__ == "__main__":
    main()
