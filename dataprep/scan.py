"""Image lists from folders: an ImageNet-style tree (one subfolder per class) or a flat folder."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from .errors import DataprepError, UsageError
from .listfile import class_lines, format_line, write_list
from .splits import SPLIT_NAMES, stratified_split
from .staging import Staging

DEFAULT_EXTENSIONS = ("jpg", "jpeg", "png", "bmp", "ppm", "pgm", "tif", "tiff", "webp")


def images_under(folder: Path, extensions: set[str]) -> list[Path]:
    """Image files below ``folder`` (hidden ones excluded), sorted."""
    found = [
        Path(dirpath) / name
        for dirpath, dirnames, names in os.walk(folder, followlinks=True)
        for name in names
        if name.rsplit(".", 1)[-1].lower() in extensions and not name.startswith(".")
    ]
    return sorted(found)


def scan(
    root: Path, extensions: Sequence[str] = DEFAULT_EXTENSIONS, flat: bool = False
) -> tuple[list[str], list[tuple[Path, int]]]:
    """Class names (sorted subfolder names) and ``(image path, label)`` pairs in sorted order.

    With ``flat`` every image under ``root`` gets label 0 and there are no class names.
    """
    root = Path(root)
    if not root.is_dir():
        raise UsageError(f"{root}: not a folder")
    exts = {e.lower().lstrip(".") for e in extensions}
    if flat:
        classes, items = [], [(p, 0) for p in images_under(root, exts)]
    else:
        classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
        if not classes:
            raise DataprepError(f"{root}: no class subfolders (use --flat for a folder of images)")
        items = [(p, k) for k, c in enumerate(classes) for p in images_under(root / c, exts)]
    if not items:
        raise DataprepError(f"{root}: no images with extensions {', '.join(sorted(exts))}")
    return classes, items


@dataclass
class ImageLists:
    """What ``write_image_lists`` made (``text``: the list itself, when written to stdout)."""

    lists: dict[str, Path] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    classes: list[str] = field(default_factory=list)
    text: str | None = None


def write_image_lists(
    root: Path,
    out: Path | str,
    split: Sequence[float] | None = None,
    seed: int = 0,
    extensions: Sequence[str] = DEFAULT_EXTENSIONS,
    flat: bool = False,
    overwrite: bool = False,
    classes_out: Path | None = None,
) -> ImageLists:
    """Scan ``root`` and write ``out`` (or, with ``split``, train/val/test lists beside it).

    Paths are written relative to the list's folder. ``out`` "-" returns the list as
    ``text`` instead, with paths relative to the current folder. With ``split``, ``out``
    itself holds the whole list (unless it is named train, val or test). Class names
    (``index name`` lines) go to ``classes_out``, by default ``classes.txt`` beside the
    lists (with ``out`` "-", only when ``classes_out`` is given).
    """
    classes, items = scan(root, extensions, flat)
    to_stdout = str(out) == "-"
    if to_stdout and split is not None:
        raise UsageError("--split writes train/val/test files: give --out a file, not -")
    folder = Path.cwd() if to_stdout else Path(out).parent
    everything = {"list": list(range(len(items)))}
    if split is None:
        parts = everything
        dests = {} if to_stdout else {"list": Path(out)}
    else:
        if any(isinstance(r, int) for r in split) and not all(isinstance(r, float) for r in split):
            raise UsageError("--split for `list` takes ratios such as 0.8,0.1,0.1")
        indices = stratified_split([k for _, k in items], split, seed)
        parts = {name: idx for name, idx in zip(SPLIT_NAMES, indices) if idx or name == "train"}
        dests = {name: folder / f"{name}.txt" for name in parts}
        if Path(out).stem not in SPLIT_NAMES:  # -o lists/all.txt: the whole list, before splitting
            parts, dests = {**everything, **parts}, {"list": Path(out), **dests}
    result = ImageLists(classes=classes)
    with Staging(overwrite) as staging:
        tmps = {name: staging.path(dest) for name, dest in dests.items()}
        if classes and (classes_out or not to_stdout):  # -o - writes no file unless asked
            classes_path = Path(classes_out) if classes_out else folder / "classes.txt"
            write_list(staging.path(classes_path), class_lines(classes))
            result.lists["classes"] = classes_path
        for name, idx in parts.items():
            lines = [
                format_line(Path(os.path.relpath(items[i][0], folder)).as_posix(), (items[i][1],))
                for i in idx
            ]
            if to_stdout:
                result.text = "".join(line + "\n" for line in lines)
            else:
                write_list(tmps[name], lines)
                result.lists[name] = dests[name]
            result.counts[name] = len(idx)
    return result
