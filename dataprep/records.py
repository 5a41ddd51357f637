"""Record sources: indexed collections of ``(key, image, labels)`` that workers can split."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from .images import Channels, resize
from .listfile import Label, ListFile


@dataclass
class Record:
    """One sample: its key (the path as a list writes it), H x W x C uint8 BGR image, labels.

    ``data`` holds the original file bytes when the pixels are exactly that file's decode,
    so stores asked for encoded records can pass them through without re-encoding.
    ``origin`` says where it came from in error messages (``list:line: path``).
    """

    key: str
    image: np.ndarray
    labels: tuple[Label, ...]
    data: bytes | None = None
    origin: str = ""
    line: int | None = None
    orientation: int = 1  # the file's EXIF orientation, applied to ``image``


class RecordSource(Protocol):
    """What writers consume: a length and random access by index (picklable, for workers)."""

    def __len__(self) -> int: ...

    def record(self, index: int) -> Record: ...


@dataclass(frozen=True)
class Subset:
    """The records of ``source`` at ``indices``, in that order."""

    source: RecordSource
    indices: Sequence[int]

    def __len__(self) -> int:
        return len(self.indices)

    def record(self, index: int) -> Record:
        return self.source.record(int(self.indices[index]))


@dataclass(frozen=True)
class Chain:
    """The records of several sources one after another: the splits of a dataset written by
    one worker pool into stores committed together (``convert.write_stores``)."""

    sources: tuple[RecordSource, ...]

    def __len__(self) -> int:
        return sum(len(source) for source in self.sources)

    def record(self, index: int) -> Record:
        for source in self.sources:
            if index < len(source):
                return source.record(index)
            index -= len(source)
        raise IndexError(index)


@dataclass(frozen=True)
class ImageListSource:
    """The images a list file names, decoded the way Caffe's convert_imageset does.

    ``channels`` says how many channels images get (resolved from the first image when
    built with ``image_list_source``), ``size`` an exact resize with ``interpolation``.
    A missing or undecodable image raises ImageError naming the list line and the path.
    """

    listfile: ListFile
    channels: Channels = Channels()
    size: tuple[int, int] | None = None
    interpolation: str = "linear"

    def __len__(self) -> int:
        return len(self.listfile)

    def record(self, index: int) -> Record:
        entry = self.listfile.entries[index]
        where = f"{self.listfile.name}:{entry.line}: {entry.path}"
        data, image, orientation = self.channels.load(self.listfile.resolve(entry), where, entry.line)
        if self.size is not None and image.shape[:2] != self.size:
            image = resize(image, self.size, self.interpolation)
            data = None
        return Record(entry.path, image, entry.labels, data, where, entry.line, orientation)

    def meta(self) -> dict:
        """The list, its label layout and the decoding, as a store's manifest records them."""
        listfile = self.listfile
        return {
            "source": listfile.name,
            "labels": {"count": listfile.label_count, "kind": "int" if listfile.integer_labels else "float"},
            "preprocessing": {
                **self.channels.manifest(),
                "resize": list(self.size) if self.size else None,
                "interpolation": self.interpolation if self.size else None,
            },
        }


def list_channels(listfile: ListFile, channels: Channels) -> Channels:
    """``channels`` resolved against a list's images (the first that decodes, in ``auto``)."""
    return channels.resolve(
        (listfile.resolve(e), f"{listfile.name}:{e.line}: {e.path}") for e in listfile.entries
    )


def image_list_source(
    listfile: ListFile,
    channels: Channels = Channels(),
    size: tuple[int, int] | None = None,
    interpolation: str = "linear",
) -> ImageListSource:
    """The images of ``listfile`` as records, with the channel count resolved."""
    return ImageListSource(listfile, list_channels(listfile, channels), size, interpolation)
