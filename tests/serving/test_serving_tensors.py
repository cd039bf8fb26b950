"""REST JSON <-> numpy, as TF Serving converts them (TensorProto: test_serving_tensor_proto.py)."""

from __future__ import annotations

import base64
import json
import tracemalloc
from collections.abc import Mapping

import numpy as np
import orjson
import pytest

from serving.jsonarray import GENERAL_PARSE_MAX_BYTES, NumericArray
from serving.status import Code, RequestError
from serving.tensors import DType, TensorSpec, decode_json_request, encode_json_response

IMAGE = TensorSpec("input_image", DType.DT_FLOAT, (-1, -1, -1, 3))
BYTES = TensorSpec("bytes_inputs", DType.DT_STRING, (-1,))
SIGNATURES: dict[str, dict[str, TensorSpec]] = {
    "": {"input_image": IMAGE},
    "serving_default": {"input_image": IMAGE},
    "serving_preprocess": {"bytes_inputs": BYTES},
    "two": {"a": TensorSpec("a", DType.DT_INT32, (-1, 2)), "b": TensorSpec("b", DType.DT_FLOAT, (-1,))},
    "bytes": {"k": TensorSpec("k", DType.DT_UINT8, (-1, 2))},
    "flags": {"f": TensorSpec("f", DType.DT_BOOL, (-1,))},
}


def lookup(name: str) -> Mapping[str, TensorSpec]:
    if name not in SIGNATURES:
        raise RequestError(Code.FAILED_PRECONDITION, f'Serving signature key "{name}" not found.')
    return SIGNATURES[name]


PIXEL = [[[1, 2, 3], [4, 5, 6]]]  # 1x2x3 image
B64 = base64.b64encode(b"\xff\xd8jpeg").decode()

DECODE_CASES = [
    # (body, signature, format, {alias: (dtype, shape)})
    ({"instances": [PIXEL]}, "", "row", {"input_image": (np.float32, (1, 1, 2, 3))}),
    ({"instances": [PIXEL, PIXEL]}, "", "row", {"input_image": (np.float32, (2, 1, 2, 3))}),
    ({"inputs": [PIXEL]}, "", "columnar", {"input_image": (np.float32, (1, 1, 2, 3))}),
    ({"inputs": {"input_image": [PIXEL]}}, "", "columnar", {"input_image": (np.float32, (1, 1, 2, 3))}),
    ({"instances": [{"input_image": PIXEL}]}, "", "row", {"input_image": (np.float32, (1, 1, 2, 3))}),
    ({"signature_name": "serving_default", "instances": [[[[0.5, 1.5, 2.5]]]]}, "serving_default", "row",
     {"input_image": (np.float32, (1, 1, 1, 3))}),
    ({"signature_name": "serving_preprocess", "instances": [{"b64": B64}]}, "serving_preprocess", "row",
     {"bytes_inputs": (object, (1,))}),
    ({"signature_name": "serving_preprocess", "inputs": [{"b64": B64}, "text"]}, "serving_preprocess",
     "columnar", {"bytes_inputs": (object, (2,))}),
    ({"signature_name": "two", "instances": [{"a": [1, 2], "b": 0.5}, {"a": [3, 4], "b": 1}]}, "two", "row",
     {"a": (np.int32, (2, 2)), "b": (np.float32, (2,))}),
    ({"signature_name": "two", "inputs": {"a": [[1, 2]], "b": [3], "ignored": 1}}, "two", "columnar",
     {"a": (np.int32, (1, 2)), "b": (np.float32, (1,))}),
    ({"signature_name": "bytes", "instances": [[0, 255], [7, 8]]}, "bytes", "row", {"k": (np.uint8, (2, 2))}),
    # shapes other than the declared ones: the model decides (TF Serving's REST example sends
    # half_plus_two, declared x [-1,1], a rank-1 [1.0, 2.0, 5.0])
    ({"signature_name": "bytes", "instances": [[1, 2, 3]]}, "bytes", "row", {"k": (np.uint8, (1, 3))}),
    ({"instances": [1.0, 2.0, 5.0]}, "", "row", {"input_image": (np.float32, (3,))}),
    ({"inputs": [1.0, 2.0, 5.0]}, "", "columnar", {"input_image": (np.float32, (3,))}),
    ({"inputs": 7}, "", "columnar", {"input_image": (np.float32, ())}),
    ({"instances": [[[1, 2, 3]]]}, "", "row", {"input_image": (np.float32, (1, 1, 3))}),
    ({"instances": [[[[1, 2, 3, 4]]]]}, "", "row", {"input_image": (np.float32, (1, 1, 1, 4))}),
    ({"signature_name": "two", "inputs": {"a": [1, 2, 3], "b": [[0.5]]}}, "two", "columnar",
     {"a": (np.int32, (3,)), "b": (np.float32, (1, 1))}),
]


@pytest.mark.parametrize(("body", "signature", "fmt", "expected"), DECODE_CASES)
def test_decodes_predict_bodies(body: object, signature: str, fmt: str, expected: dict[str, tuple]) -> None:
    request = decode_json_request(orjson.dumps(body), lookup)
    assert request.signature_name == signature
    assert request.format == fmt
    assert set(request.inputs) == set(expected)
    for alias, (dtype, shape) in expected.items():
        assert request.inputs[alias].dtype == np.dtype(dtype)
        assert request.inputs[alias].shape == shape


def test_b64_values_are_decoded_to_bytes() -> None:
    body = {"signature_name": "serving_preprocess", "instances": [{"b64": B64}, {"b64": B64.rstrip("=")}]}
    request = decode_json_request(orjson.dumps(body), lookup)
    assert list(request.inputs["bytes_inputs"]) == [b"\xff\xd8jpeg", b"\xff\xd8jpeg"]


def test_fast_and_general_paths_agree() -> None:
    image = np.random.default_rng(1).integers(0, 256, (8, 8, 3))
    fast = decode_json_request(orjson.dumps({"instances": [image.tolist()]}), lookup)
    slow = decode_json_request(orjson.dumps({"instances": [image.tolist()], "x": [True]}), lookup)
    assert np.array_equal(fast.inputs["input_image"], slow.inputs["input_image"])
    assert fast.inputs["input_image"].dtype == slow.inputs["input_image"].dtype == np.float32


ERROR_CASES = [
    # (raw body, code, message fragment)
    (b"", Code.INVALID_ARGUMENT, "document is empty"),
    (b"{not json", Code.INVALID_ARGUMENT, "JSON Parse error: Missing a name for object member. at offset: 1"),
    (b"[1, 2]", Code.INVALID_ARGUMENT, "Is not object"),
    (b'{"foo": 1}', Code.INVALID_ARGUMENT, "Missing 'inputs' or 'instances' key"),
    (b'{"instances": [[1]], "inputs": [[1]]}', Code.INVALID_ARGUMENT, "only one of 'inputs' or 'instances'"),
    (b'{"instances": 5}', Code.INVALID_ARGUMENT, "to be a list"),
    (b'{"instances": []}', Code.INVALID_ARGUMENT, "No values in 'instances'"),
    (b'{"signature_name": 7, "instances": [[1]]}', Code.INVALID_ARGUMENT, "must be a string"),
    (b'{"signature_name": "nope", "instances": [[1]]}', Code.FAILED_PRECONDITION, '"nope" not found'),
    (b'{"instances": [[[[1, 2, 3]]], [[[1, 2]]]]}', Code.INVALID_ARGUMENT, "Expecting shape [1,1,3] but got: [1,1,2]"),
    (b'{"instances": [[["a", "b", "c"]]]}', Code.INVALID_ARGUMENT, 'JSON Value: "a" Type: String is not of expected type: float'),
    (b'{"instances": [[[null, 1, 2]]]}', Code.INVALID_ARGUMENT, "Type: Null is not of expected type: float"),
    (b'{"instances": [[[true, false, true]]]}', Code.INVALID_ARGUMENT, "got true/false"),
    (b'{"instances": [{"b64": "AAAA"}]}', Code.INVALID_ARGUMENT, "is not of expected type: float"),
    (b'{"instances": [{"input_image": [[1]]}, [[1]]]}', Code.INVALID_ARGUMENT, "Expecting object but got list at item 1"),
    (b'{"instances": [{"wrong": [[1]]}]}', Code.INVALID_ARGUMENT, "must only have keys: input_image"),
    (b'{"signature_name": "serving_preprocess", "instances": [{"b64": "***"}]}', Code.INVALID_ARGUMENT, "Unable to base64 decode"),
    (b'{"signature_name": "serving_preprocess", "instances": [1]}', Code.INVALID_ARGUMENT, "expecting strings"),
    (b'{"signature_name": "serving_preprocess", "instances": [[{"b64": "AA=="}], ["x", "y"]]}', Code.INVALID_ARGUMENT, "Expecting shape [1] but got: [2]"),
    (b'{"signature_name": "two", "instances": [[1, 2]]}', Code.INVALID_ARGUMENT, "expecting list of objects"),
    (b'{"signature_name": "two", "inputs": [[1, 2]]}', Code.INVALID_ARGUMENT, "expecting an object"),
    (b'{"signature_name": "two", "inputs": {"a": [[1, 2]]}}', Code.INVALID_ARGUMENT, "Missing named input: b"),
    (b'{"signature_name": "two", "inputs": {"a": [[1.5, 2]], "b": [1]}}', Code.INVALID_ARGUMENT, "expecting integers"),
    (b'{"signature_name": "two", "inputs": {"a": [[1, 2]], "b": ["x"]}}', Code.INVALID_ARGUMENT, "is not of expected type: float"),
    # a plain numeric array, refused from its type and the number syntax alone
    (b'{"signature_name": "bytes", "instances": [[1, 300]]}', Code.INVALID_ARGUMENT, "k: values must lie in [0, 255] for a uint8 input"),
    (b'{"signature_name": "bytes", "instances": [[1, 2.5e0]]}', Code.INVALID_ARGUMENT, "got decimals (for example 2.5e0)"),
    (b'{"signature_name": "flags", "instances": [1, 0]}', Code.INVALID_ARGUMENT, "expecting true/false values"),
    (b'{"signature_name": "serving_preprocess", "inputs": [1, 2]}', Code.INVALID_ARGUMENT, "expecting strings"),
    (b'{"instances": [[[[1, 2, 3]]]], "signature_name": 7}', Code.INVALID_ARGUMENT, "must be a string"),
    (b'{"instances": [[[[NaN, 2, 3]]]', Code.INVALID_ARGUMENT, "JSON Parse error: Missing a comma or ']' after an array element. at offset: 30"),
]


@pytest.mark.parametrize(("body", "code", "fragment"), ERROR_CASES)
def test_malformed_requests_are_client_errors(body: bytes, code: Code, fragment: str) -> None:
    with pytest.raises(RequestError) as caught:
        decode_json_request(body, lookup)
    assert caught.value.code is code
    assert fragment in caught.value.message


def test_content_after_the_document_is_ignored_as_tf_serving_ignores_it() -> None:
    """TF Serving parses with kParseStopWhenDoneFlag: rapidjson stops at the end of the root value."""
    request = decode_json_request(b'{"instances": [[[[1, 2, 3]]]]} x', lookup)
    assert request.inputs["input_image"].tolist() == [[[[1.0, 2.0, 3.0]]]]


PROBS = np.array([[0.25, 0.75], [0.5, 0.5]], np.float32)


@pytest.mark.parametrize(
    ("outputs", "fmt", "expected"),
    [
        ({"probabilities": PROBS}, "row", {"predictions": [[0.25, 0.75], [0.5, 0.5]]}),
        ({"probabilities": PROBS}, "columnar", {"outputs": [[0.25, 0.75], [0.5, 0.5]]}),
        (
            {"p": PROBS, "k": np.array([1, 0], np.int64)},
            "row",
            {"predictions": [{"p": [0.25, 0.75], "k": 1}, {"p": [0.5, 0.5], "k": 0}]},
        ),
        ({"p": PROBS[:1], "k": np.array([1])}, "columnar", {"outputs": {"p": [[0.25, 0.75]], "k": [1]}}),
        (
            {"label_bytes": np.array([b"\x00\x01"], dtype=object)},
            "row",
            {"predictions": [{"b64": "AAE="}]},
        ),
        ({"label": np.array([b"cat"], dtype=object)}, "row", {"predictions": ["cat"]}),
    ],
)
def test_encodes_outputs_like_tf_serving(outputs: dict[str, np.ndarray], fmt: str, expected: object) -> None:
    assert orjson.loads(encode_json_response(outputs, fmt)) == expected  # type: ignore[arg-type]


def test_float32_outputs_keep_shortest_repr() -> None:
    body = encode_json_response({"p": np.array([[0.1, 1.0]], np.float32)}, "row")
    assert body == b'{"predictions":[[0.1,1.0]]}'


def test_row_format_needs_a_batch_dimension() -> None:
    with pytest.raises(RequestError, match="no shape information"):
        encode_json_response({"p": np.float32(1.0) * np.ones((), np.float32)}, "row")


def test_nan_and_infinity_are_numbers_as_tf_serving_reads_them() -> None:
    """rapidjson's kParseNanAndInfFlag (json_tensor.cc ParseJson): on the fast and the general path."""
    fast = decode_json_request(b'{"instances": [[[[NaN, Infinity, -Infinity]]]]}', lookup)
    general = decode_json_request(b'{"instances": [{"input_image": [[[NaN, Infinity, -Infinity]]]}]}', lookup)
    for request in (fast, general):
        values = request.inputs["input_image"].reshape(-1)
        assert values.dtype == np.float32
        assert np.isnan(values[0]) and values[1] == np.inf and values[2] == -np.inf


def test_encodes_non_finite_outputs_as_tf_serving_writes_them() -> None:
    """json_tensor.cc WriteDecimal writes NaN, Infinity and -Infinity (orjson alone writes null)."""
    p = np.array([[0.5, np.nan], [np.inf, -np.inf]], np.float32)
    assert encode_json_response({"p": p}, "row") == b'{"predictions":[[0.5,NaN],[Infinity,-Infinity]]}'
    assert encode_json_response({"p": p}, "columnar") == b'{"outputs":[[0.5,NaN],[Infinity,-Infinity]]}'
    rows = encode_json_response({"p": p, "k": np.array([1, 2])}, "row")
    assert rows == b'{"predictions":[{"p":[0.5,NaN],"k":1},{"p":[Infinity,-Infinity],"k":2}]}'
    scalar = encode_json_response({"s": np.array(np.nan, np.float64)}, "columnar")
    assert scalar == b'{"outputs":NaN}'
    assert json.loads(rows)["predictions"][1]["p"] == [float("inf"), float("-inf")]  # what clients parse


def test_a_wrong_rank_body_is_decoded_on_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    """No shape-first refusal: a plain numeric array of any shape reaches the model, parsed straight to numpy."""
    calls: list[object] = []
    original = NumericArray.values

    def counted(self: NumericArray, dtype: object = None) -> object:
        calls.append(dtype)
        return original(self, dtype)  # type: ignore[arg-type]

    monkeypatch.setattr(NumericArray, "values", counted)
    request = decode_json_request(b'{"instances": [0, 1, 2, 3, 4]}', lookup)
    assert request.inputs["input_image"].tolist() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert calls == [np.dtype(np.float32)]


def test_a_large_malformed_array_is_refused_without_building_it() -> None:
    zeros = b",".join([b"0"] * (GENERAL_PARSE_MAX_BYTES // 2 + 1))
    with pytest.raises(RequestError) as caught:
        decode_json_request(b'{"instances": [[' + zeros + b"], [0]]}", lookup)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert "not a rectangular array of JSON numbers" in caught.value.message


def peak_bytes(body: bytes) -> tuple[int, object]:
    tracemalloc.start()
    try:
        try:
            result: object = decode_json_request(body, lookup)
        except RequestError as error:
            result = error
        return tracemalloc.get_traced_memory()[1], result
    finally:
        tracemalloc.stop()


def test_memory_stays_a_few_times_the_body() -> None:
    """A numeric body is parsed without one Python object per number (which cost ~25x the body)."""
    wrong = b'{"instances": [' + b",".join([b"0"] * (4 << 20)) + b"]}"  # 8 MiB, the wrong rank: the model decides
    peak, result = peak_bytes(wrong)
    assert not isinstance(result, RequestError), result
    assert result.inputs["input_image"].shape == (4 << 20,)  # type: ignore[attr-defined]
    assert peak < 4 * len(wrong), f"peak {peak / len(wrong):.1f}x the body"
    row = b"[" + b",".join([b"[0,0,0]"] * 512) + b"]"
    valid = b'{"instances": [[' + b",".join([row] * 512) + b"]]}"  # 4 MiB; float32 values take 3 MiB
    peak, result = peak_bytes(valid)
    assert not isinstance(result, RequestError), result
    assert peak < 5 * len(valid), f"peak {peak / len(valid):.1f}x the body"
