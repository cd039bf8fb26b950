"""The value checks manifests rely on: RE2 regexes, durations, labels, host matching."""

from __future__ import annotations

import pytest

from mesh.hosts import intersect_hosts
from mesh.manifest_fields import check_label_key, check_label_value, parse_duration_ms, re2_problem


@pytest.mark.parametrize(
    ("pattern", "problem"),
    [
        ("/tensorflow\\.serving\\..*", ""),
        ("(?i)^/v1/models/[a-z_]+(/versions/\\d+)?:predict$", ""),
        ("(?P<name>x)|(?<other>y)", ""),  # RE2 named groups, both spellings
        ("\\pL+\\p{Greek}[[:alpha:]]\\z", ""),  # RE2-only syntax Python lacks
        ("[(?=]", ""),  # inside a class it is literal
        ("[]a]", ""),
        ("a(?=b)", "lookahead"),
        ("a(?!b)", "negative lookahead"),
        ("(?<=a)b", "lookbehind"),
        ("(?<!a)b", "negative lookbehind"),
        ("(?>a)", "atomic group"),
        ("(a)?(?(1)b|c)", "conditional"),
        ("(a)\\1", "backreference"),
        ("(?P<n>a)(?P=n)", "named backreference"),
        ("a++", "possessive"),
        ("a\\Z", "\\Z"),
        ("(", "invalid regular expression"),
        ("a{2", ""),  # a literal in both engines
        ("*a", "invalid regular expression"),
    ],
)
def test_re2_problem(pattern: str, problem: str) -> None:
    found = re2_problem(pattern)
    assert (problem in found and found) if problem else found == ""


@pytest.mark.parametrize(
    ("text", "ms"),
    [
        ("1.5s", 1500),
        ("100ms", 100),
        ("1m30s", 90_000),
        ("2h", 7_200_000),
        ("0s", 0),
        (".5s", 500),
        ("1000us", 1),
        ("1500000ns", -1),  # 1.5 ms: finer than Istio's millisecond precision
        ("1.0005s", -1),
        ("10", None),
        ("s", None),
        ("1.5 s", None),
        ("-1s", None),
        ("", None),
    ],
)
def test_parse_duration_ms(text: str, ms: int | None) -> None:
    assert parse_duration_ms(text) == ms


@pytest.mark.parametrize(
    ("key", "ok"),
    [
        ("app", True),
        ("app.kubernetes.io/name", True),
        ("version_2", True),
        ("-bad", False),
        ("Bad_Prefix/x", False),
        ("/x", False),
        ("a/", False),
        ("x" * 64, False),
    ],
)
def test_check_label_key(key: str, ok: bool) -> None:
    assert (check_label_key(key) == "") is ok


@pytest.mark.parametrize(
    ("value", "ok"), [("", True), ("resnet-50.v1_a", True), ("-x", False), ("a b", False)]
)
def test_check_label_value(value: str, ok: bool) -> None:
    assert (check_label_value(value) == "") is ok


@pytest.mark.parametrize(
    ("vs_host", "gateway_host", "served"),
    [
        ("*", "*", "*"),
        ("api.example.com", "*", "api.example.com"),
        ("*", "api.example.com", "api.example.com"),
        ("api.example.com", "*.example.com", "api.example.com"),
        ("*.example.com", "*.apps.example.com", "*.apps.example.com"),
        ("*.apps.example.com", "*.example.com", "*.apps.example.com"),
        ("api.example.com", "web.example.com", None),
        ("*.example.com", "example.com", None),
    ],
)
def test_intersect_hosts(vs_host: str, gateway_host: str, served: str | None) -> None:
    assert intersect_hosts(vs_host, gateway_host) == served
