"""The vectorised JSON number-array parser agrees with orjson (and rapidjson on NaN) or steps aside."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest

from serving.jsonarray import (
    GENERAL_PARSE_MAX_BYTES,
    MalformedArray,
    parse_numeric_array,
    split_predict_body,
)

VALID = [
    ("[1,2,3]", [1, 2, 3]),
    ("[[1,2],[3,4]]", [[1, 2], [3, 4]]),
    ("[[[0]]]", [[[0]]]),
    ("[-1, 0, 255]", [-1, 0, 255]),
    ("[ [1 ,2] ,\n [3,4] ]", [[1, 2], [3, 4]]),  # whitespace anywhere between tokens
    ("[\t1\r\n,\n2 ]", [1, 2]),
    ("[\n  [1, 2],\n  [3, 4]\n]", [[1, 2], [3, 4]]),
    ("[0.5,1.25,-3.0]", [0.5, 1.25, -3.0]),
    ("[-0.0, 0.0, -0]", [-0.0, 0.0, 0]),
    ("[123456789012345678]", [123456789012345678]),
    ("[1234567890123456789]", [1234567890123456789]),
    ("[1e5, 1E-05, -2.5e+3, 1e05, 0e0]", [1e5, 1e-5, -2500.0, 1e5, 0.0]),
    # rapidjson's kParseNanAndInfFlag spellings, as TF Serving reads them
    ("[NaN, Infinity, -Infinity, Inf, -Inf, -NaN]", [np.nan, np.inf, -np.inf, np.inf, -np.inf, np.nan]),
    ("[[1.5,2],[3,4.25]]", [[1.5, 2], [3, 4.25]]),
]

FALLBACK = [
    "[]",
    "[[]]",
    "[1,,2]",
    "[1,]",
    "[,1]",
    "[1 2]",
    "[[1],[2,3]]",
    "[[1,2],[3]]",
    "[[1],[[2]]]",
    "[[[1]],[2]]",
    "[1,[2]]",
    "[01]",
    "[1.]",
    "[.5]",
    "[-]",
    "[1-2]",
    "[1.2.3]",
    "[1e]",
    "[1e+]",
    "[1ee5]",
    "[1e5.2]",
    "[1.5e5e5]",
    "[+1]",
    "[--1]",
    "[-01]",
    "[00]",
    "[NaNN]",
    "[5NaN]",
    "[NaN5]",
    "[nan]",
    "[Infinit]",
    "[Infinityy]",
    "[1e-NaN]",
    "[\x01]",
    "[true]",
    "[null]",
    '["1"]',
    "[1]]",
    "[[1]",
    "1",
    "[1 2]",
    "[[1]\n[2]]",
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parses_plain_arrays(text: str, expected: object) -> None:
    parsed = parse_numeric_array(text.encode())
    assert parsed is not None
    got = parsed.values()
    assert got is not None
    want = np.asarray(expected)
    assert parsed.shape == want.shape
    assert got.shape == want.shape
    assert np.array_equal(got.astype(np.float64), want.astype(np.float64), equal_nan=True)
    assert np.array_equal(np.signbit(got.astype(np.float64)), np.signbit(want.astype(np.float64)))


@pytest.mark.parametrize("text", FALLBACK)
def test_steps_aside_for_anything_else(text: str) -> None:
    assert parse_numeric_array(text.encode()) is None


def test_integers_stay_integers_and_decimals_become_float64() -> None:
    ints = parse_numeric_array(b"[[1,2],[3,4]]")
    decimals = parse_numeric_array(b"[[1,2.5],[3,4]]")
    assert ints is not None and not ints.decimals and ints.values().dtype == np.int64
    assert decimals is not None and decimals.decimals and decimals.values().dtype == np.float64
    assert decimals.first_decimal() == "2.5"


def test_values_in_the_wanted_dtype() -> None:
    parsed = parse_numeric_array(b"[[0.1, 1e39], [-2, NaN]]")
    assert parsed is not None
    single = parsed.values(np.float32)
    assert single.dtype == np.float32
    # the double rounded to float, as TF Serving casts rapidjson's double
    assert single[0, 0] == np.float32(0.1) and np.isinf(single[0, 1]) and np.isnan(single[1, 1])
    with pytest.raises(TypeError):
        parsed.values(np.int32)
    small = parse_numeric_array(b"[1, 300]")
    assert small is not None
    assert small.values(np.int32).dtype == np.int32
    with pytest.raises(OverflowError, match=r"\[0, 255\]"):
        small.values(np.uint8)
    huge = parse_numeric_array(b"[1, 99999999999999999999]")  # beyond int64: the general path reads it
    assert huge is not None and huge.values() is None


def test_random_arrays_match_orjson() -> None:
    rng = random.Random(7)

    def number() -> str:
        kind = rng.random()
        if kind < 0.5:
            return str(rng.randint(-300, 300))
        if kind < 0.8:
            return f"{rng.uniform(-100, 100):.{rng.randint(1, 6)}f}"
        return rng.choice(["0", "-0", "0.0", "1e5", "2E-3", "01", "1.", "-", "7", "NaN", "-Infinity", "1e"])

    def array(dims: list[int]) -> str:
        if not dims:
            return number()
        return "[" + ",".join(array(dims[1:]) for _ in range(dims[0])) + "]"

    accepted = 0
    for _ in range(2000):
        text = array([rng.randint(1, 4) for _ in range(rng.randint(1, 4))])
        if rng.random() < 0.3:
            text = text.replace(",", ", ", rng.randint(0, 3))
        parsed = parse_numeric_array(text.encode())
        try:
            want = np.asarray(json.loads(text), dtype=np.float64)  # the standard library reads NaN too
        except ValueError:
            assert parsed is None, text
            continue
        assert parsed is not None, text  # every rectangular array of JSON numbers takes the fast path
        got = parsed.values()
        assert got is not None
        accepted += 1
        assert got.shape == want.shape, text
        assert np.array_equal(got.astype(np.float32), want.astype(np.float32), equal_nan=True), text
    assert accepted > 200


def test_image_sized_body_takes_the_fast_path() -> None:
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for body in (
        orjson.dumps({"instances": [image.tolist()]}),
        json.dumps({"signature_name": "serving_default", "instances": [image.tolist()]}).encode(),
    ):
        split = split_predict_body(body)
        assert split is not None
        rest, key, numeric = split
        assert key == "instances"
        assert rest.get("instances", "missing") is None
        assert numeric.shape == (1, 224, 224, 3)
        assert np.array_equal(numeric.values(), image[None])


@pytest.mark.parametrize(
    "body",
    [
        b'{"instances": [[1, 2]], "inputs": [[1]]}',  # both keys: the general parser reports it
        b'{"instances": {"input_image": [[1]]}}',
        b'{"x": {"instances": [[1]]}}',
        b'{"instances": [[1, 2]]',  # broken JSON outside the array
        b'{"instances": [[1, 2]], "signature_name": "a]"}',
        b'["instances", [1]]',
    ],
)
def test_split_only_for_a_top_level_tensor(body: bytes) -> None:
    assert split_predict_body(body) is None


def test_a_large_malformed_array_is_refused_without_the_general_parser() -> None:
    zeros = b",".join([b"0"] * (GENERAL_PARSE_MAX_BYTES // 2 + 1))
    for array in (b"[" + zeros + b",]", b"[[" + zeros + b"],[0]]", b"[" + zeros + b",01]"):
        with pytest.raises(MalformedArray, match="not a rectangular array"):
            split_predict_body(b'{"instances": ' + array + b"}")
    # small ones are left to the general parser, which words the error
    assert split_predict_body(b'{"instances": [0,]}') is None
    # and text that is not only numbers is not this module's business
    assert split_predict_body(b'{"instances": [' + zeros + b',"a"]}') is None
