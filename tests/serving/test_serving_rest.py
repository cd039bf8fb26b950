"""The REST API of a real server subprocess, against TF Serving's behaviour."""

from __future__ import annotations

import base64
import json
from typing import Any

import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.seed import gke_body
from tests.serving.conftest import GRACE_HOPPER, MODEL_NAME, RunningServer
from tests.serving.conftest import http_call as call


def predict(server: RunningServer, payload: Any, path: str = f"/v1/models/{MODEL_NAME}:predict") -> tuple[int, Any]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    return call(server, "POST", path, body)


def assert_probabilities(rows: Any, batch: int = 1) -> np.ndarray:
    array = np.asarray(rows, dtype=np.float64)
    assert array.shape == (batch, 1000)
    assert np.allclose(array.sum(axis=1), 1.0, atol=1e-4)
    return array


def photo() -> np.ndarray:
    from PIL import Image

    with Image.open(GRACE_HOPPER) as image:
        return np.asarray(image.convert("RGB"))


def test_gke_walkthrough_body(server: RunningServer) -> None:
    status, answer = predict(server, gke_body())
    assert status == 200, answer
    assert set(answer) == {"predictions"}
    assert_probabilities(answer["predictions"])


def test_minikube_walkthrough_body_on_the_versioned_path(server: RunningServer) -> None:
    pixels = photo()
    assert pixels.shape == (600, 512, 3)
    status, answer = predict(server, {"instances": [pixels.tolist()]}, f"/v1/models/{MODEL_NAME}/versions/1:predict")
    assert status == 200, answer
    by_pixels = assert_probabilities(answer["predictions"])
    _, by_jpeg = predict(
        server,
        {"signature_name": "serving_preprocess", "instances": [{"b64": base64.b64encode(GRACE_HOPPER.read_bytes()).decode()}]},
    )
    # PIL and TensorFlow decode the JPEG a little differently, so close, not equal.
    assert np.abs(by_pixels - np.asarray(by_jpeg["predictions"])).sum() < 0.2


def test_row_columnar_and_named_formats_agree(server: RunningServer) -> None:
    image = np.random.default_rng(5).integers(0, 256, (224, 224, 3)).tolist()
    _, rows = predict(server, {"instances": [image, image]})
    _, columns = predict(server, {"inputs": [image]})
    _, named = predict(server, {"signature_name": "serving_default", "inputs": {"input_image": [image]}})
    _, named_rows = predict(server, {"instances": [{"input_image": image}]})
    batch = assert_probabilities(rows["predictions"], batch=2)
    assert set(columns) == {"outputs"}
    for other in (columns["outputs"], named["outputs"], named_rows["predictions"]):
        np.testing.assert_allclose(np.asarray(other)[0], batch[0], rtol=1e-5, atol=1e-7)


def test_paths_match_case_insensitively(server: RunningServer) -> None:
    status, answer = predict(server, {"instances": [[[[0, 0, 0]]]]}, f"/V1/Models/{MODEL_NAME}/Versions/1:PREDICT")
    assert status == 200, answer


def test_model_status(server: RunningServer) -> None:
    expected = {
        "model_version_status": [
            {"version": "1", "state": "AVAILABLE", "status": {"error_code": "OK", "error_message": ""}}
        ]
    }
    assert call(server, "GET", f"/v1/models/{MODEL_NAME}") == (200, expected)
    assert call(server, "GET", f"/v1/models/{MODEL_NAME}/versions/1") == (200, expected)


def test_model_metadata(server: RunningServer) -> None:
    status, answer = call(server, "GET", f"/v1/models/{MODEL_NAME}/metadata")
    assert status == 200
    assert answer["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    signatures = answer["metadata"]["signature_def"]["signature_def"]
    default = signatures["serving_default"]
    assert default["method_name"] == "tensorflow/serving/predict"
    assert default["inputs"]["input_image"]["dtype"] == "DT_FLOAT"
    assert [d["size"] for d in default["inputs"]["input_image"]["tensor_shape"]["dim"]] == ["-1", "-1", "-1", "3"]
    assert signatures["serving_preprocess"]["inputs"]["bytes_inputs"]["dtype"] == "DT_STRING"
    assert list(default["outputs"]) == ["probabilities"]
    # exactly TF Serving's keys (testdata/half_plus_two_model_metadata.json): nothing of canary's own
    assert set(answer) == {"model_spec", "metadata"}
    assert set(answer["metadata"]) == {"signature_def"}
    assert set(answer["metadata"]["signature_def"]) == {"signature_def"}
    assert call(server, "GET", f"/v1/models/{MODEL_NAME}/versions/1/metadata")[0] == 200


@pytest.mark.parametrize("path", [f"/canary/v1/models/{MODEL_NAME}", f"/canary/v1/models/{MODEL_NAME}/versions/1"])
def test_canary_model_record_has_its_own_path(server: RunningServer, path: str) -> None:
    status, answer = call(server, "GET", path)
    assert status == 200, answer
    assert answer["model_spec"] == {"name": MODEL_NAME, "signature_name": "", "version": "1"}
    assert answer["canary_model"]["weights"] == "seeded"
    assert answer["canary_model"]["architecture"] == "TinyResNet"


@pytest.mark.parametrize(
    ("path", "status", "fragment"),
    [
        ("/canary/v1/models/ghost", 404, "Latest(ghost)"),
        (f"/canary/v1/models/{MODEL_NAME}/versions/9", 404, "Specific(image_classifier, 9)"),
        (f"/canary/v1/models/{MODEL_NAME}/versions/1/labels/x", 400, "cannot be supplied"),
        ("/canary/v1/other", 404, "/v1/models/<name>"),
    ],
)
def test_canary_model_record_errors(server: RunningServer, path: str, status: int, fragment: str) -> None:
    got, answer = call(server, "GET", path)
    assert got == status and fragment in answer["error"], answer


ERRORS = [
    ("POST", "/v1/models/other:predict", {"instances": [[[[1, 2, 3]]]]}, 404, "Servable not found for request: Latest(other)"),
    ("POST", f"/v1/models/{MODEL_NAME}/versions/7:predict", {"instances": [[[[1, 2, 3]]]]}, 404, "Specific(image_classifier, 7)"),
    ("POST", f"/v1/models/{MODEL_NAME}/labels/canary:predict", {"instances": [[[[1, 2, 3]]]]}, 400, "Unrecognized servable version label: canary"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", b"{oops", 400, "JSON Parse error"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", b"", 400, "document is empty"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": []}, 400, "No values in 'instances'"),
    # shapes the model refuses: TF's own message, then which input differs from the declared shape
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [[[1, 2]]]}, 400, "input must be 4-dimensional"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [[[1, 2]]]}, 400, "(the model refused input 'input_image': the signature declares shape [-1,-1,-1,3] (-1: any size) but got [1,1,2], missing the batch dimension?"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"inputs": [[1, 2, 3]]}, 400, "declares shape [-1,-1,-1,3] (-1: any size) but got [1,3])"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"instances": [[[["a", "b", "c"]]]]}, 400, "is not of expected type: float"),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "nope", "instances": [[[[1, 2, 3]]]]}, 400, 'Serving signature name: "nope" not found in signature def'),
    ("POST", f"/v1/models/{MODEL_NAME}:predict", {"signature_name": "serving_preprocess", "instances": [{"b64": "bm90IGEganBlZw=="}]}, 400, "Unknown image file format"),
    # TF Serving on predict-only signatures (classifier.cc / regressor.cc PreProcess*, json_tensor.cc)
    ("POST", f"/v1/models/{MODEL_NAME}:classify", {"examples": [{}]}, 400, "No classification inputs found in SignatureDef: "),
    ("POST", f"/v1/models/{MODEL_NAME}:regress", {"examples": [{"x": [1.5]}]}, 400, "No regression inputs found in SignatureDef: "),
    ("POST", f"/v1/models/{MODEL_NAME}:classify", {"signature_name": "nope", "examples": [{}]}, 400, "No signature was found with the name: nope"),
    ("POST", f"/v1/models/{MODEL_NAME}:classify", {"instances": [[1]]}, 400, "key 'examples' is expected and was not found"),
    ("POST", f"/v1/models/{MODEL_NAME}:regress", {"examples": [1]}, 400, "Example must be JSON object but got JSON Number"),
    ("POST", f"/v1/models/{MODEL_NAME}:regress", {"examples": []}, 400, "'examples' value is an empty array"),
    ("POST", f"/v1/models/{MODEL_NAME}:classify", b"[1]", 400, "Is not object"),
    ("POST", "/v1/models/other:classify", {"examples": [{}]}, 404, "Latest(other)"),
    ("GET", f"/v1/models/{MODEL_NAME}:predict", None, 400, "Malformed request: GET"),
    ("PUT", f"/v1/models/{MODEL_NAME}", b"{}", 400, "Malformed request: PUT"),
    ("GET", "/v1/models", None, 400, "Missing model name in request."),
    ("GET", "/v1/models/other", None, 404, "Could not find any versions of model other"),
    ("GET", f"/v1/models/{MODEL_NAME}/versions/2", None, 404, "Could not find version 2 of model image_classifier"),
    ("GET", f"/v1/models/{MODEL_NAME}/versions/2/metadata", None, 404, "Specific(image_classifier, 2)"),
    ("GET", f"/v1/models/{MODEL_NAME}/labels/stable/metadata", None, 400, "Unrecognized servable version label: stable"),
    ("GET", "/healthz", None, 404, "/v1/models/<name>"),
]


@pytest.mark.parametrize(("method", "path", "payload", "status", "fragment"), ERRORS)
def test_errors_map_to_tf_serving_status_codes(
    server: RunningServer, method: str, path: str, payload: Any, status: int, fragment: str
) -> None:
    body = payload if payload is None or isinstance(payload, bytes) else json.dumps(payload).encode()
    got_status, answer = call(server, method, path, body)
    assert got_status == status, answer
    assert set(answer) == {"error"}
    assert fragment in answer["error"]
    assert server.process.poll() is None


def test_status_by_label_lists_every_version_as_tf_serving_does(server: RunningServer) -> None:
    # get_model_status_impl.cc reads the model's name and version only: a label changes nothing.
    assert call(server, "GET", f"/v1/models/{MODEL_NAME}/labels/stable") == call(server, "GET", f"/v1/models/{MODEL_NAME}")


def test_prometheus_metrics_count_requests(server: RunningServer) -> None:
    before = counts(server)
    predict(server, {"instances": [[[[1, 2, 3]]]]})
    predict(server, {"instances": [[[1, 2]]]})
    predict(server, {"instances": [[[[1, 2, 3]]]]}, "/v1/models/ghost:predict")
    call(server, "GET", f"/v1/models/{MODEL_NAME}")
    after = counts(server)
    assert after[(MODEL_NAME, "OK")] == before.get((MODEL_NAME, "OK"), 0) + 1
    assert after[(MODEL_NAME, "INVALID_ARGUMENT")] == before.get((MODEL_NAME, "INVALID_ARGUMENT"), 0) + 1
    assert after[("ghost", "NOT_FOUND")] == before.get(("ghost", "NOT_FOUND"), 0) + 1
    _, text = call(server, "GET", "/monitoring/prometheus/metrics")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    latency = families[":tensorflow:serving:request_latency"]
    keys = {(s.labels["model_name"], s.labels["API"], s.labels["entrypoint"]) for s in latency.samples}
    assert (MODEL_NAME, "predict", "REST") in keys
    assert (MODEL_NAME, "GetModelStatus", "REST") in keys


def counts(server: RunningServer) -> dict[tuple[str, str], float]:
    status, text = call(server, "GET", "/monitoring/prometheus/metrics")
    assert status == 200
    families = {f.name: f for f in text_string_to_metric_families(text)}
    family = families[":tensorflow:serving:request_count"]
    assert family.type == "counter"
    assert f":tensorflow:serving:request_count{{model_name=\"{MODEL_NAME}\"" in text  # no _total suffix
    return {(s.labels["model_name"], s.labels["status"]): s.value for s in family.samples}
