"""Caffe's ``Datum`` and ``BlobProto`` messages (proto2, field numbers as in caffe.proto).

The classes are built from a descriptor in a private pool, so they never clash with a
``caffe_pb2`` module the user may also have loaded.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from google.protobuf import descriptor_pb2, descriptor_pool, message_factory

_F = descriptor_pb2.FieldDescriptorProto

# (message, [(name, number, type, label, packed, type_name)])
_SCHEMA = {
    "Datum": [
        ("channels", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("height", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("width", 3, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("data", 4, _F.TYPE_BYTES, _F.LABEL_OPTIONAL, False, None),
        ("label", 5, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("float_data", 6, _F.TYPE_FLOAT, _F.LABEL_REPEATED, False, None),
        ("encoded", 7, _F.TYPE_BOOL, _F.LABEL_OPTIONAL, False, None),
    ],
    "BlobShape": [("dim", 1, _F.TYPE_INT64, _F.LABEL_REPEATED, True, None)],
    "BlobProto": [
        ("num", 1, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("channels", 2, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("height", 3, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("width", 4, _F.TYPE_INT32, _F.LABEL_OPTIONAL, False, None),
        ("data", 5, _F.TYPE_FLOAT, _F.LABEL_REPEATED, True, None),
        ("diff", 6, _F.TYPE_FLOAT, _F.LABEL_REPEATED, True, None),
        ("shape", 7, _F.TYPE_MESSAGE, _F.LABEL_OPTIONAL, False, ".caffe.BlobShape"),
        ("double_data", 8, _F.TYPE_DOUBLE, _F.LABEL_REPEATED, True, None),
        ("double_diff", 9, _F.TYPE_DOUBLE, _F.LABEL_REPEATED, True, None),
    ],
}


def _build_messages() -> dict[str, type]:
    proto = descriptor_pb2.FileDescriptorProto(
        name="dataprep/caffe_subset.proto", package="caffe", syntax="proto2"
    )
    for message_name, fields in _SCHEMA.items():
        message = proto.message_type.add(name=message_name)
        for name, number, ftype, label, packed, type_name in fields:
            field = message.field.add(name=name, number=number, type=ftype, label=label)
            if type_name:
                field.type_name = type_name
            if packed:
                field.options.packed = True
    pool = descriptor_pool.DescriptorPool()
    pool.Add(proto)
    return {
        name: message_factory.GetMessageClass(pool.FindMessageTypeByName(f"caffe.{name}")) for name in _SCHEMA
    }


_MESSAGES = _build_messages()
Datum = _MESSAGES["Datum"]
BlobProto = _MESSAGES["BlobProto"]


def datum_raw(image: np.ndarray, label: int = 0) -> bytes:
    """A raw Datum of an H x W x C uint8 image: pixels in C x H x W order, as CVMatToDatum."""
    height, width, channels = image.shape
    datum = Datum(
        channels=channels,
        height=height,
        width=width,
        data=np.ascontiguousarray(image.transpose(2, 0, 1)).tobytes(),
        label=label,
        encoded=False,
    )
    return datum.SerializeToString()


def datum_encoded(data: bytes, label: int = 0) -> bytes:
    """An encoded Datum: the image file's bytes, the label and ``encoded = true`` only."""
    return Datum(data=data, label=label, encoded=True).SerializeToString()


def datum_floats(values: Sequence[float], label: int = 0) -> bytes:
    """A label-store Datum: ``float_data`` with channels = len(values), height = width = 1."""
    return Datum(
        channels=len(values),
        height=1,
        width=1,
        label=label,
        float_data=[float(v) for v in values],
        encoded=False,
    ).SerializeToString()


def parse_datum(value: bytes):
    """The Datum message of serialized bytes."""
    datum = Datum()
    datum.ParseFromString(value)
    return datum


def blob_bytes(array: np.ndarray) -> bytes:
    """A BlobProto of a C x H x W (or 1 x C x H x W) array, as compute_image_mean writes it."""
    array = np.asarray(array, dtype=np.float32)
    if array.ndim == 3:
        array = array[None]
    num, channels, height, width = array.shape
    blob = BlobProto(num=num, channels=channels, height=height, width=width)
    blob.data.extend(array.ravel().tolist())
    return blob.SerializeToString()


def blob_array(value: bytes) -> np.ndarray:
    """The N x C x H x W float32 array of a serialized BlobProto (legacy dims or ``shape``)."""
    blob = BlobProto()
    blob.ParseFromString(value)
    dims = (
        list(blob.shape.dim) if blob.HasField("shape") else [blob.num, blob.channels, blob.height, blob.width]
    )
    values = blob.data if len(blob.data) else blob.double_data
    return np.asarray(values, dtype=np.float32).reshape(dims)
