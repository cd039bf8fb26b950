"""TF Serving compatibility over gRPC (tensorflow_model_server_test.py) and with a model config
(serving_config.md); the servers and the sources of each expectation: tests/serving/tfs_compat_kit.py.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)
from tensorflow_serving.config import model_server_config_pb2

from tests.serving.tfs_compat_kit import (
    AVAILABLE,
    NAME,
    RPC_TIMEOUT,
    SIGNATURE_KEYS,
    Server,
    Servers,
    assert_error,
    call,
)

# --- gRPC: tensorflow_model_server_test.py -------------------------------------------------------


@pytest.fixture(scope="module")
def classic_channel(classic: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{classic.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="module")
def configured_channel(configured: Server) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(f"127.0.0.1:{configured.grpc_port}") as channel:
        yield channel


def predict_request(
    name: str = NAME,
    *,
    signature: str = "serving_default",
    output_filter: bool = True,
    batch_input: bool = False,
) -> predict_pb2.PredictRequest:
    """The request of TF Serving's VerifyPredictRequest: x = [2.0] of shape [1] (or [1, 1])."""
    request = predict_pb2.PredictRequest()
    request.model_spec.name = name
    request.model_spec.signature_name = signature
    request.inputs["x"].dtype = types_pb2.DT_FLOAT
    request.inputs["x"].float_val.append(2.0)
    request.inputs["x"].tensor_shape.dim.add().size = 1
    if batch_input:
        request.inputs["x"].tensor_shape.dim.add().size = 1
    if output_filter:
        request.output_filter.append("y")
    return request


def assert_model_spec(spec: Any, name: str, signature: str, version: int) -> None:
    assert (spec.name, spec.signature_name, spec.version.value) == (name, signature, version)


@pytest.mark.parametrize("output_filter", [True, False])
def test_grpc_predict_float_val(classic_channel: grpc.Channel, output_filter: bool) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel)
    result = stub.Predict(predict_request(output_filter=output_filter), RPC_TIMEOUT)
    assert "y" in result.outputs
    assert result.outputs["y"].dtype == types_pb2.DT_FLOAT
    assert list(result.outputs["y"].float_val) == [3.0]
    assert result.outputs["y"].tensor_content == b""
    assert_model_spec(result.model_spec, NAME, "serving_default", 123)


def test_grpc_predict_default_signature_named_in_answer(classic_channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel)
    result = stub.Predict(predict_request(signature=""), RPC_TIMEOUT)
    assert list(result.outputs["y"].float_val) == [3.0]
    assert_model_spec(result.model_spec, NAME, "serving_default", 123)


def test_grpc_get_model_metadata(classic_channel: grpc.Channel) -> None:
    request = get_model_metadata_pb2.GetModelMetadataRequest()
    request.model_spec.name = NAME
    request.metadata_field.append("signature_def")
    stub = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel)
    result = stub.GetModelMetadata(request, RPC_TIMEOUT)
    assert result.model_spec.name == NAME
    assert result.model_spec.version.value == 123
    assert list(result.metadata) == ["signature_def"]
    signature_map = get_model_metadata_pb2.SignatureDefMap()
    assert result.metadata["signature_def"].Unpack(signature_map)
    assert set(signature_map.signature_def) == SIGNATURE_KEYS
    predict = signature_map.signature_def["serving_default"]
    assert isinstance(predict, meta_graph_pb2.SignatureDef)
    assert predict.method_name == "tensorflow/serving/predict"
    assert predict.inputs["x"].name == "x:0" and predict.outputs["y"].name == "y:0"


def test_grpc_get_model_status(classic_channel: grpc.Channel) -> None:
    request = get_model_status_pb2.GetModelStatusRequest()
    request.model_spec.name = NAME
    result = model_service_pb2_grpc.ModelServiceStub(classic_channel).GetModelStatus(
        request, RPC_TIMEOUT
    )
    assert len(result.model_version_status) == 1
    assert result.model_version_status[0].version == 123
    assert result.model_version_status[0].state == AVAILABLE
    assert result.model_version_status[0].status.error_code == 0


def example_input(request: Any, x: float = 2.0) -> None:
    example = request.input.example_list.examples.add()
    assert isinstance(example, example_pb2.Example)
    example.features.feature["x"].float_list.value.extend([x])


def test_grpc_classify(classic_channel: grpc.Channel) -> None:
    request = classification_pb2.ClassificationRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "classify_x_to_y"
    example_input(request)
    result = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel).Classify(
        request, RPC_TIMEOUT
    )
    assert len(result.result.classifications) == 1
    assert len(result.result.classifications[0].classes) == 1
    assert result.result.classifications[0].classes[0].score == 3.0
    assert result.result.classifications[0].classes[0].label == ""
    assert_model_spec(result.model_spec, NAME, "classify_x_to_y", 123)


def test_grpc_regress(classic_channel: grpc.Channel) -> None:
    request = regression_pb2.RegressionRequest()
    request.model_spec.name = NAME
    request.model_spec.signature_name = "regress_x_to_y"
    example_input(request)
    result = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel).Regress(
        request, RPC_TIMEOUT
    )
    assert len(result.result.regressions) == 1
    assert result.result.regressions[0].value == 3.0
    assert_model_spec(result.model_spec, NAME, "regress_x_to_y", 123)


def test_grpc_multi_inference(classic_channel: grpc.Channel) -> None:
    request = inference_pb2.MultiInferenceRequest()
    tasks = [
        ("regress_x_to_y", "tensorflow/serving/regress"),
        ("classify_x_to_y", "tensorflow/serving/classify"),
    ]
    for signature, method in tasks:
        task = request.tasks.add()
        task.model_spec.name = NAME
        task.model_spec.signature_name = signature
        task.method_name = method
    example_input(request)
    stub = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel)
    result = stub.MultiInference(request, RPC_TIMEOUT)
    assert len(result.results) == 2
    assert result.results[0].regression_result.regressions[0].value == 3.0
    assert result.results[1].classification_result.classifications[0].classes[0].score == 3.0
    for answer, (signature, _) in zip(result.results, tasks, strict=True):
        assert_model_spec(answer.model_spec, NAME, signature, 123)


def assert_rpc_error(call_it: Any, code: grpc.StatusCode, text: str) -> None:
    """The call fails with TF Serving's status code, its details starting with TF Serving's text."""
    with pytest.raises(grpc.RpcError) as caught:
        call_it()
    error: Any = caught.value
    assert (error.code(), error.details()[: len(text)]) == (code, text), error.details()


def test_grpc_errors(classic_channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(classic_channel)
    assert_rpc_error(
        lambda: stub.Predict(predict_request("intentionally_missing_model"), RPC_TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        "Servable not found for request: Latest(intentionally_missing_model)",
    )
    request = predict_request()
    request.model_spec.version.value = 999
    assert_rpc_error(
        lambda: stub.Predict(request, RPC_TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        f"Servable not found for request: Specific({NAME}, 999)",
    )
    assert_rpc_error(
        lambda: stub.Predict(predict_request(signature="nope"), RPC_TIMEOUT),
        grpc.StatusCode.FAILED_PRECONDITION,
        'Serving signature key "nope" not found.',
    )
    status_request = get_model_status_pb2.GetModelStatusRequest()
    status_request.model_spec.name = "nope"
    models = model_service_pb2_grpc.ModelServiceStub(classic_channel)
    assert_rpc_error(
        lambda: models.GetModelStatus(status_request, RPC_TIMEOUT),
        grpc.StatusCode.NOT_FOUND,
        "Could not find any versions of model nope",
    )


# --- the configured server: serving_config.md ----------------------------------------------------


def test_ignored_tf_serving_flags_are_accepted(configured: Server) -> None:
    assert configured.process.poll() is None, configured.log.read_text()
    said = configured.log.read_text()
    assert "ignored here: " in said
    for flag in ("--enable_per_model_batching_parameters", "--num_request_iterations_for_warmup",
                 "--xla_gpu_compilation_enabled", "--grpc_channel_arguments"):
        assert flag in said.split("ignored here: ", 1)[1].splitlines()[0], said


def test_rest_versions_answer_their_own_b(configured: Server) -> None:
    one = {"instances": [1.0]}
    assert call(configured, f"/v1/models/{NAME}/versions/123:predict", one) == (
        200,
        {"predictions": [2.5]},
    )
    assert call(configured, f"/v1/models/{NAME}/versions/124:predict", one) == (
        200,
        {"predictions": [3.5]},
    )
    assert call(configured, f"/v1/models/{NAME}:predict", one) == (
        200,
        {"predictions": [3.5]},
    )  # newest


def test_rest_labels(configured: Server) -> None:
    one = {"instances": [1.0]}
    assert call(configured, f"/v1/models/{NAME}/labels/stable:predict", one) == (
        200,
        {"predictions": [2.5]},
    )
    assert call(configured, f"/v1/models/{NAME}/labels/canary:predict", one) == (
        200,
        {"predictions": [3.5]},
    )
    status, answer = call(configured, f"/v1/models/{NAME}/labels/stable/metadata")
    assert (status, answer["model_spec"]["version"]) == (200, "123"), answer
    assert_error(
        call(configured, f"/v1/models/{NAME}/labels/nope:predict", one),
        400,
        "Unrecognized servable version label: nope",
    )


def test_rest_status_of_specific_policy_lists_newest_first(configured: Server) -> None:
    status, answer = call(configured, f"/v1/models/{NAME}")
    assert status == 200, answer
    versions = [(entry["version"], entry["state"]) for entry in answer["model_version_status"]]
    assert versions == [("124", "AVAILABLE"), ("123", "AVAILABLE")]


def test_default_policy_serves_only_the_newest(configured: Server) -> None:
    name = "half_plus_two_latest"
    status, answer = call(configured, f"/v1/models/{name}")
    assert status == 200, answer
    assert [entry["version"] for entry in answer["model_version_status"]] == ["124"]
    assert call(configured, f"/v1/models/{name}:predict", {"instances": [1.0]}) == (
        200,
        {"predictions": [3.5]},
    )
    assert_error(
        call(configured, f"/v1/models/{name}/versions/123:predict", {"instances": [1.0]}),
        404,
        f"Servable not found for request: Specific({name}, 123)",
    )


def test_grpc_label_and_tensor_content(configured_channel: grpc.Channel) -> None:
    stub = prediction_service_pb2_grpc.PredictionServiceStub(configured_channel)
    request = predict_request()
    request.model_spec.version_label = "stable"
    result = stub.Predict(request, RPC_TIMEOUT)
    assert_model_spec(result.model_spec, NAME, "serving_default", 123)
    y = result.outputs["y"]
    assert y.dtype == types_pb2.DT_FLOAT
    assert [dim.size for dim in y.tensor_shape.dim] == [1]
    assert list(y.float_val) == []
    assert np.frombuffer(y.tensor_content, dtype="<f4").tolist() == [3.0]


def test_tf2_model(configured: Server, configured_channel: grpc.Channel) -> None:
    name = "half_plus_two_tf2"
    rows = {"instances": [[1.0], [2.0], [5.0]]}
    assert call(configured, f"/v1/models/{name}:predict", rows) == (
        200,
        {"predictions": [[2.5], [3.0], [4.5]]},
    )
    stub = prediction_service_pb2_grpc.PredictionServiceStub(configured_channel)
    result = stub.Predict(predict_request(name, batch_input=True, output_filter=False), RPC_TIMEOUT)
    assert np.frombuffer(result.outputs["y"].tensor_content, dtype="<f4").tolist() == [3.0]
    assert_model_spec(result.model_spec, name, "serving_default", 123)


def test_grpc_handle_reload_config_request(
    configured: Server, configured_channel: grpc.Channel, servers: Servers
) -> None:
    """Reloading the same config (parsed from TF Serving's text format) is answered OK and changes nothing."""
    from google.protobuf import text_format

    request = model_management_pb2.ReloadConfigRequest()
    request.config.CopyFrom(
        text_format.Parse(servers.config_text, model_server_config_pb2.ModelServerConfig())
    )
    models = model_service_pb2_grpc.ModelServiceStub(configured_channel)
    result = models.HandleReloadConfigRequest(request, RPC_TIMEOUT)
    assert result.status.error_code == 0, result
    assert call(configured, f"/v1/models/{NAME}/labels/stable:predict", {"instances": [1.0]}) == (
        200,
        {"predictions": [2.5]},
    )
