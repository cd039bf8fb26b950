"""A run directory, read into the verifier's inputs (the only file reading of the verifier).

The verifier depends on the run directory's *format*, not on the load test's
code: this module reads the files itself (Parquet with pyarrow, JSON with
orjson). The layout (written by ``canary load`` / the locustfile)::

    run.json            what ran: arguments (canary header, model name), users per
                        protocol and group, calibration summary, the mesh's counters
                        before/after (``mesh.delta``), start and end times
    calibration.json    the fingerprints; ``subsets`` lists every attributable subset
    records/part-*.parquet
                        one row per request (columns of ``loadtest.records.SCHEMA``);
                        rows repeated across chunks (same ``worker``, ``seq``) count once

Run directories are named ``reports/<UTC timestamp>-<id>``, so the newest run
is the lexicographically last folder holding a ``run.json``.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from canary.errors import UsageError

from .expectations import ERROR, UNKNOWN

__all__ = [
    "CALIBRATION_FILE",
    "DEFAULT_HEADER",
    "DEFAULT_MODEL",
    "GROUPS",
    "PROTOCOLS",
    "RECORDS_DIR",
    "RECORD_COLUMNS",
    "REPORTS_DIR",
    "RUN_FILE",
    "Cell",
    "RunInputs",
    "cell_counts",
    "find_newest_run",
    "load_run",
    "order_cells",
    "parse_header",
    "read_run_records",
    "resolve_run_dir",
]

RUN_FILE = "run.json"
CALIBRATION_FILE = "calibration.json"
RECORDS_DIR = "records"
REPORTS_DIR = Path("reports")
PROTOCOLS = ("rest", "grpc")
GROUPS = ("default", "canary")
DEFAULT_HEADER = ("user-group", "canary")
DEFAULT_MODEL = "image_classifier"
RECORD_COLUMNS = (
    "time", "protocol", "group", "path", "payload_id", "format", "status", "ok",
    "latency_ms", "subset", "top1", "label", "error", "worker", "seq",
)
"""The record columns the verifier reads (a subset of the load test's schema)."""

Cell = tuple[str, str]
"""``(protocol, group)``: the unit one split verdict is about."""


@dataclass(frozen=True)
class RunInputs:
    """Everything the verifier needs from one run directory."""

    root: Path
    run: Mapping[str, Any]  # run.json as read
    calibration: Mapping[str, Any] | None  # calibration.json, when present
    records: pd.DataFrame  # RECORD_COLUMNS, deduplicated, in time order
    header: tuple[str, str]  # the canary group's header (name lower-cased, value)
    model_name: str
    subsets: tuple[str, ...]  # calibrated subsets (their file order), then any others answering
    cells: tuple[Cell, ...]  # protocol x group that had users or records
    paths: Mapping[Cell, tuple[str, ...]]  # request paths seen per cell
    started_at: dt.datetime | None
    ended_at: dt.datetime | None
    weights: Mapping[str, str] = field(default_factory=dict)  # subset -> "seeded" / "imagenet"
    notes: tuple[str, ...] = ()

    @property
    def run_id(self) -> str:
        return str(self.run.get("run_id") or self.root.name)

    @property
    def duration_s(self) -> float | None:
        """Seconds from start to end (the last record when the end is not recorded)."""
        start, end = self.started_at, self.ended_at
        if end is None and len(self.records):
            end = pd.Timestamp(self.records["time"].max()).to_pydatetime()
        if start is None or end is None:
            return None
        return max(0.0, (end - start).total_seconds())


# --- finding the run -------------------------------------------------------------------


def find_newest_run(reports: Path = REPORTS_DIR) -> Path:
    """The lexicographically last folder of ``reports`` that holds a ``run.json``."""
    reports = Path(reports)
    if not reports.is_dir():
        raise UsageError(
            f"no {reports}/ folder here, so no run to verify; run `canary load` first, "
            "or give the run directory: verify-split reports/<run> --expected 70/30"
        )
    runs = sorted(p for p in reports.iterdir() if p.is_dir() and (p / RUN_FILE).is_file())
    if not runs:
        raise UsageError(
            f"no run directory (a folder with {RUN_FILE}) under {reports}/; run `canary load` "
            "first, or give the run directory explicitly"
        )
    return runs[-1]


def resolve_run_dir(run_dir: Path | None, reports: Path = REPORTS_DIR) -> Path:
    """``run_dir`` checked to be a run directory, or the newest run under ``reports``."""
    if run_dir is None:
        return find_newest_run(reports)
    path = Path(run_dir)
    if not path.is_dir():
        raise UsageError(f"{path} is not a directory; give a run directory such as reports/<run>")
    if not (path / RUN_FILE).is_file():
        raise UsageError(
            f"{path} has no {RUN_FILE}, so it is not a run directory written by `canary load`"
        )
    return path


# --- reading -----------------------------------------------------------------------------


def _read_json(path: Path) -> dict[str, Any]:
    try:
        document = orjson.loads(path.read_bytes())
    except FileNotFoundError:
        raise UsageError(f"{path} does not exist; is this a run directory?") from None
    except orjson.JSONDecodeError as error:
        raise UsageError(
            f"{path} is not valid JSON ({error}); the run may have been killed while writing it"
        ) from None
    if not isinstance(document, dict):
        raise UsageError(f"{path} does not hold a JSON object")
    return document


def read_run_records(run_dir: Path) -> pd.DataFrame:
    """The records of ``run_dir`` (the columns of :data:`RECORD_COLUMNS`), deduplicated by
    ``(worker, seq)`` and sorted by time. No chunk at all gives an empty frame."""
    directory = Path(run_dir) / RECORDS_DIR
    if not directory.is_dir():
        raise UsageError(
            f"{run_dir} has no {RECORDS_DIR}/ folder; is it a run directory written by `canary load`?"
        )
    tables: list[pa.Table] = []
    for part in sorted(directory.glob("part-*.parquet")):
        try:
            table = pq.read_table(part)
        except (OSError, pa.ArrowException) as error:
            raise UsageError(f"cannot read {part}: {error}; the chunk is damaged") from None
        missing = [c for c in RECORD_COLUMNS if c not in table.column_names]
        if missing:
            raise UsageError(
                f"{part} lacks the record column(s) {', '.join(missing)}; it was not written "
                "by this version of `canary load`"
            )
        tables.append(table.select(list(RECORD_COLUMNS)))
    if not tables:
        return pd.DataFrame({c: pd.Series(dtype=_EMPTY_DTYPES.get(c, "object")) for c in RECORD_COLUMNS})
    try:
        frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except pa.ArrowException as error:
        raise UsageError(f"the record chunks of {run_dir} do not share one schema: {error}") from None
    frame = frame.drop_duplicates(subset=["worker", "seq"], keep="first")
    return frame.sort_values(["time", "worker", "seq"], kind="stable").reset_index(drop=True)


_EMPTY_DTYPES = {"ok": "bool", "latency_ms": "float64", "seq": "int64", "time": "datetime64[us, UTC]"}


def parse_header(text: str) -> tuple[str, str]:
    """``'user-group: canary'`` → ``("user-group", "canary")`` (name lower-cased)."""
    name, sep, value = str(text).partition(":")
    name, value = name.strip().lower(), value.strip()
    if not sep or not name or not value or any(c.isspace() for c in name):
        raise UsageError(f"canary header {text!r} must be 'name: value', e.g. 'user-group: canary'")
    return name, value


def _timestamp(text: Any) -> dt.datetime | None:
    if not text:
        return None
    try:
        value = dt.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def order_cells(cells: set[Cell]) -> tuple[Cell, ...]:
    """REST before gRPC, the default group before the canary group, others after, by name."""

    def key(cell: Cell) -> tuple[int, str, int, str]:
        protocol, group = cell
        p = PROTOCOLS.index(protocol) if protocol in PROTOCOLS else len(PROTOCOLS)
        g = GROUPS.index(group) if group in GROUPS else len(GROUPS)
        return p, protocol, g, group

    return tuple(sorted(cells, key=key))


def cell_counts(records: pd.DataFrame) -> dict[Cell, dict[str, int]]:
    """``{(protocol, group): {subset: responses}}``; ``"unknown"`` and ``"error"`` are kept
    as keys (a failed request counts as ``"error"`` whatever its subset column says)."""
    if not len(records):
        return {}
    subset = records["subset"].astype(str).where(records["ok"].astype(bool), ERROR)
    subset = subset.where(subset != "", UNKNOWN)
    table = pd.DataFrame({"protocol": records["protocol"], "group": records["group"], "subset": subset})
    out: dict[Cell, dict[str, int]] = {}
    for (protocol, group, name), n in table.groupby(["protocol", "group", "subset"], sort=True).size().items():
        out.setdefault((str(protocol), str(group)), {})[str(name)] = int(n)
    return out


def _weights(run: Mapping[str, Any], calibration: Mapping[str, Any] | None) -> dict[str, str]:
    """Where the models' weights are recorded ("seeded" / "imagenet"), per subset.

    Looked up, first found wins: run.json ``models.<subset>.weights`` (or
    ``models.<subset>.canary_model.weights``: the model metadata's
    canary_model), calibration.json ``meta.models.<subset>...`` likewise, then
    ``meta.model_dirs.<subset>/assets.extra/canary_model.json`` (a calibration
    made from the SavedModels).
    """
    found: dict[str, str] = {}

    def take(models: Any) -> None:
        if not isinstance(models, Mapping):
            return
        for subset, info in models.items():
            if not isinstance(info, Mapping):
                continue
            inner = info.get("canary_model")
            weights = info.get("weights") or (inner.get("weights") if isinstance(inner, Mapping) else None)
            if isinstance(weights, str) and subset not in found:
                found[str(subset)] = weights

    take(run.get("models"))
    meta = calibration.get("meta") if calibration else None
    if isinstance(meta, Mapping):
        take(meta.get("models"))
        dirs = meta.get("model_dirs")
        if isinstance(dirs, Mapping):
            for subset, directory in dirs.items():
                info_file = Path(str(directory)) / "assets.extra" / "canary_model.json"
                if subset in found or not info_file.is_file():
                    continue
                try:
                    info = json.loads(info_file.read_text())
                except (OSError, ValueError):
                    continue
                if isinstance(info, Mapping) and isinstance(info.get("weights"), str):
                    found[str(subset)] = str(info["weights"])
    return found


def _section(document: Mapping[str, Any], key: str) -> Mapping[str, Any]:
    value = document.get(key)
    return value if isinstance(value, Mapping) else {}


def load_run(run_dir: Path) -> RunInputs:
    """Read one run directory (see the module docstring); :class:`UsageError` naming the
    file when something is missing or unreadable."""
    root = Path(run_dir)
    run = _read_json(root / RUN_FILE)
    calibration = _read_json(root / CALIBRATION_FILE) if (root / CALIBRATION_FILE).is_file() else None
    records = read_run_records(root)
    options = _section(_section(run, "arguments"), "canary")
    notes: list[str] = []
    header_text = options.get("canary_header")
    if header_text:
        header = parse_header(str(header_text))
    else:
        header = DEFAULT_HEADER
        notes.append("run.json does not record the canary header; assumed 'user-group: canary'")
    model_name = str(options.get("model_name") or DEFAULT_MODEL)

    subsets: list[str] = []
    for source in (
        calibration.get("subsets") if calibration else None,
        _section(run, "calibration").get("subsets"),
    ):
        for name in source or ():
            if str(name) not in subsets:
                subsets.append(str(name))
    answered = sorted(set(records["subset"].astype(str)) - {UNKNOWN, ERROR, ""}) if len(records) else []
    extra = [s for s in answered if s not in subsets]
    if extra and subsets:
        notes.append(f"subset(s) {', '.join(extra)} answered but are not in the calibration")
    subsets.extend(extra)

    cells: set[Cell] = set()
    users = run.get("users")
    if isinstance(users, Mapping):
        for protocol, groups in users.items():
            if isinstance(groups, Mapping):
                cells.update((str(protocol), str(g)) for g, n in groups.items() if n)
    paths: dict[Cell, tuple[str, ...]] = {}
    if len(records):
        for (protocol, group), seen in records.groupby(["protocol", "group"], sort=True)["path"]:
            cell = (str(protocol), str(group))
            cells.add(cell)
            paths[cell] = tuple(sorted({str(p) for p in seen.dropna() if str(p)}))
    status = run.get("status")
    if status not in (None, "finished"):
        notes.append(f"run.json says the run is {status!r}: the verdicts cover the records written so far")
    for problem in run.get("problems") or ():
        notes.append(f"the load test reported: {problem}")
    return RunInputs(
        root=root,
        run=run,
        calibration=calibration,
        records=records,
        header=header,
        model_name=model_name,
        subsets=tuple(subsets),
        cells=order_cells(cells),
        paths=paths,
        started_at=_timestamp(run.get("started_at")),
        ended_at=_timestamp(run.get("ended_at")),
        weights=_weights(run, calibration),
        notes=tuple(notes),
    )
