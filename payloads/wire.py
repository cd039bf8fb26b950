"""TensorFlow Serving's Predict messages on the protobuf wire, without TensorFlow.

``tensorflow_serving.apis.predict_pb2`` imports ``tensorflow`` (seconds of
start-up and hundreds of MB per Locust worker) only to reach ``TensorProto``.
A load-test client needs two things, both small and stable parts of the
protocol:

* serialise a ``PredictRequest`` once (``encode_predict_request``), so each
  gRPC call sends prepared bytes with no per-request serialisation;
* pull one float output out of a serialised ``PredictResponse``
  (``decode_predict_output``) without building message objects.

Field numbers (tensorflow_serving/apis/predict.proto, model.proto,
tensorflow/core/framework/tensor.proto, tensor_shape.proto)::

    PredictRequest  { ModelSpec model_spec = 1; map<string, TensorProto> inputs = 2; }
    PredictResponse { map<string, TensorProto> outputs = 1; ModelSpec model_spec = 2; }
    GetModelStatusRequest { ModelSpec model_spec = 1; }
    ModelSpec       { string name = 1; Int64Value version = 2; string signature_name = 3; }
    TensorProto     { DataType dtype = 1; TensorShapeProto tensor_shape = 2;
                      bytes tensor_content = 4; repeated float float_val = 5 [packed];
                      repeated bytes string_val = 8; }
    TensorShapeProto { repeated Dim dim = 2; }   Dim { int64 size = 1; }

The request bytes are exactly what ``SerializeToString(deterministic=True)``
of the real ``predict_pb2.PredictRequest`` gives for the same message; the
tests parse them back with the real protos and compare.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = [
    "DT_FLOAT",
    "DT_STRING",
    "Tensor",
    "WireError",
    "decode_predict_output",
    "encode_model_status_request",
    "encode_predict_request",
    "response_model_version",
]

DT_FLOAT = 1
DT_STRING = 7

_VARINT, _I64, _LEN, _I32 = 0, 1, 2, 5


class WireError(ValueError):
    """Bytes that are not the message they should be."""


@dataclass(frozen=True)
class Tensor:
    """One input tensor: float32 values (sent as ``tensor_content``) or strings (``string_val``)."""

    dtype: int
    shape: tuple[int, ...]
    content: bytes = b""
    strings: tuple[bytes, ...] = ()

    @classmethod
    def floats(cls, array: npt.ArrayLike) -> Tensor:
        values = np.ascontiguousarray(array, dtype="<f4")
        return cls(DT_FLOAT, tuple(int(n) for n in values.shape), content=values.tobytes())

    @classmethod
    def string_list(cls, values: Sequence[bytes]) -> Tensor:
        return cls(DT_STRING, (len(values),), strings=tuple(values))


# ---------------------------------------------------------------- encoding


def _varint(value: int) -> bytes:
    if value < 0:
        value += 1 << 64  # int64 two's complement, as protobuf does
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def _key(field: int, wire_type: int) -> bytes:
    return _varint((field << 3) | wire_type)


def _len_field(field: int, payload: bytes) -> bytes:
    return _key(field, _LEN) + _varint(len(payload)) + payload


def _tensor(tensor: Tensor) -> bytes:
    dims = b"".join(
        _len_field(2, (_key(1, _VARINT) + _varint(size)) if size else b"") for size in tensor.shape
    )
    out = _key(1, _VARINT) + _varint(tensor.dtype) + _len_field(2, dims)
    if tensor.content:
        out += _len_field(4, tensor.content)
    for value in tensor.strings:
        out += _len_field(8, value)
    return out


def encode_predict_request(
    model_name: str,
    inputs: dict[str, Tensor],
    *,
    signature_name: str = "",
    version: int | None = None,
) -> bytes:
    """A serialised ``tensorflow.serving.PredictRequest``."""
    spec = _len_field(1, model_name.encode())
    if version is not None:
        spec += _len_field(2, (_key(1, _VARINT) + _varint(version)) if version else b"")
    if signature_name:
        spec += _len_field(3, signature_name.encode())
    out = _len_field(1, spec)
    for alias, tensor in inputs.items():
        entry = _len_field(1, alias.encode()) + _len_field(2, _tensor(tensor))
        out += _len_field(2, entry)
    return out


def encode_model_status_request(model_name: str) -> bytes:
    """A serialised ``tensorflow.serving.GetModelStatusRequest`` for every version of ``model_name``."""
    return _len_field(1, _len_field(1, model_name.encode()))


# ---------------------------------------------------------------- decoding


def _read_varint(data: bytes | memoryview, pos: int) -> tuple[int, int]:
    byte = data[pos] if pos < len(data) else -1
    if 0 <= byte < 0x80:  # the common one-byte case
        return byte, pos + 1
    result = shift = 0
    while True:
        if pos >= len(data) or shift > 63:
            raise WireError("truncated or overlong varint")
        byte = data[pos]
        pos += 1
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            return result, pos
        shift += 7


def _fields(data: memoryview) -> Iterator[tuple[int, int, int | memoryview]]:
    """``(field, wire type, value)`` of each top-level field; LEN values as views."""
    pos, end = 0, len(data)
    while pos < end:
        key, pos = _read_varint(data, pos)
        field, wire_type = key >> 3, key & 7
        value: int | memoryview
        if wire_type == _LEN:
            length, pos = _read_varint(data, pos)
            if pos + length > end:
                raise WireError(f"field {field} runs past the end of the message")
            value, pos = data[pos : pos + length], pos + length
        elif wire_type == _VARINT:
            value, pos = _read_varint(data, pos)
        elif wire_type in (_I64, _I32):
            size = 8 if wire_type == _I64 else 4
            if pos + size > end:
                raise WireError(f"field {field} runs past the end of the message")
            value, pos = data[pos : pos + size], pos + size
        else:
            raise WireError(f"unsupported wire type {wire_type} for field {field}")
        yield field, wire_type, value


def _last(data: memoryview, wanted: int) -> int | memoryview | None:
    """The last value of field ``wanted`` (protobuf: the last one wins)."""
    found: int | memoryview | None = None
    for field, _, value in _fields(data):
        if field == wanted:
            found = value
    return found


def response_model_version(message: bytes | memoryview) -> int | None:
    """``PredictResponse.model_spec.version.value`` (fields 2 → 2 → 1), or None when absent or unreadable."""
    try:
        spec = _last(memoryview(message), 2)
        version = _last(spec, 2) if isinstance(spec, memoryview) else None
        if not isinstance(version, memoryview):
            return None
        value = _last(version, 1)
        return value if isinstance(value, int) else 0
    except WireError:
        return None


def decode_predict_output(
    response: bytes | memoryview, output: str = "probabilities"
) -> npt.NDArray[np.float32]:
    """The float32 output tensor ``output`` of a serialised ``PredictResponse``, flattened.

    Reads ``tensor_content`` (zero copy) or packed ``float_val``. Raises
    :class:`WireError` when the output is missing or not float32.
    """
    data = memoryview(response)
    wanted = output.encode()
    seen = []
    for field, wire_type, value in _fields(data):
        if field != 1 or wire_type != _LEN or isinstance(value, int):
            continue
        key = b""
        tensor: memoryview | None = None
        for sub, sub_type, sub_value in _fields(value):
            if sub_type != _LEN or isinstance(sub_value, int):
                continue
            if sub == 1:
                key = bytes(sub_value)
            elif sub == 2:
                tensor = sub_value
        if key == wanted and tensor is not None:
            return _float_tensor(tensor, output)
        seen.append(key.decode(errors="replace"))
    raise WireError(
        f"the response has no output {output!r} (outputs: {', '.join(sorted(seen)) or 'none'})"
    )


def _float_tensor(tensor: memoryview, name: str) -> npt.NDArray[np.float32]:
    dtype = 0
    content: memoryview | None = None
    packed: list[memoryview] = []
    singles: list[memoryview] = []
    for field, wire_type, value in _fields(tensor):
        if field == 1 and isinstance(value, int):
            dtype = value
        elif field == 4 and not isinstance(value, int):
            content = value
        elif field == 5 and wire_type == _LEN and not isinstance(value, int):
            packed.append(value)
        elif field == 5 and wire_type == _I32 and not isinstance(value, int):
            singles.append(value)
    if dtype != DT_FLOAT:
        raise WireError(f"output {name!r} has dtype {dtype}, not DT_FLOAT ({DT_FLOAT})")
    if content is not None and len(content):
        if len(content) % 4:
            raise WireError(
                f"output {name!r} has {len(content)} bytes of tensor_content, not float32s"
            )
        return np.frombuffer(content, dtype="<f4")
    raw = b"".join(bytes(v) for v in (*packed, *singles))
    if len(raw) % 4:
        raise WireError(f"output {name!r} has a malformed float_val")
    return np.frombuffer(raw, dtype="<f4")
