"""Where a run directory is and what is in it: names, paths, atomic JSON.

Layout (``reports/<UTC start, YYYYMMDDTHHMMSSZ>-<6 hex>/`` unless given)::

    run.json            what ran and what came of it (canary.rundir.document)
    progress.json       live counters, rewritten about twice a second while the test runs
    calibration.json    the fingerprints the responses were attributed with
    records/            part-00000.parquet, part-00001.parquet, ... (canary.rundir.records)
    locust.log          Locust's output (``canary load`` only)

Names sort by start time, so the newest run is the last name. Every JSON
file is written atomically (a temporary file, then a rename): a reader never
sees half a file, and a killed run leaves the last whole version.
"""

from __future__ import annotations

import datetime as dt
import importlib.metadata
import os
import platform
import secrets
from pathlib import Path
from typing import Any

import orjson

from canary.conventions import utc_now
from canary.errors import UsageError
from canary.files import write_atomic
from canary.rundir.document import RunDocument

__all__ = [
    "CALIBRATION_FILE",
    "LOCUST_LOG",
    "PROGRESS_FILE",
    "RECORDS_DIR",
    "REPORTS_DIR",
    "RUN_FILE",
    "RunDir",
    "default_run_dir",
    "find_newest_run",
    "read_json",
    "resolve_run_dir",
    "utc_now",
    "versions",
    "write_json_atomic",
]

RUN_FILE = "run.json"
PROGRESS_FILE = "progress.json"
CALIBRATION_FILE = "calibration.json"
RECORDS_DIR = "records"
LOCUST_LOG = "locust.log"
REPORTS_DIR = Path("reports")
_TRAFFIC_STACK = ("canary", "locust", "grpcio", "tensorflow-serving-api", "protobuf", "gevent",
                  "geventhttpclient", "pyarrow")


def versions() -> dict[str, str | None]:
    """Versions of what drove the traffic, and the machine it ran on, for run.json (None: not installed)."""

    def version(distribution: str) -> str | None:
        try:
            return importlib.metadata.version(distribution)
        except importlib.metadata.PackageNotFoundError:
            return None

    return {**{name: version(name) for name in _TRAFFIC_STACK}, "python": platform.python_version(),
            "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}"}


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
    except IsADirectoryError:
        raise UsageError(f"{path} is a directory, not a JSON file") from None
    except orjson.JSONDecodeError as error:
        raise UsageError(f"{path} is not valid JSON ({error}); the run may have been killed while writing") from None
    if not isinstance(document, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return document


def find_newest_run(reports: Path = REPORTS_DIR) -> Path:
    """The lexicographically last folder of ``reports`` that holds a ``run.json``; the
    :class:`UsageError` when there is none names the folder searched and how to make a run."""
    reports = Path(reports)
    make = (f"`canary load` writes each run into {REPORTS_DIR}/ of the directory it runs in: run it "
            f"(or run this where you ran it), or give the run directory, e.g. {REPORTS_DIR}/<run>")
    if not reports.is_dir():
        raise UsageError(f"no run directory to read: {reports.resolve()} does not exist; {make}")
    runs = sorted(p for p in reports.iterdir() if p.is_dir() and (p / RUN_FILE).is_file())
    if not runs:
        raise UsageError(f"no run directory (a folder with {RUN_FILE}) under {reports.resolve()}; {make}")
    return runs[-1]


def resolve_run_dir(run_dir: Path | None, reports: Path = REPORTS_DIR) -> Path:
    """``run_dir`` checked to be a run directory, or the newest run under ``reports``."""
    if run_dir is None:
        return find_newest_run(reports)
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory; give a run directory such as reports/<run>")
    if not (path / RUN_FILE).is_file():
        raise UsageError(f"{path} has no {RUN_FILE}, so it is not a run directory written by `canary load`")
    return path


class RunDir:
    """Paths inside one run directory, and its JSON files."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    def __repr__(self) -> str:
        return f"RunDir({str(self.root)!r})"

    @property
    def run_json(self) -> Path:
        return self.root / RUN_FILE

    @property
    def progress_json(self) -> Path:
        return self.root / PROGRESS_FILE

    @property
    def calibration_json(self) -> Path:
        return self.root / CALIBRATION_FILE

    @property
    def records(self) -> Path:
        return self.root / RECORDS_DIR

    @property
    def locust_log(self) -> Path:
        return self.root / LOCUST_LOG

    def create(self) -> RunDir:
        """Make the directory and its ``records/``; refuses one that already holds a run."""
        if self.run_json.exists():
            raise UsageError(
                f"{self.root} already holds a run (run.json); give a new --run-dir or leave it out for a fresh one"
            )
        self.records.mkdir(parents=True, exist_ok=True)
        return self

    def write_run(self, document: RunDocument | dict[str, Any]) -> None:
        """Write run.json: a :class:`~canary.rundir.document.RunDocument` or a plain mapping."""
        write_json_atomic(self.run_json, document.to_json_dict() if isinstance(document, RunDocument) else document)

    def read_run_json(self) -> dict[str, Any]:
        """run.json as plain JSON (see :func:`canary.rundir.read_run` for the typed run)."""
        return read_json(self.run_json)

    def write_progress(self, document: dict[str, Any]) -> None:
        write_json_atomic(self.progress_json, document)

    def read_progress(self) -> dict[str, Any] | None:
        """The latest progress, or None before the first one is written."""
        try:
            return read_json(self.progress_json)
        except UsageError:
            return None
