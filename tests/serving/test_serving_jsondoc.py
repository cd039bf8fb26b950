"""Malformed JSON answered as TF Serving's ParseJson answers it (json_tensor.cc: rapidjson with
kParseIterativeFlag | kParseNanAndInfFlag | kParseStopWhenDoneFlag).

Each expected text and offset is rapidjson's: the GetParseError_En text of the state its iterative
parser was in (reader.h HandleError) or of the token it failed in (ParseNumber, ParseString,
ParseTrue...), at the byte offset it stopped at.
"""

from __future__ import annotations

import math

import pytest

from serving.jsondoc import PARSE_ERRORS, parse_json_object
from serving.status import Code, RequestError

EMPTY = "The document is empty."
VALUE = "Invalid value."
NAME = "Missing a name for object member."
COLON = "Missing a colon after a name of object member."
OBJECT = "Missing a comma or '}' after an object member."
ARRAY = "Missing a comma or ']' after an array element."
QUOTE = "Missing a closing quotation mark in string."
ESCAPE = "Invalid escape character in string."
HEX = "Incorrect hex digit after \\u escape in string."
SURROGATE = "The surrogate pair in string is invalid."
ENCODING = "Invalid encoding in string."
FRACTION = "Miss fraction part in number."
EXPONENT = "Miss exponent in number."
BIG = "Number too big to be stored in double."

CASES = [
    # (body, rapidjson's text, offset)
    (b"   ", EMPTY, 3),  # only whitespace: the empty check of ParseJson is for zero bytes
    (b"x", VALUE, 0),  # x is a number token to rapidjson's Tokenize: ParseNumber refuses it
    (b" ]", EMPTY, 1),  # ] } , and : start no value: the iterative parser's Start state reports an empty document
    (b"{not json", NAME, 1),
    (b"{1:2}", NAME, 1),
    (b"{", NAME, 1),
    (b'{"a":1,', NAME, 7),
    (b'{"a":1,}', NAME, 7),  # trailing comma in an object
    (b'{"a" 1}', COLON, 5),
    (b'{"a",1}', COLON, 4),
    (b'{"a"', COLON, 4),
    (b'{"a":1 "b":2}', OBJECT, 7),
    (b'{"a": 1', OBJECT, 7),
    (b'{"a": 01}', OBJECT, 7),  # 0 is a number, then a digit where a comma belongs
    (b"[1 2]", ARRAY, 3),
    (b"[[1] 2]", ARRAY, 5),
    (b'{"a": [1', ARRAY, 8),
    (b"[01]", ARRAY, 2),
    (b"[true", ARRAY, 5),
    (b"[", VALUE, 1),
    (b"[1,", VALUE, 3),
    (b'{"a":', VALUE, 5),
    (b'{"a": [1,]}', VALUE, 9),  # trailing comma in an array
    (b"[1,\n2,  ]", VALUE, 8),
    (b'{"a": tru}', VALUE, 9),  # rapidjson stops at the first letter that differs
    (b'{"a": nulL}', VALUE, 9),
    (b'{"a": fals', VALUE, 10),
    (b'{"a": -}', VALUE, 7),
    (b'{"a": Nax}', VALUE, 8),  # NaN and Infinity are numbers to rapidjson (kParseNanAndInfFlag)
    (b"[Infin]", VALUE, 6),
    (b'{"a": "abc', QUOTE, 10),
    (b'{"a": "x\x00y"}', QUOTE, 8),  # a NUL byte ends rapidjson's input
    (b'{"a": "\\x"}', ESCAPE, 7),  # escapes are reported at their backslash
    (b'{"a": "ab\\', ESCAPE, 9),
    (b'{"a": "\\u12"}', HEX, 7),
    (b'{"a": "\\u1', HEX, 7),
    (b'{"a": "\\ud800\\u12"}', HEX, 7),
    (b'{"a": "\\ud800x"}', SURROGATE, 7),
    (b'{"a": "\\ud800', SURROGATE, 7),
    (b'{"a": "\\udc00"}', SURROGATE, 7),
    (b'{"a": "x\x01"}', ENCODING, 8),  # a control character inside a string
    (b'{"a": 1.}', FRACTION, 8),
    (b'{"a": 1.', FRACTION, 8),
    (b'{"a": 1e}', EXPONENT, 8),
    (b'{"a": 1e+', EXPONENT, 9),
    (b'{"a": 1e400}', BIG, 6),
    (b"\xff", VALUE, 0),
    ('{"\u00e9\u20ac": x}'.encode(), VALUE, 10),  # offsets count bytes, not characters
]


@pytest.mark.parametrize(("body", "text", "offset"), CASES)
def test_malformed_json_is_answered_with_rapidjsons_text_and_offset(body: bytes, text: str, offset: int) -> None:
    with pytest.raises(RequestError) as caught:
        parse_json_object(body)
    assert caught.value.code is Code.INVALID_ARGUMENT
    assert caught.value.message == f"JSON Parse error: {text} at offset: {offset}"


def test_the_table_covers_every_text_this_server_can_give() -> None:
    assert {text for _, text, _ in CASES} == set(PARSE_ERRORS.values())


def test_zero_bytes_are_tf_servings_own_empty_check() -> None:
    with pytest.raises(RequestError) as caught:
        parse_json_object(b"")
    assert caught.value.message == "JSON Parse error: The document is empty"


@pytest.mark.parametrize(
    ("body", "doc"),
    [
        (b'{"a": 1} trailing', {"a": 1}),  # kParseStopWhenDoneFlag: nothing after the value is read
        (b'{"a": 1}{"b": 2}', {"a": 1}),
        (b'{"a": 1}\x00junk', {"a": 1}),
        (b'{"a": "\xff\xfe"}', {"a": "\udcff\udcfe"}),  # not UTF-8: rapidjson keeps the bytes
        (b'{"\xff": -Inf} \xfe', {"\udcff": -math.inf}),
    ],
)
def test_what_rapidjson_reads_is_read(body: bytes, doc: dict) -> None:
    assert parse_json_object(body) == doc


def test_nan_and_infinities_in_every_spelling_rapidjson_reads() -> None:
    doc = parse_json_object(b'{"a": [NaN, -NaN, Inf, -Inf, Infinity, -Infinity], "NaN": "Inf"}')
    a = doc["a"]
    assert math.isnan(a[0]) and math.isnan(a[1])
    assert a[2:] == [math.inf, -math.inf, math.inf, -math.inf]
    assert doc["NaN"] == "Inf"  # strings stay strings


def test_a_document_that_is_not_an_object() -> None:
    for body, text in ((b"[1, 2]", "JSON Value: [1,2] Is not object"), (b"01", "JSON Value: 0 Is not object")):
        with pytest.raises(RequestError) as caught:
            parse_json_object(body)
        assert caught.value.message == text
