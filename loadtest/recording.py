"""From one Locust ``request`` event to one record: status, attribution, model version.

The users put a :class:`RequestMeta` in the request's context; the plugin's
``request`` listener calls :func:`make_row` with the event's arguments. A
failed request is subset ``error``; a response that matches no calibrated
reference is ``unknown`` with its own top-5 kept for diagnosis. A failure's
``error`` says why as the server put it (``404 Not Found: <TF Serving's
message>``, ``UNAVAILABLE: <details>``), else names the exception. This never
raises: whatever goes wrong is written into the record's ``error``.

A request still in flight when Locust's stop timeout ran out is killed with
it; the user then fires its request event with :class:`RequestInterrupted`,
so Locust counts it and its record says so (status ``interrupted``, subset
``error``, never an answer): records, Locust's count and the requests sent
stay equal.
"""

from __future__ import annotations

from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from canary.conventions import ERROR, UNKNOWN
from canary.errors import CanaryError
from canary.rundir.records import INTERRUPTED_STATUS
from loadtest.fingerprint import Fingerprinter
from payloads.responses import rest_error_text
from payloads.wire import response_model_version

__all__ = ["META_KEY", "SERVER_TIME_HEADER", "SERVER_TIME_KEY", "RequestInterrupted", "RequestMeta", "make_row",
           "server_ms"]

META_KEY = "canary"
SERVER_TIME_KEY = "canary_server_ms"  # a gRPC user's request context: the upstream time from its initial metadata
SERVER_TIME_HEADER = "x-envoy-upstream-service-time"  # Envoy's (Istio's) time spent upstream, in milliseconds
"""The request context key holding a :class:`RequestMeta`."""


@dataclass(frozen=True, slots=True)
class RequestMeta:
    """What a user knows about the request it is sending."""

    protocol: str  # rest | grpc
    group: str  # default | canary
    header: str  # "user-group: canary", or "" for the default group
    user: int
    payload_id: str
    fmt: str
    path: str
    versioned: bool
    label: int | None


class RequestInterrupted(Exception):
    """A request the load test stopped while it was in flight (its user was killed at the stop timeout)."""

    def __init__(self, after_s: float) -> None:
        super().__init__(f"the load test stopped while this request was in flight: no response within the stop "
                         f"timeout ({after_s:g} s after the stop); the mesh may or may not have counted it")


def _status(protocol: str, response: Any, exception: BaseException | None) -> str:
    if isinstance(exception, RequestInterrupted):
        return INTERRUPTED_STATUS
    if protocol == "grpc":
        code = getattr(exception, "code", None)
        if exception is None:
            return "OK"
        if callable(code):
            try:
                return str(code().name)
            except Exception:
                pass
        return type(exception).__name__
    status = getattr(response, "status_code", None)
    if isinstance(status, int) and status > 0:
        return str(status)
    return type(exception).__name__ if exception is not None else "0"


def _content(response: Any) -> bytes | None:
    if isinstance(response, bytes | bytearray | memoryview):
        return bytes(response)
    try:
        content = getattr(response, "content", None)
    except Exception:  # geventhttpclient raises when the body cannot be read
        return None
    return bytes(content) if isinstance(content, bytes | bytearray) else None


def server_ms(value: Any) -> float | None:
    """Envoy's ``x-envoy-upstream-service-time`` (whole milliseconds) as a float; None when absent."""
    try:
        found = float(value)
    except (TypeError, ValueError):
        return None
    return found if found >= 0 else None


def _rest_server_ms(response: Any) -> float | None:
    headers = getattr(response, "headers", None)
    try:
        return server_ms(headers.get(SERVER_TIME_HEADER)) if headers is not None else None
    except Exception:  # a header object that cannot be read: no server time, the record stands
        return None


def make_row(
    meta: RequestMeta | None,
    *,
    request_type: str,
    name: str,
    response_time: float,
    response_length: int | None,
    response: Any,
    exception: BaseException | None,
    start_time: float,
    fingerprinter: Fingerprinter | None,
    worker: str,
    seq: int,
    upstream_ms: float | None = None,
) -> dict[str, Any]:
    """One record (see :mod:`loadtest.records`) for one request event; ``upstream_ms``: the
    server time a gRPC user read from the initial metadata (REST reads it from the response)."""
    ok = exception is None
    if meta is not None:
        protocol, group, header, user = meta.protocol, meta.group, meta.header, meta.user
        payload_id, fmt, path, versioned, label = meta.payload_id, meta.fmt, meta.path, meta.versioned, meta.label
    else:  # a request this plugin did not make (another user class in the same locustfile)
        protocol = "grpc" if request_type.lower() == "grpc" else "rest"
        group, header, user = "default", "", None
        payload_id, fmt, path, versioned, label = None, None, name, None, None
    status = _status(protocol, response, exception)
    row: dict[str, Any] = {
        "time": float(start_time),
        "protocol": protocol,
        "group": group,
        "header": header,
        "user": user,
        "payload_id": payload_id,
        "format": fmt,
        "path": path,
        "versioned": versioned,
        "status": status,
        "ok": ok,
        "latency_ms": float(response_time or 0.0),
        "bytes": int(response_length or 0),
        "subset": UNKNOWN if ok else ERROR,
        "distance": None,
        "top1": None,
        "top5": None,
        "label": label,
        "model_version": None,
        "error": None if ok else _describe(status, response, exception),
        "worker": worker,
        "seq": seq,
        "server_ms": upstream_ms if protocol == "grpc" else _rest_server_ms(response),
    }
    if not ok:
        return row
    body = _content(response)
    if protocol == "grpc" and body is not None:
        row["model_version"] = response_model_version(body)
    if meta is None:
        row["error"] = f"not a canary predict request ({request_type} {name}); it cannot be attributed"
        return row
    if fingerprinter is None:
        row["error"] = "no calibration reached this worker; the response could not be attributed"
        return row
    if body is None:
        row["error"] = "the response body could not be read"
        return row
    try:
        if protocol == "grpc":
            found = fingerprinter.attribute_grpc(meta.payload_id, meta.fmt, body)
        else:
            found = fingerprinter.attribute_rest(meta.payload_id, meta.fmt, body)
    except CanaryError as error:
        row["error"] = str(error)
        return row
    except Exception as error:  # a malformed response must not break the load test
        row["error"] = f"attribution failed: {type(error).__name__}: {error}"
        return row
    row["subset"] = found.subset
    row["distance"] = float(found.distance)
    row["top1"] = int(found.top1)
    row["top5"] = [int(c) for c, _ in found.top5]
    if found.subset == UNKNOWN:
        row["error"] = (
            f"no calibrated reference within tolerance (nearest at {found.distance:.3g}, match {found.match})"
        )
    return row


def _describe(status: str, response: Any, exception: BaseException | None) -> str:
    """Why a request failed: ``404 Not Found: <the server's message>`` for an HTTP error status,
    ``NOT_FOUND: <details>`` for a gRPC error, else the exception (a refused connection, a timeout)."""
    if exception is None:
        return ""
    if isinstance(exception, RequestInterrupted):
        return str(exception)
    details = getattr(exception, "details", None)
    if callable(details):
        try:
            return f"{status}: {details()}"[:500]
        except Exception:
            pass
    if status.isdigit() and int(status) >= 400:
        try:
            phrase = HTTPStatus(int(status)).phrase
        except ValueError:
            phrase = "HTTP error"
        message = rest_error_text(_content(response))
        return f"{status} {phrase}: {message}" if message else f"{status} {phrase}"
    return f"{type(exception).__name__}: {exception}"[:500]
