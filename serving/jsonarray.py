"""Parsing a JSON array of numbers straight into numpy, in bounded memory.

A REST predict body for an image is mostly one big nested list of numbers
(``{"instances": [[[[r, g, b], ...]]]}``). A general JSON parser builds one
Python object per number (12 to 22 times the body in all) and numpy walks
them again. This module builds none, in two steps:

1. :func:`parse_numeric_array` checks the grammar and reads the shape with
   whole-buffer byte operations only (``translate``, ``count``, substring
   tests), so no per-number array is allocated: every token must be a JSON
   number as TF Serving's parser reads it (rapidjson with
   ``kParseNanAndInfFlag``: exponents, ``NaN``, ``Infinity``, ``-Infinity``,
   ``Inf``), whitespace may sit between tokens, and the brackets must form a
   rectangular array, whose dims come from the brackets and commas alone
   (:attr:`NumericArray.shape`). Its shape is not checked against the
   signature: as in TF Serving, the model decides what it accepts.
2. :meth:`NumericArray.values` parses the numbers on demand, a chunk at a
   time, straight into the dtype the signature wants (``numpy.fromstring``:
   C ``strtod``/``strtoll``; a float32 is the double rounded to float, as TF
   Serving casts rapidjson's double).

Peak memory stays a few times the body: the body, a copy of the array text,
one class string at a time, and the result.

It is a *fast path only*: an array holding anything but numbers (strings,
objects, ``true``) is not its business (``None``), and the caller uses a
general JSON parser, which also words the errors. Text made of number
characters, brackets and commas that is not a well-formed rectangular array
(ragged or empty lists, a malformed number) is reported as such, so that
the caller can refuse a large one without building it in Python.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["GENERAL_PARSE_MAX_BYTES", "MalformedArray", "NumericArray", "parse_numeric_array", "split_predict_body"]

_MAX_RANK = 32  # numpy allows 64 dimensions; deeper nesting is no image
_CHUNK_BYTES = 1 << 18  # text is checked and parsed 256 KiB at a time
# A malformed array of numbers larger than this is refused without handing it
# to the general parser (which would build it in Python to find the error).
GENERAL_PARSE_MAX_BYTES = 1 << 20
_KEY_RE = re.compile(rb'"(instances|inputs)"\s*:\s*\[')
_WHITESPACE = b" \t\r\n"
_SPECIAL = b"\x01"  # stands for NaN / Infinity / Inf in the class string
_SPECIAL_WORDS = (b"Infinity", b"Inf", b"NaN")  # rapidjson's kParseNanAndInfFlag, longest first
_NUMBER_CLASSES = b"dz.e+-\x01"
_INT64 = np.iinfo(np.int64)
_EXACT_IN_DOUBLE = 2**53
# Character classes: "1"-"9" become "d", "0" "z", "e"/"E" "e"; "[", "]", ",",
# ".", "+", "-" and the NaN/Infinity mark stay; JSON whitespace becomes " ";
# anything else "?" (not a plain numeric array).
_CLASSES = bytes(
    ord("d") if chr(i) in "123456789"
    else ord("z") if chr(i) == "0"
    else ord("e") if chr(i) in "eE"
    else i if chr(i) in "[],.+-\x01"
    else ord(" ") if chr(i) in " \t\r\n"
    else ord("?")
    for i in range(256)
)
_IS_NUMBER = bytes(int(i in _NUMBER_CLASSES) for i in range(256))
# Which class may follow which, once whitespace is gone and an exponent's "-"
# is read as "+": a number starts with "-", a digit or NaN/Infinity after "["
# or ",", and ends with a digit or NaN/Infinity before "]" or ",".
_FOLLOWERS = {
    "[": "[dz-\x01", "]": "],", ",": "[dz-\x01", "d": "dz.e,]", "z": "dz.e,]",
    ".": "dz", "e": "dz+", "+": "dz", "-": "dz\x01", "\x01": ",]",
}
_ORDER = "".join(_FOLLOWERS)
_CODES = bytes(_ORDER.index(chr(i)) if chr(i) in _ORDER else 0 for i in range(256))


def _pair_table(allowed: Callable[[str, str], bool]) -> bytes:
    """A translate table: pair code (first * len(_ORDER) + second) -> 1 where ``allowed``."""
    size = len(_ORDER)
    return bytes(int(i < size * size and allowed(_ORDER[i // size], _ORDER[i % size])) for i in range(256))


_E, _MINUS, _PLUS = (_ORDER.index(c) for c in "e-+")
_PAIR_ALLOWED = _pair_table(lambda first, second: second in _FOLLOWERS[first])
_ZERO_STARTS = _pair_table(lambda first, second: first in "[,-" and second == "z")  # a number's first digit 0...
_ZERO_THEN_DIGIT = _pair_table(lambda first, second: first == "z" and second in "dz")  # ...then a digit
_Verdict = Literal["other", "malformed"]


class MalformedArray(ValueError):
    """Numbers, brackets and commas that do not form a rectangular array of JSON numbers."""


@dataclass(frozen=True, eq=False)
class NumericArray:
    """A JSON array of numbers whose grammar and shape are checked; values come on demand."""

    shape: tuple[int, ...]
    decimals: bool  # some number has a fraction or an exponent, or is NaN or Infinity
    text: bytes = field(repr=False)  # the numbers, comma-separated, nothing else

    @property
    def size(self) -> int:
        """How many numbers."""
        return math.prod(self.shape)

    def first_decimal(self) -> str:
        """The first number written with a fraction, an exponent, NaN or Infinity ("" if none)."""
        found = [at for at in (self.text.find(c) for c in (b".", b"e", b"E", b"N", b"I")) if at >= 0]
        if not found:
            return ""
        at = min(found)
        start = self.text.rfind(b",", 0, at) + 1
        end = self.text.find(b",", at)
        return self.text[start : end if end >= 0 else len(self.text)].decode()

    def values(self, dtype: npt.DTypeLike | None = None) -> npt.NDArray[Any] | None:
        """The numbers as an array of ``dtype``.

        The default is int64 when every number is an integer, else float64.
        An integer dtype needs integers (else TypeError) that fit it (else
        OverflowError). Returns ``None`` when an integer has more digits than
        int64 holds: the caller parses those the general way.
        """
        target: np.dtype[Any] = np.dtype(dtype if dtype is not None else np.float64 if self.decimals else np.int64)
        if target.kind in "iu" and self.decimals:
            raise TypeError(f"decimals for an {target} array")
        out = np.empty(self.size, dtype=target)
        filled, start, text = 0, 0, self.text
        while start < len(text):
            end = text.find(b",", start + _CHUNK_BYTES)
            end = len(text) if end < 0 else end
            chunk = _chunk_values(text[start:end], target, self.decimals)
            if chunk is None or filled + chunk.size > out.size:
                return None
            out[filled : filled + chunk.size] = chunk
            filled += chunk.size
            start = end + 1
        return out.reshape(self.shape) if filled == out.size else None


def _chunk_values(piece: bytes, target: np.dtype[Any], decimals: bool) -> npt.NDArray[Any] | None:
    """The comma-separated numbers of ``piece``, ready to store as ``target``; None beyond int64."""
    if not decimals:  # strtoll is several times faster than strtod
        ints = np.fromstring(piece, dtype=np.int64, sep=",")
        low, high = int(ints.min()), int(ints.max())
        if high == _INT64.max or low == _INT64.min:
            return None  # strtoll saturates: maybe beyond int64
        if target.kind in "iu":
            info = np.iinfo(target)
            if low < info.min or high > info.max:
                raise OverflowError(f"values must lie in [{info.min}, {info.max}]")
            return ints
        if max(-low, high) <= _EXACT_IN_DOUBLE:
            return ints  # exact as doubles, so one rounding to float, as TF Serving's double to float
    if b"-0," in piece or piece.endswith(b"-0"):
        piece = _positive_integer_zeros(piece)
    # strtod, then rounded to float for float32 and float16, as TF Serving casts a double
    parse = np.float32 if target.kind == "f" and target.itemsize <= 4 else np.float64
    return np.fromstring(piece, dtype=parse, sep=",")


def _positive_integer_zeros(piece: bytes) -> bytes:
    """``piece`` with the integer token ``-0`` written ``0``.

    JSON parsers read ``-0`` as the integer 0, whose float is +0.0; strtod
    would keep the sign. ``-0.0`` stays negative, as everywhere.
    """
    padded = b"," + piece + b","
    for _ in range(2):  # each pass replaces every other one of adjacent "-0"s
        padded = padded.replace(b",-0,", b",0,")
    return padded[1:-1]


def parse_numeric_array(buf: bytes | bytearray | memoryview) -> NumericArray | None:
    """Check ``buf`` (one JSON array of numbers, any nesting) and read its shape.

    Returns ``None`` when the text is not a plain rectangular array of JSON
    numbers; see :func:`split_predict_body` for telling the two kinds apart.
    """
    parsed = _parse(bytes(buf))
    return parsed if isinstance(parsed, NumericArray) else None


def _parse(seg: bytes) -> NumericArray | _Verdict:
    """The array, "other" when the text holds other characters, "malformed" when not."""
    if _SPECIAL in seg:
        return "other"
    marked = seg
    if b"N" in seg or b"I" in seg:
        for word in _SPECIAL_WORDS:
            marked = marked.replace(word, _SPECIAL)  # leftover letters become "?"
    cls = marked.translate(_CLASSES)
    del marked
    if b"?" in cls:
        return "other"
    if b" " in cls:
        squeezed = cls.translate(None, b" ")
        if _number_count(cls) != _number_count(squeezed):
            return "malformed"  # "1 2" must not read as 12: whitespace may not split a number
        cls, seg = squeezed, seg.translate(None, _WHITESPACE)
    if not _well_formed(cls):
        return "malformed"
    structure = cls.translate(None, _NUMBER_CLASSES)
    dims = _dims(structure)
    if dims is None or structure != _structure(dims):
        return "malformed"
    decimals = b"." in cls or b"e" in cls or _SPECIAL in cls
    del cls, structure  # before the numbers' copy: a few times the body at most
    return NumericArray(dims, decimals, seg.translate(None, b"[]"))


def _windows(cls: bytes, overlap: int) -> Iterator[npt.NDArray[np.uint8]]:
    """``cls`` as uint8 arrays of about ``_CHUNK_BYTES``, each overlapping the next by ``overlap``."""
    for start in range(0, max(len(cls) - overlap, 1), _CHUNK_BYTES):
        yield np.frombuffer(cls, dtype=np.uint8, count=min(_CHUNK_BYTES + overlap, len(cls) - start), offset=start)


def _number_count(cls: bytes) -> int:
    """How many numbers: runs of number classes."""
    count = int(bool(cls) and cls[0] in _NUMBER_CLASSES)
    for window in _windows(cls, 1):
        number = np.frombuffer(window.tobytes().translate(_IS_NUMBER), dtype=np.bool_)
        count += int(np.count_nonzero(number[1:] > number[:-1]))
    return count


def _well_formed(cls: bytes) -> bool:
    """Whether every token of ``cls`` (classes, no whitespace) is a JSON number in its place.

    A number is ``-?(0|[1-9][0-9]*)(\\.[0-9]+)?([eE][+-]?[0-9]+)?`` or, as
    rapidjson reads them, ``-?(NaN|Inf|Infinity)``; every slot between
    separators holds one and no list is empty. Checked as allowed pairs of
    neighbouring classes (a lookup over whole windows), then the two rules
    pairs cannot see: no leading zero, at most one fraction and one exponent
    in that order.
    """
    zeros, exponent_minus = b"z" in cls, b"e-" in cls
    for window in _windows(cls, 2):
        codes = np.frombuffer(window.tobytes().translate(_CODES), dtype=np.uint8)
        if exponent_minus:  # an exponent's sign obeys the rules of "+"
            codes = codes.copy()
            codes[1:][(codes[:-1] == _E) & (codes[1:] == _MINUS)] = _PLUS
        pairs = (codes[:-1] * len(_ORDER) + codes[1:]).tobytes()
        if b"\x00" in pairs.translate(_PAIR_ALLOWED):
            return False
        if zeros:  # "01", "-01" (an exponent may have them: its sign reads "+" here)
            starts = np.frombuffer(pairs.translate(_ZERO_STARTS), dtype=np.bool_)
            digit_after = np.frombuffer(pairs.translate(_ZERO_THEN_DIGIT), dtype=np.bool_)
            if (starts[:-1] & digit_after[1:]).any():
                return False
    if b"." in cls or b"e" in cls:
        skeleton = cls.translate(None, b"dz+-\x01")  # only "." and "e" are left in each token
        if b".." in skeleton or b"e." in skeleton or b"ee" in skeleton:
            return False
    return True


def _dims(structure: bytes) -> tuple[int, ...] | None:
    """Guess the dims of a rectangular array from its separators alone.

    ``structure`` is the array text without its numbers (``[[,,],[,,]]`` for
    a 2x3 array). The guess reads the first list at every level; the caller
    confirms it by comparing with the full expected layout.
    """
    rank = len(structure) - len(structure.lstrip(b"["))
    if rank == 0 or rank > _MAX_RANK:
        return None
    first_close = structure.find(b"]")
    if first_close < rank:
        return None
    dims = [structure.count(b",", rank - 1, first_close) + 1]
    length = dims[0] + 1  # length of the first innermost list: "[" + commas + "]"
    for level in range(rank - 1, 0, -1):
        closes = rank - level + 1
        end = structure.find(b"]" * closes)
        if end < 0:
            return None
        total = end + closes - (level - 1)
        size, rest = divmod(total - 1, length + 1)
        if rest or size < 1:
            return None
        dims.insert(0, size)
        length = total
    return tuple(dims)


def _structure(dims: tuple[int, ...]) -> bytes:
    """The brackets and commas of a rectangular array of ``dims`` (``[[,,],[,,]]`` for 2x3)."""
    text = b"[" + b"," * (dims[-1] - 1) + b"]"
    for size in reversed(dims[:-1]):
        text = b"[" + (text + b",") * (size - 1) + text + b"]"
    return text


def split_predict_body(
    body: bytes | bytearray,
) -> tuple[dict[str, Any], str, NumericArray] | None:
    """Fast path for a predict body whose tensor is one plain numeric array.

    Returns ``(rest_of_document, key, array)`` where ``key`` is ``"instances"``
    or ``"inputs"`` and ``rest_of_document[key]`` is ``None``; or ``None`` when
    the body is anything else (the caller parses it the general way). Raises
    :class:`MalformedArray` when the document's tensor is made of number
    characters, brackets and commas only but is not a rectangular array of
    JSON numbers, and is too large (``GENERAL_PARSE_MAX_BYTES``) to hand to
    the general parser.
    """
    match = _KEY_RE.search(body)
    if match is None:
        return None
    start = match.end() - 1
    end = body.rfind(b"]")
    if end <= start:
        return None
    parsed = _parse(bytes(memoryview(body)[start : end + 1]))
    if parsed == "other" or (parsed == "malformed" and end - start < GENERAL_PARSE_MAX_BYTES):
        return None
    # The array holds no quotes, so the key can only occur outside it: exactly
    # once there means the match is the document's own top-level key.
    outside = body[:start] + b"null" + body[end + 1 :]
    if outside.count(b'"instances"') + outside.count(b'"inputs"') != 1:
        return None
    try:
        rest = orjson.loads(outside)
    except orjson.JSONDecodeError:
        return None
    key = match.group(1).decode()
    if not isinstance(rest, dict) or key not in rest or rest[key] is not None:
        return None
    if not isinstance(parsed, NumericArray):
        raise MalformedArray(
            f"'{key}' is made of numbers but is not a rectangular array of JSON numbers: look for lists "
            "of unequal length, an empty list, or a malformed number (such as 01, 1., .5 or a trailing comma)"
        )
    return rest, key, parsed
