"""The master re-reads the canary options at each test start: what Locust's start form typed in."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from canary.stats import parse_expected
from loadtest.master import MasterSide
from loadtest.options import options_from_parsed

SUBSETS = ["resnet50", "resnet101"]


def master(expected: str) -> MasterSide:
    # only what reread_options touches: the rest of a MasterSide needs a run, payloads and a mesh
    side = MasterSide.__new__(MasterSide)
    side.environment = SimpleNamespace()
    side.subsets = SUBSETS
    side.options = options_from_parsed(SimpleNamespace(expected=expected))
    side.expected = {}
    return side


def test_a_typed_expected_split_becomes_the_runs_expectation() -> None:
    side = master("70/30")
    side.reread_options(SimpleNamespace(expected="default: 60/40; canary: 0/100", requests=500))
    assert side.options.requests == 500
    assert side.expected == {"default": parse_expected("60/40", SUBSETS),
                             "canary": parse_expected("0/100", SUBSETS)}
    assert side.environment.canary_expected == side.expected


def test_a_bad_typed_value_keeps_the_previous_options(caplog: pytest.LogCaptureFixture) -> None:
    side = master("70/30")
    before = side.options
    side.reread_options(SimpleNamespace(expected="70/40", requests=500))
    assert side.options is before and side.expected == {}
    assert "keeping the previous options" in caplog.text
