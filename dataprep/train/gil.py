"""The GIL's hand-offs while a net runs beside a thread that prepares its inputs in Python.

Its own module, apart from the layers' thread pool: the onnxruntime engine imports no
layers (their package's imports took 12 ms of ``predict``'s start-up).
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Iterator

SWITCH_SECONDS = 0.0005  # how long a thread runs Python before another may take the GIL


@contextmanager
def quick_switches() -> Iterator[None]:
    """Python's thread switch interval at 0.5 ms while a net runs beside a thread that
    prepares its inputs in Python (the training loader, predict's decoding): at the default
    5 ms a layer waiting for the GIL between two NumPy calls can wait that long (LeNet:
    51.5 -> 53.4 iter/s, 7 interleaved pairs of 300-iteration runs, the faster in 6)."""
    before = sys.getswitchinterval()
    sys.setswitchinterval(SWITCH_SECONDS)
    try:
        yield
    finally:
        sys.setswitchinterval(before)
