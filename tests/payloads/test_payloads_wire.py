"""gRPC bytes built without TensorFlow parse back with the real tensorflow_serving protos."""

from __future__ import annotations

import numpy as np
import pytest

from canary.errors import PayloadError
from payloads import grpc_request_bytes, load_payloads
from payloads.wire import (
    Tensor,
    WireError,
    decode_predict_output,
    encode_model_status_request,
    encode_predict_request,
)

predict_pb2 = pytest.importorskip("tensorflow_serving.apis.predict_pb2")


@pytest.fixture(scope="module")
def payloads():
    return load_payloads()


@pytest.mark.parametrize(
    ("fmt", "signature", "alias", "version"),
    [
        ("instances", "serving_default", "input_image", None),
        ("b64", "serving_preprocess", "bytes_inputs", None),
        ("instances", "serving_default", "input_image", 1),
        ("b64", "serving_preprocess", "bytes_inputs", 0),
    ],
)
def test_request_bytes_parse_into_a_predict_request(
    payloads, fmt, signature, alias, version
) -> None:
    import tensorflow as tf

    for payload in payloads:
        raw = grpc_request_bytes(payload, fmt, "image_classifier", version=version)
        request = predict_pb2.PredictRequest.FromString(raw)
        assert request.model_spec.name == "image_classifier"
        assert request.model_spec.signature_name == signature
        assert request.model_spec.HasField("version") == (version is not None)
        if version is not None:
            assert request.model_spec.version.value == version
        assert list(request.inputs) == [alias]
        array = tf.make_ndarray(request.inputs[alias])
        if fmt == "instances":
            assert array.dtype == np.float32 and array.shape == (1, 224, 224, 3)
            assert np.array_equal(array[0], payload.pixels.astype(np.float32))
        else:
            assert array.shape == (1,) and array[0] == payload.jpeg
        # the same bytes as the protobuf library's own serialisation of that message
        assert raw == request.SerializeToString(deterministic=True)


def test_request_for_an_unknown_format_is_refused(payloads) -> None:
    with pytest.raises(PayloadError, match="unknown payload format"):
        grpc_request_bytes(payloads.items[0], "json")


def test_zero_sized_dimensions_and_long_varints_round_trip() -> None:
    raw = encode_predict_request(
        "m" * 200,
        {
            "x": Tensor.floats(np.zeros((0, 3), np.float32)),
            "y": Tensor.string_list([b"a" * 300, b""]),
        },
    )
    request = predict_pb2.PredictRequest.FromString(raw)
    assert request.model_spec.name == "m" * 200
    assert [d.size for d in request.inputs["x"].tensor_shape.dim] == [0, 3]
    assert list(request.inputs["y"].string_val) == [b"a" * 300, b""]


def _response(outputs: dict[str, np.ndarray], *, as_float_val: bool = False) -> bytes:
    import tensorflow as tf

    response = predict_pb2.PredictResponse()
    response.model_spec.name = "image_classifier"
    response.model_spec.signature_name = "serving_default"
    response.model_spec.version.value = 1
    for name, array in outputs.items():
        proto = tf.make_tensor_proto(array)
        if as_float_val and array.dtype == np.float32:
            proto.ClearField("tensor_content")
            proto.float_val.extend(array.reshape(-1).tolist())
        response.outputs[name].CopyFrom(proto)
    return response.SerializeToString()


@pytest.mark.parametrize("as_float_val", [False, True])
def test_the_output_vector_comes_out_of_a_predict_response(as_float_val: bool) -> None:
    rng = np.random.default_rng(7)
    probabilities = rng.dirichlet(np.ones(1000)).astype(np.float32)[None]
    raw = _response(
        {"logits": rng.normal(size=(1, 10)).astype(np.float32), "probabilities": probabilities},
        as_float_val=as_float_val,
    )
    decoded = decode_predict_output(raw)
    assert decoded.dtype == np.float32 and np.array_equal(decoded, probabilities[0])


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (
            lambda: _response({"scores": np.ones((1, 3), np.float32)}),
            r"no output 'probabilities' \(outputs: scores\)",
        ),
        (lambda: _response({"probabilities": np.ones((1, 3), np.int32)}), "not DT_FLOAT"),
        (lambda: _response({"probabilities": np.ones((1, 300), np.float32)})[:600], "past the end"),
        (lambda: b"\x0f", "unsupported wire type"),
        (lambda: b"\x08\xff", "truncated"),
    ],
)
def test_malformed_responses_raise_wire_errors(raw, error: str) -> None:
    with pytest.raises(WireError, match=error):
        decode_predict_output(raw())


@pytest.mark.parametrize("name", ["image_classifier", "image_classifer", "ü" * 200])
def test_model_status_request_parses_into_a_get_model_status_request(name: str) -> None:
    get_model_status_pb2 = pytest.importorskip("tensorflow_serving.apis.get_model_status_pb2")
    request = get_model_status_pb2.GetModelStatusRequest.FromString(encode_model_status_request(name))
    assert request.model_spec.name == name and not request.model_spec.HasField("version")
    expected = get_model_status_pb2.GetModelStatusRequest()
    expected.model_spec.name = name
    assert encode_model_status_request(name) == expected.SerializeToString(deterministic=True)
