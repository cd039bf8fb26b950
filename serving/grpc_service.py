"""TF Serving's gRPC services on grpc.aio.

``PredictionService``: Predict and GetModelMetadata (Classify, Regress and
MultiInference answer UNIMPLEMENTED). ``ModelService``: GetModelStatus
(HandleReloadConfigRequest answers UNIMPLEMENTED). Tensors are decoded
zero-copy from ``tensor_content`` and outputs encoded the same way; only the
model itself runs in a worker thread.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from tensorflow_serving.apis import (
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_management_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
)

from serving.metrics import Metrics
from serving.registry import ModelManager
from serving.responses import metadata_response, status_response
from serving.servable import Servable
from serving.status import Code, RequestError, from_exception
from serving.tensors import ndarray_to_tensor_proto, tensor_proto_to_ndarray

__all__ = ["ModelServicer", "PredictionServicer", "add_services"]

_ENTRYPOINT = "GRPC"


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over one model manager."""

    def __init__(self, manager: ModelManager, metrics: Metrics, executor: Executor) -> None:
        self._manager = manager
        self._metrics = metrics
        self._executor = executor

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        name = request.model_spec.name
        started = time.perf_counter()
        code = Code.OK
        try:
            return await self._predict(request)
        except Exception as error:
            failure = from_exception(error)
            code = failure.code
            await _abort(context, failure)
        finally:
            self._metrics.record_request(name, code)
            micros = (time.perf_counter() - started) * 1e6
            self._metrics.record_latency(name, "Predict", _ENTRYPOINT, code, micros)

    async def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = _resolve(self._manager, request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        inputs = {alias: tensor_proto_to_ndarray(tensor) for alias, tensor in request.inputs.items()}
        unknown = [alias for alias in inputs if alias not in signature.inputs]
        if unknown:
            raise RequestError(
                Code.INVALID_ARGUMENT,
                f"input tensor alias not found in signature: {unknown[0]}. Inputs expected to be in the "
                f"set {{{','.join(sorted(signature.inputs))}}}.",
            )
        wanted = list(request.output_filter) or list(signature.outputs)
        seen: set[str] = set()
        for alias in wanted:
            if alias not in signature.outputs:
                raise RequestError(
                    Code.INVALID_ARGUMENT,
                    f"output tensor alias not found in signature: {alias} Outputs expected to be in the "
                    f"set {{{','.join(sorted(signature.outputs))}}}.",
                )
            if alias in seen:
                raise RequestError(Code.INVALID_ARGUMENT, f"duplicate output tensor alias: {alias}")
            seen.add(alias)
        loop = asyncio.get_running_loop()
        outputs, seconds = await loop.run_in_executor(self._executor, servable.run, signature, inputs)
        self._metrics.record_runtime(servable.name, "Predict", seconds * 1e6)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for alias in wanted:
            response.outputs[alias].CopyFrom(ndarray_to_tensor_proto(outputs[alias]))
        return response

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def answer() -> Any:
            servable = _resolve(self._manager, request.model_spec)
            return metadata_response(servable, list(request.metadata_field))

        return await _timed(self._metrics, request.model_spec.name, "GetModelMetadata", context, answer)

    async def Classify(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _unimplemented(context, "Classify")

    async def Regress(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _unimplemented(context, "Regress")

    async def MultiInference(self, request: Any, context: grpc.aio.ServicerContext) -> Any:
        await _unimplemented(context, "MultiInference")


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus over one model manager."""

    def __init__(self, manager: ModelManager, metrics: Metrics) -> None:
        self._manager = manager
        self._metrics = metrics

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        def answer() -> Any:
            spec = request.model_spec
            if not spec.name:
                raise RequestError(Code.INVALID_ARGUMENT, "Missing ModelSpec name")
            if spec.version_label:
                _resolve(self._manager, spec)  # raises: no labels here
            version = spec.version.value if spec.HasField("version") else None
            return status_response(self._manager.status(spec.name, version))

        return await _timed(self._metrics, request.model_spec.name, "GetModelStatus", context, answer)

    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> Any:
        await _unimplemented(context, "HandleReloadConfigRequest")


def add_services(server: grpc.aio.Server, manager: ModelManager, metrics: Metrics, executor: Executor) -> None:
    """Register PredictionService and ModelService on ``server``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionServicer(manager, metrics, executor), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelServicer(manager, metrics), server)


def _resolve(manager: ModelManager, spec: Any) -> Servable:
    version = spec.version.value if spec.HasField("version") else None
    label = spec.version_label or None
    if version is not None and label is not None:
        raise RequestError(
            Code.INVALID_ARGUMENT,
            f"Both model version ({version}) and model version label ({label}) cannot be supplied.",
        )
    return manager.resolve(spec.name, version, label)


async def _timed(
    metrics: Metrics,
    name: str,
    api: str,
    context: grpc.aio.ServicerContext,
    answer: Callable[[], Any],
) -> Any:
    started = time.perf_counter()
    code = Code.OK
    try:
        return answer()
    except Exception as error:
        failure = from_exception(error)
        code = failure.code
        await _abort(context, failure)
    finally:
        metrics.record_latency(name, api, _ENTRYPOINT, code, (time.perf_counter() - started) * 1e6)


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> NoReturn:
    await context.abort(grpc.StatusCode[error.code.name], error.message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover


async def _unimplemented(context: grpc.aio.ServicerContext, method: str) -> NoReturn:
    await _abort(
        context,
        RequestError(
            Code.UNIMPLEMENTED,
            f"{method} is not supported by canary's model server; use Predict, GetModelMetadata or GetModelStatus",
        ),
    )
