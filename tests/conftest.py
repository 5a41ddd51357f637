"""Shared fixtures: a CLI runner and small synthetic image lists made on the fly."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner

from dataprep.cli.main import cli


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run ``dataprep ARGS`` in-process; returns Click's Result (stdout and stderr apart)."""

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


def run_dataprep(*args: str, cwd: Path | None = None, **kw) -> subprocess.CompletedProcess:
    """Run the installed console entry point in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "dataprep.cli.main", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        **kw,
    )


def write_images(
    folder: Path, n: int, shape=(12, 16, 3), ext="png", seed=0, labels="int", list_name="list.txt", sizes=None
) -> tuple[Path, list[np.ndarray]]:
    """``n`` random images in ``folder/img/`` and a list file naming them; returns (list, images)."""
    rng = np.random.default_rng(seed)
    (folder / "img").mkdir(parents=True, exist_ok=True)
    images, lines = [], []
    for i in range(n):
        s = sizes[i] if sizes else shape
        image = rng.integers(0, 256, s, dtype=np.uint8)
        name = f"img/{i:04d}.{ext}"
        assert cv2.imwrite(str(folder / name), image)
        images.append(image if image.ndim == 3 else image[:, :, None])
        label = {"int": f"{i % 5}", "float": f"{i / 7:.6f} {i * 0.5}", "none": ""}[labels]
        lines.append(f"{name} {label}".strip())
    path = folder / list_name
    path.write_text("\n".join(lines) + "\n")
    return path, images


@pytest.fixture
def image_list(tmp_path):
    """A list of 20 color PNGs (12x16) with integer labels, and the images as BGR arrays."""
    return write_images(tmp_path, 20)


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under ``root`` (or the file itself) by relative path, for byte comparisons."""
    root = Path(root)
    if root.is_file():
        return {root.name: root.read_bytes()}
    return {
        str(p.relative_to(root)): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file() and p.name != "lock.mdb" and not p.name.startswith("LOG")
    }


def leftovers(folder: Path) -> list[str]:
    """Anything a writer might have left in ``folder`` (temporary siblings included)."""
    return sorted(p.name for p in Path(folder).iterdir() if ".partial-" in p.name or ".old-" in p.name)
