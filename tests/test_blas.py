"""OpenBLAS's kernels (blas.py): Zen's on an AMD CPU with AVX-512, chosen by every command
before NumPy loads, never over the user's choice or once NumPy has chosen."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from dataprep import blas

AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n"
INTEL = "processor\t: 0\nvendor_id\t: GenuineIntel\nflags\t\t: fpu sse2 avx2 avx512f avx512bw\n\n"
OLD_AMD = "processor\t: 0\nvendor_id\t: AuthenticAMD\nflags\t\t: fpu sse2 avx2\n\n"


def _chosen(cpuinfo: str, tmp_path, before: str = "", env: dict | None = None) -> str:
    """OPENBLAS_CORETYPE after choose_kernels in a fresh interpreter (``before`` runs first)."""
    path = tmp_path / "cpuinfo"
    path.write_text(cpuinfo)
    module = Path(blas.__file__)  # loaded alone: importing the package would choose by this CPU
    code = (
        f"{before}\nimport importlib.util as u\ns = u.spec_from_file_location('blas', {str(module)!r})\n"
        f"m = u.module_from_spec(s)\ns.loader.exec_module(m)\nm.choose_kernels({str(path)!r})\n"
        "import os\nprint(os.environ.get('OPENBLAS_CORETYPE', '-'))"
    )
    base = {k: v for k, v in os.environ.items() if k != "OPENBLAS_CORETYPE"}
    out = subprocess.run(
        [sys.executable, "-c", code], env={**base, **(env or {})}, capture_output=True, text=True
    )
    assert out.returncode == 0, out.stderr
    return out.stdout.strip()


@pytest.mark.parametrize(("cpuinfo", "want"), [(AMD, "Zen"), (INTEL, "-"), (OLD_AMD, "-")])
def test_zen_kernels_only_on_amd_with_avx512(tmp_path, cpuinfo, want):
    assert _chosen(cpuinfo, tmp_path) == want


def test_the_users_choice_and_a_loaded_numpy_are_left_alone(tmp_path):
    assert _chosen(AMD, tmp_path, env={"OPENBLAS_CORETYPE": "SkylakeX"}) == "SkylakeX"
    assert _chosen(AMD, tmp_path, before="import numpy") == "-"


def test_importing_dataprep_chooses(monkeypatch):
    import importlib

    import dataprep

    calls = []
    monkeypatch.setattr(blas, "choose_kernels", lambda: calls.append(1))
    importlib.reload(dataprep)  # what every command and worker runs first
    assert calls == [1]


LAYER_BYTES = """
import numpy as np
from dataprep.train.layers import make_layer, threads

data = np.random.default_rng(5).normal(size=(70, 3, 8, 10)).astype(np.float32)
specs = [
    {"type": "InnerProduct", "num_output": 90},
    {"type": "Convolution", "num_output": 40, "kernel_size": 3},
]
for spec in specs:
    out = []
    for cores in (1, 2):
        threads.CORES = cores
        threads._POOL.clear()
        layer = make_layer(spec)
        layer.setup([data.shape], np, np.random.default_rng(0), np.float32)
        with threads.one_blas_thread(np):
            y = layer.forward([data])[0]
            dy = np.random.default_rng(2).normal(size=y.shape).astype(np.float32)
            (dx,) = layer.backward([dy])
        out.append([y.tobytes(), dx.tobytes()] + [g.tobytes() for g in layer.grads])
    print(spec["type"], out[0] == out[1])
"""


@pytest.mark.parametrize("kernels", ["Haswell", "SkylakeX"])
def test_layer_bytes_do_not_depend_on_the_core_count_under_either_kernels(kernels):
    """OpenBLAS's Haswell kernels (chosen on AMD's Zen 4, and on CPUs without AVX-512) give
    other bytes with two BLAS threads than with one; the layers' parts use one each, on one
    core too (a process pinned to one core sees two BLAS threads no more)."""
    env = {**os.environ, "OPENBLAS_CORETYPE": kernels}
    out = subprocess.run([sys.executable, "-c", LAYER_BYTES], env=env, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split("\n")[:2] == ["InnerProduct True", "Convolution True"]
