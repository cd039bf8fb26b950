"""TF Serving's gRPC services on grpc.aio.

``PredictionService``: Predict (any signature, as TF Serving's
predict_util.cc) and GetModelMetadata; Classify, Regress and MultiInference
run classify/regress signatures on tf.Examples as TF Serving does
(:mod:`serving.inference`, :mod:`serving.examples`). ``ModelService``: GetModelStatus
and HandleReloadConfigRequest (a ModelServerConfig applied as TF Serving's
ServerCore::ReloadConfig applies it, see :mod:`serving.served_models`). Tensors are decoded
zero-copy from ``tensor_content``; outputs fill TF Serving's typed fields
(``float_val``...), or ``tensor_content`` with
``--enable_serialization_as_tensor_content=true`` (:mod:`serving.tensor_proto`);
only the model itself runs in a worker thread.

A request whose bytes do not decode as its message is answered INTERNAL, as
grpc C++ answers it for TF Serving (include/grpcpp/impl/proto_utils.h,
``GenericDeserialize``), instead of grpcio's UNKNOWN naming a Python
exception; an oversize one is refused by grpc itself (RESOURCE_EXHAUSTED,
``grpc.max_receive_message_length`` = ``--canary_max_request_bytes``).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any, NoReturn

import grpc
from google.protobuf import message_factory
from google.protobuf.descriptor import ServiceDescriptor
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    inference_pb2,
    model_management_pb2,
    model_service_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from serving.inference import (
    Method,
    examples_signature,
    fill_model_spec,
    plan_multi_inference,
    run_examples,
    run_multi_inference,
)
from serving.metrics import Metrics
from serving.model_config import ModelConfigError, ServerConfig, from_proto
from serving.responses import check_metadata_fields, metadata_response, status_response
from serving.servable import Servable, check_input_aliases
from serving.served_models import ServedModels
from serving.status import Code, RequestError, from_exception
from serving.tensor_proto import fill_tensor_proto, tensor_proto_to_ndarray

__all__ = ["ModelServicer", "PredictionServicer", "add_services"]

_ENTRYPOINT = "GRPC"
log = logging.getLogger("serving.grpc")


class PredictionServicer(prediction_service_pb2_grpc.PredictionServiceServicer):
    """Predict and GetModelMetadata over one model manager."""

    def __init__(
        self,
        manager: ServedModels,
        metrics: Metrics,
        executor: Executor,
        *,
        check_method_name: bool = False,
        tensor_content: bool = False,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._executor = executor
        self._check_method_name = check_method_name
        self._tensor_content = tensor_content  # --enable_serialization_as_tensor_content

    async def Predict(
        self, request: predict_pb2.PredictRequest, context: grpc.aio.ServicerContext
    ) -> predict_pb2.PredictResponse:
        name = request.model_spec.name
        started = time.perf_counter()
        code = Code.OK
        try:
            return await self._predict(request)
        except Exception as error:
            failure = _failure(error)
            code = failure.code
            await _abort(context, failure)
        finally:
            self._metrics.record_request(name, code)
            micros = (time.perf_counter() - started) * 1e6
            self._metrics.record_latency(name, "Predict", _ENTRYPOINT, code, micros)

    async def _predict(self, request: predict_pb2.PredictRequest) -> predict_pb2.PredictResponse:
        servable = _resolve(self._manager, request.model_spec)
        signature = servable.signature(request.model_spec.signature_name)
        check_input_aliases(signature, request.inputs.keys())  # before the output filter, as TF Serving
        inputs = {alias: tensor_proto_to_ndarray(tensor) for alias, tensor in request.inputs.items()}
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
        outputs, seconds = await loop.run_in_executor(
            self._executor, functools.partial(servable.run, signature, inputs, consume=True)
        )
        del inputs
        self._metrics.record_runtime(servable.name, "Predict", seconds * 1e6)
        response = predict_pb2.PredictResponse()
        response.model_spec.name = servable.name
        response.model_spec.version.value = servable.version
        response.model_spec.signature_name = signature.name
        for alias in wanted:
            fill_tensor_proto(response.outputs[alias], outputs[alias], tensor_content=self._tensor_content)
        return response

    async def GetModelMetadata(
        self, request: get_model_metadata_pb2.GetModelMetadataRequest, context: grpc.aio.ServicerContext
    ) -> get_model_metadata_pb2.GetModelMetadataResponse:
        def answer() -> Any:
            if not request.HasField("model_spec"):
                raise RequestError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            check_metadata_fields(list(request.metadata_field))  # before the model, as TF Serving checks
            servable = _resolve(self._manager, request.model_spec)
            return metadata_response(servable, list(request.metadata_field))

        return await _timed(self._metrics, request.model_spec.name, "GetModelMetadata", context, answer)

    async def Classify(
        self, request: classification_pb2.ClassificationRequest, context: grpc.aio.ServicerContext
    ) -> classification_pb2.ClassificationResponse:
        return await self._examples(request, context, "classify", "Classify")

    async def Regress(
        self, request: regression_pb2.RegressionRequest, context: grpc.aio.ServicerContext
    ) -> regression_pb2.RegressionResponse:
        return await self._examples(request, context, "regress", "Regress")

    async def _examples(self, request: Any, context: grpc.aio.ServicerContext, method: Method, api: str) -> Any:
        name = request.model_spec.name
        started = time.perf_counter()
        code = Code.OK
        try:
            if not request.HasField("model_spec"):
                raise RequestError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            spec = request.model_spec
            servable = _resolve(self._manager, spec)
            signature = examples_signature(
                servable, method, spec.signature_name, check_method_name=self._check_method_name
            )
            loop = asyncio.get_running_loop()
            result, seconds = await loop.run_in_executor(
                self._executor, functools.partial(run_examples, servable, signature, method, request.input)
            )
            self._metrics.record_runtime(servable.name, api, seconds * 1e6)
            response = (
                classification_pb2.ClassificationResponse() if method == "classify" else regression_pb2.RegressionResponse()
            )
            fill_model_spec(response.model_spec, name, spec.signature_name, servable.version)
            response.result.CopyFrom(result)
            return response
        except Exception as error:
            failure = _failure(error)
            code = failure.code
            await _abort(context, failure)
        finally:
            self._metrics.record_request(name, code)
            self._metrics.record_latency(name, api, _ENTRYPOINT, code, (time.perf_counter() - started) * 1e6)

    async def MultiInference(
        self, request: inference_pb2.MultiInferenceRequest, context: grpc.aio.ServicerContext
    ) -> inference_pb2.MultiInferenceResponse:
        # TF Serving counts no request and records no runtime for MultiInference; its latency is kept here.
        name = request.tasks[0].model_spec.name if request.tasks else ""
        started = time.perf_counter()
        code = Code.OK
        try:
            first = request.tasks[0].model_spec if request.tasks else None
            servable, tasks = plan_multi_inference(
                [(t.model_spec.name, t.model_spec.signature_name, t.method_name) for t in request.tasks],
                lambda: _resolve(self._manager, first) if first is not None else self._manager.resolve(""),
                check_method_name=self._check_method_name,
            )
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(
                self._executor, functools.partial(run_multi_inference, servable, tasks, request.input)
            )
        except Exception as error:
            failure = _failure(error)
            code = failure.code
            await _abort(context, failure)
        finally:
            self._metrics.record_latency(name, "MultiInference", _ENTRYPOINT, code, (time.perf_counter() - started) * 1e6)


class ModelServicer(model_service_pb2_grpc.ModelServiceServicer):
    """GetModelStatus and HandleReloadConfigRequest over the served models (model_service_impl.cc)."""

    def __init__(
        self,
        manager: ServedModels,
        metrics: Metrics,
        reload: Callable[[ServerConfig], Awaitable[None]] | None = None,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._reload = reload or self._reload_in_a_thread

    async def _reload_in_a_thread(self, config: ServerConfig) -> None:
        await asyncio.get_running_loop().run_in_executor(None, self._manager.reload, config)

    async def GetModelStatus(
        self, request: get_model_status_pb2.GetModelStatusRequest, context: grpc.aio.ServicerContext
    ) -> get_model_status_pb2.GetModelStatusResponse:
        def answer() -> Any:
            if not request.HasField("model_spec"):
                raise RequestError(Code.INVALID_ARGUMENT, "Missing ModelSpec")
            spec = request.model_spec  # TF Serving reads its name and version only, never version_label
            version = spec.version.value if spec.HasField("version") else None
            return status_response(self._manager.status(spec.name, version))

        return await _timed(self._metrics, request.model_spec.name, "GetModelStatus", context, answer)

    async def HandleReloadConfigRequest(
        self, request: model_management_pb2.ReloadConfigRequest, context: grpc.aio.ServicerContext
    ) -> model_management_pb2.ReloadConfigResponse:
        """Apply a ModelServerConfig as TF Serving's ServerCore::ReloadConfig does; its status is the answer's."""
        try:
            if request.config.WhichOneof("config") != "model_config_list":
                raise RequestError(
                    Code.INVALID_ARGUMENT,
                    "ServerModelConfig type not supported by HandleReloadConfigRequest. "
                    "Only ModelConfigList is currently supported",
                )
            for index, entry in enumerate(request.config.model_config_list.config):
                log.info("Config entry index: %d path: %s name: %s platform: %s",
                         index, entry.base_path, entry.name, entry.model_platform)
            try:
                config = from_proto(request.config, "ReloadConfigRequest.config")
            except ModelConfigError as error:
                raise RequestError(error.code, error.message) from None
            await self._reload(config)
        except Exception as error:
            failure = _failure(error)
            log.error("ReloadConfig failed: %s", failure.message)
            await _abort(context, failure)
        response = model_management_pb2.ReloadConfigResponse()
        response.status.error_code = 0
        for name in request.metric_names:  # TF Serving's own counters are not kept here: no increase
            response.metric.add(name=name, int64_value_increase=0)
        return response


def add_services(
    server: grpc.aio.Server,
    manager: ServedModels,
    metrics: Metrics,
    executor: Executor,
    *,
    check_method_name: bool = False,
    tensor_content: bool = False,
    reload: Callable[[ServerConfig], Awaitable[None]] | None = None,
) -> None:
    """Register PredictionService and ModelService on ``server``.

    ``reload`` applies a HandleReloadConfigRequest's config (the server's own, which
    runs it beside its pollers and re-freezes the heap after); by default a thread
    runs :meth:`ServedModels.reload`.

    The handlers are those the generated ``add_*Servicer_to_server`` register,
    except that undecodable request bytes reach the method as an
    :class:`_Undecodable`, answered INTERNAL.
    """
    prediction = PredictionServicer(
        manager, metrics, executor, check_method_name=check_method_name, tensor_content=tensor_content
    )
    server.add_generic_rpc_handlers(
        (
            _handlers(prediction_service_pb2.DESCRIPTOR.services_by_name["PredictionService"], prediction),
            _handlers(model_service_pb2.DESCRIPTOR.services_by_name["ModelService"], ModelServicer(manager, metrics, reload)),
        )
    )


class _Undecodable:
    """What a request deserialiser returns for bytes that are not a serialised ``message``."""

    def __init__(self, message: str) -> None:
        self.message = message


def _handlers(service: ServiceDescriptor, servicer: Any) -> grpc.GenericRpcHandler:
    """Unary handlers for every method of ``service``, as grpc's generated code builds them."""
    handlers = {}
    for method in service.methods:
        request_type = message_factory.GetMessageClass(method.input_type)
        response_type = message_factory.GetMessageClass(method.output_type)
        handlers[method.name] = grpc.unary_unary_rpc_method_handler(
            _decoded_only(getattr(servicer, method.name)),
            request_deserializer=_lenient(request_type),
            response_serializer=response_type.SerializeToString,
        )
    return grpc.method_handlers_generic_handler(service.full_name, handlers)


def _lenient(request_type: Any) -> Callable[[bytes], Any]:
    def deserialize(data: bytes) -> Any:
        try:
            return request_type.FromString(data)
        except Exception:  # protobuf raises DecodeError, and others on hostile input (depth, size)
            return _Undecodable(request_type.DESCRIPTOR.full_name)

    return deserialize


def _decoded_only(
    method: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]],
) -> Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]]:
    async def behaviour(request: Any, context: grpc.aio.ServicerContext) -> Any:
        if isinstance(request, _Undecodable):
            await _abort(
                context,
                RequestError(
                    Code.INTERNAL,
                    f"Failed to parse the request: its bytes are not a serialized {request.message}",
                ),
            )
        return await method(request, context)

    return behaviour


def _resolve(manager: ServedModels, spec: Any) -> Servable:
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
        failure = _failure(error)
        code = failure.code
        await _abort(context, failure)
    finally:
        metrics.record_latency(name, api, _ENTRYPOINT, code, (time.perf_counter() - started) * 1e6)


def _failure(error: Exception) -> RequestError:
    """The status for ``error``; an unexpected one is logged with its traceback."""
    failure = from_exception(error)
    if failure is not error and failure.code is Code.INTERNAL:
        log.error("unexpected error serving a gRPC request", exc_info=error)
    return failure


async def _abort(context: grpc.aio.ServicerContext, error: RequestError) -> NoReturn:
    await context.abort(grpc.StatusCode[error.code.name], error.message)
    raise AssertionError("unreachable: context.abort raises")  # pragma: no cover
