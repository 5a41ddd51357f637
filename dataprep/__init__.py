"""dataprep: images to Caffe-compatible training stores, from the shell.

The reading API is here, loaded on first use (``dataprep --help`` imports no NumPy, h5py
or LMDB)::

    from dataprep import open_store
    with open_store("train_lmdb") as reader:
        image, labels = reader[0].array, reader[0].labels
"""

from __future__ import annotations

import importlib
from typing import Any

from .blas import choose_kernels

__version__ = "0.1.0"

# OpenBLAS's kernels for this CPU, before NumPy loads them: every process that imports
# dataprep first (the commands, their workers, a script) computes with the same ones
choose_kernels()

_LAZY = {
    "open_store": "dataprep.stores",
    "StoreReader": "dataprep.stores.base",
    "StoredRecord": "dataprep.stores.base",
    "DatumReader": "dataprep.stores.datum",
    "Hdf5Reader": "dataprep.stores.hdf5",
    "WdsReader": "dataprep.stores.wds",
}
__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'dataprep' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)


def __dir__() -> list[str]:
    return sorted(__all__)
