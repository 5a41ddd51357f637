"""Malloc thresholds: freed image buffers are reused, not faulted in again."""

from __future__ import annotations

import subprocess
import sys

import pytest

CODE = """
import resource, sys
import numpy as np
from dataprep.heap import keep_freed_memory
if sys.argv[1] == "tuned":
    assert keep_freed_memory()
def faults():
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(3):  # warm up
    a, b = np.ones(700_000, np.uint8), np.ones(700_000, np.uint8)
    del a, b
before = faults()
for _ in range(200):  # two image-sized buffers per 'image', then freed
    a, b = np.ones(700_000, np.uint8), np.ones(700_000, np.uint8)
    del a, b
print(faults() - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_freed_buffers_are_reused_instead_of_faulted_in_again():
    def faults(mode: str) -> int:
        return int(
            subprocess.run(
                [sys.executable, "-c", CODE, mode], capture_output=True, text=True, check=True
            ).stdout
        )

    default, tuned = faults("default"), faults("tuned")
    assert tuned < 200 <= default, (default, tuned)  # a page per 'image' at most, against hundreds
