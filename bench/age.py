"""The age-regression question, answered by measurement: design 1 (one Sigmoid output
scaled to 0..99, recipes/age_regression.yaml), its SmoothL1 variant, and design 2 (the
expected age over 100 softmax bins through a fixed 0..99 kernel,
recipes/age_expectation.yaml), trained on the same stores with the same trunk, solver and
iterations, over three seeds.

Run: python bench/age.py [--n 20000] [--iterations 2000] [--seeds 3] [--picture docs/age_curves.png].
Makes `dataprep noise --label age` LMDB stores (64 x 64, ages 0..99 from the horizontal
frequency), trains each design once per seed, and prints per design the validation mean
absolute error at the end (mean and spread over the seeds), the best one seen, and the
seconds per run; `dataprep plot` draws every run's curves into --picture.
"""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import dataprep, scratch_args, scratch_dir  # noqa: E402

ROOT = Path(__file__).parents[1]
DESIGNS = {
    "1: Sigmoid x 99, EuclideanLoss": ("age_regression", []),
    "1b: Sigmoid x 99, SmoothL1Loss": ("age_regression", ["--set", "net[12].type=SmoothL1Loss"]),
    "2: expected age over 100 bins": ("age_expectation", []),
}


def main() -> None:
    args = scratch_args(__doc__, n=20000, iterations=2000, seeds=3, picture="")
    with scratch_dir("age-bench-", args.dir) as work:
        subprocess.run(
            dataprep(
                "noise",
                "--n",
                args.n,
                "--size",
                "64x64",
                "--label",
                "age",
                "--to",
                "lmdb",
                "--out",
                "age_lmdb",
                "-q",
            ),
            cwd=work,
            check=True,
        )
        logs, rows = [], []
        for design, (recipe, extra) in DESIGNS.items():
            finals, bests, seconds = [], [], []
            for seed in range(args.seeds):
                prefix = f"{recipe}{'_sl1' if extra else ''}_seed{seed}"
                log = work / f"{prefix}.log"
                started = time.perf_counter()
                with open(log, "w") as err:
                    subprocess.run(
                        dataprep(
                            "train",
                            ROOT / "recipes" / f"{recipe}.yaml",
                            *extra,
                            "--set",
                            f"solver.max_iter={args.iterations}",
                            "--set",
                            f"solver.random_seed={seed}",
                            "--set",
                            f"solver.snapshot_prefix={prefix}",
                            "-q",
                        ),
                        cwd=work,
                        stdout=subprocess.DEVNULL,
                        stderr=err,
                        check=True,
                    )
                seconds.append(time.perf_counter() - started)
                tests = json.loads((work / f"{prefix}_metrics.json").read_text())["tests"]
                finals.append(tests[-1]["loss_mae0"])
                bests.append(min(t["loss_mae0"] for t in tests))
                logs.append((log, f"design {design.split(':')[0]}, seed {seed}"))
            rows.append((design, finals, bests, seconds))
        print(f"{'design':<34} {'val MAE at the end':>22} {'best val MAE':>14} {'s per run':>10}")
        for design, finals, bests, seconds in rows:
            mean, spread, best = statistics.mean(finals), statistics.pstdev(finals), statistics.mean(bests)
            print(f"{design:<34} {mean:13.2f} +- {spread:5.2f} {best:14.2f} {statistics.mean(seconds):10.0f}")
        if args.picture:
            labels = [a for _, label in logs for a in ("--label", label)]
            subprocess.run(
                dataprep(
                    "plot",
                    *[log for log, _ in logs],
                    *labels,
                    "--y",
                    "test loss_mae0",
                    "-o",
                    Path(args.picture).absolute(),
                    "--overwrite",
                ),
                check=True,
            )


if __name__ == "__main__":
    main()
