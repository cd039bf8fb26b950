"""tf.Example inputs and classification/regression results, as TF Serving converts them.

* REST bodies of ``:classify`` / ``:regress`` become an ``Input`` proto
  (tensorflow_serving/util/json_tensor.cc ``FillClassifyRegressRequestFromJson``):
  each JSON object of ``examples`` is a ``tf.train.Example`` whose features are
  its keys; a value or a list of values gives a feature: an integer (or a
  boolean, as 1/0) an ``int64_list``, any other number a ``float_list``, a
  string or a ``{"b64": ...}`` object a ``bytes_list``. ``context``, when
  given, makes the Input an ``example_list_with_context``.
* An ``Input`` becomes the batch of serialized Examples fed to the signature
  (servables/tensorflow/util.cc ``InputToSerializedExampleTensor``): with a
  context, each one is the context's bytes followed by the example's, so that
  the parser sees the example's features merged over the context's.
* Results are ``ClassificationResult`` / ``RegressionResult`` protos, written
  as TF Serving's JSON (``MakeJsonFromClassificationResult``:
  ``{"results": [[["label", score], ...], ...]}``; ``MakeJsonFromRegressionResult``:
  ``{"results": [value, ...]}``), floats in their shortest float32 form.

Pure conversions: nothing here runs a model.
"""

from __future__ import annotations

import base64
import binascii
import math
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson
from tensorflow.core.example import example_pb2, feature_pb2
from tensorflow_serving.apis import classification_pb2, input_pb2, regression_pb2

from serving.jsondoc import json_type, parse_json_object, snippet
from serving.status import Code, RequestError

__all__ = [
    "classification_json",
    "classification_result",
    "example_from_json",
    "examples_body",
    "regression_json",
    "regression_result",
    "result_json",
    "serialized_examples",
]

_INT64_MIN, _INT64_MAX, _UINT64_MAX = -(2**63), 2**63 - 1, 2**64 - 1
_KIND_NAMES = {"bytes_list": "bytes", "float_list": "float", "int64_list": "int64", None: "UNKNOWN"}


# ------------------------------------------------------------------ REST in


def examples_body(body: bytes | bytearray) -> tuple[str, input_pb2.Input]:
    """A REST :classify/:regress body read as TF Serving reads it: ``(signature_name, input)``.

    Errors are TF Serving's, in its order: JSON, ``signature_name``, ``context``, then ``examples``.
    """
    doc = parse_json_object(body)
    signature_name = doc.get("signature_name", "")
    if not isinstance(signature_name, str):
        raise _invalid(
            f"JSON Value: {snippet(doc)} not formatted correctly. 'signature_name' key must be a string value."
        )
    request_input = input_pb2.Input()
    with_context = "context" in doc
    if with_context:
        request_input.example_list_with_context.context.CopyFrom(example_from_json(doc["context"]))
    if "examples" not in doc:
        # TF Serving's text says "classify" for :regress too.
        raise _invalid(f"JSON Value: {snippet(doc)} When method is classify, key 'examples' is expected and was not found")
    examples = doc["examples"]
    if not isinstance(examples, list):
        raise _invalid(f"JSON Value: {snippet(doc)} Expecting 'examples' value to be an list/array")
    if not examples:
        raise _invalid(f"JSON Value: {snippet(doc)} 'examples' value is an empty array")
    target = request_input.example_list_with_context.examples if with_context else request_input.example_list.examples
    target.extend(example_from_json(value) for value in examples)
    return signature_name, request_input


def example_from_json(value: Any) -> example_pb2.Example:
    """One JSON object as a ``tf.train.Example`` (json_tensor.cc ``MakeExampleFromJsonObject``)."""
    if not isinstance(value, dict):
        raise _invalid(f"Example must be JSON object but got JSON {json_type(value)}")
    example = example_pb2.Example()
    for name, content in value.items():
        if not name.isascii() and not _is_utf8(name):
            raise _invalid(
                f"Feature name {name.encode('utf-8', 'surrogateescape')!r} is not UTF-8: this server holds "
                "tf.Example feature names as text"
            )
        feature = feature_pb2.Feature()
        for item in content if isinstance(content, list) else (content,):
            _add_value(feature, name, item)
        example.features.feature[name].CopyFrom(feature)
    return example


def _add_value(feature: feature_pb2.Feature, name: str, value: Any) -> None:
    """Append ``value`` to ``feature``, whose kind the first value decides (``AddValueToFeature``)."""
    if isinstance(value, bool):
        _same_kind(feature, name, "int64_list")
        feature.int64_list.value.append(int(value))
    elif isinstance(value, int) and _INT64_MIN <= value <= _UINT64_MAX:  # rapidjson's integers
        _same_kind(feature, name, "int64_list")
        if value > _INT64_MAX:
            raise _invalid(f"Feature: {name} has uint64_t element. Only int64_t is supported.")
        feature.int64_list.value.append(value)
    elif isinstance(value, int | float):  # doubles, and integers beyond 64 bits
        _same_kind(feature, name, "float_list")
        with np.errstate(over="ignore"):
            feature.float_list.value.append(float(np.float32(value)))
    elif isinstance(value, str):
        _same_kind(feature, name, "bytes_list")
        feature.bytes_list.value.append(value.encode("utf-8", "surrogateescape"))
    elif isinstance(value, dict) and len(value) == 1 and isinstance(value.get("b64"), str):
        _same_kind(feature, name, "bytes_list")
        feature.bytes_list.value.append(_b64decode(value["b64"]))
    else:  # null, an array inside the list, an object that is not {"b64": "..."}
        raise _invalid(f"Feature: {name} has element with unexpected JSON type: {json_type(value)}")


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:  # bytes that were not UTF-8 in the body, kept as surrogates
        return False
    return True


def _same_kind(feature: feature_pb2.Feature, name: str, kind: str) -> None:
    current = feature.WhichOneof("kind")
    if current is not None and current != kind:
        raise _invalid(f"Unexpected element type in feature: {name} expecting type: {_KIND_NAMES[current]}")


def _b64decode(text: str) -> bytes:
    """Standard base64, padding optional (absl::Base64Unescape)."""
    data = text.encode("utf-8", "surrogateescape")
    try:
        return base64.b64decode(data + b"=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise _invalid("Unable to base64 decode") from None


# ------------------------------------------------------------ Input -> batch


def serialized_examples(request_input: input_pb2.Input) -> list[bytes]:
    """The serialized Examples of ``request_input``, one per example (``InputToSerializedExampleTensor``)."""
    kind = request_input.WhichOneof("kind")
    if kind == "example_list":
        batch = [example.SerializeToString() for example in request_input.example_list.examples]
    elif kind == "example_list_with_context":
        listed = request_input.example_list_with_context
        context = listed.context.SerializeToString()
        batch = [context + example.SerializeToString() for example in listed.examples]
    else:
        batch = []
    if not batch:
        raise _invalid("Input is empty.")
    return batch


# ---------------------------------------------------------------- results


def classification_result(
    classes: npt.NDArray[Any] | None, scores: npt.NDArray[Any] | None
) -> classification_pb2.ClassificationResult:
    """A ClassificationResult from checked ``[batch, k]`` outputs (``PostProcessClassificationResult``):
    a class's label is empty without ``classes``, its score 0 without ``scores``."""
    result = classification_pb2.ClassificationResult()
    shaped = classes if classes is not None else scores
    if shaped is None:
        return result
    for row in range(shaped.shape[0]):
        classifications = result.classifications.add()
        for column in range(shaped.shape[1]):
            entry = classifications.classes.add()
            if classes is not None:
                entry.label = _text(classes[row, column])
            if scores is not None:
                entry.score = float(scores[row, column])
    return result


def regression_result(values: npt.NDArray[Any]) -> regression_pb2.RegressionResult:
    """A RegressionResult, one regression per value of ``values`` (flattened)."""
    result = regression_pb2.RegressionResult()
    for value in np.asarray(values, np.float32).ravel().tolist():
        result.regressions.add(value=value)
    return result


def _text(label: Any) -> str:
    """A class label as proto text (TF Serving copies the bytes; a Python proto string must be UTF-8)."""
    return label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)


def result_json(result: classification_pb2.ClassificationResult | regression_pb2.RegressionResult) -> bytes:
    """TF Serving's JSON answer to a REST :classify or :regress."""
    if isinstance(result, classification_pb2.ClassificationResult):
        return classification_json(result)
    return regression_json(result)


def classification_json(result: classification_pb2.ClassificationResult) -> bytes:
    """TF Serving's JSON of a ClassificationResult: ``{"results": [[["label", score], ...], ...]}``."""
    if not result.classifications:
        raise _invalid("Cannot convert empty ClassificationResults to JSON")
    rows = [
        [[entry.label, _decimal(entry.score)] for entry in classifications.classes]
        for classifications in result.classifications
    ]
    return orjson.dumps({"results": rows})


def regression_json(result: regression_pb2.RegressionResult) -> bytes:
    """TF Serving's JSON of a RegressionResult: ``{"results": [value, ...]}``."""
    if not result.regressions:
        raise _invalid("Cannot convert empty RegressionResults to JSON")
    return orjson.dumps({"results": [_decimal(regression.value) for regression in result.regressions]})


def _decimal(value: float) -> orjson.Fragment:
    """A float32 value as TF Serving's ``WriteDecimal`` writes it: shortest form, NaN and infinities spelled."""
    if math.isfinite(value):
        return orjson.Fragment(orjson.dumps(np.float32(value), option=orjson.OPT_SERIALIZE_NUMPY))
    if value != value:
        return orjson.Fragment(b"NaN")
    return orjson.Fragment(b"Infinity" if value > 0 else b"-Infinity")


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)
