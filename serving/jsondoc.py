"""JSON documents as TF Serving's REST API reads and writes them.

TF Serving parses request bodies with rapidjson and ``kParseNanAndInfFlag``
(tensorflow_serving/util/json_tensor.cc, ``ParseJson``), so ``NaN``,
``Infinity`` and ``-Infinity`` are numbers in a request; it writes non-finite
floats back the same way (``WriteDecimal``: ``NaN``, ``Infinity``,
``-Infinity``), where a strict JSON writer would write ``null``. orjson reads
and writes strict JSON quickly; this module adds TF Serving's non-finite
numbers around it, and the rest of what rapidjson reads with TF Serving's
flags (``Inf``, bytes that are not UTF-8 inside strings, a NUL byte ending
the input, and anything after the document's value ignored:
``kParseStopWhenDoneFlag``). A body neither reads is refused with
rapidjson's words: ``JSON Parse error: <GetParseError_En text> at offset:
<n>``, orjson's error mapped to rapidjson's text and byte offset
(:func:`rapidjson_error`).
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

import numpy as np
import orjson

from serving.status import Code, RequestError

__all__ = ["PARSE_ERRORS", "json_type", "numbers", "parse_json_object", "rapidjson_error", "snippet"]



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

    rapidjson, with TF Serving's flags, also reads NaN, Infinity and Inf
    (signed), bytes that are not UTF-8 inside strings, stops at a NUL byte,
    and stops reading once the document's value is complete
    (``kParseStopWhenDoneFlag``: anything after it is ignored).
    """
    end = body.find(b"\0")
    if end >= 0:
        body = body[:end]
    probe = _probe(body)
    try:
        orjson.loads(probe)
    except orjson.JSONDecodeError as error:
        position = error.pos if probe.isascii() else len(probe.decode()[: error.pos].encode())
        if error.msg.startswith("unexpected content after document"):
            return _as_rapidjson(body[:position])
        text, offset = rapidjson_error(probe, error.msg, position)
        if text is None:  # a complete document ends at offset
            return _as_rapidjson(body[:offset])
        raise _invalid(f"JSON Parse error: {text} at offset: {offset}") from None
    text = body.decode("utf-8", "surrogateescape")
    if _has_words(body):
        text = _WORDS_TEXT.sub(lambda m: m.group(0) if m.group(0)[0] == '"' else _spelled(m.group(0)), text)
    try:
        return json.loads(text, strict=False)
    except RecursionError:
        raise _invalid("JSON Parse error: the document nests too deeply for this server") from None


def _probe(body: bytes) -> bytes:
    """``body`` with the same length and structure, in the JSON orjson reads: NaN and the
    infinities as plain numbers, bytes that are not UTF-8 as ``?``."""
    try:
        body.decode()
    except UnicodeDecodeError:
        body = _NOT_UTF8.sub("?", body.decode("utf-8", "surrogateescape")).encode()
    if _has_words(body):
        body = _WORDS.sub(lambda m: m.group(0) if m.group(0)[:1] == b'"' else _number_of_length(len(m.group(0))), body)
    return body


def _has_words(body: bytes) -> bool:
    return b"NaN" in body or b"Inf" in body


def _number_of_length(length: int) -> bytes:
    return b"1" + b"0" * (length - 1)


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
# orjson's message (its start) -> rapidjson's error at the same offset.
_SAME_PLACE = {
    "unexpected character, expected ',' or ']'": "array",
    "unexpected character, expected ',' or '}'": "object",
    "unexpected character, expected a string key": "name",
    "unexpected character, expected ':' after key": "colon",
    "no digit after decimal point": "fraction",
    "no digit after exponent sign": "exponent",
    "no digit after sign": "value",
    "unexpected control character in string": "encoding",
    "number is infinity when parsed as double": "big",
    "no low surrogate": "surrogate",
    "invalid low surrogate": "surrogate",
    "invalid high surrogate": "surrogate",
}
_WORD = rb"-?(?:Infinity|Inf(?!i)|NaN)"
_STRING = rb'"(?:[^"\\]|\\.)*"'
_WORDS = re.compile(_STRING + b"|" + _WORD, re.DOTALL)
_WORDS_TEXT = re.compile((_STRING + b"|" + _WORD).decode(), re.DOTALL)
_NOT_UTF8 = re.compile("[\udc80-\udcff]")
_TOKENS = re.compile(
    rb'(?P<string>"(?:[^"\\]|\\.)*")|(?P<open>"(?:[^"\\]|\\.)*\\?\Z)|(?P<mark>[][{},:])|(?P<word>[^\s\[\]{},:"]+)',
    re.DOTALL,
)
_HEX4 = re.compile(rb"[0-9a-fA-F]{4}")
_NUMBER = re.compile(rb"-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?")


def rapidjson_error(probe: bytes, message: str, position: int) -> tuple[str | None, int]:
    """rapidjson's error text and offset for orjson's ``message`` at byte ``position``
    of ``probe``; ``(None, end)`` when rapidjson reads a complete document ending at ``end``."""
    misspelt = probe[position : position + 1] in (b"N", b"I")  # rapidjson reads NaN and Infinity as numbers
    if misspelt and message.startswith(("unexpected character, expected a JSON value", "no digit after sign")):
        return PARSE_ERRORS["value"], _non_finite_end(probe, position)
    for start, kind in _SAME_PLACE.items():
        if message.startswith(start):
            return PARSE_ERRORS[kind], position
    if message.startswith(("Input is a zero-length", "input data is empty")):
        return PARSE_ERRORS["empty"], len(probe)
    if message.startswith("unexpected character, expected a JSON value"):
        return PARSE_ERRORS["empty" if not probe[:position].strip() else "value"], position
    if message.startswith("invalid literal"):  # rapidjson stops at the first letter that differs
        word = message.rsplit("'", 2)[-2].encode()
        matched = 1
        while matched < len(word) and probe[position + matched : position + matched + 1] == word[matched : matched + 1]:
            matched += 1
        return PARSE_ERRORS["value"], position + matched
    if message.startswith("trailing comma"):
        after = len(probe) - len(probe[position + 1 :].lstrip())
        return PARSE_ERRORS["value" if probe[after : after + 1] == b"]" else "name"], after
    if message.startswith("number with leading zero"):
        end = position + (2 if probe[position : position + 1] == b"-" else 1)  # rapidjson reads 0, then a digit
        container, _, _ = _state(probe[:position])
        if container is None:
            return None, end
        return PARSE_ERRORS["array" if container == b"[" else "object"], end
    if message.startswith(("invalid escaped sequence", "invalid escape")):  # reported at the backslash
        kind = "hex" if probe[position + 1 : position + 2] == b"u" else "escape"
        if kind == "hex" and _HEX4.fullmatch(probe[position + 2 : position + 6]):
            # a high surrogate: its low half is missing (surrogate) or misspelt (hex)
            low = probe[position + 6 : position + 12]
            kind = "hex" if low[:2] == b"\\u" and not _HEX4.fullmatch(low[2:]) else "surrogate"
        return PARSE_ERRORS[kind], position
    if message.startswith("unexpected end of data"):
        kind, offset = _at_end(probe)
        return PARSE_ERRORS[kind], offset
    return PARSE_ERRORS["value"], position


def _non_finite_end(probe: bytes, position: int) -> int:
    """Where rapidjson stops reading a misspelt NaN or Infinity starting at ``position``."""
    word = b"NaN" if probe[position : position + 1] == b"N" else b"Infinity"
    matched = 1
    while matched < len(word) and probe[position + matched : position + matched + 1] == word[matched : matched + 1]:
        matched += 1
    return position + matched


def _state(prefix: bytes) -> tuple[bytes | None, str, bytes]:
    """After ``prefix``: the innermost open container (``[``, ``{`` or None), the last token's kind and text."""
    stack: list[bytes] = []
    last, text = "start", b""
    for match in _TOKENS.finditer(prefix):
        kind = match.lastgroup or ""
        text = match.group(0)
        top = stack[-1] if stack else None
        if kind == "mark" and text in b"[{":
            stack.append(text)
            last = text.decode()
        elif kind == "mark" and text in b"]}":
            if stack:
                stack.pop()
            last = "value"
        elif kind == "mark":
            last = text.decode()
        elif kind == "string":
            last = "key" if top == b"{" and last in ("{", ",") else "value"
        elif kind == "open":
            last = "open"
        else:
            last = "word"
    return (stack[-1] if stack else None), last, text


def _at_end(probe: bytes) -> tuple[str, int]:
    """rapidjson's error, and its offset, for a document that ends too soon."""
    container, last, tail = _state(probe)
    end = len(probe)
    if last == "open":  # an escape cut short is reported at its backslash
        for kind, pattern in _CUT_ESCAPES:
            cut = pattern.search(tail)
            if cut is not None:
                return kind, end - len(tail) + cut.start(1)
        return "quote", end
    return _after(container, last, tail), end


_CUT_ESCAPES = (
    ("surrogate", re.compile(rb"(?<!\\)(?:\\\\)*(\\u[dD][89abAB][0-9a-fA-F]{2}(?:\\u?[0-9a-fA-F]{0,3})?)\Z")),
    ("hex", re.compile(rb"(?<!\\)(?:\\\\)*(\\u[0-9a-fA-F]{0,3})\Z")),
    ("escape", re.compile(rb"(?<!\\)(?:\\\\)*(\\)\Z")),
)


def _after(container: bytes | None, last: str, word: bytes) -> str:
    """rapidjson's error when the document ends after a token of kind ``last`` inside ``container``."""
    if last == "word":
        if not _NUMBER.fullmatch(word) and word not in (b"true", b"false", b"null"):
            if word.endswith(b".") and word[:1] != b".":
                return "fraction"
            if re.search(rb"[0-9][eE][+-]?\Z", word):
                return "exponent"
            return "value"
        last = "value"
    if last == "start":
        return "empty"
    if last in ("[", ":") or (last == "," and container == b"["):
        return "value"
    if last in ("{", ","):
        return "name"
    if last == "key":
        return "colon"
    return "array" if container == b"[" else "object"


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
