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


FAULT_IN = """
import resource, sys
import numpy as np
from dataprep.heap import fault_in, keep_freed_memory
assert keep_freed_memory(nets=True)
if sys.argv[1] == "faulted":
    fault_in(64 << 20)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
block = np.empty(48 << 20, np.uint8)
block[::4096] = 1  # every page
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc malloc")
def test_a_block_faulted_in_and_freed_serves_later_blocks_without_faults():
    """``fault_in``: what a net's passes will allocate is already in the heap's pages (as
    huge pages, or 4 KB ones where the kernel gives none: either way far fewer faults)."""

    def faults(mode: str) -> int:
        done = subprocess.run(
            [sys.executable, "-c", FAULT_IN, mode], capture_output=True, text=True, check=True
        )
        return int(done.stdout)

    fresh, faulted = faults("fresh"), faults("faulted")
    assert faulted * 4 < fresh and faulted < 10, (fresh, faulted)


def test_a_training_net_faults_in_its_pass_and_an_inference_net_does_not(monkeypatch):
    """A training net on the CPU faults in twice its blobs (values and gradients) and its
    weights' gradients at set-up (``heap.fault_in``); an inference net, which `predict`
    builds, does not."""
    import numpy as np

    from dataprep.train import net as net_module

    asked = []
    monkeypatch.setattr(net_module, "fault_in", asked.append)
    specs = [
        {"name": "ip", "type": "InnerProduct", "bottom": ["data"], "top": ["ip"], "num_output": 3},
        {"name": "relu", "type": "ReLU", "bottom": ["ip"], "top": ["ip"]},
    ]
    glibc = net_module.keep_freed_memory(nets=True)  # elsewhere the heap keeps nothing
    net_module.Net(specs, {"data": (5, 4)}, xp=np)
    blobs = (5 * 4 + 5 * 3) * 4  # data and ip, float32
    weights = (3 * 4 + 3) * 4
    expected = [2 * blobs + weights] if glibc else []
    assert asked == expected
    net_module.Net(specs, {"data": (5, 4)}, xp=np, train=False)
    assert asked == expected
