"""TF Serving compatibility over REST: api_rest.md, docker.md and tensorflow_model_server_test.py
(the servers and the sources of each expectation: tests/serving/tfs_compat_kit.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from google.protobuf import json_format
from tensorflow.core.protobuf import saved_model_pb2

from tests.serving.tfs_compat_kit import (
    NAME,
    SIGNATURE_KEYS,
    Server,
    Servers,
    assert_error,
    call,
    error_of,
    version_dir,
)

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


def test_rest_body_is_parsed_before_the_model_is_looked_up(classic: Server) -> None:
    """json_tensor.cc FillPredictRequestFromJson parses the body before it asks for the signature."""
    assert_error(call(classic, "/v1/models/half:predict", raw=b"{"), 400, "JSON Parse error: ")


def test_rest_version_beyond_int64_is_400(classic: Server) -> None:
    """http_rest_api_util.cc ParseModelInfo reads the version as an int64."""
    assert_error(
        call(classic, f"/v1/models/{NAME}/versions/99999999999999999999:predict", {"instances": [1.0]}),
        400,
        "Failed to convert version: 99999999999999999999 to numeric.",
    )


def test_rest_predict_runs_a_regress_signature(classic: Server) -> None:
    """predict_util.cc runs any signature of the model (y3 = 0.5 * x2 + 3 on regress_x2_to_y3)."""
    assert call(classic, f"/v1/models/{NAME}:predict", {"signature_name": "regress_x2_to_y3", "instances": [[1.0]]}) == (
        200,
        {"predictions": [[3.5]]},
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


