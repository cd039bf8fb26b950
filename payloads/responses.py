"""Predict responses in, probability vectors out: REST JSON and serialised gRPC.

Pure and import-light (orjson, numpy; no TensorFlow). TF Serving answers a
one-instance REST predict with ``{"predictions": [[p0, p1, ...]]}`` (row
format) or ``{"outputs": ...}`` (columnar), and a gRPC Predict with a
``PredictResponse`` whose ``outputs["probabilities"]`` is a float32 tensor.

Cost for 1000 classes: REST ~45 us (orjson.loads ~27 us, then np.fromiter
into float32 ~17 us; ``np.fromstring(sep=",")`` is 5x slower), gRPC ~7 us
(the float32 ``tensor_content`` is read zero copy). Our server prints
float32's shortest repr, which parses back bit-exact; TF Serving's ~7
significant digits land within 1e-7 of the float32 value.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import orjson

from canary.errors import FingerprintError
from payloads.wire import WireError, decode_predict_output

__all__ = ["OUTPUT", "grpc_probabilities", "rest_error_text", "rest_probabilities"]

OUTPUT = "probabilities"

Vector = npt.NDArray[np.float32]


def rest_probabilities(body: bytes | str, output: str = OUTPUT) -> Vector:
    """The probability vector of a one-instance REST predict response, as float32.

    Accepts the row format (``{"predictions": [[...]]}`` or, with several
    outputs, ``{"predictions": [{"probabilities": [...]}]}``) and the
    columnar one (``{"outputs": ...}``).
    """
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        raise FingerprintError(
            f"the REST response is not JSON ({error}): {_preview(body)}"
        ) from None
    if not isinstance(doc, dict):
        raise FingerprintError(f"the REST response is not a JSON object: {_preview(body)}")
    if "error" in doc:
        raise FingerprintError(f"the model server answered an error: {doc['error']}")
    rows = doc.get("predictions", doc.get("outputs"))
    if isinstance(rows, dict):  # columnar, several outputs
        rows = rows.get(output)
    row = rows
    if isinstance(rows, list) and rows and isinstance(rows[0], list | dict):
        if len(rows) != 1:
            raise FingerprintError(
                f"the REST response has {len(rows)} predictions; send one instance per request"
            )
        row = rows[0].get(output) if isinstance(rows[0], dict) else rows[0]
    if not isinstance(row, list) or not row:
        raise FingerprintError(f"the REST response has no {output!r} prediction: {_preview(body)}")
    try:  # np.fromiter: ~17 us for 1000 floats, np.array ~21 us
        return np.fromiter(row, dtype=np.float32, count=len(row))
    except (TypeError, ValueError):
        raise FingerprintError(
            f"the REST response's prediction is not one vector of numbers: {_preview(body)}"
        ) from None


def grpc_probabilities(message: bytes | memoryview, output: str = OUTPUT) -> Vector:
    """The float32 output ``output`` of a serialised ``PredictResponse`` (zero copy)."""
    try:
        return decode_predict_output(message, output)
    except WireError as error:
        raise FingerprintError(
            f"the gRPC response is not a PredictResponse with {output!r}: {error}"
        ) from None


def rest_error_text(body: bytes | str | None, limit: int = 300) -> str:
    """Why a REST request failed, as the server put it: TF Serving's ``{"error": ...}``
    message, else the body's text (Envoy's ``no healthy upstream``, ``fault filter abort``),
    on one line and at most ``limit`` characters; empty for an empty body."""
    if not body:
        return ""
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = None
    if isinstance(doc, dict) and "error" in doc:
        text = str(doc["error"])
    else:
        text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return _preview(" ".join(text.split()), limit)


def _preview(body: bytes | str, limit: int = 200) -> str:
    text = body.decode("utf-8", errors="replace") if isinstance(body, bytes) else body
    return text if len(text) <= limit else text[:limit] + "..."
