"""What one request may cost the model server: its size, its time, its memory.

* Size: ``--canary_max_request_bytes`` (default 64 MiB) bounds a REST body
  and a gRPC message. REST refuses a larger ``Content-Length`` before reading
  a byte, and a chunked body as soon as it passes the limit, with 413 and
  TF Serving's ``{"error": ...}`` body; gRPC's own receive limit answers
  RESOURCE_EXHAUSTED. TF Serving itself reads any size (gRPC at up to 2 GiB);
  64 MiB holds a batch of about twenty 224x224x3 float images written as
  JSON at full precision (about 3 MB each) or one 2,300x2,300 uint8 photo,
  and keeps a hostile body from costing gigabytes to parse.
* Time: :func:`read_body` reads under the request's deadline
  (``--rest_api_timeout_in_ms`` counts from the first byte of the request),
  so a body that never finishes arriving is answered 504 in time.
* Memory: :func:`release_memory` hands freed heap back to the kernel after a
  large request (the server keeps freed memory for speed, see
  ``serving.server``).
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import logging
from typing import TYPE_CHECKING, Any

from serving.status import Code, RequestError

if TYPE_CHECKING:  # aiohttp is imported only by the server that uses it (flags import this module)
    from aiohttp import web

__all__ = [
    "DEFAULT_MAX_REQUEST_BYTES",
    "MAX_REQUEST_FLAG",
    "RELEASE_AFTER_BYTES",
    "read_body",
    "release_memory",
    "request_too_large",
]

log = logging.getLogger("serving.limits")

DEFAULT_MAX_REQUEST_BYTES = 64 * 1024 * 1024
MAX_REQUEST_FLAG = "--canary_max_request_bytes"
RELEASE_AFTER_BYTES = 8 * 1024 * 1024  # requests at least this large give their memory back


def request_too_large(limit: int, size: int | None = None) -> RequestError:
    """The 413 for a body over ``limit`` bytes (``size`` when the client announced it)."""
    told = f" of {size:,} bytes" if size is not None else ""
    return RequestError(
        Code.RESOURCE_EXHAUSTED,
        f"Request body{told} is larger than this server's limit of {limit:,} bytes "
        f"({limit / 2**20:g} MiB); raise it with {MAX_REQUEST_FLAG}=N, or send the tensor over gRPC "
        "(tensor_content is several times smaller than JSON)",
        http=413,
    )


async def read_body(request: web.Request, limit: int, deadline: float | None) -> bytearray:
    """The request body, at most ``limit`` bytes, read before ``deadline`` (event-loop time).

    Raises RESOURCE_EXHAUSTED (413) for a body over the limit, before reading
    it when ``Content-Length`` says so; DEADLINE_EXCEEDED (504) when the body
    has not arrived by the deadline; CANCELLED (499, never delivered) when the
    client hangs up, with one INFO line in the log and no traceback.
    """
    from aiohttp.http_exceptions import HttpProcessingError

    announced = request.content_length
    if announced is not None and announced > limit:
        raise request_too_large(limit, announced)
    body = bytearray()
    try:
        async with asyncio.timeout_at(deadline):
            while chunk := await request.content.readany():
                if len(body) + len(chunk) > limit:
                    raise request_too_large(limit, announced)
                body += chunk
    except TimeoutError:
        expected = f"{announced:,}" if announced is not None else "an unknown number of"
        raise RequestError(
            Code.DEADLINE_EXCEEDED,
            f"Request timed out before its body arrived ({len(body):,} of {expected} bytes came): the "
            "server waits --rest_api_timeout_in_ms for the body and the answer together",
            http=504,  # TF Serving's status for DEADLINE_EXCEEDED; set, so that the connection is closed
        ) from None
    except (ConnectionError, HttpProcessingError) as error:
        log.info("client %s went away before sending the whole body (%s)", request.remote, str(error) or "closed")
        raise RequestError(Code.CANCELLED, "Client closed the connection before the request body arrived") from None
    return body


@functools.cache
def _libc() -> Any:
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None  # not glibc: nothing to give back


def release_memory() -> None:
    """Give freed heap pages back to the kernel (glibc ``malloc_trim``; a no-op elsewhere)."""
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
