"""JSON documents as TF Serving's REST API reads and writes them.

TF Serving parses request bodies with rapidjson and ``kParseNanAndInfFlag``
(tensorflow_serving/util/json_tensor.cc, ``ParseJson``), so ``NaN``,
``Infinity`` and ``-Infinity`` are numbers in a request; it writes non-finite
floats back the same way (``WriteDecimal``: ``NaN``, ``Infinity``,
``-Infinity``), where a strict JSON writer would write ``null``. orjson reads
and writes strict JSON quickly; a body it refuses is read again by rapidjson
itself (python-rapidjson), for TF Serving's non-finite numbers and the rest
of what rapidjson reads with TF Serving's flags (``Inf``, bytes that are not
UTF-8 inside strings, a NUL byte ending the input, and anything after the
document's value ignored: ``kParseStopWhenDoneFlag``), or for its error in
TF Serving's words: ``JSON Parse error: <GetParseError_En text> at offset:
<n>``.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson
import rapidjson

from serving.status import Code, RequestError

__all__ = ["PARSE_ERRORS", "json_type", "numbers", "parse_json_object", "snippet"]



def parse_json_object(body: bytes | bytearray) -> dict[str, Any]:
    """The JSON object ``body``, or INVALID_ARGUMENT worded as TF Serving's ``ParseJson``."""
    if not body:
        raise _invalid("JSON Parse error: The document is empty")
    try:
        doc = orjson.loads(body)
    except orjson.JSONDecodeError:
        doc = _as_rapidjson(bytes(body))
    if not isinstance(doc, dict):
        raise _invalid(f"JSON Value: {snippet(doc)} Is not object")
    return doc


def _as_rapidjson(body: bytes) -> Any:
    """What TF Serving's rapidjson reads in a body orjson refused, or its error (rare: slower).

    python-rapidjson is rapidjson with ``kParseNanAndInfFlag`` (``NM_NAN``; its numbers
    correctly rounded, as orjson's and serving.jsonarray's, where ``NM_NATIVE`` would take
    rapidjson's own, sometimes one ulp off); a NUL byte ends its input as it ends TF
    Serving's. It has no option for three of TF Serving's ways, added here:

    - ``kParseStopWhenDoneFlag``: python-rapidjson refuses what follows the document's value,
      TF Serving ignores it: the body is read again up to there.
    - ``kParseIterativeFlag``: its start state calls a body that starts with ``]``, ``}``,
      ``,`` or ``:`` empty, where python-rapidjson's recursive parser says ``Invalid value.``.
    - bytes that are not UTF-8 (:func:`_not_utf8`).
    """
    try:
        try:
            return _loads(body)
        except UnicodeDecodeError:  # python-rapidjson decodes bytes as UTF-8 before parsing
            return _not_utf8(body)
    except rapidjson.JSONDecodeError as error:
        where, _, text = str(error).partition(": ")  # "Parse error at offset <n>: <GetParseError_En text>"
        offset = int(where.rpartition(" ")[2])
        if text == "The document root must not be followed by other values.":
            return _as_rapidjson(body[:offset])
        if text == PARSE_ERRORS["value"] and body[offset : offset + 1] in _NOT_A_START and not body[:offset].strip(b" \t\n\r"):
            text = PARSE_ERRORS["empty"]
        raise _invalid(f"JSON Parse error: {text} at offset: {offset}") from None
    except RecursionError:
        raise _invalid("JSON Parse error: the document nests too deeply for this server") from None


def _not_utf8(body: bytes) -> Any:
    """A body with bytes that are not UTF-8, which python-rapidjson refuses before parsing.

    rapidjson reads any byte >= 0x80 as it reads ``?`` (a character inside a string, an
    invalid value outside one), so rapidjson reads the body with ``?`` in their place, for its
    error or where the document ends; Python's json then reads the document, keeping those
    bytes in strings as surrogate escapes.
    """
    text = body.decode("utf-8", "surrogateescape")
    _loads(_NOT_UTF8.sub("?", text))
    text = _WORDS.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else _spelled(m.group(0)), text.partition("\0")[0])
    return json.loads(text)


def _loads(body: bytes | str) -> Any:
    return rapidjson.loads(body, number_mode=rapidjson.NM_NAN)


def _spelled(word: str) -> str:
    """rapidjson's NaN / Inf / Infinity, signed or not, as Python's json spells them."""
    if word.endswith("NaN"):
        return "NaN"  # rapidjson ignores a NaN's sign
    return "-Infinity" if word.startswith("-") else "Infinity"


# rapidjson's GetParseError_En texts (what TF Serving's ParseJson reports).
PARSE_ERRORS = {
    "empty": "The document is empty.",
    "value": "Invalid value.",
    "name": "Missing a name for object member.",
    "colon": "Missing a colon after a name of object member.",
    "object": "Missing a comma or '}' after an object member.",
    "array": "Missing a comma or ']' after an array element.",
    "hex": "Incorrect hex digit after \\u escape in string.",
    "surrogate": "The surrogate pair in string is invalid.",
    "escape": "Invalid escape character in string.",
    "quote": "Missing a closing quotation mark in string.",
    "encoding": "Invalid encoding in string.",
    "big": "Number too big to be stored in double.",
    "fraction": "Miss fraction part in number.",
    "exponent": "Miss exponent in number.",
}
_NOT_A_START = (b"]", b"}", b",", b":")
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_WORDS = re.compile(r'"(?:[^"\\]|\\.)*"|-?(?:Infinity|Inf|NaN)', re.DOTALL)


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
