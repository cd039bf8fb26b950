"""A server's life: hot swap to a new version, a graceful SIGTERM mid-request, and a --model_config_file
serving two models through label moves, a removed model, a bad file and HandleReloadConfigRequest."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest

from tests.serving.conftest import free_port, port_open, start_server, wait_for_port


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_hot_swap_then_graceful_shutdown(tmp_path: Path, serving_store: Path) -> None:
    base = tmp_path / "models" / "m"
    shutil.copytree(serving_store / "resnet50" / "1", base / "1")
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    process = start_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--file_system_poll_wait_seconds=1",
        ],
        {},
        log,
    )
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        wait_for_port(process, grpc_port, log)
        assert port_open(rest_port)  # REST opens before gRPC
        assert get(f"{rest}/canary/v1/models/m")["canary_model"]["seed"] == 50

        shutil.copytree(serving_store / "resnet101" / "1", base / ".incoming")  # not a version name
        (base / ".incoming").rename(base / "2")  # a new version appears whole
        deadline = time.monotonic() + 30
        states: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            status = get(f"{rest}/v1/models/m")
            states = [(s["version"], s["state"]) for s in status["model_version_status"]]
            if states == [("2", "AVAILABLE"), ("1", "END")]:
                break
            time.sleep(0.1)
        assert states == [("2", "AVAILABLE"), ("1", "END")], log.read_text()
        metadata = get(f"{rest}/v1/models/m/metadata")
        assert metadata["model_spec"]["version"] == "2"
        assert set(metadata["metadata"]) == {"signature_def"}  # TF Serving's answer, nothing added
        assert get(f"{rest}/canary/v1/models/m")["canary_model"]["seed"] == 101

        # A slow request (8 photos' worth of JSON) is answered even though SIGTERM arrives meanwhile.
        images = np.random.default_rng(2).integers(0, 256, (8, 600, 512, 3))
        body = orjson.dumps({"instances": images}, option=orjson.OPT_SERIALIZE_NUMPY)
        answer: dict[str, Any] = {}

        def send() -> None:
            request = urllib.request.Request(f"{rest}/v1/models/m:predict", data=body)
            with urllib.request.urlopen(request, timeout=60) as response:
                answer["status"] = response.status
                answer["body"] = json.loads(response.read())

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.3)  # let the upload reach the server
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        assert answer.get("status") == 200, log.read_text()
        assert np.asarray(answer["body"]["predictions"]).shape == (8, 1000)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not port_open(rest_port) and not port_open(grpc_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


# --- --model_config_file: several models, labels, reloads --------------------------------------------


def models_config(models: dict[str, tuple[Path, str]]) -> str:
    """A ModelServerConfig in TF Serving's text format: name -> (base path, extra fields)."""
    entries = "".join(
        f'  config {{\n    name: "{name}"\n    base_path: "{base}"\n    model_platform: "tensorflow"\n    {extra}\n  }}\n'
        for name, (base, extra) in models.items()
    )
    return f"model_config_list {{\n{entries}}}\n"


def write_atomically(path: Path, text: str) -> None:
    scratch = path.with_suffix(".tmp")
    scratch.write_text(text)
    scratch.replace(path)


def call(url: str, body: Any = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    try:
        with urllib.request.urlopen(urllib.request.Request(url, data=data), timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


def await_true(check: Callable[[], bool], what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what} did not happen within {timeout} s:\n{log.read_text()}")


SPECIFIC = "model_version_policy { specific { versions: 123 versions: 124 } }"


def test_a_model_config_file_serves_two_models_and_reloads(tmp_path: Path, half_plus_two_store: Path) -> None:
    import grpc
    from google.protobuf import text_format
    from tensorflow_serving.apis import (
        get_model_status_pb2,
        model_management_pb2,
        model_service_pb2_grpc,
        predict_pb2,
        prediction_service_pb2_grpc,
    )

    half, tf2 = half_plus_two_store / "half_plus_two", half_plus_two_store / "half_plus_two_tf2"
    labels = 'version_labels { key: "stable" value: 123 } version_labels { key: "canary" value: 124 }'
    config = tmp_path / "models.config"
    write_atomically(config, models_config({"half": (half, f"{SPECIFIC} {labels}"), "other": (tf2, "")}))
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    process = start_server(
        [
            f"--model_config_file={config}",
            "--model_name=ignored",
            "--model_base_path=/ignored/when/a/config/file/is/given",
            "--allow_version_labels_for_unavailable_models=true",
            "--model_config_file_poll_wait_seconds=1",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
        ],
        {},
        log,
    )
    rest = f"http://127.0.0.1:{rest_port}/v1/models"
    one = {"instances": [1.0]}
    try:
        wait_for_port(process, grpc_port, log)
        status = call(f"{rest}/half")[1]["model_version_status"]
        assert [(s["version"], s["state"]) for s in status] == [("124", "AVAILABLE"), ("123", "AVAILABLE")]
        assert call(f"{rest}/half/labels/stable:predict", one) == (200, {"predictions": [2.5]})
        assert call(f"{rest}/half/labels/canary:predict", one) == (200, {"predictions": [3.5]})
        assert call(f"{rest}/half:predict", one) == (200, {"predictions": [3.5]})
        assert call(f"{rest}/other:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})
        assert call(f"{rest}/half/labels/nope:predict", one) == (400, {"error": "Unrecognized servable version label: nope"})
        assert call(f"{rest}/ignored:predict", one) == (404, {"error": "Servable not found for request: Latest(ignored)"})

        with grpc.insecure_channel(f"127.0.0.1:{grpc_port}") as channel:
            prediction = prediction_service_pb2_grpc.PredictionServiceStub(channel)
            models = model_service_pb2_grpc.ModelServiceStub(channel)
            request = predict_pb2.PredictRequest()
            request.model_spec.name = "half"
            request.model_spec.version_label = "canary"
            request.inputs["x"].CopyFrom(tf_tensor([[1.0]]))
            answer = prediction.Predict(request, timeout=30)
            assert answer.model_spec.version.value == 124
            request.model_spec.version_label = "nope"
            with pytest.raises(grpc.RpcError) as caught:
                prediction.Predict(request, timeout=30)
            assert (caught.value.code(), caught.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label: nope"
            )
            status_request = get_model_status_pb2.GetModelStatusRequest()
            status_request.model_spec.name = "other"
            status_request.model_spec.version_label = "nope"  # TF Serving's GetModelStatus ignores labels
            assert [s.version for s in models.GetModelStatus(status_request, timeout=30).model_version_status] == [123]

            # The file changes: stable moves to 124, "other" goes.
            write_atomically(
                config,
                models_config({"half": (half, f'{SPECIFIC} version_labels {{ key: "stable" value: 124 }}')}),
            )
            await_true(lambda: call(f"{rest}/other:predict", {"instances": [[1.0]]})[0] == 404, "removing other", log)
            assert call(f"{rest}/half/labels/stable:predict", one) == (200, {"predictions": [3.5]})
            assert call(f"{rest}/half/labels/canary:predict", one)[0] == 400
            assert [s["state"] for s in call(f"{rest}/other")[1]["model_version_status"]] == ["END"]

            # A file that does not parse is logged; the config in force stays.
            write_atomically(config, 'model_config_list { config { nme: "half" } }')
            await_true(lambda: "Failed to read ModelServerConfig file" in log.read_text(), "the bad file logged", log)
            assert 'Did you mean "name"?' in log.read_text()
            assert call(f"{rest}/half/labels/stable:predict", one) == (200, {"predictions": [3.5]})

            # HandleReloadConfigRequest: "other" back, awaited before the answer.
            reload = model_management_pb2.ReloadConfigRequest()
            text_format.Parse(models_config({"half": (half, SPECIFIC), "other": (tf2, "")}), reload.config)
            reload.metric_names.append("/tensorflow/serving/model_count")
            response = models.HandleReloadConfigRequest(reload, timeout=60)
            assert response.status.error_code == 0
            assert [(m.name, m.int64_value_increase) for m in response.metric] == [("/tensorflow/serving/model_count", 0)]
            assert call(f"{rest}/other:predict", {"instances": [[1.0]]}) == (200, {"predictions": [[2.5]]})
            with pytest.raises(grpc.RpcError) as caught:
                models.HandleReloadConfigRequest(model_management_pb2.ReloadConfigRequest(), timeout=30)
            assert (caught.value.code(), caught.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT,
                "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is "
                "currently supported",
            )
            duplicate = model_management_pb2.ReloadConfigRequest()
            text_format.Parse(models_config({"half": (half, "")}), duplicate.config)
            duplicate.config.model_config_list.config.append(duplicate.config.model_config_list.config[0])
            with pytest.raises(grpc.RpcError) as caught:
                models.HandleReloadConfigRequest(duplicate, timeout=30)
            assert (caught.value.code(), caught.value.details()) == (
                grpc.StatusCode.INVALID_ARGUMENT, "Illegal to list model half multiple times in config list"
            )
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=30) == 0, log.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()


def tf_tensor(values: Any) -> Any:
    import tensorflow as tf

    return tf.make_tensor_proto(np.asarray(values, np.float32))


@pytest.mark.parametrize(
    ("text", "fragments"),
    [
        (
            'model_config_list {\n  config {\n    name: "m"\n    bse_path: "/m"\n  }\n}\n',
            ["models.config:4:5: ", 'has no field named "bse_path". Did you mean "base_path"?'],
        ),
        (
            'model_config_list { config { name: "m" base_path: "{base}" model_platform: "tensorflow" '
            'version_labels { key: "stable" value: 1 } } }',
            ["Request to assign label to version 1 of model m, which is not currently available for inference",
             "--allow_version_labels_for_unavailable_models=true"],
        ),
        ('model_config_list { config { name: "m" base_path: "{base}" } }', ["Illegal setting neither"]),
    ],
    ids=["syntax", "label-at-start", "no-platform"],
)
def test_a_bad_model_config_file_exits_2_before_loading(
    tmp_path: Path, text: str, fragments: list[str]
) -> None:
    import subprocess
    import sys

    from tests.serving.conftest import REPO

    (tmp_path / "m" / "1").mkdir(parents=True)
    (tmp_path / "m" / "1" / "saved_model.pb").write_bytes(b"never read")
    config = tmp_path / "models.config"
    config.write_text(text.replace("{base}", str(tmp_path / "m")))
    result = subprocess.run(
        [sys.executable, "-m", "serving.server", f"--model_config_file={config}", "--port=0"],
        capture_output=True, text=True, timeout=60, cwd=REPO,
    )
    assert result.returncode == 2, result.stderr
    for fragment in fragments:
        assert fragment in result.stderr
    assert "Loading servable" not in result.stderr
