"""The tool as a user installs it: a wheel built without network, installed outside the
source tree, carrying the shipped recipes (``dataprep train noise_stream``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]


def test_every_subpackage_is_in_the_wheel_list():
    import re

    block = re.search(r"^packages = \[(.*?)\]", (ROOT / "pyproject.toml").read_text(), re.S | re.M)
    listed = set(re.findall(r'"([\w.]+)"', block.group(1)))
    found = {".".join(p.parent.relative_to(ROOT).parts) for p in (ROOT / "dataprep").rglob("__init__.py")}
    assert found | {"dataprep.recipes"} == listed


def test_the_wheel_installs_and_runs_outside_the_source_tree(tmp_path):
    built = subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            tmp_path,
            ROOT,
        ],
        capture_output=True,
        text=True,
    )
    assert built.returncode == 0, built.stderr
    (wheel,) = tmp_path.glob("dataprep_caffe-*.whl")
    target = tmp_path / "site"
    installed = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", target, wheel],
        capture_output=True,
        text=True,
    )
    assert installed.returncode == 0, installed.stderr
    env = {**os.environ, "PYTHONPATH": str(target)}
    work = tmp_path / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [target / "bin" / "dataprep", *args], cwd=work, env=env, capture_output=True, text=True
        )

    where = subprocess.run(
        [sys.executable, "-c", "import dataprep; print(dataprep.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
    )
    assert Path(where.stdout.strip()).is_relative_to(target), where
    assert run("--version").stdout.strip().endswith("0.1.0")
    assert run("noise", "--n", "20", "--to", "lmdb", "--out", "x").returncode == 0
    trained = run(
        "train",
        "noise_stream",
        "--set",
        "solver.max_iter=2",
        "--set",
        "data.batch_size=4",
        "--set",
        "solver.test_iter=1",
    )
    assert trained.returncode == 0, trained.stderr
    assert "Solving noise_stream" in trained.stderr and (work / "noise_stream_iter_2.npz").is_file()


def test_install_lines_name_the_package_that_fits_the_install(tmp_path, monkeypatch):
    """From a clone: pip install -e on the clone; from the index: dataprep-caffe (the
    `dataprep` there is an unrelated project)."""
    import dataprep.errors as errors

    assert errors.install_line("dask") == f"pip install -e '{Path(errors.__file__).parents[1]}[dask]'"
    installed = tmp_path / "lib" / "site-packages" / "dataprep"
    installed.mkdir(parents=True)
    monkeypatch.setattr(errors, "__file__", str(installed / "errors.py"))
    assert errors.install_line("leveldb") == "pip install 'dataprep-caffe[leveldb]'"
