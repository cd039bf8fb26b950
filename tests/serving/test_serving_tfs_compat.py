"""TF Serving compatibility: the exchanges TF Serving documents, replayed against our server.

Each expectation comes from TF Serving's own documentation and tests, not from our implementation:
``g3doc/api_rest.md`` and ``g3doc/docker.md`` (REST: ``{"instances": [1.0, 2.0, 5.0]}`` ->
``{"predictions": [2.5, 3.0, 4.5]}``, status and metadata answers, ``{"error": ...}`` bodies),
``g3doc/serving_config.md`` (model config file, version policies, version labels),
``model_servers/tensorflow_model_server_test.py`` (gRPC Predict/Classify/Regress/MultiInference/
GetModelMetadata/GetModelStatus on half_plus_two, REST classify/regress ``{"results": ...}``), and
the error texts and HTTP statuses of TF Serving's sources (``Servable not found for request:
Latest(half)`` -> 404, ``JSON Parse error: ...`` -> 400, NOT_FOUND -> 404, INVALID_ARGUMENT and
FAILED_PRECONDITION -> 400).

Two servers run for the whole module, started together:

* ``classic``: ``--model_name=half_plus_two --model_base_path=<one version, 00000123, b=2>``, TF
  Serving's documented example.
* ``configured``: ``--model_config_file`` in TF Serving's text format serving ``half_plus_two``
  (versions 123 with b=2 and 124 with b=3, a ``specific`` version policy and labels ``stable`` ->
  123, ``canary`` -> 124), ``half_plus_two_latest`` (the same two versions under the default
  policy, which serves only the newest) and ``half_plus_two_tf2`` (a TF2 ``tf.Module`` export);
  with ``--allow_version_labels_for_unavailable_models=true`` (TF Serving assigns a starting
  config's labels before it loads anything), ``--enable_serialization_as_tensor_content=true`` and
  TF Serving flags this server accepts and ignores.

Error messages are compared by prefix: TF Serving's text first, then, if anything, this server's
advice on what to do.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf import json_format
from tensorflow.core.example import example_pb2
from tensorflow.core.framework import types_pb2
from tensorflow.core.protobuf import meta_graph_pb2, saved_model_pb2
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

from tests.serving.conftest import free_port, start_server, wait_for_port

RPC_TIMEOUT = 20.0
HTTP_TIMEOUT = 20.0
NAME = "half_plus_two"
SIGNATURE_KEYS = {
    "serving_default",
    "classify_x_to_y",
    "regress_x_to_y",
    "regress_x_to_y2",
    "regress_x2_to_y3",
}
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


@dataclass(frozen=True)
class Server:
    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"


@dataclass(frozen=True)
class Servers:
    """Both servers, started together (so that they load meanwhile); each fixture below awaits its own."""

    classic: Server
    configured: Server
    store: Path
    config_text: str


def config_text(store: Path) -> str:
    """A ModelServerConfig in TF Serving's text format (g3doc/serving_config.md)."""
    return f"""
model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{store / "half_plus_two"}"
    model_platform: "tensorflow"
    model_version_policy {{
      specific {{
        versions: 123
        versions: 124
      }}
    }}
    version_labels {{
      key: "stable"
      value: 123
    }}
    version_labels {{
      key: "canary"
      value: 124
    }}
  }}
  config {{
    name: "half_plus_two_latest"
    base_path: "{store / "half_plus_two"}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "half_plus_two_tf2"
    base_path: "{store / "half_plus_two_tf2"}"
    model_platform: "tensorflow"
  }}
}}
"""


def version_dir(base: Path, version: int) -> Path:
    """The directory of ``version`` under ``base`` (TF Serving's test data names it 00000123)."""
    return next(
        path for path in base.iterdir() if path.name.isdigit() and int(path.name) == version
    )


@pytest.fixture(scope="module")
def servers(
    half_plus_two_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("tfs-compat")
    one_version = work / "half_plus_two_one"
    first = version_dir(half_plus_two_store / NAME, 123)
    shutil.copytree(first, one_version / first.name)
    config = config_text(half_plus_two_store)
    (work / "models.config").write_text(config)
    flags = [
        [f"--model_name={NAME}", f"--model_base_path={one_version}"],
        [
            f"--model_config_file={work / 'models.config'}",
            # TF Serving assigns labels before it loads anything: labels in the config a server
            # starts with need this flag (serving_config.md; server_core.cc UpdateModelVersionLabelMap).
            "--allow_version_labels_for_unavailable_models=true",
            "--enable_serialization_as_tensor_content=true",
            "--enable_per_model_batching_parameters",
            "--num_request_iterations_for_warmup=1",
            "--xla_gpu_compilation_enabled=false",
            "--rest_api_timeout_in_ms=5000",
            "--grpc_channel_arguments=grpc.so_reuseaddr=1",
        ],
    ]
    started: list[Server] = []
    try:
        for index, extra in enumerate(flags):
            grpc_port, rest_port, log = free_port(), free_port(), work / f"server{index}.log"
            process = start_server(
                [*extra, f"--port={grpc_port}", f"--rest_api_port={rest_port}"], {}, log
            )
            started.append(Server(process, grpc_port, rest_port, log))
        yield Servers(started[0], started[1], half_plus_two_store, config)
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in started:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture(scope="module")
def classic(servers: Servers) -> Server:
    wait_for_port(
        servers.classic.process, servers.classic.grpc_port, servers.classic.log, timeout=90
    )
    return servers.classic


@pytest.fixture(scope="module")
def configured(servers: Servers) -> Server:
    wait_for_port(
        servers.configured.process, servers.configured.grpc_port, servers.configured.log, timeout=90
    )
    return servers.configured


def call(
    server: Server, path: str, body: object = None, *, raw: bytes | None = None
) -> tuple[int, Any]:
    """GET (no body) or POST ``path``; the HTTP status and the JSON answer, errors included."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(
        server.rest + path, data=data, method="GET" if data is None else "POST"
    )
    try:
        with urllib.request.urlopen(request, timeout=HTTP_TIMEOUT) as response:
            assert response.headers.get_content_type() == "application/json"
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        text = error.read()
        assert error.headers.get_content_type() == "application/json", text
        return error.code, json.loads(text)


def error_of(answer: Any) -> str:
    """TF Serving answers every error as ``{"error": <message>}`` and nothing else."""
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    message: str = answer["error"]
    return message


def assert_error(result: tuple[int, Any], status: int, text: str) -> None:
    """An error answer with TF Serving's HTTP status whose message starts with TF Serving's text
    (what follows, if anything, is this server's advice on what to do)."""
    code, answer = result
    message = error_of(answer)
    assert (code, message[: len(text)]) == (status, text), message


# --- REST: api_rest.md, docker.md and tensorflow_model_server_test.py ---------------------------


def test_rest_predict_row_format_docker_example(classic: Server) -> None:
    assert call(classic, f"/v1/models/{NAME}:predict", {"instances": [1.0, 2.0, 5.0]}) == (
        200,
        {"predictions": [2.5, 3.0, 4.5]},
    )
    assert call(classic, f"/v1/models/{NAME}:predict", {"instances": [2.0, 3.0, 4.0]}) == (
        200,
        {"predictions": [3.0, 3.5, 4.0]},
    )


def test_rest_predict_columnar_format(classic: Server) -> None:
    assert call(classic, f"/v1/models/{NAME}:predict", {"inputs": [2.0, 3.0, 4.0]}) == (
        200,
        {"outputs": [3.0, 3.5, 4.0]},
    )
    assert call(classic, f"/v1/models/{NAME}:predict", {"inputs": {"x": [[1.0], [5.0]]}}) == (
        200,
        {"outputs": [[2.5], [4.5]]},
    )


def test_rest_predict_two_dimensional_and_named_rows(classic: Server) -> None:
    rows = {"signature_name": "serving_default", "instances": [[1.0], [2.0], [5.0]]}
    assert call(classic, f"/v1/models/{NAME}:predict", rows) == (
        200,
        {"predictions": [[2.5], [3.0], [4.5]]},
    )
    named = {"instances": [{"x": [1.0]}, {"x": [5.0]}]}
    assert call(classic, f"/v1/models/{NAME}:predict", named) == (
        200,
        {"predictions": [[2.5], [4.5]]},
    )


def test_rest_predict_on_explicit_version(classic: Server) -> None:
    assert call(classic, f"/v1/models/{NAME}/versions/123:predict", {"instances": [1.0]}) == (
        200,
        {"predictions": [2.5]},
    )


def test_rest_classify_and_regress(classic: Server) -> None:
    classify = {"signature_name": "classify_x_to_y", "examples": [{"x": 2.0}]}
    assert call(classic, f"/v1/models/{NAME}:classify", classify) == (
        200,
        {"results": [[["", 3.0]]]},
    )
    regress = {"signature_name": "regress_x_to_y", "examples": [{"x": 2.0}]}
    assert call(classic, f"/v1/models/{NAME}:regress", regress) == (200, {"results": [3.0]})
    regress2 = {"signature_name": "regress_x_to_y2", "examples": [{"x": 1.0}, {"x": 2.0}]}
    assert call(classic, f"/v1/models/{NAME}:regress", regress2) == (200, {"results": [3.5, 4.0]})


def test_rest_model_status(classic: Server) -> None:
    expected = {
        "model_version_status": [
            {
                "version": "123",
                "state": "AVAILABLE",
                "status": {"error_code": "OK", "error_message": ""},
            }
        ]
    }
    assert call(classic, f"/v1/models/{NAME}") == (200, expected)
    assert call(classic, f"/v1/models/{NAME}/versions/123") == (200, expected)


def signature_defs_json(version_dir: Path) -> dict[str, Any]:
    """The SavedModel's signature defs in proto3 JSON, as TF Serving prints them (default fields too)."""
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((version_dir / "saved_model.pb").read_bytes())
    return {
        key: json_format.MessageToDict(
            value, preserving_proto_field_name=True, always_print_fields_with_no_presence=True
        )
        for key, value in saved.meta_graphs[0].signature_def.items()
    }


def test_rest_model_metadata(classic: Server, servers: Servers) -> None:
    status, answer = call(classic, f"/v1/models/{NAME}/metadata")
    assert status == 200, answer
    assert set(answer) == {"model_spec", "metadata"}
    assert answer["model_spec"] == {"name": NAME, "signature_name": "", "version": "123"}
    assert set(answer["metadata"]) == {"signature_def"}
    assert set(answer["metadata"]["signature_def"]) == {"signature_def"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    assert set(signatures) == SIGNATURE_KEYS
    assert signatures == signature_defs_json(version_dir(servers.store / NAME, 123))


def test_rest_unknown_model_is_404(classic: Server) -> None:
    assert_error(
        call(classic, "/v1/models/half:predict", {"instances": [1.0, 5.0]}),
        404,
        "Servable not found for request: Latest(half)",
    )
    assert_error(call(classic, "/v1/models/half"), 404, "Could not find any versions of model half")
    assert_error(
        call(classic, "/v1/models/half/metadata"),
        404,
        "Servable not found for request: Latest(half)",
    )


def test_rest_unknown_version_is_404(classic: Server) -> None:
    assert_error(
        call(classic, f"/v1/models/{NAME}/versions/999:predict", {"instances": [1.0]}),
        404,
        f"Servable not found for request: Specific({NAME}, 999)",
    )
    assert_error(
        call(classic, f"/v1/models/{NAME}/versions/999"),
        404,
        f"Could not find version 999 of model {NAME}",
    )


def test_rest_malformed_json_is_400(classic: Server) -> None:
    """TF Serving: ``JSON Parse error: <parser's reason> at offset: <byte>``; the reason's wording is
    the parser's own, the form and the offset are TF Serving's."""
    for body, offset in (
        (b'{"instances": [1.0, 2.0', 23),
        (b'{"instances": [1.0, 2.0]', 24),
        (b'{"instances": [1.0,]}', 19),
    ):
        status, answer = call(classic, f"/v1/models/{NAME}:predict", raw=body)
        message = error_of(answer)
        assert status == 400, message
        assert message.startswith("JSON Parse error: ") and f" at offset: {offset}" in message, (
            body,
            message,
        )
    # urllib sends an empty body as a POST with Content-Length: 0
    assert_error(
        call(classic, f"/v1/models/{NAME}:predict", raw=b""),
        400,
        "JSON Parse error: The document is empty",
    )


def test_rest_missing_or_doubled_key_is_400(classic: Server) -> None:
    assert_error(
        call(classic, f"/v1/models/{NAME}:predict", {"signature_name": "serving_default"}),
        400,
        "Missing 'inputs' or 'instances' key",
    )
    status, answer = call(
        classic, f"/v1/models/{NAME}:predict", {"instances": [1.0], "inputs": [1.0]}
    )
    assert status == 400
    assert "expecting only one of 'inputs' or 'instances' keys to exist" in error_of(answer)


def test_rest_wrong_type_is_400(classic: Server) -> None:
    assert_error(
        call(classic, f"/v1/models/{NAME}:predict", {"instances": ["a", "b"]}),
        400,
        'JSON Value: "a" Type: String is not of expected type: float',
    )


def test_rest_unknown_signature_is_400(classic: Server) -> None:
    assert_error(
        call(classic, f"/v1/models/{NAME}:predict", {"signature_name": "nope", "instances": [1.0]}),
        400,
        'Serving signature name: "nope" not found in signature def',
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
