"""What an exported ``.onnx`` file notes about itself (its ``metadata_props``), read without
the ONNX package or the exporter: ``predict MODEL.onnx`` reads the preparation from there
while onnxruntime opens the file, and importing the exporter (with the layers it shapes
pooling by) took 27 ms of that command's start-up."""

from __future__ import annotations

from pathlib import Path


def read_metadata(path: str | Path) -> dict[str, str]:
    """An ONNX file's ``metadata_props`` (ModelProto field 14: key and value strings),
    found by walking the model's top-level protobuf fields and skipping the others by their
    length, so the weights (the graph, hundreds of MB) are neither parsed nor copied; an
    onnxruntime session can open the file meanwhile. ValueError for a file that is not one."""
    import mmap

    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        found: dict[str, str] = {}
        for field, value in _fields(data, 0, len(data)):
            if field == 14 and isinstance(value, tuple):
                entry = {k: bytes(data[a:b]).decode() for k, (a, b) in _fields(data, *value) if k in (1, 2)}
                found[entry.get(1, "")] = entry.get(2, "")
        return found


def _varint(data, at: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if at >= len(data) or shift > 63:
            raise ValueError("a truncated varint")
        byte = data[at]
        value |= (byte & 0x7F) << shift
        at, shift = at + 1, shift + 7
        if byte < 0x80:
            return value, at


def _fields(data, start: int, stop: int):
    """(field number, value) of the protobuf message in ``data[start:stop]``: an int for a
    varint, (begin, end) for a length-delimited field; fixed-width fields skipped."""
    at = start
    while at < stop:
        key, at = _varint(data, at)
        field, wire = key >> 3, key & 7
        if wire == 0:
            value, at = _varint(data, at)
            yield field, value
        elif wire == 2:
            length, at = _varint(data, at)
            if at + length > stop:
                raise ValueError("a field runs past the end")
            yield field, (at, at + length)
            at += length
        elif wire in (1, 5):
            at += 8 if wire == 1 else 4
        else:
            raise ValueError(f"wire type {wire}")
