"""TF Serving's REST API on aiohttp.

``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` (row or
columnar JSON), ``GET /v1/models/{name}[/versions/{v}]`` (status),
``GET .../metadata``, and the Prometheus page; beside them, this server's
own record of a version (the export's canary_model.json) at
``GET /canary/v1/models/{name}[/versions/{v}|/labels/{l}]``, a path TF
Serving does not serve (it answers 404 there). Paths match TF Serving's
regular expressions (case-insensitive); errors answer ``{"error": "..."}``
with TF Serving's HTTP status for the canonical code. ``:classify`` and
``:regress`` run classify/regress signatures on tf.Examples as TF Serving
does (:mod:`serving.inference`, :mod:`serving.examples`). JSON decoding, inference and encoding run
together in a worker thread; the event loop only moves bytes.

Bodies are bounded (:mod:`serving.limits`): over ``--canary_max_request_bytes``
is 413, and ``--rest_api_timeout_in_ms`` counts from the request's arrival,
the body's upload included, to the answer.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from urllib.parse import unquote

import orjson
from aiohttp import web

from serving.examples import examples_body, result_json
from serving.inference import Method, classify_or_regress
from serving.limits import DEFAULT_MAX_REQUEST_BYTES, RELEASE_AFTER_BYTES, read_body, release_memory
from serving.metrics import PROMETHEUS_PATH, Metrics
from serving.responses import canary_model_json, metadata_json, status_json
from serving.servable import Servable
from serving.served_models import ServedModels
from serving.signatures import DEFAULT_SIGNATURE
from serving.status import Code, RequestError, from_exception, http_status
from serving.tensors import TensorSpec, decode_json_request, encode_json_response

__all__ = ["RestApi"]

log = logging.getLogger("serving.rest")

_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_CANARY_RE = re.compile(r"/canary/v1/models/([^/:]+)(?:/versions/(\d+))?(?:/labels/([^/:]+))?", re.IGNORECASE)
_JSON = "application/json"
_INT64_LIMIT = 2**63


class RestApi:
    """Request handling over the served models; :meth:`app` builds the aiohttp application."""

    def __init__(
        self,
        manager: ServedModels,
        metrics: Metrics,
        executor: Executor,
        *,
        timeout_ms: int = 30000,
        cors: bool = False,
        metrics_path: str = PROMETHEUS_PATH,
        max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES,
        check_method_name: bool = False,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._executor = executor
        self._timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self._cors = cors
        self._metrics_path = metrics_path
        self._max_request_bytes = max_request_bytes
        self._check_method_name = check_method_name

    def app(self) -> web.Application:
        """The aiohttp application (one catch-all route, dispatched like TF Serving)."""
        application = web.Application(client_max_size=self._max_request_bytes)
        application.router.add_route("*", "/{tail:.*}", self._handle)
        return application

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        path = request.rel_url.raw_path  # still percent-encoded, as TF Serving matches it
        if path == self._metrics_path:
            return self._with_cors(
                web.Response(text=self._metrics.render(), content_type="text/plain", charset="utf-8")
            )
        if request.method == "OPTIONS" and self._cors:
            return self._with_cors(web.Response(status=204))
        canary = _CANARY_RE.fullmatch(path) if request.method == "GET" else None
        if canary is not None:  # this server's own record of a version: a path TF Serving does not serve
            try:
                return await self._timed(unquote(canary.group(1)), "GetModelMetadata", lambda: self._canary(canary))
            except RequestError as error:
                return self._error(error)
        if not path.lower().startswith("/v1/"):
            return self._error(
                RequestError(
                    Code.NOT_FOUND,
                    f"No handler for {request.method} {path}: the REST API lives under "
                    f"/v1/models/<name> and metrics at {self._metrics_path}",
                )
            )
        try:
            return await self._dispatch(request, path)
        except RequestError as error:
            return self._error(error)
        except Exception as error:  # never let a request take the server down
            log.exception("unexpected error serving %s %s", request.method, path)
            return self._error(from_exception(error))

    async def _dispatch(self, request: web.Request, path: str) -> web.StreamResponse:
        malformed = RequestError(Code.INVALID_ARGUMENT, f"Malformed request: {request.method} {path}")
        if request.method == "POST":
            match = _PREDICT_RE.fullmatch(path)
            if match is None:
                raise malformed
            name, version_text, label, method = match.groups()
            version = _version(version_text)
            _no_version_and_label(version, label)
            return await self._infer(request, unquote(name), version, _label(label), method.lower())
        if request.method == "GET":
            match = _STATUS_RE.fullmatch(path)
            if match is None:
                raise malformed
            name, version_text, label, subresource = match.groups()
            version = _version(version_text)
            _no_version_and_label(version, label)
            if not name:
                raise RequestError(Code.INVALID_ARGUMENT, "Missing model name in request.")
            model, version_label = unquote(name), _label(label)
            if subresource:
                return await self._timed(
                    model, "GetModelMetadata", lambda: self._metadata(model, version, version_label)
                )
            return await self._timed(model, "GetModelStatus", lambda: self._status(model, version, version_label))
        raise malformed

    async def _infer(
        self, request: web.Request, name: str, version: int | None, label: str | None, method: str
    ) -> web.Response:
        """:predict, :classify or :regress, from the body's first byte to the answer within the timeout."""
        loop = asyncio.get_running_loop()
        started = time.perf_counter()
        # loop.time() is time.monotonic(), which the worker compares with too
        deadline = loop.time() + self._timeout if self._timeout is not None else None
        code = Code.OK
        size = 0
        try:
            body = await read_body(request, self._max_request_bytes, deadline)
            size = len(body)
            if method == "predict":
                produce = functools.partial(self._predict_sync, body, name, version, label, deadline)
            else:
                kind: Method = "classify" if method == "classify" else "regress"
                produce = functools.partial(self._examples_sync, body, name, version, label, kind, deadline)
            del body  # the worker holds it while it needs it
            work = loop.run_in_executor(self._executor, _answer, produce)
            del produce
            try:
                result = await asyncio.wait_for(work, None if deadline is None else max(0.0, deadline - loop.time()))
            except TimeoutError:
                raise _timed_out(self._timeout) from None
            if isinstance(result, RequestError):
                code = result.code
                return self._error(result)  # not raised: its frames, and the body they hold, go now
            return self._json(result)
        except RequestError as error:
            code = error.code
            raise
        except Exception:
            code = Code.INTERNAL
            raise
        finally:
            self._metrics.record_request(name, code)
            micros = (time.perf_counter() - started) * 1e6
            self._metrics.record_latency(name, method, "REST", code, micros)
            if size >= RELEASE_AFTER_BYTES:
                loop.run_in_executor(self._executor, release_memory)

    def _predict_sync(
        self, body: bytearray, name: str, version: int | None, label: str | None, deadline: float | None
    ) -> bytes:
        resolved: list[Servable] = []

        def inputs_for(signature_name: str) -> dict[str, TensorSpec]:
            # resolved once the body is known to be JSON: TF Serving parses before it looks the model up
            resolved.append(self._manager.resolve(name, version, label))
            return _signature_inputs(resolved[0], signature_name)

        decoded = decode_json_request(body, inputs_for)
        del body[:]  # decoded into new arrays: free the request's bytes before the model runs
        servable = resolved[0]
        signature = servable.signature(decoded.signature_name)
        if deadline is not None and time.monotonic() > deadline:
            raise _timed_out(self._timeout)  # the answer is no longer awaited: do not run the model
        inputs, fmt = decoded.inputs, decoded.format
        del decoded  # run() frees each array once it is a tensor
        outputs, seconds = servable.run(signature, inputs, consume=True)
        self._metrics.record_runtime(name, "Predict", seconds * 1e6)
        return encode_json_response(outputs, fmt)

    def _examples_sync(
        self, body: bytearray, name: str, version: int | None, label: str | None, method: Method, deadline: float | None
    ) -> bytes:
        signature_name, request_input = examples_body(body)  # the whole body first, as TF Serving reads it
        del body[:]  # decoded into Examples: free the request's bytes before the model runs
        servable = self._manager.resolve(name, version, label)
        if deadline is not None and time.monotonic() > deadline:
            raise _timed_out(self._timeout)  # the answer is no longer awaited: do not run the model
        result, seconds = classify_or_regress(
            servable, method, signature_name, request_input, check_method_name=self._check_method_name
        )
        del request_input
        self._metrics.record_runtime(name, "Classify" if method == "classify" else "Regress", seconds * 1e6)
        return result_json(result)

    def _status(self, name: str, version: int | None, label: str | None) -> bytes:
        # TF Serving's GetModelStatus reads only the name and version: a label lists every version
        # (get_model_status_impl.cc), whether or not the label exists.
        del label
        return orjson.dumps(status_json(self._manager.status(name, version)))

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        servable = self._manager.resolve(name, version, label)
        return orjson.dumps(metadata_json(servable))

    def _canary(self, match: re.Match[str]) -> bytes:
        name, version_text, label = match.groups()
        version = _version(version_text)
        _no_version_and_label(version, label)
        return orjson.dumps(canary_model_json(self._manager.resolve(unquote(name), version, _label(label))))

    async def _timed(self, name: str, api: str, produce: Callable[[], bytes]) -> web.Response:
        started = time.perf_counter()
        code = Code.OK
        try:
            return self._json(produce())
        except RequestError as error:
            code = error.code
            raise
        finally:
            micros = (time.perf_counter() - started) * 1e6
            self._metrics.record_latency(name, api, "REST", code, micros)

    def _json(self, payload: bytes, status: int = 200) -> web.Response:
        return self._with_cors(web.Response(body=payload, status=status, content_type=_JSON))

    def _error(self, error: RequestError) -> web.Response:
        response = self._json(orjson.dumps({"error": error.message}), error.http or http_status(error.code))
        if error.http is not None or error.code is Code.CANCELLED:
            response.force_close()  # the body may still be on its way: do not reuse the connection
        return response

    def _with_cors(self, response: web.Response) -> web.Response:
        if self._cors:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Methods"] = "POST, GET"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return response


def _answer(produce: Callable[[], bytes]) -> bytes | RequestError:
    """Run ``produce`` in a worker: its payload, or the RequestError it raised.

    The error comes back as a value, without its traceback: raised through
    the executor's future it would sit in a reference cycle (future ->
    exception -> frames -> future) holding the request body and the decoded
    tensors until the garbage collector happens to run.
    """
    try:
        return produce()
    except RequestError as error:
        return error.with_traceback(None)


def _signature_inputs(servable: Servable, name: str) -> dict[str, TensorSpec]:
    """The inputs of signature ``name``, looked up as TF Serving's REST handler does (GetInfoMap)."""
    key = name or DEFAULT_SIGNATURE
    if key not in servable.signatures:
        raise RequestError(Code.INVALID_ARGUMENT, f'Serving signature name: "{key}" not found in signature def')
    return servable.signature(key).inputs


def _timed_out(timeout: float | None) -> RequestError:
    return RequestError(Code.DEADLINE_EXCEEDED, f"Request timed out after {timeout:g} s (--rest_api_timeout_in_ms)")


def _version(text: str | None) -> int | None:
    if not text:
        return None
    try:
        version = int(text)
    except ValueError:
        version = _INT64_LIMIT
    if version >= _INT64_LIMIT:  # TF Serving's ParseModelInfo reads an int64 (absl::SimpleAtoi)
        raise RequestError(Code.INVALID_ARGUMENT, f"Failed to convert version: {text} to numeric.")
    return version


def _label(text: str | None) -> str | None:
    return unquote(text) if text else None


def _no_version_and_label(version: int | None, label: str | None) -> None:
    if version is not None and label:
        raise RequestError(
            Code.INVALID_ARGUMENT,
            f"Both model version ({version}) and model version label ({label}) cannot be supplied.",
        )
