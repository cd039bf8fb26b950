"""JSON documents as TF Serving's REST API reads and writes them.

TF Serving parses request bodies with rapidjson and ``kParseNanAndInfFlag``
(tensorflow_serving/util/json_tensor.cc, ``ParseJson``), so ``NaN``,
``Infinity`` and ``-Infinity`` are numbers in a request; it writes non-finite
floats back the same way (``WriteDecimal``: ``NaN``, ``Infinity``,
``-Infinity``), where a strict JSON writer would write ``null``. orjson reads
and writes strict JSON quickly; this module adds TF Serving's non-finite
numbers around it, and the error texts of its parser.
"""

from __future__ import annotations

import json
import math
from typing import Any

import numpy as np
import orjson

from serving.status import Code, RequestError

__all__ = ["json_type", "numbers", "parse_json_object", "snippet"]

_NON_FINITE_WORDS = (b"NaN", b"Infinity")


def parse_json_object(body: bytes | bytearray) -> dict[str, Any]:
    """The JSON object ``body``, or INVALID_ARGUMENT worded as TF Serving's ``ParseJson``."""
    if not body or body.isspace():
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError as error:
        doc = _with_non_finite(body, error)
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {snippet(doc)} Is not object")
    return doc


def _with_non_finite(body: bytes | bytearray, error: orjson.JSONDecodeError) -> Any:
    """Parse again accepting NaN/Infinity/-Infinity (rare: the standard library is slower)."""
    if any(word in body for word in _NON_FINITE_WORDS):
        try:
            return json.loads(body)
        except (ValueError, RecursionError):  # JSONDecodeError and UnicodeDecodeError are ValueErrors
            pass
    raise _invalid(
        f"JSON Parse error: {error}. Send one JSON object such as {{\"instances\": [...]}}"
    ) from None


def snippet(value: Any, limit: int = 200) -> str:
    """``value`` as compact JSON for an error message, cut at ``limit`` characters."""
    try:
        text = orjson.dumps(value).decode()
    except (TypeError, orjson.JSONEncodeError):  # integers beyond 64 bits (from the NaN-aware parser)
        text = json.dumps(value, separators=(",", ":"), default=str)
    return text if len(text) <= limit else text[:limit] + "...(truncated)"


def json_type(value: Any) -> str:
    """rapidjson's name for the type of a parsed JSON value ("Number", "String"...)."""
    if value is None:
        return "Null"
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int | float):
        return "Number"
    if isinstance(value, str):
        return "String"
    if isinstance(value, list):
        return "Array"
    return "Object"


def numbers(value: Any) -> Any:
    """A numeric ndarray (or numpy scalar) ready for ``orjson.dumps(OPT_SERIALIZE_NUMPY)``.

    Finite values pass through; an array holding NaN or an infinity becomes a
    pre-serialised fragment that spells them ``NaN``, ``Infinity`` and
    ``-Infinity`` as TF Serving does (orjson would write ``null``).
    """
    if isinstance(value, np.generic) or (isinstance(value, np.ndarray) and value.ndim == 0):
        scalar = value.item()  # orjson serialises no 0-d array
        if isinstance(scalar, float) and not math.isfinite(scalar):
            return orjson.Fragment(_word(scalar))
        return scalar
    if not isinstance(value, np.ndarray) or value.dtype.kind != "f":
        return value
    array = np.ascontiguousarray(value)
    finite = np.isfinite(array)
    if finite.all():
        return array
    pieces = orjson.dumps(array, option=orjson.OPT_SERIALIZE_NUMPY).split(b"null")
    words = [_word(v) for v in array[~finite].tolist()]  # C order, as orjson writes them
    return orjson.Fragment(pieces[0] + b"".join(w + p for w, p in zip(words, pieces[1:], strict=True)))


def _word(value: float) -> bytes:
    if value != value:
        return b"NaN"
    return b"Infinity" if value > 0 else b"-Infinity"


def _invalid(message: str) -> RequestError:
    return RequestError(Code.INVALID_ARGUMENT, message)
