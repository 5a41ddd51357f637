"""A recipe's sections as typed dataclasses: ``build`` checks a mapping against one (unknown,
missing and mistyped keys, numbers out of range, each error naming its key). Apart from
the recipe, with Caffe's ``transform_param`` (``Transform``), so reading a prototxt's
preparation imports neither the recipe's sections nor the layers.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import UsageError


@dataclass(frozen=True)
class Transform:
    """Caffe's ``transform_param``, applied in Caffe's order."""

    crop_size: int = 0
    mirror: bool = False
    mean_file: str | None = None
    mean_value: tuple[float, ...] = ()
    scale: float = 1.0

    def mean(self) -> np.ndarray | None:
        """The mean it subtracts: a C x H x W image (mean_file) or values per channel."""
        if self.mean_file and self.mean_value:
            raise UsageError("recipe data.transform: mean_file and mean_value are exclusive")
        if self.mean_file:
            from ..stores.means import read_mean_file

            return read_mean_file(self.mean_file)
        return np.asarray(self.mean_value, np.float32) if self.mean_value else None


def convert(value: Any, kind: Any, path: str) -> Any:
    """``value`` checked against the annotation ``kind``; dataclasses built recursively."""
    origin = typing.get_origin(kind)
    args = typing.get_args(kind)
    if origin in (typing.Union, getattr(types, "UnionType", None)):
        if value is None and type(None) in args:
            return None
        (kind,) = [a for a in args if a is not type(None)]
        return convert(value, kind, path)
    if dataclasses.is_dataclass(kind):
        if not isinstance(value, dict):
            raise UsageError(f"recipe {path}: expected a mapping, got {value!r}")
        return build(kind, value, path)
    if origin is tuple:
        items = value if isinstance(value, (list, tuple)) else [value]
        return tuple(convert(v, args[0], f"{path}[{i}]") for i, v in enumerate(items))
    if kind is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if kind is float and isinstance(value, str):  # YAML 1.1 reads 1e-3 (no dot) as a string
        try:
            return float(value)
        except ValueError:
            pass
    if kind is str and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # a size given as one number: crop: 88
    if kind in (int, str, bool) and isinstance(value, kind) and not (kind is int and isinstance(value, bool)):
        return value
    raise UsageError(f"recipe {path}: expected {getattr(kind, '__name__', kind)}, got {value!r}")


def build(cls: type, mapping: dict, path: str) -> Any:
    """A dataclass from a mapping: unknown keys, missing keys and wrong types are errors
    naming ``path.key``."""
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.name != "raw"}
    unknown = sorted(set(mapping) - set(fields))
    if unknown:
        raise UsageError(f"recipe {path}.{unknown[0]}: unknown key; valid: {', '.join(sorted(fields))}")
    values = {}
    for name, f in fields.items():
        if name in mapping:
            values[name] = convert(mapping[name], hints[name], f"{path}.{name}")
            check_range(values[name], AT_LEAST.get(f"{cls.__name__}.{name}", 0), f"{path}.{name}")
        elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise UsageError(f"recipe {path}.{name}: missing")
    return cls(**values)


# every number of a recipe is finite and at least 0; these at least 1 (sizes and counts)
AT_LEAST = {
    "Data.batch_size": 1,
    "Data.val_batch_size": 1,
    "Run.average_loss": 1,
    "Run.test_iter": 1,
    "TestNet.batch_size": 1,
    "TestNet.test_iter": 1,
    "NoiseSpec.n": 1,
}


def check_range(value: Any, least: float, path: str) -> None:
    """UsageError naming ``path`` for a number below ``least``, NaN or infinite."""
    for item in value if isinstance(value, tuple) else (value,):
        if isinstance(item, bool) or not isinstance(item, (int, float)):
            continue
        if item != item or item in (float("inf"), float("-inf")):
            raise UsageError(f"recipe {path}: {item!r} is not a finite number")
        if item < least:
            raise UsageError(
                f"recipe {path}: {item!r} is below {least:g}" + (" (a size or count)" if least else "")
            )
