"""TF Serving's REST API on aiohttp.

``POST /v1/models/{name}[/versions/{v}|/labels/{l}]:predict`` (row or
columnar JSON), ``GET /v1/models/{name}[/versions/{v}]`` (status),
``GET .../metadata``, and the Prometheus page. Paths match TF Serving's
regular expressions (case-insensitive); errors answer ``{"error": "..."}``
with TF Serving's HTTP status for the canonical code. JSON decoding,
inference and encoding run together in a worker thread; the event loop only
moves bytes.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable
from concurrent.futures import Executor
from urllib.parse import unquote

import orjson
from aiohttp import web

from serving.metrics import PROMETHEUS_PATH, Metrics
from serving.registry import ModelManager
from serving.responses import metadata_json, status_json
from serving.status import Code, RequestError, from_exception, http_status
from serving.tensors import decode_json_request, encode_json_response

__all__ = ["MAX_BODY_BYTES", "RestApi"]

log = logging.getLogger("serving.rest")

MAX_BODY_BYTES = 2**31 - 1  # TF Serving reads bodies of any size
_PREDICT_RE = re.compile(
    r"/v1/models/([^/:]+)(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?:(classify|regress|predict)",
    re.IGNORECASE,
)
_STATUS_RE = re.compile(
    r"/v1/models(?:/([^/:]+))?(?:(?:/versions/(\d+))|(?:/labels/([^/:]+)))?(?:/(metadata))?",
    re.IGNORECASE,
)
_JSON = "application/json"


class RestApi:
    """Request handling for one model manager; :meth:`app` builds the aiohttp application."""

    def __init__(
        self,
        manager: ModelManager,
        metrics: Metrics,
        executor: Executor,
        *,
        timeout_ms: int = 30000,
        cors: bool = False,
        metrics_path: str = PROMETHEUS_PATH,
    ) -> None:
        self._manager = manager
        self._metrics = metrics
        self._executor = executor
        self._timeout = timeout_ms / 1000 if timeout_ms > 0 else None
        self._cors = cors
        self._metrics_path = metrics_path

    def app(self) -> web.Application:
        """The aiohttp application (one catch-all route, dispatched like TF Serving)."""
        application = web.Application(client_max_size=MAX_BODY_BYTES)
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
            if method.lower() != "predict":
                raise RequestError(
                    Code.UNIMPLEMENTED,
                    f"{method.lower()} is not supported by canary's model server (the models export "
                    "predict signatures only); use :predict",
                )
            return await self._predict(request, unquote(name), version, _label(label))
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

    async def _predict(self, request: web.Request, name: str, version: int | None, label: str | None) -> web.Response:
        started = time.perf_counter()
        code = Code.OK
        try:
            body = await request.read()
            loop = asyncio.get_running_loop()
            work = loop.run_in_executor(self._executor, self._predict_sync, body, name, version, label)
            try:
                payload = await asyncio.wait_for(work, self._timeout)
            except TimeoutError:
                raise RequestError(
                    Code.DEADLINE_EXCEEDED,
                    f"Request timed out after {self._timeout:g} s (--rest_api_timeout_in_ms)",
                ) from None
            return self._json(payload)
        except RequestError as error:
            code = error.code
            raise
        except Exception:
            code = Code.INTERNAL
            raise
        finally:
            self._metrics.record_request(name, code)
            micros = (time.perf_counter() - started) * 1e6
            self._metrics.record_latency(name, "predict", "REST", code, micros)

    def _predict_sync(self, body: bytes, name: str, version: int | None, label: str | None) -> bytes:
        servable = self._manager.resolve(name, version, label)
        decoded = decode_json_request(body, lambda signature: servable.signature(signature).inputs)
        signature = servable.signature(decoded.signature_name)
        outputs, seconds = servable.run(signature, decoded.inputs)
        self._metrics.record_runtime(name, "Predict", seconds * 1e6)
        return encode_json_response(outputs, decoded.format)

    def _status(self, name: str, version: int | None, label: str | None) -> bytes:
        if label is not None:
            self._manager.resolve(name, None, label)  # raises: no labels here
        return orjson.dumps(status_json(self._manager.status(name, version)))

    def _metadata(self, name: str, version: int | None, label: str | None) -> bytes:
        servable = self._manager.resolve(name, version, label)
        return orjson.dumps(metadata_json(servable))

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
        return self._json(orjson.dumps({"error": error.message}), http_status(error.code))

    def _with_cors(self, response: web.Response) -> web.Response:
        if self._cors:
            response.headers["Access-Control-Allow-Origin"] = "*"
            response.headers["Access-Control-Allow-Methods"] = "POST, GET"
            response.headers["Access-Control-Allow-Headers"] = "Content-Type"
        return response


def _version(text: str | None) -> int | None:
    if not text:
        return None
    try:
        return int(text)
    except ValueError:
        raise RequestError(Code.INVALID_ARGUMENT, f"Failed to convert version: {text} to numeric.") from None


def _label(text: str | None) -> str | None:
    return unquote(text) if text else None


def _no_version_and_label(version: int | None, label: str | None) -> None:
    if version is not None and label:
        raise RequestError(
            Code.INVALID_ARGUMENT,
            f"Both model version ({version}) and model version label ({label}) cannot be supplied.",
        )
