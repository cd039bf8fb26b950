"""Classify, Regress and MultiInference: signatures checked, run and answered as TF Serving does.

Sources: tensorflow_serving/servables/tensorflow/classifier.cc
(GetClassificationSignatureDef, PreProcessClassification, PostProcessClassificationResult),
regressor.cc (GetRegressionSignatureDef, PreProcessRegression, PostProcessRegressionResult),
multi_inference.cc (TensorFlowMultiInferenceRunner::Infer), and the values
model_servers/tensorflow_model_server_test.py expects of half_plus_two (y = 0.5*x + 2) over gRPC
and REST (testClassify, testRegress, testMultiInference, testClassifyREST, testRegressREST).
"""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import text_format
from tensorflow.core.example import example_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    inference_pb2,
    input_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.examples import examples_body, result_json
from serving.inference import (
    CLASSIFY_METHOD,
    REGRESS_METHOD,
    Method,
    classify_or_regress,
    examples_signature,
    plan_multi_inference,
    run_multi_inference,
)
from serving.servable import Servable, Signature, load_servable
from serving.status import Code, RequestError
from serving.tensors import DType, TensorSpec
from tests.serving.conftest import RunningServer, free_port, http_call, serving
from tests.serving.half_plus_two import export_half_plus_two

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
        examples_signature(MODEL, method, signature, check_method_name=check)
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
    ],
)
def test_classify_and_regress_refusals(method: Method, signature: str, check: bool, code: Code, message: str) -> None:
    error = refusal(method, signature, check=check)
    assert error.code is code
    assert error.message.startswith(message)


@pytest.mark.parametrize(("method", "signature", "check"), [("classify", "classify", True), ("regress", "regress", False)])
def test_a_classify_or_regress_signature_passes_the_checks(method: Method, signature: str, check: bool) -> None:
    assert examples_signature(MODEL, method, signature, check_method_name=check) is MODEL.signatures[signature]


def test_the_signature_is_quoted_as_text() -> None:
    message = refusal("classify", "").message
    assert 'method_name: "tensorflow/serving/predict"' in message
    assert 'key: "input_image"' in message


@pytest.mark.parametrize(
    ("tasks", "code", "message"),
    [
        ([("m", "", CLASSIFY_METHOD)], Code.INVALID_ARGUMENT, "No classification inputs found in SignatureDef"),
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
        plan_multi_inference(tasks, lambda: MODEL, check_method_name=False)
    assert caught.value.code is code
    assert message in caught.value.message


def test_multi_inference_tasks_that_pass_the_checks_are_planned() -> None:
    servable, tasks = plan_multi_inference(
        [("m", "classify", CLASSIFY_METHOD), ("m", "regress", REGRESS_METHOD)], lambda: MODEL, check_method_name=True
    )
    assert servable is MODEL
    assert [(t.model_name, t.signature_name, t.method, t.signature.name) for t in tasks] == [
        ("m", "classify", "classify", "classify"),
        ("m", "regress", "regress", "regress"),
    ]


# ------------------------------------------------------------ outputs checked as TF Serving checks them


def inputs_of(*examples: dict[str, Any]) -> input_pb2.Input:
    return examples_body(json.dumps({"examples": list(examples)}).encode())[1]


def producing(outputs: dict[str, Any], seen: list[Any] | None = None) -> Callable[..., dict[str, Any]]:
    """A signature function that answers ``outputs`` whatever it is fed (and notes what it was fed)."""

    def function(**inputs: Any) -> dict[str, Any]:
        if seen is not None:
            seen.append(inputs)
        return outputs

    return function


def runnable(method: Method, outputs: dict[str, Any], seen: list[Any] | None = None) -> Servable:
    aliases = ("classes", "scores") if method == "classify" else ("outputs",)
    signature = Signature(
        "s",
        {"inputs": spec("inputs", DType.DT_STRING)},
        {alias: spec(alias) for alias in aliases if alias in outputs or method == "regress"},
        CLASSIFY_METHOD if method == "classify" else REGRESS_METHOD,
        producing(outputs, seen),
    )
    return servable(signature)


STRINGS = np.array([[b"a", b"b"]], dtype=object)


@pytest.mark.parametrize(
    ("method", "outputs", "message"),
    [
        ("classify", {"classes": np.zeros((1, 2), np.float32)}, "Expected classes Tensor of DT_STRING. Got: DT_FLOAT"),
        ("classify", {"scores": np.zeros((1, 2), np.int64)}, "Expected scores Tensor of DT_FLOAT. Got: DT_INT64"),
        ("classify", {"scores": np.zeros(1, np.float32)}, "Expected Tensor shape: [batch_size num_classes] but got [1]"),
        ("classify", {"classes": np.array([b"a"], dtype=object)}, "Expected Tensor shape: [batch_size num_classes] but got [1]"),
        ("classify", {"scores": np.zeros((2, 1), np.float32)}, "Expected scores output batch size of 1. Got: 2"),
        ("classify", {"classes": np.array([[b"a"], [b"b"]], dtype=object)}, "Expected classes output batch size of 1. Got: 2"),
        ("classify", {"classes": STRINGS, "scores": np.zeros((1, 3), np.float32)},
         "Tensors class and score should match in dim_size(1). Got 2 vs. 3"),
        ("regress", {"outputs": np.zeros((1, 2), np.float32)},
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got [1,2]"),
        ("regress", {"outputs": np.float32(1.0)},
         "Expected output Tensor shape to be either [batch_size] or [batch_size, 1] but got []"),
        ("regress", {"outputs": np.zeros(2, np.float32)}, "Input batch size did not match output batch size: 1 vs. 2"),
        ("regress", {"outputs": np.zeros((1, 1), np.float64)}, "Expected output Tensor of DT_FLOAT.  Got: DT_DOUBLE"),
        ("regress", {"outputs": np.array([b"x"], dtype=object)}, "Expected output Tensor of DT_FLOAT.  Got: DT_STRING"),
    ],
)
def test_outputs_tf_serving_would_not_convert_are_refused(method: Method, outputs: dict[str, Any], message: str) -> None:
    with pytest.raises(RequestError) as caught:
        classify_or_regress(runnable(method, outputs), method, "s", inputs_of({"x": 1.0}), check_method_name=True)
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, message)


def test_the_signature_is_fed_the_serialized_examples_as_one_string_vector() -> None:
    seen: list[Any] = []
    model = runnable("classify", {"classes": np.array([[b"a", b"b"]] * 2, dtype=object),
                                  "scores": np.array([[0.25, 0.75], [1.0, 0.0]], np.float32)}, seen)
    request_input = inputs_of({"x": 1.0}, {"x": [2, 3]})
    result, seconds = classify_or_regress(model, "classify", "s", request_input, check_method_name=False)
    (fed,) = seen
    assert list(fed) == ["inputs"]
    assert fed["inputs"].dtype.name == "string" and fed["inputs"].shape == (2,)
    assert list(fed["inputs"].numpy()) == [e.SerializeToString() for e in request_input.example_list.examples]
    assert seconds >= 0
    assert json.loads(result_json(result)) == {"results": [[["a", 0.25], ["b", 0.75]], [["a", 1.0], ["b", 0.0]]]}


def test_a_signature_with_no_function_to_run_is_a_failed_precondition() -> None:
    with pytest.raises(RequestError) as caught:
        classify_or_regress(MODEL, "regress", "regress", inputs_of({"x": 1.0}), check_method_name=False)
    assert caught.value.code is Code.FAILED_PRECONDITION


# ------------------------------------------------------------ half_plus_two, as TF Serving's tests run it

NAME = "half_plus_two"


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two (tf1 style), version 123, y = 0.5*x + 2."""
    return export_half_plus_two(tmp_path_factory.mktemp("inference") / NAME)


@pytest.fixture(scope="module")
def hp2(exported: Path) -> Servable:
    return load_servable(NAME, 123, exported / "00000123")


def run(model: Servable, method: Method, signature: str, body: dict[str, Any], *, check: bool = False) -> Any:
    _, request_input = examples_body(json.dumps(body).encode())
    result, _ = classify_or_regress(model, method, signature, request_input, check_method_name=check)
    return json.loads(result_json(result))


@pytest.mark.parametrize("check", [False, True])
def test_half_plus_two_classifies_and_regresses(hp2: Servable, check: bool) -> None:
    assert run(hp2, "classify", "classify_x_to_y", {"examples": [{"x": 2.0}]}, check=check) == {"results": [[["", 3.0]]]}
    assert run(hp2, "regress", "regress_x_to_y", {"examples": [{"x": 2.0}]}, check=check) == {"results": [3.0]}
    assert run(hp2, "regress", "regress_x_to_y", {"examples": [{"x": 1.0}, {"x": [4.0]}]}) == {"results": [2.5, 4.0]}
    # y2 = 0.5*x + 3; each example's x over the context's
    body = {"context": {"x": 4.0}, "examples": [{}, {"x": 2.0}]}
    assert run(hp2, "regress", "regress_x_to_y2", body, check=check) == {"results": [5.0, 4.0]}


@pytest.mark.parametrize(
    ("method", "signature", "body", "check", "message"),
    [
        ("regress", "classify_x_to_y", {"examples": [{"x": 2.0}]}, True,
         "Expected regression signature method_name to be tensorflow/serving/regress. Was: tensorflow/serving/classify"),
        ("regress", "classify_x_to_y", {"examples": [{"x": 2.0}]}, False, "No regression outputs found in SignatureDef: "),
        ("classify", "", {"examples": [{"x": 2.0}]}, False, "No classification inputs found in SignatureDef: "),
        # TensorFlow's own words from the model: an int64 x, a missing x
        ("regress", "regress_x_to_y", {"examples": [{"x": 2}]}, False, "Data types don't match. Data type: int64 but expected type: float"),
        ("regress", "regress_x_to_y", {"examples": [{"y": 2.0}]}, False, "Feature: x (data type: float) is required but could not be found."),
    ],
)
def test_half_plus_two_refusals(hp2: Servable, method: Method, signature: str, body: dict[str, Any], check: bool, message: str) -> None:
    with pytest.raises(RequestError) as caught:
        run(hp2, method, signature, body, check=check)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert message in caught.value.message


def test_half_plus_two_multi_inference(hp2: Servable) -> None:
    model, tasks = plan_multi_inference(
        [(NAME, "regress_x_to_y", REGRESS_METHOD), (NAME, "classify_x_to_y", CLASSIFY_METHOD), (NAME, "regress_x_to_y2", REGRESS_METHOD)],
        lambda: hp2,
        check_method_name=True,
    )
    response = run_multi_inference(model, tasks, inputs_of({"x": 2.0}))
    assert [r.WhichOneof("result") for r in response.results] == ["regression_result", "classification_result", "regression_result"]
    assert response.results[0].regression_result.regressions[0].value == 3.0
    assert response.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert response.results[2].regression_result.regressions[0].value == 4.0
    assert [(r.model_spec.name, r.model_spec.signature_name, r.model_spec.version.value) for r in response.results] == [
        (NAME, "regress_x_to_y", 123), (NAME, "classify_x_to_y", 123), (NAME, "regress_x_to_y2", 123)
    ]
    with pytest.raises(RequestError) as caught:  # checked tasks first, then the input
        run_multi_inference(model, tasks, input_pb2.Input())
    assert (caught.value.code, caught.value.message) == (Code.INVALID_ARGUMENT, "Input is empty.")


# ------------------------------------------------------------ over the wire: a real server


@pytest.fixture(scope="module")
def hp2_server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    log = tmp_path_factory.mktemp("inference-server") / "server.log"
    flags = [f"--model_name={NAME}", f"--model_base_path={exported}", f"--port={free_port()}", f"--rest_api_port={free_port()}"]
    with serving(flags, {}, log) as running:
        yield running


def rest(server: RunningServer, verb: str, body: Any) -> tuple[int, Any]:
    return http_call(server, "POST", f"/v1/models/{NAME}:{verb}", json.dumps(body).encode())


@pytest.mark.parametrize(
    ("verb", "body", "expected"),
    [
        ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}, (200, {"results": [[["", 3.0]]]})),
        ("regress", {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}, (200, {"results": [3.0]})),
        ("regress", {"signature_name": "regress_x_to_y2", "context": {"x": 1.0}, "examples": [{}, {"x": 2.0}]},
         (200, {"results": [3.5, 4.0]})),
        ("regress", {"signature_name": "nope", "examples": [{"x": 2.0}]}, (400, {"error": "No signature was found with the name: nope"})),
        ("classify", {"signature_name": "classify_x_to_y", "examples": [{"x": [1.0, "a"]}]},
         (400, {"error": "Unexpected element type in feature: x expecting type: float"})),
    ],
)
def test_rest_classify_and_regress(hp2_server: RunningServer, verb: str, body: Any, expected: tuple[int, Any]) -> None:
    assert rest(hp2_server, verb, body) == expected


@pytest.fixture(scope="module")
def stub(hp2_server: RunningServer) -> Iterator[prediction_service_pb2_grpc.PredictionServiceStub]:
    with grpc.insecure_channel(hp2_server.grpc_target) as channel:
        yield prediction_service_pb2_grpc.PredictionServiceStub(channel)


def with_x(message: Any, signature: str, x: float = 2.0) -> Any:
    message.model_spec.name = NAME
    message.model_spec.signature_name = signature
    example = message.input.example_list.examples.add()
    example.features.feature["x"].float_list.value.extend([x])
    return message


def test_grpc_classify_regress_and_multi_inference(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, hp2_server: RunningServer
) -> None:
    classified = stub.Classify(with_x(classification_pb2.ClassificationRequest(), "classify_x_to_y"), timeout=30)
    assert [[(c.label, c.score) for c in row.classes] for row in classified.result.classifications] == [[("", 3.0)]]
    assert text_format.MessageToString(classified.model_spec, as_one_line=True) == (
        'name: "half_plus_two" version { value: 123 } signature_name: "classify_x_to_y"'
    )
    regressed = stub.Regress(with_x(regression_pb2.RegressionRequest(), "regress_x_to_y"), timeout=30)
    assert [r.value for r in regressed.result.regressions] == [3.0]
    assert (regressed.model_spec.signature_name, regressed.model_spec.version.value) == ("regress_x_to_y", 123)
    multi = inference_pb2.MultiInferenceRequest()
    for signature, method in (("regress_x_to_y", REGRESS_METHOD), ("classify_x_to_y", CLASSIFY_METHOD)):
        task = multi.tasks.add(method_name=method)
        task.model_spec.name = NAME
        task.model_spec.signature_name = signature
    multi.input.example_list.examples.add().CopyFrom(example_pb2.Example())
    multi.input.example_list.examples[0].features.feature["x"].float_list.value.append(2.0)
    answered = stub.MultiInference(multi, timeout=30)
    assert answered.results[0].regression_result.regressions[0].value == 3.0
    assert answered.results[1].classification_result.classifications[0].classes[0].score == 3.0
    assert [r.model_spec.signature_name for r in answered.results] == ["regress_x_to_y", "classify_x_to_y"]
    from prometheus_client.parser import text_string_to_metric_families

    with urllib.request.urlopen(f"{hp2_server.rest}/monitoring/prometheus/metrics", timeout=30) as page:
        families = {f.name: f for f in text_string_to_metric_families(page.read().decode())}
    runtimes = {s.labels["API"] for s in families[":tensorflow:serving:runtime_latency"].samples}
    assert {"Classify", "Regress"} <= runtimes


@pytest.mark.parametrize(
    ("call", "message", "code", "details"),
    [
        ("Regress", regression_pb2.RegressionRequest(model_spec={"name": NAME, "signature_name": "regress_x_to_y"}),
         grpc.StatusCode.INVALID_ARGUMENT, "Input is empty."),
        ("Classify", with_x(classification_pb2.ClassificationRequest(), ""),
         grpc.StatusCode.INVALID_ARGUMENT, "No classification inputs found in SignatureDef: "),
        ("MultiInference", inference_pb2.MultiInferenceRequest(),
         grpc.StatusCode.INVALID_ARGUMENT, "ModelSpec has no name specified."),  # no tasks: the default spec
    ],
)
def test_grpc_refusals(
    stub: prediction_service_pb2_grpc.PredictionServiceStub, call: str, message: Any, code: Any, details: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        getattr(stub, call)(message, timeout=30)
    assert caught.value.code() == code
    assert caught.value.details().startswith(details)


def test_grpc_regress_answers_nan_for_nan(stub: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    answer = stub.Regress(with_x(regression_pb2.RegressionRequest(), "regress_x_to_y", float("nan")), timeout=30)
    assert np.isnan(answer.result.regressions[0].value)
