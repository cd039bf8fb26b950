"""The gRPC PredictionService and ModelService of a real server subprocess."""

from __future__ import annotations

import json
import urllib.request
from collections.abc import Iterator
from typing import Any

import grpc
import numpy as np
import pytest
import tensorflow as tf
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

from tests.serving.conftest import GRACE_HOPPER, MODEL_NAME, RunningServer

IMAGE = np.random.default_rng(9).uniform(0, 255, (1, 224, 224, 3)).astype(np.float32)


@pytest.fixture(scope="module")
def channel(server: RunningServer) -> Iterator[grpc.Channel]:
    with grpc.insecure_channel(
        server.grpc_target,
        options=[("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)],
    ) as opened:
        yield opened


@pytest.fixture(scope="module")
def prediction(channel: grpc.Channel) -> prediction_service_pb2_grpc.PredictionServiceStub:
    return prediction_service_pb2_grpc.PredictionServiceStub(channel)


@pytest.fixture(scope="module")
def models(channel: grpc.Channel) -> model_service_pb2_grpc.ModelServiceStub:
    return model_service_pb2_grpc.ModelServiceStub(channel)


def request(image: np.ndarray = IMAGE, *, name: str = MODEL_NAME, alias: str = "input_image") -> predict_pb2.PredictRequest:
    message = predict_pb2.PredictRequest()
    message.model_spec.name = name
    message.inputs[alias].CopyFrom(tf.make_tensor_proto(image))
    return message


def test_predict_fills_model_spec_and_matches_rest(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, server: RunningServer
) -> None:
    response = prediction.Predict(request(), timeout=30)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    assert response.model_spec.signature_name == "serving_default"
    output = response.outputs["probabilities"]
    # TF Serving's default (Tensor::AsProtoField): the typed field, no tensor_content
    assert not output.tensor_content and len(output.float_val) == 1000
    assert [d.size for d in output.tensor_shape.dim] == [1, 1000]
    probabilities = tf.make_ndarray(output)
    assert probabilities.shape == (1, 1000) and probabilities.dtype == np.float32
    assert abs(float(probabilities.sum()) - 1.0) < 1e-4
    body = json.dumps({"instances": IMAGE.tolist()}).encode()
    with urllib.request.urlopen(f"{server.rest}/v1/models/{MODEL_NAME}:predict", data=body, timeout=30) as rest:
        by_rest = np.asarray(json.loads(rest.read())["predictions"], dtype=np.float32)
    np.testing.assert_array_equal(by_rest, probabilities)


def test_predict_accepts_repeated_value_fields_and_jpeg_strings(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
) -> None:
    by_content = tf.make_ndarray(prediction.Predict(request()).outputs["probabilities"])
    message = request()
    proto = message.inputs["input_image"]
    proto.ClearField("tensor_content")
    proto.float_val.extend(IMAGE.reshape(-1).tolist())
    np.testing.assert_array_equal(tf.make_ndarray(prediction.Predict(message).outputs["probabilities"]), by_content)
    jpeg = predict_pb2.PredictRequest()
    jpeg.model_spec.name = MODEL_NAME
    jpeg.model_spec.signature_name = "serving_preprocess"
    jpeg.model_spec.version.value = 1
    jpeg.inputs["bytes_inputs"].CopyFrom(tf.make_tensor_proto([GRACE_HOPPER.read_bytes()]))
    response = prediction.Predict(jpeg)
    assert response.model_spec.signature_name == "serving_preprocess"
    assert tf.make_ndarray(response.outputs["probabilities"]).shape == (1, 1000)


def errors() -> list[tuple[str, predict_pb2.PredictRequest, grpc.StatusCode, str]]:
    cases = []
    cases.append(("unknown model", request(name="ghost"), grpc.StatusCode.NOT_FOUND, "Latest(ghost)"))
    wrong_version = request()
    wrong_version.model_spec.version.value = 5
    cases.append(("unknown version", wrong_version, grpc.StatusCode.NOT_FOUND, "Specific(image_classifier, 5)"))
    label = request()
    label.model_spec.version_label = "canary"
    cases.append(("label", label, grpc.StatusCode.INVALID_ARGUMENT, "Unrecognized servable version label"))
    cases.append(("alias", request(alias="pixels"), grpc.StatusCode.INVALID_ARGUMENT, "input tensor alias not found"))
    no_inputs = predict_pb2.PredictRequest()
    no_inputs.model_spec.name = MODEL_NAME
    cases.append(("no inputs", no_inputs, grpc.StatusCode.INVALID_ARGUMENT, "Missing but required: {input_image}"))
    cases.append(("dtype", request(IMAGE.astype(np.float64)), grpc.StatusCode.INVALID_ARGUMENT, "to be float but float64"))
    # a shape the model refuses: TF's message, then the input, the shape sent and the declared one
    cases.append(("rank", request(IMAGE[0]), grpc.StatusCode.INVALID_ARGUMENT, "input must be 4-dimensional[224,224,3]"))
    cases.append((
        "rank hint", request(IMAGE[0]), grpc.StatusCode.INVALID_ARGUMENT,
        "(the model refused input 'input_image': the signature declares shape [-1,-1,-1,3] (-1: any size) but got [224,224,3]",
    ))
    signature = request()
    signature.model_spec.signature_name = "nope"
    cases.append(("signature", signature, grpc.StatusCode.FAILED_PRECONDITION, '"nope" not found'))
    output = request()
    output.output_filter.append("logits")
    cases.append(("output filter", output, grpc.StatusCode.INVALID_ARGUMENT, "output tensor alias not found"))
    bad_jpeg = predict_pb2.PredictRequest()
    bad_jpeg.model_spec.name = MODEL_NAME
    bad_jpeg.model_spec.signature_name = "serving_preprocess"
    bad_jpeg.inputs["bytes_inputs"].CopyFrom(tf.make_tensor_proto([b"not a jpeg"]))
    cases.append(("bad jpeg", bad_jpeg, grpc.StatusCode.INVALID_ARGUMENT, "Unknown image file format"))
    return cases


@pytest.mark.parametrize(("label", "message", "code", "fragment"), errors(), ids=[c[0] for c in errors()])
def test_predict_errors(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub,
    label: str,
    message: predict_pb2.PredictRequest,
    code: grpc.StatusCode,
    fragment: str,
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        prediction.Predict(message, timeout=30)
    assert caught.value.code() == code, caught.value.details()
    assert fragment in caught.value.details()


def test_get_model_metadata(prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    message = get_model_metadata_pb2.GetModelMetadataRequest()
    message.model_spec.name = MODEL_NAME
    message.metadata_field.append("signature_def")
    response = prediction.GetModelMetadata(message)
    assert response.model_spec.name == MODEL_NAME
    assert response.model_spec.version.value == 1
    signatures = get_model_metadata_pb2.SignatureDefMap()
    assert response.metadata["signature_def"].Unpack(signatures)
    assert {"serving_default", "serving_preprocess"} <= set(signatures.signature_def)
    assert list(signatures.signature_def["serving_default"].outputs) == ["probabilities"]
    message.metadata_field.append("canary_model")
    from google.protobuf import struct_pb2

    info = struct_pb2.Struct()
    assert prediction.GetModelMetadata(message).metadata["canary_model"].Unpack(info)
    assert info["weights"] == "seeded"
    message.ClearField("metadata_field")
    with pytest.raises(grpc.RpcError) as caught:
        prediction.GetModelMetadata(message)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    # TF Serving (get_model_metadata_impl.cc) checks the request before looking the model up
    message.model_spec.name = "ghost"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.GetModelMetadata(message)
    assert caught.value.details() == "GetModelMetadataRequest must specify at least one metadata_field"
    with pytest.raises(grpc.RpcError) as caught:
        prediction.GetModelMetadata(get_model_metadata_pb2.GetModelMetadataRequest(metadata_field=["signature_def"]))
    assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")


def test_get_model_status(models: model_service_pb2_grpc.ModelServiceStub) -> None:
    message = get_model_status_pb2.GetModelStatusRequest()
    message.model_spec.name = MODEL_NAME
    response = models.GetModelStatus(message)
    assert [(s.version, s.state) for s in response.model_version_status] == [
        (1, get_model_status_pb2.ModelVersionStatus.AVAILABLE)
    ]
    message.model_spec.version.value = 3
    with pytest.raises(grpc.RpcError) as caught:
        models.GetModelStatus(message)
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "Could not find version 3" in caught.value.details()


def test_classify_regress_and_multi_inference_answer_as_tf_serving(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, models: model_service_pb2_grpc.ModelServiceStub
) -> None:
    """TF Serving's checks of a predict-only signature (classifier.cc, regressor.cc, multi_inference.cc)."""
    def refused(call: Any, message: Any) -> grpc.RpcError:
        with pytest.raises(grpc.RpcError) as caught:
            call(message, timeout=30)
        return caught.value

    missing = refused(prediction.Classify, classification_pb2.ClassificationRequest())
    assert (missing.code(), missing.details()) == (grpc.StatusCode.INVALID_ARGUMENT, "Missing ModelSpec")
    classify = classification_pb2.ClassificationRequest()
    classify.model_spec.name = MODEL_NAME
    error = refused(prediction.Classify, classify)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No classification inputs found in SignatureDef: ")
    assert 'method_name: "tensorflow/serving/predict"' in error.details()
    regress = regression_pb2.RegressionRequest()
    regress.model_spec.name = MODEL_NAME
    regress.model_spec.signature_name = "serving_preprocess"
    error = refused(prediction.Regress, regress)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No regression inputs found in SignatureDef: ")
    regress.model_spec.name = "ghost"
    assert refused(prediction.Regress, regress).code() == grpc.StatusCode.NOT_FOUND
    multi = inference_pb2.MultiInferenceRequest()
    task = multi.tasks.add()
    task.model_spec.name = MODEL_NAME
    task.method_name = "tensorflow/serving/classify"
    error = refused(prediction.MultiInference, multi)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("No classification inputs found in SignatureDef: ")
    task.method_name = "tensorflow/serving/predict"
    error = refused(prediction.MultiInference, multi)
    assert (error.code(), error.details()) == (
        grpc.StatusCode.UNIMPLEMENTED, "Unsupported signature method_name: tensorflow/serving/predict"
    )
    reload = refused(models.HandleReloadConfigRequest, model_management_pb2.ReloadConfigRequest())
    assert (reload.code(), reload.details()) == (  # model_service_impl.cc: an empty config is no ModelConfigList
        grpc.StatusCode.INVALID_ARGUMENT,
        "ServerModelConfig type not supported by HandleReloadConfigRequest. Only ModelConfigList is currently supported",
    )


@pytest.mark.parametrize("method", ["PredictionService/Predict", "PredictionService/Classify", "ModelService/GetModelStatus"])
def test_undecodable_bytes_are_internal_as_grpc_cpp_answers(
    channel: grpc.Channel, server: RunningServer, method: str
) -> None:
    """grpc C++'s GenericDeserialize answers INTERNAL; grpcio would say UNKNOWN and name a Python class."""
    call = channel.unary_unary(f"/tensorflow.serving.{method}")  # raw bytes in, raw bytes out
    for garbage in (b"\xff\xff\xff", b"\x0a\x05abc", b"not a protocol buffer"):
        with pytest.raises(grpc.RpcError) as caught:
            call(garbage, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INTERNAL, caught.value.details()
        assert "Failed to parse the request" in caught.value.details()
        assert "Error" not in caught.value.details() and "class" not in caught.value.details()
    assert "Traceback" not in server.log.read_text()


def test_non_finite_values_pass_both_ways(
    prediction: prediction_service_pb2_grpc.PredictionServiceStub, server: RunningServer
) -> None:
    """gRPC carries NaN and Infinity as it carries any float; REST reads and writes them as TF Serving does."""
    image = IMAGE.copy()
    image[0, 0, 0, :] = [np.nan, np.inf, -np.inf]
    by_grpc = tf.make_ndarray(prediction.Predict(request(image), timeout=30).outputs["probabilities"])
    body = json.dumps({"instances": image.tolist()}).encode()  # NaN, Infinity, -Infinity
    with urllib.request.urlopen(f"{server.rest}/v1/models/{MODEL_NAME}:predict", data=body, timeout=30) as rest:
        text = rest.read()
    by_rest = np.asarray(json.loads(text)["predictions"], dtype=np.float32)
    assert np.isnan(by_grpc).all()  # the NaN pixel spreads to every probability
    np.testing.assert_array_equal(by_rest, by_grpc)
    assert b"NaN" in text and b"null" not in text  # json_tensor.cc WriteDecimal's spelling, not JSON's null


def test_grpc_requests_are_counted(server: RunningServer, prediction: prediction_service_pb2_grpc.PredictionServiceStub) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    prediction.Predict(request())
    with urllib.request.urlopen(f"{server.rest}/monitoring/prometheus/metrics", timeout=30) as page:
        text = page.read().decode()
    families = {f.name: f for f in text_string_to_metric_families(text)}
    keys = {
        (s.labels["API"], s.labels["entrypoint"])
        for s in families[":tensorflow:serving:request_latency"].samples
        if s.labels["model_name"] == MODEL_NAME
    }
    assert ("Predict", "GRPC") in keys
