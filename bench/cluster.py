"""`--executor dask` against the local executor on one machine: images/s of `resize` and
`lmdb --resize` on the same inputs, with the local process pool (-j 2) and with a Dask
LocalCluster of 2 worker processes started once beforehand (its start-up is reported
separately). Target (issue 14): Dask's overhead on one machine under 20%.

Run: python bench/cluster.py [--n 2000] [--repeat 3]
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, interleaved, print_rows, scratch_args, scratch_dir  # noqa: E402
from stores import make_photos, settle  # noqa: E402


def main() -> None:
    args = scratch_args(__doc__, n=2000, repeat=3)
    from dask.distributed import Client

    from dataprep.parallel import local_cluster

    with scratch_dir("bench-dask-", args.dir) as base:
        photos = make_photos(base / "photos", args.n)
        started = time.perf_counter()
        cluster = local_cluster(2)  # the cluster --executor dask starts, started here once
        client = Client(cluster)
        client.run(lambda: __import__("dataprep.convert"))  # what a warm worker has imported
        startup = time.perf_counter() - started
        address = cluster.scheduler_address
        try:
            cmds = {}
            for name, command, out in (
                ("resize", ["resize", str(photos), "{out}", "--size", "256x256"], "small"),
                ("lmdb", ["lmdb", str(photos), "{out}", "--resize", "256x256"], "db"),
            ):
                for executor in ("local", "dask"):
                    dest = base / f"{out}_{executor}"
                    extra = (
                        ["--executor", "dask", "--scheduler", address] if executor == "dask" else ["-j", "2"]
                    )
                    cmd = dataprep(*[c.format(out=dest) for c in command], *extra, "--overwrite", "-q")
                    cmds[f"{name}_{executor}"] = (cmd, None, [dest])
            # the same commands on 10 photos: what a run costs before any work (the client's
            # imports, connecting, the pools), reported apart from the throughput
            tiny = base / "tiny.txt"
            tiny.write_text("".join(photos.read_text().splitlines(keepends=True)[:10]))
            for key, (cmd, cwd, outputs) in list(cmds.items()):
                small = [tiny if c == str(photos) else c for c in cmd]
                small = [str(c).replace(str(outputs[0]), str(outputs[0]) + "_tiny") for c in small]
                cmds[f"{key}_tiny"] = (small, cwd, [Path(str(outputs[0]) + "_tiny")])
            times = interleaved(cmds, args.repeat, settle)
        finally:
            client.close()
            cluster.close()
    main_keys = [key for key in cmds if not key.endswith("_tiny")]
    labels = {key: key.replace("_", " with the ") + " executor" for key in main_keys}
    print(f"{args.n} photos (about 500 x 375) to 256 x 256, median of {args.repeat} interleaved rounds")
    print_rows({k: times[k] for k in main_keys}, labels, args.n)
    for name in ("resize", "lmdb"):
        local, dask = times[f"{name}_local"]["wall"], times[f"{name}_dask"]["wall"]
        fixed_local, fixed_dask = times[f"{name}_local_tiny"]["wall"], times[f"{name}_dask_tiny"]["wall"]
        work = (dask - fixed_dask) / (local - fixed_local)
        print(
            f"  {name}: dask / local = {dask / local:.2f} overall; per-run fixed cost (10 photos) "
            f"{fixed_local:.2f} s local, {fixed_dask:.2f} s dask; the work alone: {work:.2f} "
            f"(overhead {100 * (work - 1):+.0f}%)"
        )
    print(f"  LocalCluster start-up (2 workers, imports warmed): {startup:.1f} s, not counted above")


if __name__ == "__main__":
    main()
