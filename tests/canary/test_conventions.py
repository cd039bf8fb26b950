"""The shared names: header and size parsing, paths, cell order, exit codes."""

from __future__ import annotations

from pathlib import Path

import pytest

from canary.conventions import (
    EXIT_CODES_HELP,
    ExitCode,
    canary_home,
    order_cells,
    parse_header,
    parse_payload_size,
    rest_predict_path,
)
from canary.errors import CanaryError, UsageError


def test_header_parsing_lower_cases_the_name() -> None:
    assert parse_header("User-Group:  canary ") == ("user-group", "canary")
    assert parse_header("x: a:b") == ("x", "a:b")
    for bad in ("user-group canary", ": x", "a b: c", "x:", "user-group=canary"):
        with pytest.raises(UsageError, match="must be 'name: value'"):
            parse_header(bad)


def test_payload_size() -> None:
    assert parse_payload_size("original") is None and parse_payload_size(" 224 ") == 224
    assert parse_payload_size(None) is None
    for bad, message in (("big", "number of pixels"), ("0", "between 1 and 4096"), ("5000", "between 1 and 4096")):
        with pytest.raises(UsageError, match=message):
            parse_payload_size(bad, option="--size")


def test_paths_and_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert rest_predict_path() == "/v1/models/image_classifier:predict"
    assert rest_predict_path("m", 3) == "/v1/models/m/versions/3:predict"
    monkeypatch.setenv("CANARY_HOME", str(tmp_path / "h"))
    assert canary_home() == (tmp_path / "h").resolve()
    monkeypatch.delenv("CANARY_HOME")
    assert canary_home() == Path(".canary").resolve()


def test_cells_come_rest_first_default_first() -> None:
    cells = {("grpc", "canary"), ("rest", "canary"), ("grpc", "default"), ("rest", "default"), ("http3", "x")}
    assert order_cells(cells) == (("rest", "default"), ("rest", "canary"), ("grpc", "default"),
                                  ("grpc", "canary"), ("http3", "x"))


def test_usage_errors_exit_3() -> None:
    assert UsageError("x").exit_code == CanaryError("x").exit_code == ExitCode.USAGE == 3
    assert [int(c) for c in ExitCode] == [0, 1, 2, 3, 130]
    assert ExitCode.INTERRUPTED == 130 and "130 interrupted" in EXIT_CODES_HELP
