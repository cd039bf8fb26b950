"""REST examples -> tf.Example, Input -> serialized batch, results -> JSON, as TF Serving converts them.

Sources: tensorflow_serving/util/json_tensor.cc (FillClassifyRegressRequestFromJson,
MakeExampleFromJsonObject, AddValueToFeature, MakeJsonFromClassificationResult,
MakeJsonFromRegressionResult), servables/tensorflow/util.cc (InputToSerializedExampleTensor).
"""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.examples import (
    classification_result,
    example_from_json,
    examples_body,
    regression_result,
    result_json,
    serialized_examples,
)
from serving.status import Code, RequestError


def example(text: str) -> example_pb2.Example:
    return text_format.Parse(text, example_pb2.Example())


def feature(name: str, text: str) -> example_pb2.Example:
    return example(f'features {{ feature {{ key: "{name}" value {{ {text} }} }} }}')


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"x": 2.0}, feature("x", "float_list { value: 2.0 }")),
        ({"x": 2}, feature("x", "int64_list { value: 2 }")),  # an integer is an int64, as rapidjson reads it
        ({"x": 1e2}, feature("x", "float_list { value: 100.0 }")),  # an exponent makes a double
        ({"x": [1, 2, -3]}, feature("x", "int64_list { value: [1, 2, -3] }")),
        ({"x": [1.5, 2.5]}, feature("x", "float_list { value: [1.5, 2.5] }")),
        ({"x": True}, feature("x", "int64_list { value: 1 }")),
        ({"x": [False, True]}, feature("x", "int64_list { value: [0, 1] }")),
        ({"x": "héllo"}, feature("x", 'bytes_list { value: "h\\303\\251llo" }')),
        ({"x": {"b64": "AAEC/w=="}}, feature("x", 'bytes_list { value: "\\000\\001\\002\\377" }')),
        ({"x": [{"b64": "AAEC/w"}, "a"]}, feature("x", 'bytes_list { value: ["\\000\\001\\002\\377", "a"] }')),
        ({"x": []}, feature("x", "")),  # an empty list is a feature of no kind
        ({"x": 2**64}, feature("x", "float_list { value: 1.8446744073709552e+19 }")),  # beyond 64 bits: a double
        ({"x": 0.1}, feature("x", "float_list { value: 0.1 }")),  # stored as float32
        ({}, example("")),
        (
            {"a": 1, "b": [0.5], "c": "z"},
            example(
                'features { feature { key: "a" value { int64_list { value: 1 } } } '
                'feature { key: "b" value { float_list { value: 0.5 } } } '
                'feature { key: "c" value { bytes_list { value: "z" } } } }'
            ),
        ),
    ],
)
def test_json_objects_become_examples(value: dict[str, Any], expected: example_pb2.Example) -> None:
    assert example_from_json(value) == expected


def test_floats_are_float32_and_non_finite_numbers_pass() -> None:
    values = example_from_json({"x": [0.1, float("nan"), float("inf"), 1e39]}).features.feature["x"].float_list.value
    assert values[0] == float(np.float32(0.1))
    assert np.isnan(values[1])
    assert values[2] == values[3] == float("inf")  # rapidjson's GetFloat of a double beyond float32


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "Example must be JSON object but got JSON String"),
        ([{}], "Example must be JSON object but got JSON Array"),
        ({"x": None}, "Feature: x has element with unexpected JSON type: Null"),
        ({"x": [1, None]}, "Feature: x has element with unexpected JSON type: Null"),
        ({"x": [[1]]}, "Feature: x has element with unexpected JSON type: Array"),
        ({"x": {"y": 1}}, "Feature: x has element with unexpected JSON type: Object"),
        ({"x": {"b64": "AA==", "y": 1}}, "Feature: x has element with unexpected JSON type: Object"),
        ({"x": {"b64": 3}}, "Feature: x has element with unexpected JSON type: Object"),
        ({"x": {"b64": "!!!"}}, "Unable to base64 decode"),
        ({"x": [1, 2.5]}, "Unexpected element type in feature: x expecting type: int64"),
        ({"x": [2.5, 1]}, "Unexpected element type in feature: x expecting type: float"),
        ({"x": ["a", 1]}, "Unexpected element type in feature: x expecting type: bytes"),
        ({"x": [1.5, True]}, "Unexpected element type in feature: x expecting type: float"),
        ({"x": [True, "a"]}, "Unexpected element type in feature: x expecting type: int64"),
        ({"x": 2**63}, "Feature: x has uint64_t element. Only int64_t is supported."),
        # not TF Serving's (its C++ protos hold any bytes): a Python proto's map key must be UTF-8
        ({"\udcff": 1}, "Feature name b'\\xff' is not UTF-8: this server holds tf.Example feature names as text"),
    ],
)
def test_json_that_is_no_example_is_refused_as_tf_serving_words_it(value: Any, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        example_from_json(value)
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, message)


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (b"", "JSON Parse error: The document is empty"),
        (b"{", "JSON Parse error"),
        (b"[]", "Is not object"),
        (b'{"signature_name": 1, "examples": [{}]}', "'signature_name' key must be a string value."),
        (b'{"instances": [1]}', "When method is classify, key 'examples' is expected and was not found"),
        (b'{"examples": {}}', "Expecting 'examples' value to be an list/array"),
        (b'{"examples": []}', "'examples' value is an empty array"),
        (b'{"examples": [{}, "x"]}', "Example must be JSON object but got JSON String"),
        (b'{"context": 3, "examples": [{}]}', "Example must be JSON object but got JSON Number"),
        # the context is read before the examples are looked for
        (b'{"context": {"x": null}}', "Feature: x has element with unexpected JSON type: Null"),
        (b'{"examples": [{"x": 1}, {"y": [1, "a"]}]}', "Unexpected element type in feature: y expecting type: int64"),
    ],
)
def test_examples_bodies_are_read_as_tf_serving_reads_them(body: bytes, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        examples_body(body)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert message in caught.value.message


def test_a_body_without_context_is_an_example_list() -> None:
    name, request_input = examples_body(b'{"signature_name": "s", "examples": [{"x": [NaN]}, {"x": 1}]}')
    assert name == "s"
    assert request_input.WhichOneof("kind") == "example_list"
    examples = request_input.example_list.examples
    assert len(examples) == 2
    assert np.isnan(examples[0].features.feature["x"].float_list.value[0])
    assert examples[1] == feature("x", "int64_list { value: 1 }")


def test_a_context_makes_an_example_list_with_context() -> None:
    name, request_input = examples_body(b'{"context": {"c": "k"}, "examples": [{"x": 1.5}]}')
    assert name == ""
    listed = request_input.example_list_with_context
    assert request_input.WhichOneof("kind") == "example_list_with_context"
    assert listed.context == feature("c", 'bytes_list { value: "k" }')
    assert list(listed.examples) == [feature("x", "float_list { value: 1.5 }")]


def test_each_serialized_example_is_the_context_then_the_example() -> None:
    request_input = input_pb2.Input()
    listed = request_input.example_list_with_context
    listed.context.CopyFrom(example_from_json({"shared": 1, "x": 0.0}))
    listed.examples.add().CopyFrom(example_from_json({"x": 2.0}))
    listed.examples.add().CopyFrom(example_from_json({"y": "b"}))
    batch = serialized_examples(request_input)
    assert batch == [listed.context.SerializeToString() + e.SerializeToString() for e in listed.examples]
    merged = [example_pb2.Example.FromString(data) for data in batch]  # the example's features win
    assert merged[0] == example_from_json({"shared": 1, "x": 2.0})
    assert merged[1] == example_from_json({"shared": 1, "x": 0.0, "y": "b"})


def test_an_example_list_serializes_each_example() -> None:
    request_input = input_pb2.Input()
    request_input.example_list.examples.add().CopyFrom(example_from_json({"x": 2.0}))
    assert serialized_examples(request_input) == [example_from_json({"x": 2.0}).SerializeToString()]


@pytest.mark.parametrize(
    "text",
    ["", "example_list {}", "example_list_with_context { context { } }"],
)
def test_an_input_without_examples_is_empty(text: str) -> None:
    with pytest.raises(RequestError) as caught:
        serialized_examples(text_format.Parse(text, input_pb2.Input()))
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, "Input is empty.")


def test_classification_results_and_their_json() -> None:
    classes = np.array([[b"cat", b"dog"], [b"\xff", b"b"]], dtype=object)
    scores = np.array([[0.1, 0.9], [float("nan"), float("-inf")]], np.float32)
    result = classification_result(classes, scores)
    assert [(c.label, c.score) for c in result.classifications[0].classes] == [
        ("cat", float(np.float32(0.1))),
        ("dog", float(np.float32(0.9))),
    ]
    body = result_json(result)
    assert body == b'{"results":[[["cat",0.1],["dog",0.9]],[["\xef\xbf\xbd",NaN],["b",-Infinity]]]}'
    only_scores = classification_result(None, np.array([[3.0]], np.float32))
    assert json.loads(result_json(only_scores)) == {"results": [[["", 3.0]]]}  # TF Serving's testClassifyREST
    only_classes = classification_result(np.array([[b"a"]], dtype=object), None)
    assert json.loads(result_json(only_classes)) == {"results": [[["a", 0.0]]]}


def test_regression_results_and_their_json() -> None:
    result = regression_result(np.array([[3.0], [0.2]], np.float32))
    assert [r.value for r in result.regressions] == [3.0, float(np.float32(0.2))]
    assert result_json(result) == b'{"results":[3.0,0.2]}'
    assert json.loads(result_json(result)) == {"results": [3.0, 0.2]}  # TF Serving's testRegressREST, and 0.2 not 0.2000000029


@pytest.mark.parametrize(
    ("result", "message"),
    [
        (classification_pb2.ClassificationResult(), "Cannot convert empty ClassificationResults to JSON"),
        (regression_pb2.RegressionResult(), "Cannot convert empty RegressionResults to JSON"),
    ],
)
def test_an_empty_result_has_no_json(result: Any, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        result_json(result)
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, message)
