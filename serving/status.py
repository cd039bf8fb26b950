"""Request errors with TensorFlow's canonical codes, mapped as TF Serving maps them.

A request that cannot be served raises :class:`RequestError`; the REST layer
turns it into ``{"error": message}`` with :func:`http_status`, the gRPC layer
into a status with the same code name. Errors raised by TensorFlow ops while
running a signature (a corrupt JPEG, a bad shape) keep their own code.
"""

from __future__ import annotations

import enum
import re
from typing import Any

__all__ = ["Code", "RequestError", "from_exception", "http_status"]


class Code(enum.IntEnum):
    """TensorFlow / gRPC canonical status codes (same numbers, same names)."""

    OK = 0
    CANCELLED = 1
    UNKNOWN = 2
    INVALID_ARGUMENT = 3
    DEADLINE_EXCEEDED = 4
    NOT_FOUND = 5
    ALREADY_EXISTS = 6
    PERMISSION_DENIED = 7
    RESOURCE_EXHAUSTED = 8
    FAILED_PRECONDITION = 9
    ABORTED = 10
    OUT_OF_RANGE = 11
    UNIMPLEMENTED = 12
    INTERNAL = 13
    UNAVAILABLE = 14
    DATA_LOSS = 15
    UNAUTHENTICATED = 16


# TF Serving's ToHTTPStatusCode (model_servers/http_server.cc).
_HTTP_STATUS = {
    Code.OK: 200,
    Code.CANCELLED: 499,
    Code.UNKNOWN: 500,
    Code.INVALID_ARGUMENT: 400,
    Code.DEADLINE_EXCEEDED: 504,
    Code.NOT_FOUND: 404,
    Code.ALREADY_EXISTS: 409,
    Code.PERMISSION_DENIED: 403,
    Code.RESOURCE_EXHAUSTED: 429,
    Code.FAILED_PRECONDITION: 400,
    Code.ABORTED: 409,
    Code.OUT_OF_RANGE: 400,
    Code.UNIMPLEMENTED: 501,
    Code.INTERNAL: 500,
    Code.UNAVAILABLE: 503,
    Code.DATA_LOSS: 500,
    Code.UNAUTHENTICATED: 401,
}


def http_status(code: Code) -> int:
    """The HTTP status TF Serving's REST API answers for ``code``."""
    return _HTTP_STATUS.get(code, 500)


class RequestError(Exception):
    """A request that cannot be served, with the status code to report.

    ``http`` overrides the REST status TF Serving's mapping gives ``code``
    (413 for a body over the size limit, which gRPC reports as RESOURCE_EXHAUSTED).
    """

    def __init__(self, code: Code, message: str, *, http: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.http = http

    def __repr__(self) -> str:
        return f"RequestError({self.code.name}, {self.message!r})"


def from_exception(error: BaseException) -> RequestError:
    """Map an exception raised while serving to a :class:`RequestError`.

    TensorFlow op errors carry their own canonical code (``error_code``) and
    message; anything else is an internal error (its message does not name the
    Python exception: the server logs that).
    """
    if isinstance(error, RequestError):
        return error
    code: Any = getattr(error, "error_code", None)
    message: Any = getattr(error, "message", None)
    if isinstance(code, int) and isinstance(message, str):
        try:
            return RequestError(Code(code), _first_line(message))
        except ValueError:
            pass
    return RequestError(Code.INTERNAL, f"Internal error in canary's model server: {str(error) or 'no details'}")


_TRACE_PREFIXES = ("[[", "Graph execution error", "Detected at node", "<stack traces", "File ", "Node:")


def _first_line(message: str) -> str:
    """The cause of a TF op error, without the graph trace around it.

    Op errors wrap the cause in "Graph execution error: ... Detected at node
    ..." lines, "{{function_node ...}}" prefixes and "[[{{node ...}}]]" /
    "[Op:...]" suffixes; a client only needs the cause.
    """
    lines = [line.strip() for line in message.splitlines()]
    kept = [line for line in lines if line and not line.startswith(_TRACE_PREFIXES)]
    text = " ".join(kept)
    text = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", text)
    text = re.sub(r"\s*\[\[\{\{node [^]]*\]\]", "", text)
    text = re.sub(r"\s*\[Op:[^]]*\](\s*name:.*)?$", "", text).strip()
    return text or message.strip()
