"""Shared fixtures: a CLI runner and small synthetic image lists (helpers in helpers.py)."""

from __future__ import annotations

# first: importing dataprep chooses OpenBLAS's kernels as every command does (blas.py)
from dataprep import blas  # noqa: F401

# isort: split
import pytest
from click.testing import CliRunner
from helpers import write_images

from dataprep.cli.main import cli


@pytest.fixture(autouse=True)
def _graph_cache(tmp_path_factory, monkeypatch):
    """Each test keeps onnxruntime graphs and parsed prototxts (graph_cache, prototxt_cache) in a
    folder of its own, never in ~/.cache."""
    monkeypatch.setenv("DATAPREP_CACHE", str(tmp_path_factory.mktemp("cache")))


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture
def invoke(runner):
    """Run ``dataprep ARGS`` in-process; returns Click's Result (stdout and stderr apart)."""

    def run(*args: str, input: str | None = None):
        return runner.invoke(cli, [str(a) for a in args], input=input, catch_exceptions=False)

    return run


@pytest.fixture
def image_list(tmp_path):
    """A list of 20 color PNGs (12x16) with integer labels, and the images as BGR arrays."""
    return write_images(tmp_path, 20)
