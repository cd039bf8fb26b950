"""Classify, Regress and MultiInference statuses, checked as TF Serving checks signatures.

Sources: tensorflow_serving/servables/tensorflow/classifier.cc
(GetClassificationSignatureDef, PreProcessClassification), regressor.cc
(GetRegressionSignatureDef, PreProcessRegression), multi_inference.cc
(TensorFlowMultiInferenceRunner::Infer), util/json_tensor.cc
(FillClassifyRegressRequestFromJson).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tensorflow_serving.apis import get_model_metadata_pb2

from serving.inference import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    Method,
    check_examples_body,
    classify_or_regress,
    multi_inference,
)
from serving.servable import Servable, Signature
from serving.status import Code, RequestError
from serving.tensors import DType, TensorSpec

PREDICT_METHOD = "tensorflow/serving/predict"


def spec(alias: str, dtype: DType = DType.DT_FLOAT) -> TensorSpec:
    return TensorSpec(alias, dtype, (-1,))


def servable(*signatures: Signature) -> Servable:
    defs = get_model_metadata_pb2.SignatureDefMap()
    for signature in signatures:
        definition = defs.signature_def[signature.name]
        definition.method_name = signature.method_name
        for alias in signature.inputs:
            definition.inputs[alias].name = f"{alias}:0"
        for alias in signature.outputs:
            definition.outputs[alias].name = f"{alias}:0"
    return Servable("m", 1, Path("/m/1"), {s.name: s for s in signatures}, defs)


PREDICT = Signature("serving_default", {"input_image": spec("input_image")}, {"probabilities": spec("probabilities")}, PREDICT_METHOD)
CLASSIFY = Signature(
    "classify", {"inputs": spec("inputs", DType.DT_STRING)}, {"classes": spec("classes"), "scores": spec("scores")}, CLASSIFY_METHOD
)
REGRESS = Signature("regress", {"inputs": spec("inputs", DType.DT_STRING)}, {"outputs": spec("outputs")}, REGRESS_METHOD)
TWO_INPUTS = Signature("two", {"a": spec("a"), "b": spec("b")}, {"scores": spec("scores")}, PREDICT_METHOD)
MODEL = servable(PREDICT, CLASSIFY, REGRESS, TWO_INPUTS)


def refusal(method: Method, signature: str, *, check: bool = False) -> RequestError:
    with pytest.raises(RequestError) as caught:
        classify_or_regress(MODEL, method, signature, check_method_name=check)
    return caught.value


@pytest.mark.parametrize(
    ("method", "signature", "check", "code", "message"),
    [
        # TF Serving's default: the structural checks of PreProcessClassification/Regression
        ("classify", "", False, Code.INVALID_ARGUMENT, "No classification inputs found in SignatureDef: "),
        ("regress", "", False, Code.INVALID_ARGUMENT, "No regression inputs found in SignatureDef: "),
        ("classify", "two", False, Code.INVALID_ARGUMENT, "Expected one input Tensor."),
        ("regress", "classify", False, Code.INVALID_ARGUMENT, "Expected one output Tensor."),
        ("classify", "regress", False, Code.INVALID_ARGUMENT, 'Expected classification signature outputs to contain at least one of "classes" or "scores"'),
        ("classify", "nope", False, Code.INVALID_ARGUMENT, "No signature was found with the name: nope"),
        # --enable_signature_method_name_check
        ("classify", "", True, Code.INVALID_ARGUMENT,
         "Expected classification signature method_name to be tensorflow/serving/classify. Was: tensorflow/serving/predict"),
        ("regress", "classify", True, Code.INVALID_ARGUMENT,
         "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/classify"),
        # a real classify/regress signature passes TF Serving's checks: this server cannot run it
        ("classify", "classify", True, Code.UNIMPLEMENTED, "runs predict signatures only"),
        ("regress", "regress", False, Code.UNIMPLEMENTED, "runs predict signatures only"),
    ],
)
def test_classify_and_regress_refusals(method: Method, signature: str, check: bool, code: Code, message: str) -> None:
    error = refusal(method, signature, check=check)
    assert error.code is code
    assert error.message.startswith(message) if code is Code.INVALID_ARGUMENT else message in error.message


def test_the_signature_is_quoted_as_text() -> None:
    message = refusal("classify", "").message
    assert 'method_name: "tensorflow/serving/predict"' in message
    assert 'key: "input_image"' in message


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        ([("m", "", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT, "No classification inputs found in SignatureDef"),
        ([("m", "classify", CLASSIFY_METHOD), ("m", "regress", REGRESS_METHOD)], Code.UNIMPLEMENTED, "runs predict signatures only"),
        ([("m", "", PREDICT_METHOD)], Code.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"),
        ([("", "", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT, "Found ModelSpec with an empty model name."),
        ([("m", "classify", CLASSIFY_METHOD), ("x", "regress", REGRESS_METHOD)], Code.INVALID_ARGUMENT,
         "All ModelSpecs in a MultiInferenceRequest must access the same model name."),
        ([("m", "classify", CLASSIFY_METHOD), ("m", "classify", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT,
         "Duplicate evaluation of signature: classify"),
        ([("m", "gone", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT, "Requested signature not found in model graph: gone"),
    ],
)
def test_multi_inference_refusals(tasks: list[tuple[str, str, str]], code: Code, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        multi_inference(tasks, lambda: MODEL, check_method_name=False)
    assert caught.value.code is code
    assert message in caught.value.message


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
    ],
)
def test_examples_bodies_are_read_as_tf_serving_reads_them(body: bytes, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        check_examples_body(body)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert message in caught.value.message


def test_a_good_examples_body_names_its_signature() -> None:
    assert check_examples_body(b'{"signature_name": "s", "context": {}, "examples": [{"x": [NaN]}]}') == "s"
    assert check_examples_body(b'{"examples": [{"x": 1}]}') == ""
