"""The run directory: names, atomic JSON, refusing to overwrite a run."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path

import orjson
import pytest

from canary.errors import UsageError
from canary.rundir.layout import (
    RunDir,
    default_run_dir,
    read_json,
    utc_now,
    versions,
    write_json_atomic,
)


def test_default_run_dir_is_a_sortable_utc_timestamp_and_a_short_id() -> None:
    when = dt.datetime(2026, 1, 31, 12, 0, 5, tzinfo=dt.UTC)
    path = default_run_dir(Path("reports"), now=when)
    assert path.parent == Path("reports")
    assert re.fullmatch(r"20260131T120005Z-[0-9a-f]{6}", path.name)
    assert default_run_dir(now=when) != default_run_dir(now=when)
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", utc_now())


def test_json_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "run.json"
    write_json_atomic(target, {"a": 1, "nested": {"b": [1, 2]}})
    write_json_atomic(target, {"a": 2})
    assert orjson.loads(target.read_bytes()) == {"a": 2}
    assert [p.name for p in tmp_path.iterdir()] == ["run.json"]


def test_run_dir_layout_and_refusal_to_overwrite(tmp_path: Path) -> None:
    run = RunDir(tmp_path / "r").create()
    assert run.records.is_dir()
    assert run.read_progress() is None
    run.write_progress({"requests": 3})
    assert run.read_progress() == {"requests": 3}
    run.write_run({"format": 1})
    assert run.read_run_json() == {"format": 1}
    with pytest.raises(UsageError, match="already holds a run"):
        RunDir(tmp_path / "r").create()


def test_read_json_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="does not exist"):
        read_json(tmp_path / "run.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(UsageError, match="not valid JSON"):
        read_json(tmp_path / "bad.json")


def test_versions_name_the_traffic_stack() -> None:
    found = versions()
    for name in ("canary", "locust", "grpcio", "tensorflow-serving-api", "python"):
        assert found[name], name
