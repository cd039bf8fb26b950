"""Requests the model itself accepts are served: no refusal for a shape other than the declared one.

TF Serving feeds the tensors to the model and lets its ops decide; its own first REST example
(g3doc/api_rest.md, docker.md) sends half_plus_two, whose signature declares x [-1,1], a rank-1
``{"instances": [1.0, 2.0, 5.0]}`` and gets ``{"predictions": [2.5, 3.0, 4.5]}``.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
from tensorflow_serving.apis import predict_pb2, prediction_service_pb2_grpc

from serving.servable import load_servable
from serving.status import Code, RequestError
from tests.serving.conftest import RunningServer, free_port, http_call, serving
from tests.serving.half_plus_two import export_half_plus_two


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    base = tmp_path_factory.mktemp("model-decides")
    export_half_plus_two(base / "tf1")
    export_half_plus_two(base / "tf2", style="tf2")
    return base


@pytest.fixture(scope="module")
def hp2_server(exported: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """half_plus_two (tf1 style, b=2) behind a server that sends outputs as tensor_content."""
    log = tmp_path_factory.mktemp("hp2-server") / "server.log"
    flags = [
        "--model_name=half_plus_two",
        f"--model_base_path={exported / 'tf1'}",
        "--enable_serialization_as_tensor_content=true",
        f"--port={free_port()}",
        f"--rest_api_port={free_port()}",
    ]
    with serving(flags, {}, log) as running:
        yield running


@pytest.mark.parametrize("style", ["tf1", "tf2"])
def test_the_signature_runs_on_any_shape_its_ops_accept(exported: Path, style: str) -> None:
    servable = load_servable("half_plus_two", 123, exported / style / "00000123")
    signature = servable.signature("")
    assert signature.inputs["x"].shape == (-1, 1)
    for x, y in [([1.0, 2.0, 5.0], [2.5, 3.0, 4.5]), ([[1.0, 2.0]], [[2.5, 3.0]]), (4.0, 4.0)]:
        outputs, _ = servable.run(signature, {"x": np.asarray(x, np.float32)})
        np.testing.assert_array_equal(outputs["y"], np.asarray(y, np.float32))
    with pytest.raises(RequestError) as caught:  # the dtype is still checked first, as TF Serving words it
        servable.run(signature, {"x": np.zeros(3, np.int32)})
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == "Expects arg 'x' to be float but int32 is provided"


def rest(server: RunningServer, body: Any) -> tuple[int, Any]:
    return http_call(server, "POST", "/v1/models/half_plus_two:predict", json.dumps(body).encode())


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({"instances": [1.0, 2.0, 5.0]}, {"predictions": [2.5, 3.0, 4.5]}),
        ({"inputs": [1.0, 2.0, 5.0]}, {"outputs": [2.5, 3.0, 4.5]}),
        ({"instances": [[1.0], [2.0], [5.0]]}, {"predictions": [[2.5], [3.0], [4.5]]}),
        ({"inputs": {"x": [[1.0, 2.0, 5.0]]}}, {"outputs": [[2.5, 3.0, 4.5]]}),
    ],
)
def test_rest_serves_tf_servings_own_example(hp2_server: RunningServer, body: Any, expected: Any) -> None:
    assert rest(hp2_server, body) == (200, expected)


def test_grpc_serves_a_rank_one_tensor_and_sends_tensor_content_with_the_flag(hp2_server: RunningServer) -> None:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = "half_plus_two"
    message.inputs["x"].CopyFrom(tf.make_tensor_proto([1.0, 2.0, 5.0], dtype=tf.float32))
    with grpc.insecure_channel(hp2_server.grpc_target) as channel:
        response = prediction_service_pb2_grpc.PredictionServiceStub(channel).Predict(message, timeout=30)
    output = response.outputs["y"]
    assert output.tensor_content and not output.float_val  # --enable_serialization_as_tensor_content=true
    assert tf.make_ndarray(output).tolist() == [2.5, 3.0, 4.5]
