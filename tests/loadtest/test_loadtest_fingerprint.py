"""Pure attribution: nearest reference within tolerance, separability, JSON, response decoding."""

from __future__ import annotations

import timeit

import numpy as np
import orjson
import pytest

from canary.errors import CalibrationError, FingerprintError
from loadtest.fingerprint import (
    DEFAULT_TOLERANCE,
    UNKNOWN,
    Calibration,
    Fingerprinter,
    attribute,
    build_calibration,
    grpc_probabilities,
    rest_probabilities,
    top_k,
)
from payloads.wire import Tensor, _len_field, _tensor

TOL = DEFAULT_TOLERANCE
SUBSETS = ("resnet101", "resnet50")


def probabilities(rng: np.random.Generator, n: int = 1000) -> np.ndarray:
    return rng.dirichlet(np.full(n, 0.05)).astype(np.float32)


@pytest.fixture(scope="module")
def outputs() -> dict:
    """Two payloads x two formats; the subsets differ by ~1e-3 except on ``same``/b64."""
    rng = np.random.default_rng(20240601)
    found: dict = {}
    for pid in ("photo", "same"):
        for fmt in ("b64", "instances"):
            base = probabilities(rng)
            twin = np.clip(base + rng.normal(0, 1e-3, base.size).astype(np.float32), 0, 1)
            if (pid, fmt) == ("same", "b64"):
                twin = base + np.float32(TOL / 2)  # closer than 2 x tolerance: not separable
            found.setdefault(pid, {})[fmt] = {"resnet50": base, "resnet101": twin}
    return found


@pytest.fixture(scope="module")
def calibration(outputs) -> Calibration:
    return build_calibration(outputs, TOL, "endpoints")


def shifted(vector: np.ndarray, by: float, rng: np.random.Generator) -> np.ndarray:
    """``vector`` moved by exactly ``by`` at one random class and less elsewhere."""
    noise = rng.uniform(-abs(by), abs(by), vector.size) * 0.5
    noise[rng.integers(vector.size)] = by
    return (vector.astype(np.float64) + noise).astype(np.float32)


@pytest.mark.parametrize("subset", SUBSETS)
@pytest.mark.parametrize(
    ("move", "expected", "match"),
    [
        (0.0, "self", "exact"),
        (TOL * 0.5, "self", "tolerance"),
        (TOL * 0.9, "self", "tolerance"),
        (TOL * 3, UNKNOWN, "none"),
        (5e-2, UNKNOWN, "none"),
    ],
)
def test_attribution_to_the_nearest_reference_within_tolerance(
    calibration, outputs, subset, move, expected, match
) -> None:
    rng = np.random.default_rng(hash((subset, move)) % 2**32)
    for fmt in ("b64", "instances"):
        reference = outputs["photo"][fmt][subset]
        vector = shifted(reference, move, rng) if move else reference.copy()
        result = attribute(calibration, "photo", fmt, vector)
        assert result.subset == (subset if expected == "self" else UNKNOWN)
        assert result.match == match
        nearest = min(float(np.abs(vector - outputs["photo"][fmt][s]).max()) for s in SUBSETS)
        assert result.distance == pytest.approx(nearest, abs=1e-9)
        if expected == "self":
            assert nearest == pytest.approx(move, rel=1e-3, abs=1e-9)
        if expected == "self":
            assert result.top5 == top_k(reference) and result.top1 == result.top5[0][0]
        else:  # unknown responses keep their own top-5
            assert result.top5 == top_k(vector) and result.top1 == int(np.argmax(vector))


def test_an_excluded_payload_is_never_attributed(calibration, outputs) -> None:
    for subset in SUBSETS:
        result = attribute(calibration, "same", "b64", outputs["same"]["b64"][subset])
        assert (result.subset, result.match) == (UNKNOWN, "excluded")
        assert len(result.top5) == 5 and result.distance == 0.0


def test_top5_is_sorted_largest_first_with_ties_by_index() -> None:
    vector = np.zeros(1000, np.float32)
    vector[[3, 9, 500, 7, 999, 1]] = [0.2, 0.4, 0.2, 0.1, 0.05, 0.05]
    assert top_k(vector) == (
        (9, pytest.approx(0.4)),
        (3, pytest.approx(0.2)),
        (500, pytest.approx(0.2)),
        (7, pytest.approx(0.1)),
        (1, pytest.approx(0.05)),
    )
    assert top_k(np.array([0.5, 0.5], np.float32)) == ((0, 0.5), (1, 0.5))
    assert [i for i, _ in top_k(np.full(1000, 0.001, np.float32))] == [0, 1, 2, 3, 4]
    with_nan = np.array([np.nan, 0.1, 0.3], np.float32)
    assert [i for i, _ in top_k(with_nan, 3)] == [2, 1, 0]


@pytest.mark.parametrize(
    ("gap", "excluded"),
    [(0.0, True), (TOL, True), (2 * TOL * 0.999, True), (2 * TOL * 1.05, False), (1e-3, False)],
)
def test_separability_excludes_payloads_closer_than_twice_the_tolerance(gap, excluded) -> None:
    rng = np.random.default_rng(3)
    base = probabilities(rng)
    other = base.copy()
    other[17] += np.float32(gap)
    good = {"resnet50": probabilities(rng), "resnet101": probabilities(rng)}
    cal = build_calibration(
        {"p": {"b64": {"resnet50": base, "resnet101": other}, "instances": good}}, TOL
    )
    assert (("p", "b64") in cal.excluded) == excluded
    assert cal.usable == ((("p", "instances"),) if excluded else (("p", "b64"), ("p", "instances")))
    if excluded:
        assert cal.warnings == (cal.excluded[("p", "b64")],)
        assert "p (b64): resnet101 and resnet50 answer within" in cal.warnings[0]
        assert "cannot be attributed" in cal.warnings[0]


def test_models_that_answer_identically_everywhere_are_an_error() -> None:
    rng = np.random.default_rng(4)
    same = {
        pid: {fmt: dict.fromkeys(SUBSETS, probabilities(rng)) for fmt in ("b64", "instances")}
        for pid in ("a", "b")
    }
    with pytest.raises(
        CalibrationError,
        match=r"answer identically .* a \(b64, max difference 0\).*add payloads that tell them apart",
    ):
        build_calibration(same, TOL)


@pytest.mark.parametrize(
    ("outputs", "error"),
    [
        ({"p": {"b64": {"a": [0.5, 0.5], "b": [0.2, 0.3, 0.5]}}}, "different lengths"),
        ({"p": {"b64": {"a": [np.nan, 1.0], "b": [0.5, 0.5]}}}, "not finite"),
        ({"p": {"b64": {"a": [], "b": [0.5, 0.5]}}}, "empty"),
        ({"p": {"b64": {"a": ["x"], "b": [0.5]}}}, "not a vector of numbers"),
        ({}, "at least one subset"),
    ],
)
def test_malformed_outputs_are_refused(outputs, error: str) -> None:
    with pytest.raises(CalibrationError, match=error):
        build_calibration(outputs, TOL)


@pytest.mark.parametrize("tolerance", [0.0, -1e-5, float("nan"), float("inf"), 1.0])
def test_tolerance_must_be_a_small_positive_number(outputs, tolerance: float) -> None:
    with pytest.raises(CalibrationError, match="tolerance must be"):
        build_calibration(outputs, tolerance)


def test_a_subset_missing_for_one_payload_excludes_that_payload(outputs) -> None:
    partial = {
        "photo": outputs["photo"],
        "extra": {"b64": {"resnet50": outputs["photo"]["b64"]["resnet50"]}},
    }
    cal = build_calibration(partial, TOL)
    assert cal.excluded[("extra", "b64")] == "extra (b64): no reference from resnet101"


def test_json_round_trip_is_bit_exact_and_deterministic(calibration) -> None:
    digests = {"photo": {"b64": "ab" * 32}}
    original = build_calibration(
        {
            pid: {fmt: dict(refs) for fmt, refs in formats.items()}
            for pid, formats in calibration.references.items()
        },
        TOL,
        "savedmodel",
        payload_digests=digests,
        meta={"model_dirs": {"resnet50": "/x"}},
    )
    raw = original.to_json()
    assert raw == original.to_json()
    loaded = Calibration.from_json(raw)
    assert loaded.source == "file" and loaded.meta["origin"] == "savedmodel"
    assert loaded.meta["model_dirs"] == {"resnet50": "/x"}
    assert loaded.tolerance == TOL and loaded.payload_digests == digests
    assert dict(loaded.excluded) == dict(original.excluded) and loaded.pairs == original.pairs
    for pid, fmt in original.pairs:
        for subset in SUBSETS:
            a, b = original.references[pid][fmt][subset], loaded.references[pid][fmt][subset]
            assert a.dtype == b.dtype == np.float32 and np.array_equal(a, b)
    assert loaded.to_json() == raw  # reading and writing again changes nothing
    doc = orjson.loads(raw)
    assert doc["source"] == "savedmodel" and doc["subsets"] == list(SUBSETS)
    assert doc["payloads"]["photo"]["b64"]["separation"] == pytest.approx(
        original.separation("photo", "b64")
    )


@pytest.mark.parametrize(
    ("raw", "error"),
    [
        (b"{", "not a readable calibration"),
        (b'{"format": 2}', "format 2, not 1"),
        (b"[]", "format 'list'"),
        (b'{"format": 1, "payloads": {}}', "not a readable calibration"),
        (
            b'{"format": 1, "source": "endpoints", "tolerance": 0, "payloads": {}}',
            "tolerance must be",
        ),
    ],
)
def test_unreadable_calibration_files_are_refused(raw: bytes, error: str) -> None:
    with pytest.raises(CalibrationError, match=error):
        Calibration.from_json(raw)


def test_rows_summarise_each_payload_and_format(calibration) -> None:
    rows = calibration.rows()
    assert [(r.payload_id, r.fmt) for r in rows] == sorted(calibration.pairs)
    for row in rows:
        assert set(row.top) == set(SUBSETS)
        assert (row.excluded is not None) == (row.separation <= 2 * TOL)


# ---------------------------------------------------------------- responses and the fast path


def rest_body(vector: np.ndarray) -> bytes:
    """As our server writes it: orjson, float32 shortest repr."""
    return orjson.dumps({"predictions": vector[None]}, option=orjson.OPT_SERIALIZE_NUMPY)


def tf_serving_rest_body(vector: np.ndarray) -> bytes:
    """As TF Serving writes it: pretty-printed, about 7 significant digits."""
    values = ", ".join(f"{v:.7g}" for v in vector.tolist())
    return f'{{\n    "predictions": [[{values}]\n    ]\n}}'.encode()


def grpc_body(vector: np.ndarray, name: str = "probabilities") -> bytes:
    entry = _len_field(1, name.encode()) + _len_field(2, _tensor(Tensor.floats(vector[None])))
    return _len_field(1, entry)


@pytest.mark.parametrize(
    ("encode", "decode"),
    [(rest_body, rest_probabilities), (grpc_body, grpc_probabilities)],
)
def test_response_decoding_is_exact_for_float32(outputs, encode, decode) -> None:
    vector = outputs["photo"]["b64"]["resnet50"]
    decoded = decode(encode(vector))
    assert decoded.dtype == np.float32 and np.array_equal(decoded, vector)


def test_tf_servings_seven_digit_json_stays_within_tolerance(calibration, outputs) -> None:
    fp = Fingerprinter(calibration)
    for subset in SUBSETS:
        reference = outputs["photo"]["instances"][subset]
        result = fp.attribute_rest("photo", "instances", tf_serving_rest_body(reference))
        assert result.subset == subset and result.match == "tolerance" and result.distance < 1e-7


@pytest.mark.parametrize(
    "body",
    [
        b'{"predictions": [[0.25, 0.75]]}',
        b'{"predictions": [{"probabilities": [0.25, 0.75], "classes": 1}]}',
        b'{"outputs": [[0.25, 0.75]]}',
        b'{"outputs": {"probabilities": [[0.25, 0.75]], "classes": [1]}}',
        b'{"outputs": [0.25, 0.75]}',
    ],
)
def test_rest_row_and_columnar_formats(body: bytes) -> None:
    assert rest_probabilities(body).tolist() == [0.25, 0.75]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b"<html>", "not JSON"),
        (b"[1, 2]", "not a JSON object"),
        (b'{"error": "Servable not found"}', "answered an error: Servable not found"),
        (b'{"predictions": []}', "no 'probabilities' prediction"),
        (b'{"predictions": [[0.5], [0.5]]}', "2 predictions; send one instance"),
        (b'{"predictions": [["a", "b"]]}', "not one vector of numbers"),
        (b'{"predictions": [[[0.1], [0.2, 0.3]]]}', "not one vector of numbers"),
    ],
)
def test_bad_rest_responses_say_what_is_wrong(body: bytes, error: str) -> None:
    with pytest.raises(FingerprintError, match=error):
        rest_probabilities(body)


def test_bad_grpc_responses_say_what_is_wrong() -> None:
    with pytest.raises(FingerprintError, match="not a PredictResponse with 'probabilities'"):
        grpc_probabilities(grpc_body(np.ones(3, np.float32), name="logits"))


def test_fingerprinter_memoises_exact_responses_and_agrees_with_attribute(
    calibration, outputs
) -> None:
    fp = Fingerprinter(calibration)
    rng = np.random.default_rng(11)
    for _ in range(3):
        for subset in SUBSETS:
            for fmt in ("b64", "instances"):
                reference = outputs["photo"][fmt][subset]
                for vector in (
                    reference,
                    shifted(reference, TOL / 2, np.random.default_rng(1)),
                    shifted(reference, 1e-2, rng),
                ):
                    expected = attribute(calibration, "photo", fmt, vector)
                    assert fp.attribute("photo", fmt, vector) == expected
                    assert fp.attribute_rest("photo", fmt, bytearray(rest_body(vector))) == expected
                    assert fp.attribute_grpc("photo", fmt, grpc_body(vector)) == expected
    # 3 fixed vectors x 2 subsets x 2 formats x 3 kinds are computed once; the random ones never repeat
    assert fp.misses == 2 * 2 * 3 * 2 + 2 * 2 * 3 * 3 and fp.hits == 2 * 2 * 3 * 2 * 2


def test_the_memo_is_bounded(calibration, outputs) -> None:
    fp = Fingerprinter(calibration, memo_limit=2)
    rng = np.random.default_rng(5)
    reference = outputs["photo"]["b64"]["resnet50"]
    vectors = [shifted(reference, TOL / 4, rng) for _ in range(4)]
    for vector in vectors * 2:
        assert fp.attribute_rest("photo", "b64", rest_body(vector)).subset == "resnet50"
    assert fp.hits == 2 and fp.misses == 6
    assert sum(len(m) for m in fp._memo.values()) == 2


@pytest.mark.parametrize(
    ("payload", "fmt", "vector", "error"),
    [
        (
            "nope",
            "b64",
            np.ones(1000, np.float32),
            "'nope' in format 'b64' is not in the calibration",
        ),
        ("photo", "protobuf", np.ones(1000, np.float32), "not in the calibration"),
        ("photo", "b64", np.ones(10, np.float32), "has 10 values but the calibration 1000"),
    ],
)
def test_responses_that_do_not_fit_the_calibration(
    calibration, payload, fmt, vector, error
) -> None:
    with pytest.raises(FingerprintError, match=error):
        attribute(calibration, payload, fmt, vector)
    with pytest.raises(FingerprintError, match=error):
        Fingerprinter(calibration).attribute_rest(payload, fmt, rest_body(vector))


def test_attribution_fits_the_per_response_budget(calibration, outputs) -> None:
    """20 us per response is the budget (measured ~8 us); 10x slack for a loaded test machine."""
    vector = shifted(outputs["photo"]["b64"]["resnet50"], TOL / 2, np.random.default_rng(2))
    seconds = (
        min(
            timeit.repeat(
                lambda: attribute(calibration, "photo", "b64", vector), number=500, repeat=5
            )
        )
        / 500
    )
    assert seconds < 200e-6


def test_one_subset_is_calibrated_alone_and_anything_else_is_unknown() -> None:
    """Before the canary is deployed only the stable subset has pods: its own answers are
    attributed to it, and any other answer is unknown."""
    own = np.array([0.7, 0.2, 0.1])
    calibration = build_calibration({"p": {"b64": {"resnet50": own}}}, TOL)
    assert calibration.subsets == ("resnet50",) and calibration.usable
    assert attribute(calibration, "p", "b64", own).subset == "resnet50"
    assert attribute(calibration, "p", "b64", [0.1, 0.2, 0.7]).subset == "unknown"
