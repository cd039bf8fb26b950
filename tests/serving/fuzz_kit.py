"""Request-parsing fuzzing, shared by tests/serving/test_serving_fuzz.py and bench/fuzz_parsing.py.

Strategies for REST predict bodies (arbitrary bytes; near-valid JSON: right
and wrong keys, ragged and rectangular tensors, every JSON type, NaN and
Infinity, random whitespace, then a few bytes cut, doubled or replaced) and
the properties they must keep:

* :func:`check_decode`: ``decode_json_request`` returns tensors or raises
  :class:`RequestError` with a client's code; nothing else escapes.
* :func:`check_paths_agree`: a plain numeric array decodes to the same
  tensor on the fast path (serving.jsonarray) as on the general one.
* :func:`check_rest`: a real server answers below 500 with a JSON body,
  ``{"error": ...}`` for every refusal.
"""

from __future__ import annotations

import http.client
import json
import math
from collections.abc import Mapping
from typing import Any

import numpy as np
from hypothesis import strategies as st

from serving.status import Code, RequestError
from serving.tensors import DType, JsonRequest, TensorSpec, decode_json_request

__all__ = [
    "CLIENT_CODES",
    "bodies",
    "check_decode",
    "check_paths_agree",
    "check_rest",
    "lookup",
    "numeric_arrays",
    "rest_paths",
]

SIGNATURES: dict[str, dict[str, TensorSpec]] = {
    "": {"input_image": TensorSpec("input_image", DType.DT_FLOAT, (-1, -1, -1, 3))},
    "serving_preprocess": {"bytes_inputs": TensorSpec("bytes_inputs", DType.DT_STRING, (-1,))},
    "two": {"a": TensorSpec("a", DType.DT_INT32, (-1, 2)), "b": TensorSpec("b", DType.DT_FLOAT, (-1,))},
    "bytes": {"k": TensorSpec("k", DType.DT_UINT8, (-1, 2))},
    "floats": {"x": TensorSpec("x", DType.DT_FLOAT, None)},
    "doubles": {"x": TensorSpec("x", DType.DT_DOUBLE, None)},
    "ints": {"x": TensorSpec("x", DType.DT_INT64, None)},
}
SIGNATURES["serving_default"] = SIGNATURES[""]
# What a malformed request may be answered: TF Serving's codes for a client's mistake.
CLIENT_CODES = frozenset({Code.INVALID_ARGUMENT, Code.FAILED_PRECONDITION, Code.NOT_FOUND})


def lookup(name: str) -> Mapping[str, TensorSpec]:
    if name not in SIGNATURES:
        raise RequestError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    return SIGNATURES[name]


# ------------------------------------------------------------------ bodies

_special = st.sampled_from([math.nan, math.inf, -math.inf, -0.0, 0.0, 1e300, 5e-324, 2**53 + 1, -(2**63), 2**64])
_numbers = st.one_of(st.integers(-300, 300), st.floats(width=32), _special)
_leaves = st.one_of(
    _numbers,
    _numbers,
    st.booleans(),
    st.none(),
    st.text(max_size=4),
    st.fixed_dictionaries({"b64": st.sampled_from(["AAAA", "/9j/", "***", "QUJD", ""])}),
)
_tensors = st.recursive(_leaves, lambda inner: st.lists(inner, max_size=4), max_leaves=40)


def _filled(shape: list[int], fill: Any) -> Any:
    return [_filled(shape[1:], fill) for _ in range(shape[0])] if shape else fill


_rectangular = st.builds(_filled, st.lists(st.integers(1, 3), min_size=1, max_size=5), _numbers)
_named = st.dictionaries(st.sampled_from(["input_image", "a", "b", "k", "x", "bytes_inputs", "other"]), _tensors, max_size=3)
_documents = st.fixed_dictionaries(
    {},
    optional={
        "signature_name": st.sampled_from(["", "serving_default", "serving_preprocess", "two", "bytes", "floats", "nope", 7]),
        "instances": st.one_of(_rectangular, _tensors, st.lists(_named, max_size=3)),
        "inputs": st.one_of(_rectangular, _tensors, _named),
        "examples": st.lists(_named, max_size=2),
    },
)


@st.composite
def _json_text(draw: st.DrawFn) -> bytes:
    doc = draw(_documents)
    style = draw(st.sampled_from([(",", ":"), (", ", ": "), (" ,\n", " :\t")]))
    return json.dumps(doc, separators=style, allow_nan=True).encode()  # NaN, Infinity, -Infinity as TF Serving


@st.composite
def _mutated(draw: st.DrawFn) -> bytes:
    body = bytearray(draw(_json_text()))
    for _ in range(draw(st.integers(1, 3))):
        if not body:
            break
        at = draw(st.integers(0, len(body) - 1))
        kind = draw(st.sampled_from(["cut", "double", "replace", "insert"]))
        if kind == "cut":
            del body[at : at + draw(st.integers(1, 4))]
        elif kind == "double":
            body[at:at] = body[at : at + draw(st.integers(1, 8))]
        else:
            byte = draw(st.sampled_from(b'[]{},:"0123456789.-+eENaIfinty \\\x00\xff'))
            body[at : at + (kind == "replace")] = bytes([byte])
    return bytes(body)


def bodies() -> st.SearchStrategy[bytes]:
    """REST predict bodies: arbitrary bytes, near-valid JSON, and mutations of it."""
    return st.one_of(st.binary(max_size=64), _json_text(), _mutated(), _mutated())


@st.composite
def _number_token(draw: st.DrawFn) -> str:
    kind = draw(st.sampled_from(["int", "float", "word"]))
    if kind == "int":
        return str(draw(st.integers(-(10**12), 10**12)))
    if kind == "float":
        return repr(draw(st.floats(allow_nan=False, allow_infinity=False)))
    return draw(st.sampled_from(["NaN", "Infinity", "-Infinity", "-0", "0.0", "-0.0", "1e5", "-2.5E-3", "1E+2"]))


@st.composite
def numeric_arrays(draw: st.DrawFn) -> bytes:
    """The text of a rectangular JSON array of numbers (any spelling the standard library reads)."""
    shape = draw(st.lists(st.integers(1, 3), min_size=1, max_size=4))
    space = draw(st.sampled_from(["", " ", "\n  "]))

    def build(dims: list[int]) -> str:
        if not dims:
            return draw(_number_token())
        return "[" + space + ("," + space).join(build(dims[1:]) for _ in range(dims[0])) + space + "]"

    return build(shape).encode()


def rest_paths() -> st.SearchStrategy[str]:
    return st.sampled_from(
        ["/v1/models/image_classifier:predict"] * 6
        + ["/v1/models/image_classifier/versions/1:predict", "/v1/models/image_classifier:classify",
           "/v1/models/image_classifier:regress", "/v1/models/ghost:predict"]
    )


# --------------------------------------------------------------- properties


def check_decode(body: bytes) -> str:
    """Decode ``body``; returns "ok" or the refusal's code name. Anything else is a failure."""
    try:
        request = decode_json_request(body, lookup)
    except RequestError as error:
        assert error.code in CLIENT_CODES, (error.code, error.message)
        assert error.message and "Traceback" not in error.message
        return error.code.name
    assert isinstance(request, JsonRequest)
    for alias, array in request.inputs.items():
        assert isinstance(array, np.ndarray), alias
    return "ok"


def check_paths_agree(array_text: bytes, key: str, signature: str) -> str:
    """The fast path and the general path decode ``array_text`` alike (or refuse it alike)."""
    head = b'{"signature_name": "' + signature.encode() + b'", "' + key.encode() + b'": '
    fast = _outcome(head + array_text + b"}")
    general = _outcome(head + array_text + b', "unused": [true]}')  # not a plain array: the general parser
    if isinstance(fast, Code) or isinstance(general, Code):
        assert isinstance(fast, Code) and isinstance(general, Code) and fast is general, (fast, general)
        return fast.name
    assert fast.dtype == general.dtype and fast.shape == general.shape, (fast, general)
    assert np.array_equal(fast, general, equal_nan=True), (fast, general)
    assert np.array_equal(np.signbit(fast), np.signbit(general)), (fast, general)
    return "ok"


def _outcome(body: bytes) -> Any:
    """The one input tensor (of whatever shape: the model decides), or the refusal's code."""
    try:
        request = decode_json_request(body, lookup)
        (alias, array), = request.inputs.items()
        assert array.dtype == lookup(request.signature_name)[alias].dtype.numpy, (alias, array.dtype)
        return array
    except RequestError as error:
        return error.code


def check_rest(connection: http.client.HTTPConnection, path: str, body: bytes) -> int:
    """POST ``body``: an answer below 500, JSON, with ``{"error": ...}`` when refused; returns the status."""
    connection.request("POST", path, body=body, headers={"Content-Type": "application/json"})
    response = connection.getresponse()
    raw = response.read()
    assert response.status < 500, (response.status, raw[:300])
    assert response.getheader("Content-Type", "").startswith("application/json"), raw[:300]
    answer = json.loads(raw)  # NaN and Infinity allowed, as TF Serving writes them
    if response.status == 200:
        assert isinstance(answer, dict) and set(answer) <= {"predictions", "outputs"}, raw[:300]
    else:
        assert isinstance(answer, dict) and set(answer) == {"error"} and isinstance(answer["error"], str), raw[:300]
    return response.status
