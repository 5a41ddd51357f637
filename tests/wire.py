"""A minimal protobuf wire-format decoder, independent of dataprep's messages.

Tests decode stored bytes with it to check field numbers, wire types and order against
caffe.proto without going through the writer's own code path.
"""

from __future__ import annotations

import struct

VARINT, FIXED64, LENGTH, FIXED32 = 0, 1, 2, 5


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    result = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return result, pos


def fields(buf: bytes) -> list[tuple[int, int, object]]:
    """``(field number, wire type, value)`` in wire order."""
    out, pos = [], 0
    while pos < len(buf):
        tag, pos = _varint(buf, pos)
        number, wire = tag >> 3, tag & 7
        if wire == VARINT:
            value, pos = _varint(buf, pos)
        elif wire == LENGTH:
            size, pos = _varint(buf, pos)
            value, pos = buf[pos : pos + size], pos + size
        elif wire == FIXED32:
            value, pos = struct.unpack("<f", buf[pos : pos + 4])[0], pos + 4
        elif wire == FIXED64:
            value, pos = struct.unpack("<d", buf[pos : pos + 8])[0], pos + 8
        else:
            raise ValueError(f"wire type {wire}")
        out.append((number, wire, value))
    return out


def packed_floats(buf: bytes) -> list[float]:
    return list(struct.unpack(f"<{len(buf) // 4}f", buf))
