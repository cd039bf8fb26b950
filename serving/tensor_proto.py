"""gRPC tensors: ``TensorProto`` to and from numpy, as TF Serving fills them.

Requests: ``tensor_content`` is read zero-copy (strings from TensorFlow's
string-list encoding), the typed ``*_val`` fields through TensorFlow's own
``make_ndarray`` (a field shorter than the shape repeats its last value, as
``Tensor::FromProto`` does).

Responses: by default each output fills the typed field TF Serving's
``Tensor::AsProtoField`` fills (tensorflow/core/framework/tensor.cc, called
from TF Serving's predict_util.cc): ``float_val``, ``double_val``,
``int_val`` for int32/int16/int8/uint8/uint16, ``int64_val``, ``bool_val``,
``string_val``, ``half_val`` (the float16 bits as an int32),
``scomplex_val``/``dcomplex_val`` (real, imaginary interleaved),
``uint32_val`` and ``uint64_val``, every element written (no trailing
repeats folded away, unlike ``tf.make_tensor_proto``, which writes
``tensor_content``). With ``--enable_serialization_as_tensor_content=true``
outputs go as ``tensor_content`` (``AsProtoTensorContent``): raw
little-endian bytes, and strings in TensorFlow's string-list encoding
(every length as a varint, then the bytes).

Floating-point fields are filled by parsing their packed wire bytes
(``MergeFromString``), several times faster than ``extend``: 3.8 us against
22 us for 1,000 floats, 0.9 ms against 31 ms for a million (protobuf's upb
backend; the same serialised bytes).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from serving.status import Code, RequestError
from serving.tensors import DType, shape_text

__all__ = [
    "decode_string_list",
    "encode_string_list",
    "fill_tensor_proto",
    "ndarray_to_tensor_proto",
    "tensor_proto_to_ndarray",
]

Array = npt.NDArray[Any]
_MAX_VALUE_ELEMENTS = 1 << 28  # repeated *_val fields broadcast: refuse absurd shapes before allocating
_FROM_NUMPY = {dt.numpy: dt for dt in DType if dt not in (DType.DT_INVALID, DType.DT_STRING)}
# The typed field AsProtoField fills for each dtype, and the numpy view whose
# elements it holds (None: the values as they are, for a varint field).
_FIELDS: dict[DType, tuple[str, str | None]] = {
    DType.DT_FLOAT: ("float_val", "<f4"),
    DType.DT_DOUBLE: ("double_val", "<f8"),
    DType.DT_COMPLEX64: ("scomplex_val", "<f4"),
    DType.DT_COMPLEX128: ("dcomplex_val", "<f8"),
    DType.DT_INT32: ("int_val", None),
    DType.DT_INT16: ("int_val", None),
    DType.DT_INT8: ("int_val", None),
    DType.DT_UINT8: ("int_val", None),
    DType.DT_UINT16: ("int_val", None),
    DType.DT_HALF: ("half_val", None),
    DType.DT_INT64: ("int64_val", None),
    DType.DT_BOOL: ("bool_val", None),
    DType.DT_UINT32: ("uint32_val", None),
    DType.DT_UINT64: ("uint64_val", None),
}


def tensor_proto_to_ndarray(proto: Any) -> Array:
    """A ``TensorProto`` as an ndarray; zero-copy from ``tensor_content`` when present."""
    try:
        dtype = DType(proto.dtype)
    except ValueError:
        raise _invalid(f"unsupported tensor dtype number {proto.dtype}") from None
    if proto.tensor_shape.unknown_rank:
        raise _invalid("tensor shape has unknown rank: set tensor_shape.dim")
    shape = tuple(int(d.size) for d in proto.tensor_shape.dim)
    if proto.tensor_content:
        count = int(np.prod(shape, dtype=np.int64))
        if dtype is DType.DT_STRING:
            return decode_string_list(proto.tensor_content, count).reshape(shape)
        np_dtype = dtype.numpy
        expected = count * np_dtype.itemsize
        if len(proto.tensor_content) != expected:
            raise _invalid(
                f"tensor_content has {len(proto.tensor_content)} bytes but shape {shape_text(shape)} of "
                f"{dtype.short} needs {expected}"
            )
        return np.frombuffer(proto.tensor_content, dtype=np_dtype.newbyteorder("<")).reshape(shape)
    if int(np.prod(shape, dtype=np.float64)) > _MAX_VALUE_ELEMENTS:
        raise _invalid(f"tensor of shape {shape_text(shape)} is too large to send as repeated values; use tensor_content")
    from tensorflow import make_ndarray  # lazy: only the *_val path needs TensorFlow

    try:
        array: Array = make_ndarray(proto)
    except (ValueError, TypeError) as error:
        raise _invalid(f"malformed TensorProto: {error}") from None
    return array


def ndarray_to_tensor_proto(array: Array, *, tensor_content: bool = False) -> Any:
    """An output ndarray as TF Serving's ``TensorProto``: typed fields, or ``tensor_content``."""
    from tensorflow.core.framework import tensor_pb2

    return fill_tensor_proto(tensor_pb2.TensorProto(), array, tensor_content=tensor_content)


def fill_tensor_proto(proto: Any, array: Array, *, tensor_content: bool = False) -> Any:
    """Fill the empty ``TensorProto`` ``proto`` (a response's own, saving a copy) from ``array``; returns it."""
    for size in array.shape:
        proto.tensor_shape.dim.add().size = int(size)
    if array.dtype.kind in "OSU":
        proto.dtype = DType.DT_STRING
        values = [v if isinstance(v, bytes) else str(v).encode() for v in array.reshape(-1).tolist()]
        if tensor_content:
            proto.tensor_content = encode_string_list(values)
        else:
            proto.string_val.extend(values)
        return proto
    dtype = _FROM_NUMPY.get(array.dtype)
    if dtype is None:
        raise RequestError(Code.INTERNAL, f"cannot encode output of numpy type {array.dtype}")
    proto.dtype = dtype
    if tensor_content:
        proto.tensor_content = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
        return proto
    if array.size:
        name, view = _FIELDS[dtype]
        if view is not None:  # floats: parse the packed field's wire bytes (see the module docstring)
            raw = np.ascontiguousarray(array).reshape(-1).view(array.real.dtype).astype(view, copy=False).tobytes()
            number = proto.DESCRIPTOR.fields_by_name[name].number
            proto.MergeFromString(_varint(number << 3 | 2) + _varint(len(raw)) + raw)
        elif dtype is DType.DT_HALF:
            getattr(proto, name).extend(array.reshape(-1).view(np.uint16).tolist())
        else:
            getattr(proto, name).extend(array.reshape(-1).tolist())
    return proto


def encode_string_list(values: list[bytes]) -> bytes:
    """TensorFlow's ``EncodeStringList``: every length as a varint32, then every string's bytes."""
    return b"".join(_varint(len(v)) for v in values) + b"".join(values)


def decode_string_list(data: bytes, count: int) -> Array:
    """``count`` strings from TensorFlow's string-list encoding, as an object array of bytes."""
    lengths = []
    position = 0
    for _ in range(count):
        length, shift = 0, 0
        while True:
            if position >= len(data) or shift > 28:
                raise _invalid(f"tensor_content does not hold {count} strings in TensorFlow's string-list encoding")
            byte = data[position]
            position += 1
            length |= (byte & 0x7F) << shift
            shift += 7
            if byte < 0x80:
                break
        lengths.append(length)
    if position + sum(lengths) != len(data):
        raise _invalid(f"tensor_content does not hold {count} strings in TensorFlow's string-list encoding")
    array = np.empty(count, dtype=object)
    for index, length in enumerate(lengths):
        array[index] = data[position : position + length]
        position += length
    return array


def _varint(value: int) -> bytes:
    out = bytearray()
    while value >= 0x80:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)
