"""The vectorised JSON number-array parser agrees with orjson or steps aside."""

from __future__ import annotations

import json
import random

import numpy as np
import orjson
import pytest

from serving.jsonarray import parse_numeric_array, split_predict_body

VALID = [
    ("[1,2,3]", [1, 2, 3]),
    ("[[1,2],[3,4]]", [[1, 2], [3, 4]]),
    ("[[[0]]]", [[[0]]]),
    ("[-1, 0, 255]", [-1, 0, 255]),
    ("[ [1 ,2] ,\n [3,4] ]", None),  # whitespace after a number: falls back
    ("[\n  [1, 2],\n  [3, 4]\n]", [[1, 2], [3, 4]]),
    ("[0.5,1.25,-3.0]", [0.5, 1.25, -3.0]),
    ("[-0.0, 0.0, -0]", [-0.0, 0.0, 0]),
    ("[123456789012345678]", [123456789012345678]),
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
    "[1e5]",
    "[true]",
    "[null]",
    '["1"]',
    "[1]]",
    "[[1]",
    "1",
    "[1234567890123456789]",
    "[NaN]",
]


@pytest.mark.parametrize(("text", "expected"), VALID)
def test_parses_plain_arrays(text: str, expected: object) -> None:
    got = parse_numeric_array(text.encode())
    if expected is None:
        assert got is None
        return
    assert got is not None
    want = np.asarray(expected)
    assert got.shape == want.shape
    assert np.array_equal(got.astype(np.float64), want.astype(np.float64))
    assert np.array_equal(np.signbit(got.astype(np.float64)), np.signbit(want.astype(np.float64)))


@pytest.mark.parametrize("text", FALLBACK)
def test_steps_aside_for_anything_else(text: str) -> None:
    assert parse_numeric_array(text.encode()) is None


def test_integers_stay_integers_and_decimals_become_float64() -> None:
    ints = parse_numeric_array(b"[[1,2],[3,4]]")
    decimals = parse_numeric_array(b"[[1,2.5],[3,4]]")
    assert ints is not None and ints.dtype == np.int64
    assert decimals is not None and decimals.dtype == np.float64


def test_random_arrays_match_orjson() -> None:
    rng = random.Random(7)

    def number() -> str:
        kind = rng.random()
        if kind < 0.5:
            return str(rng.randint(-300, 300))
        if kind < 0.8:
            return f"{rng.uniform(-100, 100):.{rng.randint(1, 6)}f}"
        return rng.choice(["0", "-0", "0.0", "1e5", "01", "1.", "-", "7"])

    def array(dims: list[int]) -> str:
        if not dims:
            return number()
        return "[" + ",".join(array(dims[1:]) for _ in range(dims[0])) + "]"

    accepted = 0
    for _ in range(2000):
        text = array([rng.randint(1, 4) for _ in range(rng.randint(1, 4))])
        if rng.random() < 0.3:
            text = text.replace(",", ", ", rng.randint(0, 3))
        got = parse_numeric_array(text.encode())
        try:
            want = np.asarray(orjson.loads(text), dtype=np.float64)
        except (orjson.JSONDecodeError, ValueError):
            assert got is None, text
            continue
        if got is None:
            continue
        accepted += 1
        assert got.shape == want.shape, text
        assert np.array_equal(got.astype(np.float32), want.astype(np.float32)), text
    assert accepted > 200


def test_image_sized_body_takes_the_fast_path() -> None:
    image = np.random.default_rng(0).integers(0, 256, (224, 224, 3), dtype=np.uint8)
    for body in (
        orjson.dumps({"instances": [image.tolist()]}),
        json.dumps({"signature_name": "serving_default", "instances": [image.tolist()]}).encode(),
    ):
        split = split_predict_body(body)
        assert split is not None
        rest, key, array = split
        assert key == "instances"
        assert rest.get("instances", "missing") is None
        assert array.shape == (1, 224, 224, 3)
        assert np.array_equal(array, image[None])


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
