"""The run directory: everything about one load-test run, in one folder.

Layout (``reports/<UTC timestamp>-<short id>/`` unless given)::

    run.json            what ran and what came of it (written at start, rewritten at the end)
    progress.json       live counters, rewritten about twice a second while the test runs
    calibration.json    the fingerprints the responses were attributed with
    records/            part-00000.parquet, part-00001.parquet, ... (loadtest.records.SCHEMA)

Every JSON file is written atomically (temporary file + rename), so a reader
never sees half a file and a killed run leaves the last whole version.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import platform
import secrets
from pathlib import Path
from typing import Any

import orjson

from canary.errors import UsageError
from canary.files import write_atomic
from loadtest.records import RECORDS_DIR

__all__ = [
    "RUN_FORMAT",
    "RunDir",
    "default_run_dir",
    "read_json",
    "utc_now",
    "versions",
    "write_json_atomic",
]

RUN_FORMAT = 1
REPORTS_DIR = Path("reports")


def utc_now() -> str:
    """The current time as ISO 8601 UTC with microseconds (``2026-01-31T12:00:00.123456Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def default_run_dir(reports: Path = REPORTS_DIR, now: dt.datetime | None = None) -> Path:
    """``reports/<UTC timestamp>-<short id>``, e.g. ``reports/20260131T120000Z-3f9a1c``.

    Names sort by start time; the random id keeps two runs started in the
    same second apart.
    """
    stamp = (now or dt.datetime.now(dt.UTC)).strftime("%Y%m%dT%H%M%SZ")
    return Path(reports) / f"{stamp}-{secrets.token_hex(3)}"


def write_json_atomic(path: Path, document: Any) -> None:
    """Write ``document`` as indented JSON to ``path``, atomically."""
    data = orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_NON_STR_KEYS | orjson.OPT_SERIALIZE_NUMPY)
    write_atomic(path, data + b"\n")


def read_json(path: Path) -> dict[str, Any]:
    """A JSON object from ``path``; :class:`UsageError` naming the file when it is missing or broken."""
    try:
        document = orjson.loads(Path(path).read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; is this a run directory written by `canary load`?") from None
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); the run may have been killed while writing") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return document


def _version(distribution: str) -> str | None:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions() -> dict[str, str | None]:
    """Versions of what drove the traffic."""
    return {
        "canary": _version("canary"),
        "locust": _version("locust"),
        "grpcio": _version("grpcio"),
        "tensorflow-serving-api": _version("tensorflow-serving-api"),
        "protobuf": _version("protobuf"),
        "gevent": _version("gevent"),
        "geventhttpclient": _version("geventhttpclient"),
        "pyarrow": _version("pyarrow"),
        "python": platform.python_version(),
    }


class RunDir:
    """Paths inside one run directory, and its JSON files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def run_json(self) -> Path:
        return self.root / "run.json"

    @property
    def progress_json(self) -> Path:
        return self.root / "progress.json"

    @property
    def calibration_json(self) -> Path:
        return self.root / "calibration.json"

    @property
    def records(self) -> Path:
        return self.root / RECORDS_DIR

    def create(self) -> RunDir:
        """Make the directory and its ``records/``; refuses one that already holds a run."""
        if self.run_json.exists():
            raise UsageError(
                f"{self.root} already holds a run (run.json); give a new --run-dir or leave it out for a fresh one"
            )
        self.records.mkdir(parents=True, exist_ok=True)
        return self

    def write_run(self, document: dict[str, Any]) -> None:
        write_json_atomic(self.run_json, document)

    def read_run(self) -> dict[str, Any]:
        return read_json(self.run_json)

    def write_progress(self, document: dict[str, Any]) -> None:
        write_json_atomic(self.progress_json, document)

    def read_progress(self) -> dict[str, Any] | None:
        """The latest progress, or None before the first one is written."""
        try:
            return read_json(self.progress_json)
        except UsageError:
            return None
