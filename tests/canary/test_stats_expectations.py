"""Expected splits and policies: parsing, validation, messages."""

from __future__ import annotations

import json

import pytest

from canary.errors import UsageError
from canary.stats import (
    Expectation,
    SplitPolicy,
    expectations_by_group,
    parse_expected,
    parse_group_spec,
)

SUBSETS = ["resnet50", "resnet101"]


@pytest.mark.parametrize(
    ("text", "order", "shares"),
    [
        ("70/30", SUBSETS, {"resnet50": 0.7, "resnet101": 0.3}),
        (" 70 / 30 ", SUBSETS, {"resnet50": 0.7, "resnet101": 0.3}),
        ("70%/30%", SUBSETS, {"resnet50": 0.7, "resnet101": 0.3}),
        ("100/0", SUBSETS, {"resnet50": 1.0, "resnet101": 0.0}),
        ("0/100", SUBSETS, {"resnet50": 0.0, "resnet101": 1.0}),
        ("66.6/33.4", SUBSETS, {"resnet50": 0.666, "resnet101": 0.334}),
        ("50/25/25", ["a", "b", "c"], {"a": 0.5, "b": 0.25, "c": 0.25}),
        ("100", ["only"], {"only": 1.0}),
        ("resnet50=70,resnet101=30", None, {"resnet50": 0.7, "resnet101": 0.3}),
        ("resnet101=30, resnet50=70", None, {"resnet101": 0.3, "resnet50": 0.7}),
        # with the subsets known, the order follows them and unnamed ones get 0%
        ("resnet101=30,resnet50=70", SUBSETS, {"resnet50": 0.7, "resnet101": 0.3}),
        ("resnet101=100", SUBSETS, {"resnet50": 0.0, "resnet101": 1.0}),
    ],
)
def test_parse_expected_valid(text, order, shares):
    expectation = parse_expected(text, order)
    assert list(expectation.shares) == list(shares)
    for name, share in shares.items():
        assert expectation.shares[name] == pytest.approx(share, abs=1e-12)
    assert sum(expectation.shares.values()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize(
    ("text", "order", "message"),
    [
        ("", SUBSETS, "empty expected split"),
        ("   ", SUBSETS, "empty expected split"),
        ("70/20", SUBSETS, "sums to 90%, not 100%"),
        ("70/40", SUBSETS, "sums to 110%"),
        ("0.7/0.3", SUBSETS, "sums to 1%"),  # fractions are not percentages
        ("-10/110", SUBSETS, "cannot read"),
        ("resnet50=-10,resnet101=110", None, "between 0 and 100"),
        ("70/30", None, "name them instead"),
        ("70/20/10", SUBSETS, "3 share(s) but there are 2 subset(s)"),
        ("100", SUBSETS, "e.g. '70/30'"),
        ("seventy/thirty", SUBSETS, "cannot read"),
        ("70:30", SUBSETS, "cannot read"),
        ("resnet50=70,resnet50=30", None, "given twice"),
        ("resnet50=70,resnet152=30", SUBSETS, "'resnet152', which is not a subset"),
        ("resnet50=70;resnet101=30", None, "cannot read"),
        ("resnet50=x,resnet101=30", None, "as a percentage"),
        ("resnet50=nan,resnet101=100", None, "between 0 and 100"),
        ("unknown=30,resnet50=70", None, "reserved"),
        ("bad name=100", None, "invalid subset name"),
    ],
)
def test_parse_expected_invalid(text, order, message):
    with pytest.raises(UsageError) as info:
        parse_expected(text, order)
    assert message in str(info.value)
    assert info.value.exit_code == 3


def test_invalid_messages_show_a_valid_example():
    with pytest.raises(
        UsageError,
        match=r"e\.g\. '70/30' \(stable subset first\) or "
        r"'resnet50=70,resnet101=30'",
    ):
        parse_expected("70/20", SUBSETS)


def test_expectation_properties_and_json():
    weighted = parse_expected("70/30", SUBSETS)
    assert weighted.subsets == ("resnet50", "resnet101")
    assert weighted.positive == ("resnet50", "resnet101")
    assert not weighted.deterministic
    assert weighted.share("resnet152") == 0.0
    assert weighted.label() == "resnet50=70%,resnet101=30%"
    assert json.loads(json.dumps(weighted.to_dict()))["shares"] == {
        "resnet50": 0.7,
        "resnet101": 0.3,
    }
    header = parse_expected("0/100", SUBSETS)
    assert header.deterministic and header.positive == ("resnet101",)
    assert hash(weighted) == hash(parse_expected("resnet50=70,resnet101=30"))
    assert weighted == parse_expected("resnet50=70,resnet101=30")


@pytest.mark.parametrize(
    "shares",
    [{}, {"a": 0.5, "b": 0.4}, {"a": 1.5, "b": -0.5}, {"a": float("nan")}, {"error": 1.0}],
)
def test_expectation_rejects_bad_shares(shares):
    with pytest.raises(UsageError):
        Expectation(shares)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"alpha": 0},
        {"alpha": 0.6},
        {"tolerance": 0},
        {"tolerance": 0.7},
        {"confidence": 1.0},
        {"confidence": 0.4},
        {"power": 1.0},
        {"max_unknown_rate": -0.1},
        {"max_error_rate": 1.0},
        {"alpha": float("nan")},
    ],
)
def test_policy_rejects_bad_values(kwargs):
    with pytest.raises(UsageError):
        SplitPolicy(**kwargs)


def test_policy_defaults():
    policy = SplitPolicy()
    assert (policy.alpha, policy.tolerance, policy.confidence, policy.power) == (
        0.01,
        0.03,
        0.95,
        0.95,
    )
    assert policy.max_unknown_rate == 0.005 and policy.max_error_rate == 0.001
    assert json.loads(json.dumps(policy.to_dict()))["alpha"] == 0.01
    assert "interval" not in policy.to_dict()  # exact intervals only: the guarantees need them


def test_expected_per_group_one_grammar() -> None:
    order = ["resnet50", "resnet101"]
    both = expectations_by_group("70/30", order)
    assert both["default"].shares == both["canary"].shares == {"resnet50": 0.7, "resnet101": 0.3}
    split = expectations_by_group("default: 100/0; canary: resnet101=100", order)
    assert split["default"].shares == {"resnet50": 1.0, "resnet101": 0.0}
    assert split["canary"].shares == {"resnet50": 0.0, "resnet101": 1.0}
    only = expectations_by_group("canary: 0/100", order)
    assert list(only) == ["canary"]
    assert expectations_by_group("", order) == {}
    assert parse_group_spec("70/30; canary: 0/100") == {None: "70/30", "canary": "0/100"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("beta: 100/0", "unknown group 'beta'"),
        ("default: 100/0; default: 0/100", "group 'default' is given twice"),
        ("70/30; 50/50", "give one split, or one per group"),
        (" ; ", "empty --expected"),
    ],
)
def test_group_grammar_errors(text: str, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        expectations_by_group(text, ["resnet50", "resnet101"])
