"""Pure conversions between wire formats and numpy, as TF Serving does them.

* REST: a predict body (row format ``instances`` or columnar ``inputs``,
  ``{"b64": ...}`` for bytes) becomes one ndarray per signature input; outputs
  become ``{"predictions": ...}`` or ``{"outputs": ...}``.

The gRPC ``TensorProto`` conversions live in :mod:`serving.tensor_proto`.

Nothing here touches a model, and nothing here refuses a tensor for its
shape: as in TF Serving, the model decides (:meth:`serving.servable.Servable.run`).
Every malformed request raises :class:`serving.status.RequestError` with
INVALID_ARGUMENT and a message that names the offending part and says what
was expected.
"""

from __future__ import annotations

import base64
import binascii
import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

from serving.jsonarray import MalformedArray, NumericArray, split_predict_body
from serving.jsondoc import json_type, numbers, parse_json_object, snippet
from serving.status import Code, RequestError

__all__ = [
    "DType",
    "JsonRequest",
    "TensorSpec",
    "decode_json_request",
    "encode_json_response",
    "shape_text",
]

Array = npt.NDArray[Any]
RequestFormat = Literal["row", "columnar"]
_NUMBERS_FOR_STRINGS = (
    '{alias}: expecting strings for a string input, got numbers (send text, or bytes as {{"b64": "<base64>"}})'
)


class DType(enum.IntEnum):
    """TensorFlow ``DataType`` numbers (tensorflow/core/framework/types.proto)."""

    DT_INVALID = 0
    DT_FLOAT = 1
    DT_DOUBLE = 2
    DT_INT32 = 3
    DT_UINT8 = 4
    DT_INT16 = 5
    DT_INT8 = 6
    DT_STRING = 7
    DT_COMPLEX64 = 8
    DT_INT64 = 9
    DT_BOOL = 10
    DT_UINT16 = 17
    DT_COMPLEX128 = 18
    DT_HALF = 19
    DT_UINT32 = 22
    DT_UINT64 = 23

    @property
    def numpy(self) -> np.dtype[Any]:
        """The numpy dtype of this type (object for strings)."""
        try:
            return _NUMPY[self]
        except KeyError:
            raise RequestError(Code.UNIMPLEMENTED, f"tensors of type {self.short} are not supported") from None

    @property
    def short(self) -> str:
        """TensorFlow's DataTypeString: "float", "int64", "string"..."""
        return _SHORT.get(self, self.name.removeprefix("DT_").lower())


_NUMPY: dict[DType, np.dtype[Any]] = {
    DType.DT_FLOAT: np.dtype(np.float32),
    DType.DT_DOUBLE: np.dtype(np.float64),
    DType.DT_INT32: np.dtype(np.int32),
    DType.DT_UINT8: np.dtype(np.uint8),
    DType.DT_INT16: np.dtype(np.int16),
    DType.DT_INT8: np.dtype(np.int8),
    DType.DT_STRING: np.dtype(object),
    DType.DT_COMPLEX64: np.dtype(np.complex64),
    DType.DT_INT64: np.dtype(np.int64),
    DType.DT_BOOL: np.dtype(np.bool_),
    DType.DT_UINT16: np.dtype(np.uint16),
    DType.DT_COMPLEX128: np.dtype(np.complex128),
    DType.DT_HALF: np.dtype(np.float16),
    DType.DT_UINT32: np.dtype(np.uint32),
    DType.DT_UINT64: np.dtype(np.uint64),
}
_SHORT = {DType.DT_FLOAT: "float", DType.DT_HALF: "half"}


@dataclass(frozen=True)
class TensorSpec:
    """One named input or output of a signature: alias, dtype, shape (-1: any size)."""

    alias: str
    dtype: DType
    shape: tuple[int, ...] | None  # None: unknown rank


@dataclass(frozen=True)
class JsonRequest:
    """A decoded REST predict body."""

    signature_name: str
    format: RequestFormat
    inputs: dict[str, Array]


# ----------------------------------------------------------------- REST in


def decode_json_request(
    body: bytes | bytearray, inputs_for: Callable[[str], Mapping[str, TensorSpec]]
) -> JsonRequest:
    """Decode a predict body; ``inputs_for(signature_name)`` gives the input specs.

    ``inputs_for`` raises RequestError for an unknown signature, exactly as
    TF Serving looks the signature up before it reads the tensors. A tensor
    sent as one plain numeric array is checked against its input's type
    before any value is parsed (see :mod:`serving.jsonarray`); its shape is
    the model's business.
    """
    try:
        fast = split_predict_body(body) if body and not body.isspace() else None
    except MalformedArray as error:
        raise _invalid(f"JSON Value: {error}") from None
    doc: Any = fast[0] if fast is not None else parse_json_object(body)
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(
            f"JSON Value: {snippet(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    specs = inputs_for(signature_name)
    if not specs:
        raise _invalid(f"Failed to get input map for signature: {signature_name or 'DEFAULT'}")
    if fast is not None:
        _, key, numeric = fast
        fmt: RequestFormat = "row" if key == "instances" else "columnar"
        if len(specs) > 1:
            raise _invalid(
                f"{key} is a plain {'list' if fmt == 'row' else 'value/list'}, but expecting "
                f"{'list of objects' if fmt == 'row' else 'an object'} as multiple input tensors "
                f"required as per tensorinfo_map: {', '.join(sorted(specs))}"
            )
        spec = next(iter(specs.values()))
        array = _numeric_input(numeric, spec)
        if array is not None:
            return JsonRequest(signature_name, fmt, {spec.alias: array})
        doc = parse_json_object(body)  # integers beyond int64: the general path reads them exactly
    if "instances" in doc and "inputs" in doc:
        raise _invalid("Not formatted correctly: expecting only one of 'inputs' or 'instances' keys to exist")
    if "instances" in doc:
        return JsonRequest(signature_name, "row", _rows(doc["instances"], specs))
    if "inputs" in doc:
        return JsonRequest(signature_name, "columnar", _columns(doc["inputs"], specs))
    raise _invalid(
        "Missing 'inputs' or 'instances' key: send {\"instances\": [...]} (row format) or {\"inputs\": ...} (columnar)"
    )


def _numeric_input(numeric: NumericArray, spec: TensorSpec) -> Array | None:
    """The input ``spec`` from a checked numeric array: type, then values.

    A wrong type is refused before a single value is parsed; ``None`` when an
    integer needs more than int64 (the general path then reads it).
    """
    target = spec.dtype.numpy
    if target.kind == "O":
        raise _invalid(_NUMBERS_FOR_STRINGS.format(alias=spec.alias))
    if target.kind == "b":
        raise _invalid(f"{spec.alias}: expecting true/false values for a {spec.dtype.short} input, got numbers")
    if target.kind in "iu" and numeric.decimals:
        raise _invalid(
            f"{spec.alias}: expecting integers for a {spec.dtype.short} input, got decimals "
            f"(for example {numeric.first_decimal()})"
        )
    try:
        return numeric.values(target)
    except OverflowError as error:
        raise _invalid(f"{spec.alias}: {error} for a {spec.dtype.short} input") from None


def _rows(instances: Any, specs: Mapping[str, TensorSpec]) -> dict[str, Array]:
    if not isinstance(instances, list):
        raise _invalid("Expecting 'instances' to be a list/array, one element per example")
    if not instances:
        raise _invalid("No values in 'instances' array: send at least one example")
    named = _is_named(instances[0])
    if not named and len(specs) > 1:
        raise _invalid(
            "instances is a plain list, but expecting list of objects as multiple input tensors "
            f"required as per tensorinfo_map: {', '.join(sorted(specs))}"
        )
    if not named:
        spec = next(iter(specs.values()))
        for index, item in enumerate(instances):
            if _is_named(item):
                raise _invalid(f"Expecting value/list but got object at item {index} of input list")
        return {spec.alias: _to_array(instances, spec, batched=True)}
    keys = set(specs)
    for index, item in enumerate(instances):
        if not _is_named(item):
            raise _invalid(f"Expecting object but got list at item {index} of input list")
        if set(item) != keys:
            raise _invalid(
                f"Failed to process element: {index} of 'instances' list. JSON object: {snippet(item)} "
                f"must only have keys: {','.join(sorted(keys))}"
            )
    return {
        name: _to_array([item[name] for item in instances], spec, batched=True)
        for name, spec in specs.items()
    }


def _columns(inputs: Any, specs: Mapping[str, TensorSpec]) -> dict[str, Array]:
    if not _is_named(inputs):
        if len(specs) > 1:
            raise _invalid(
                "inputs is a plain value/list, but expecting an object as multiple input tensors "
                f"required as per tensorinfo_map: {', '.join(sorted(specs))}"
            )
        spec = next(iter(specs.values()))
        return {spec.alias: _to_array(inputs, spec, batched=False)}
    arrays = {}
    for name, spec in specs.items():
        if name not in inputs:
            raise _invalid(f"Missing named input: {name} in 'inputs' object.")
        arrays[name] = _to_array(inputs[name], spec, batched=False)
    return arrays


def _is_named(value: Any) -> bool:
    """An object of named tensors (a ``{"b64": ...}`` object is a value, not names)."""
    return isinstance(value, dict) and not _is_b64(value)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str)


def _to_array(value: Any, spec: TensorSpec, *, batched: bool) -> Array:
    """One JSON value (nested lists) as an ndarray of the spec's dtype."""
    if spec.dtype is DType.DT_STRING:
        return _strings(value, spec, batched=batched)
    try:
        array = np.asarray(value)
    except (ValueError, OverflowError):
        array = np.asarray(None, dtype=object)
    if array.dtype.kind not in "iufb":
        raise _invalid(_explain(value, spec, batched=batched))
    return _cast(array, spec)


def _cast(array: Array, spec: TensorSpec) -> Array:
    """Convert numbers parsed from JSON to the spec's dtype, as TF Serving accepts them."""
    target = spec.dtype.numpy
    kind = array.dtype.kind
    if target.kind == "O":
        raise _invalid(_NUMBERS_FOR_STRINGS.format(alias=spec.alias))
    if target.kind == "b":
        if kind != "b":
            raise _invalid(f"{spec.alias}: expecting true/false values for a {spec.dtype.short} input, got numbers")
        return array
    if kind == "b":
        raise _invalid(f"{spec.alias}: expecting numbers for a {spec.dtype.short} input, got true/false")
    if target.kind in "iu":
        if kind == "f" and array.size:  # numpy makes an empty list float64: no decimal in it
            raise _invalid(
                f"{spec.alias}: expecting integers for a {spec.dtype.short} input, got decimals "
                f"(for example {array.flat[int(np.argmax(array != np.round(array)))]})"
            )
        info = np.iinfo(target)
        if array.size and (array.min() < info.min or array.max() > info.max):
            raise _invalid(
                f"{spec.alias}: values must lie in [{info.min}, {info.max}] for a {spec.dtype.short} input"
            )
    with np.errstate(over="ignore"):  # 1e300 as a float is inf, as TF Serving's cast makes it
        return array.astype(target, copy=False)


def _strings(value: Any, spec: TensorSpec, *, batched: bool) -> Array:
    """Nested lists of text or ``{"b64": ...}`` objects as an object array of bytes."""
    shape = _json_shape(value)
    flat: list[bytes] = []

    def walk(item: Any, depth: int) -> None:
        if isinstance(item, list):
            if depth >= len(shape) or len(item) != shape[depth]:
                raise _invalid(_explain(value, spec, batched=batched))
            for element in item:
                walk(element, depth + 1)
        elif depth != len(shape):
            raise _invalid(_explain(value, spec, batched=batched))
        elif isinstance(item, str):
            flat.append(item.encode("utf-8", "surrogateescape"))  # rapidjson keeps bytes that are not UTF-8
        elif _is_b64(item):
            flat.append(_b64decode(item["b64"]))
        else:
            raise _invalid(
                f"JSON Value: {snippet(item)} Type: {json_type(item)} is not of expected type: string "
                '(send text, or bytes as {"b64": "<base64>"})'
            )

    walk(value, 0)
    array = np.empty(len(flat), dtype=object)
    array[:] = flat
    return array.reshape(shape)


def _b64decode(text: str) -> bytes:
    """Standard or URL-safe base64, padding optional (as TF Serving accepts it)."""
    data = text.encode("ascii", errors="replace")
    data += b"=" * (-len(data) % 4)
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(data, altchars=altchars, validate=True)
        except binascii.Error:
            continue
    raise _invalid("Unable to base64 decode: the 'b64' value is not valid base64")


def _explain(value: Any, spec: TensorSpec, *, batched: bool) -> str:
    """Why ``value`` is not a rectangular tensor of the spec's type (slow, error path only)."""
    expected = spec.dtype.short
    found, bad = _first_bad_leaf(value, spec.dtype is DType.DT_STRING)
    if found:
        return f"JSON Value: {snippet(bad)} Type: {json_type(bad)} is not of expected type: {expected}"
    if batched and isinstance(value, list) and value:
        first = _json_shape(value[0])
        for index, item in enumerate(value):
            shape = _json_shape(item)
            if shape != first:
                return (
                    f"Failed to process element: {index} of 'instances' list. Error: Expecting shape "
                    f"{shape_text(first)} but got: {shape_text(shape)}. Every instance must have the same shape."
                )
    return (
        f"{spec.alias}: the value is not a rectangular list of {expected} values "
        "(lists of unequal length, or nested more than 64 deep)"
    )


def _first_bad_leaf(value: Any, strings: bool) -> tuple[bool, Any]:
    """``(True, leaf)`` for the first leaf of the wrong JSON type, else ``(False, None)``."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(reversed(item))
        elif strings:
            if not isinstance(item, str) and not _is_b64(item):
                return True, item
        elif isinstance(item, bool) or not isinstance(item, int | float):
            return True, item
    return False, None


def _json_shape(value: Any) -> list[int]:
    shape = []
    while isinstance(value, list):
        shape.append(len(value))
        if not value:
            break
        value = value[0]
    return shape


def shape_text(shape: Sequence[int]) -> str:
    """A shape as TF Serving's messages print it: ``[-1,224,224,3]``."""
    return "[" + ",".join(str(d) for d in shape) + "]"


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)


# ---------------------------------------------------------------- REST out


def encode_json_response(outputs: Mapping[str, Array], fmt: RequestFormat) -> bytes:
    """TF Serving's JSON for predict outputs: ``predictions`` (row) or ``outputs``."""
    if not outputs:
        raise RequestError(Code.INVALID_ARGUMENT, "Cannot convert empty tensor map to JSON")
    values = {name: _jsonable(name, array) for name, array in outputs.items()}
    if fmt == "columnar":
        body: Any = numbers(next(iter(values.values()))) if len(values) == 1 else {
            name: numbers(value) for name, value in values.items()
        }
        return orjson.dumps({"outputs": body}, option=orjson.OPT_SERIALIZE_NUMPY)
    batch = None
    for name, array in outputs.items():
        if array.ndim == 0:
            raise RequestError(Code.INVALID_ARGUMENT, f"Tensor name: {name} has no shape information")
        if batch is not None and array.shape[0] != batch:
            raise RequestError(
                Code.INVALID_ARGUMENT,
                f"Tensor name: {name} has inconsistent batch size: {array.shape[0]} expecting: {batch}",
            )
        batch = array.shape[0]
    if len(values) == 1:
        rows: Any = numbers(next(iter(values.values())))
    else:
        rows = [{name: numbers(value[i]) for name, value in values.items()} for i in range(batch or 0)]
    return orjson.dumps({"predictions": rows}, option=orjson.OPT_SERIALIZE_NUMPY)


def _jsonable(name: str, array: Array) -> Any:
    if array.dtype.kind != "O" and array.dtype.kind != "S":
        return array if array.ndim == 0 else np.ascontiguousarray(array)
    as_b64 = name.endswith("_bytes")

    def convert(item: Any) -> Any:
        if isinstance(item, list):
            return [convert(element) for element in item]
        data = item if isinstance(item, bytes) else str(item).encode()
        if as_b64:
            return {"b64": base64.b64encode(data).decode()}
        return data.decode("utf-8", errors="replace")

    return convert(array.tolist())
