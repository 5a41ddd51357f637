"""The means users give: values (``128``, ``104,117,123``) and mean files (Caffe's
``.binaryproto``, ``.npy``). Here, beside Caffe's messages, so that the HDF5 writer (which
subtracts a mean) and ``dataprep.mean`` (which reads every store) both import it and
neither imports the other."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import DataprepError, UsageError


def parse_mean_values(text: str) -> np.ndarray:
    """``"128"`` or ``"104,117,123"`` (one value per channel, in the stored BGR order)."""
    try:
        values = [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise UsageError(f"--mean {text!r}: give a number or comma-separated numbers per channel") from None
    if not values:
        raise UsageError("--mean is empty")
    return np.asarray(values, np.float32)


def recorded_mean(given: str) -> np.ndarray:
    """The mean a store's manifest records (``preprocessing.mean``): ``--mean``'s values, or
    the path of ``--mean-file``."""
    return read_mean_file(given) if Path(given).is_file() else parse_mean_values(given)


def read_mean_file(path: str | Path) -> np.ndarray:
    """The C x H x W mean of a BlobProto (``.binaryproto``) or NumPy (``.npy``) file."""
    path = Path(path)
    try:
        if path.suffix == ".npy":
            mean = np.load(path, allow_pickle=False).astype(np.float32)
        else:  # Caffe's messages only here: importing protobuf took 2% of `noise --to hdf5`
            from .caffe_pb import blob_array

            mean = blob_array(path.read_bytes())
    except (OSError, ValueError, Exception) as exc:  # protobuf raises its own DecodeError
        raise DataprepError(f"{path}: not a readable mean file ({exc})") from None
    if mean.ndim == 4 and mean.shape[0] == 1:
        mean = mean[0]
    if mean.ndim != 3:
        raise DataprepError(f"{path}: mean must be C x H x W (or 1 x C x H x W), got {mean.shape}")
    return mean


def resolve_mean(values: str | None, path: str | None) -> np.ndarray | None:
    """The mean to subtract from ``--mean`` or ``--mean-file`` (exclusive, as in Caffe)."""
    if values is not None and path is not None:
        raise UsageError("--mean and --mean-file are exclusive")
    if values is not None:
        return parse_mean_values(values)
    return read_mean_file(path) if path is not None else None
