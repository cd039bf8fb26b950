"""Vectorised parsing of a JSON array of numbers straight into numpy.

A REST predict body for an image is mostly one big nested list of numbers
(``{"instances": [[[[r, g, b], ...]]]}``). Parsing it with a general JSON
parser builds one Python object per number and then numpy walks them again:
about 20 ms for a 224x224x3 image on a small machine. This module reads the
bytes directly with numpy: it validates the array grammar (brackets, commas,
number syntax, rectangular shape) and computes the values with a handful of
whole-array operations.

It is a *fast path only*. Whenever the text is anything but a plain,
well-formed, rectangular array of decimal numbers (exponents, ``true``,
strings, objects, leading zeros, ragged lists, more than 18 digits...) it
returns ``None`` and the caller falls back to the general parser, which also
produces the error messages. When it does return an array, the values are
exactly those of ``orjson.loads`` for integers, and for decimals the same
float64 (then float32) conversion TensorFlow Serving itself performs, barring
a last-bit double-rounding difference on pathological inputs.
"""

from __future__ import annotations

import functools
import re
from typing import Any

import numpy as np
import numpy.typing as npt
import orjson

__all__ = ["parse_numeric_array", "split_predict_body"]

_MAX_DIGITS = 18  # int64 holds any 18-digit mantissa exactly
_MAX_EXACT_POW10 = 22  # 10.0**k is exact in float64 up to k = 22
_MAX_RANK = 32  # numpy allows 64 dimensions; deeper nesting is no image
# Decimals cost one vector pass per character; past about this many characters
# per number, orjson + numpy is faster than this module.
_MAX_DECIMAL_CHARS = 10
_KEY_RE = re.compile(rb'"(instances|inputs)"\s*:\s*\[')
_POW10 = 10.0 ** np.arange(0, _MAX_EXACT_POW10 + 1)
_INT_POW10 = np.array([10**k for k in range(_MAX_DIGITS)], dtype=np.int64)
_WHITESPACE = b" \t\r\n"
# Character classes: number characters become "n", "[", "]" and "," stay,
# JSON whitespace becomes " ", anything else "?" (not a plain numeric array).
_CLASSES = bytes(
    ord("n") if chr(i) in "0123456789.-"
    else i if chr(i) in "[],"
    else ord(" ") if chr(i) in " \t\r\n"
    else ord("?")
    for i in range(256)
)


def parse_numeric_array(buf: bytes | memoryview) -> npt.NDArray[Any] | None:
    """Parse ``buf`` (one JSON array of numbers, any nesting) into an ndarray.

    Returns an int64 array when every number is an integer, float64 when any
    has a decimal point, or ``None`` when the text is not a plain rectangular
    numeric array (the caller then uses a general JSON parser).
    """
    raw = bytes(buf)
    if b"." in raw and len(raw) > _MAX_DECIMAL_CHARS * (raw.count(b",") + 1):
        return None  # long decimals: the general parser is faster
    classes = raw.translate(_CLASSES)
    if b"?" in classes:
        return None
    if b" " in classes:
        # "1 2" must not read as 12: bail out if a number is ever followed by
        # whitespace (json.dumps and pretty printers put it after "," or "[").
        if b"n " in classes:
            return None
        raw = raw.translate(None, _WHITESPACE)
        classes = raw.translate(_CLASSES)  # faster than deleting the spaces from classes
    c = np.frombuffer(classes, dtype=np.uint8)
    seps = np.flatnonzero(c != 110)  # positions of "[", "]" and ","
    if seps.size < 2 or seps[0] != 0 or seps[-1] != c.size - 1:
        return None
    structure = c[seps].tobytes()
    dims = _dims(structure)
    if dims is None:
        return None
    expected, number_after = _layout(dims)
    if structure != expected:
        return None
    # A number sits between two separators exactly where the layout says so:
    # every such gap holds characters, and together they hold all of them.
    starts = seps[number_after] + 1
    ends = seps[number_after + 1]
    if (ends <= starts).any() or int((ends - starts).sum()) != c.size - seps.size:
        return None
    values = _values(np.frombuffer(raw, dtype=np.uint8), raw, starts, ends)
    return None if values is None else values.reshape(dims)


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


@functools.lru_cache(maxsize=16)
def _layout(dims: tuple[int, ...]) -> tuple[bytes, npt.NDArray[np.intp]]:
    """Separators of a rectangular array of ``dims``, and where numbers go.

    ``number_after`` lists the separators that a number follows.
    """
    text = b"n"
    for size in reversed(dims):
        text = b"[" + b",".join([text] * size) + b"]"
    full = np.frombuffer(text, dtype=np.uint8)
    is_sep = full != 110
    number_after = np.flatnonzero((~is_sep[1:])[is_sep[:-1]])
    structure = text.replace(b"n", b"")
    return structure, number_after


def _values(
    b: npt.NDArray[np.uint8],
    raw: bytes,
    starts: npt.NDArray[np.intp],
    ends: npt.NDArray[np.intp],
) -> npt.NDArray[Any] | None:
    """Numbers of the tokens ``b[starts[i]:ends[i]]``, or None if any is not plain JSON."""
    neg = b[starts] == 45
    first = starts + neg
    lens = ends - first
    if (lens < 1).any():
        return None
    if ((b[first] - np.uint8(48)) >= 10).any() or ((b[ends - 1] - np.uint8(48)) >= 10).any():
        return None  # "-", ".5", "5." and "-.5" are not JSON numbers
    if raw.count(b"-") != int(np.count_nonzero(neg)):
        return None  # a '-' inside a number
    leading_zero = (b[first] == 48) & (lens > 1)
    if leading_zero.any() and ((b[first[leading_zero] + 1] - np.uint8(48)) < 10).any():
        return None  # "01" is not JSON
    if b"." not in raw:
        if int(lens.max()) > _MAX_DIGITS:
            return None
        return _integers(b, ends, lens, neg)
    dots = np.flatnonzero(b == 46)
    owner = np.searchsorted(starts, dots, side="right") - 1
    if owner.size > 1 and not (np.diff(owner) > 0).all():
        return None  # two dots in one number
    frac = np.zeros(starts.size, dtype=np.intp)
    has_dot = np.zeros(starts.size, dtype=bool)
    frac[owner] = ends[owner] - dots - 1
    has_dot[owner] = True
    if int(frac.max()) > _MAX_EXACT_POW10:
        return None
    mant = np.zeros(starts.size, dtype=np.int64)
    for j in range(int(lens.max())):
        inside = lens > j
        c = b[np.where(inside, ends - 1 - j, 0)].astype(np.int64) - 48
        use = inside & (c > 0)  # zeros add nothing; c < 0 is the dot
        power = j - (has_dot & (j > frac))
        if j >= _MAX_DIGITS and (use & (power >= _MAX_DIGITS)).any():
            return None  # more significant digits than int64 holds
        mant += np.where(use, c * _INT_POW10[np.minimum(power, _MAX_DIGITS - 1)], 0)
    values = mant / _POW10[frac]
    # "-0.0" keeps its sign, the integer "-0" is plain 0 (as orjson reads them).
    np.negative(values, out=values, where=neg & (has_dot | (mant != 0)))
    return values


def _integers(
    b: npt.NDArray[np.uint8],
    ends: npt.NDArray[np.intp],
    lens: npt.NDArray[np.intp],
    neg: npt.NDArray[np.bool_],
) -> npt.NDArray[np.int64]:
    """Values of integer tokens (digits only) ending at ``ends`` with ``lens`` digits."""
    longest = int(lens.max())
    kind = np.dtype(np.int32) if longest <= 9 else np.dtype(np.int64)  # int32: half the memory traffic
    mant: npt.NDArray[Any] = b[ends - 1].astype(kind)
    mant -= 48
    for j in range(1, longest):
        digit: npt.NDArray[Any] = b[ends - 1 - j].astype(kind)  # before the token where lens <= j: masked
        digit -= 48
        digit *= 10**j
        mant += np.where(lens > j, digit, 0)
    np.negative(mant, out=mant, where=neg)
    return mant.astype(np.int64, copy=False)


def split_predict_body(body: bytes) -> tuple[dict[str, Any], str, npt.NDArray[Any]] | None:
    """Fast path for a predict body whose tensor is one plain numeric array.

    Returns ``(rest_of_document, key, array)`` where ``key`` is ``"instances"``
    or ``"inputs"`` and ``rest_of_document[key]`` is ``None``; or ``None`` when
    the body is anything else (the caller parses it the general way).
    """
    match = _KEY_RE.search(body)
    if match is None:
        return None
    start = match.end() - 1
    end = body.rfind(b"]")
    if end <= start:
        return None
    array = parse_numeric_array(memoryview(body)[start : end + 1])
    if array is None:
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
    return rest, key, array
