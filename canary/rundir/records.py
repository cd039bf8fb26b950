"""The records of a run: one row per request, in Parquet chunks under ``records/``.

A record is a plain ``dict`` while it travels (msgpack between Locust workers
and the master, the web UI's hooks); :data:`SCHEMA` fixes its columns once
it is written. :func:`write_chunk` appends ``records/part-NNNNN.parquet``
(written under a hidden temporary name, then renamed, so a reader never sees
half a chunk); :func:`read_records` reads them all back, each request once.

Columns (one row per request, in the order of :data:`SCHEMA`):

``time``           request start, UTC (timestamp[us])
``protocol``       ``rest`` | ``grpc``
``group``          ``default`` (no header) | ``canary`` (sent the canary header)
``header``         the header sent (``user-group: canary``), empty for the default group
``user``           the user's run-wide index (decides its group)
``payload_id``     the payload (image file stem)
``format``         ``instances`` (serving_default) | ``b64`` (serving_preprocess)
``path``           REST URL path, or the gRPC method
``versioned``      the request named model version (``/versions/N`` or ``model_spec.version``)
``status``         HTTP status (``200``), gRPC code name (``OK``), the exception's name, or
                   ``interrupted``: the load test stopped (Ctrl-C, SIGTERM, the end of the run)
                   and its ``--stop-timeout`` ran out while the request was in flight. Such a
                   record is no response (subset ``error``, ``ok`` false): it is never counted
                   as answered, and the mesh may or may not have counted the request
``ok``             the request succeeded (what Locust counts as a success)
``latency_ms``     Locust's response time
``bytes``          response size
``subset``         who answered: a DestinationRule subset, ``unknown`` or ``error`` (failed)
``distance``       L-infinity distance to the nearest calibrated reference (null: failed)
``top1``           top-1 class of the response (null: failed)
``top5``           top-5 classes (kept to diagnose ``unknown``)
``label``          the payload's true class, when known
``model_version``  the version the server says answered (gRPC ``model_spec.version``)
``error``          the failure or attribution problem, else null
``worker``         the Locust worker (client id; ``local`` without workers)
``seq``            the worker's sequence number: ``(worker, seq)`` is unique
``phase``          the routing phase the request started in (run.json ``mesh.routing``; 0
                   when the routing never changed, and for runs written before phases)
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from canary.conventions import ERROR, UNKNOWN, Cell
from canary.errors import UsageError
from canary.rundir.layout import RECORDS_DIR

__all__ = [
    "INTERRUPTED_STATUS",
    "OUTCOMES",
    "REQUIRED_COLUMNS",
    "SCHEMA",
    "answered",
    "cell_counts",
    "chunk_files",
    "failure_counts",
    "next_part_number",
    "outcome",
    "read_records",
    "rows_to_table",
    "write_chunk",
]

SCHEMA = pa.schema(
    [
        pa.field("time", pa.timestamp("us", tz="UTC"), nullable=False),
        pa.field("protocol", pa.string(), nullable=False),
        pa.field("group", pa.string(), nullable=False),
        pa.field("header", pa.string(), nullable=False),
        pa.field("user", pa.int32()),
        pa.field("payload_id", pa.string()),
        pa.field("format", pa.string()),
        pa.field("path", pa.string()),
        pa.field("versioned", pa.bool_()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("ok", pa.bool_(), nullable=False),
        pa.field("latency_ms", pa.float64(), nullable=False),
        pa.field("bytes", pa.int64(), nullable=False),
        pa.field("subset", pa.string(), nullable=False),
        pa.field("distance", pa.float64()),
        pa.field("top1", pa.int32()),
        pa.field("top5", pa.list_(pa.int32())),
        pa.field("label", pa.int32()),
        pa.field("model_version", pa.int64()),
        pa.field("error", pa.string()),
        pa.field("worker", pa.string(), nullable=False),
        pa.field("seq", pa.int64(), nullable=False),
        pa.field("phase", pa.int32(), nullable=False),
        pa.field("server_ms", pa.float64()),
    ],
    metadata={"canary.records": "1"},
)
"""The records' columns; ``time`` travels as epoch seconds (float) until written."""

REQUIRED_COLUMNS = (
    "time", "protocol", "group", "path", "payload_id", "format", "status", "ok",
    "latency_ms", "subset", "top1", "label", "error", "worker", "seq",
)
"""The columns every reader relies on; a chunk without one of them is refused."""

INTERRUPTED_STATUS = "interrupted"
"""The status of a request the load test stopped while it was in flight (see the module docstring)."""

OUTCOMES = ("attributed", "unknown", "failed", "interrupted")
"""How a request ended, as run.json's ``by_outcome`` counts them."""


def outcome(ok: Any, subset: Any, status: Any) -> str:
    """A record's outcome (one of :data:`OUTCOMES`) from its ``ok``, ``subset`` and ``status``."""
    if not ok:
        return "interrupted" if status == INTERRUPTED_STATUS else "failed"
    return "unknown" if str(subset or UNKNOWN) == UNKNOWN else "attributed"


_DEFAULTS: dict[str, Any] = {"header": "", "status": "", "ok": False, "latency_ms": 0.0, "bytes": 0,
                             "subset": UNKNOWN, "worker": "", "seq": 0, "protocol": "", "group": "default",
                             "phase": 0}


def rows_to_table(rows: Sequence[Mapping[str, Any]]) -> pa.Table:
    """The rows as a table of :data:`SCHEMA` (missing keys are null or their default)."""
    columns: dict[str, pa.Array] = {}
    for schema_field in SCHEMA:
        name = schema_field.name
        if name == "time":
            values: list[Any] = [round(float(r.get("time") or 0.0) * 1e6) for r in rows]
        else:
            default = _DEFAULTS.get(name)
            values = [default if (v := r.get(name)) is None else v for r in rows]
        columns[name] = pa.array(values, type=schema_field.type)
    return pa.Table.from_pydict(columns, schema=SCHEMA)


def next_part_number(directory: Path) -> int:
    """The number the next chunk in ``directory`` takes (after any already there)."""
    numbers = [int(p.stem.split("-")[1]) for p in Path(directory).glob("part-*.parquet")
               if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def write_chunk(directory: Path, number: int, rows: Sequence[Mapping[str, Any]]) -> Path:
    """Write ``rows`` as ``part-<number>.parquet``: a hidden temporary file, then a rename."""
    name = f"part-{number:05d}.parquet"
    temporary = Path(directory) / f".{name}.tmp"
    pq.write_table(rows_to_table(rows), temporary, compression="zstd")
    final = Path(directory) / name
    os.replace(temporary, final)
    return final


def chunk_files(run_dir: Path | str) -> list[Path]:
    """The record chunks (``part-*.parquet``) of a run directory (or of its ``records/``), in order."""
    return sorted(_records_dir(run_dir).glob("part-*.parquet"))


def _records_dir(run_dir: Path | str) -> Path:
    """The run's ``records/`` (given the run, or the folder of chunks itself)."""
    path = Path(run_dir)
    if path.name == RECORDS_DIR or (path.is_dir() and not (path / RECORDS_DIR).exists()
                                    and any(path.glob("part-*.parquet"))):
        return path
    return path / RECORDS_DIR


def read_records(run_dir: Path | str) -> pd.DataFrame:
    """Every record of a run directory (or of its ``records/`` folder), in time order.

    Rows repeated across chunks (same ``worker`` and ``seq``) are kept once.
    No chunk at all gives an empty frame with the schema's columns. A damaged
    chunk, or one lacking a column readers rely on, is a :class:`UsageError`
    naming the file.
    """
    directory = _records_dir(run_dir)
    if not directory.is_dir():
        raise UsageError(f"{run_dir} has no {RECORDS_DIR}/ folder; is it a run directory written by `canary load`?")
    tables: list[pa.Table] = []
    for part in chunk_files(directory):
        try:
            table = pq.read_table(part)
        except (OSError, pa.ArrowException) as error:
            raise UsageError(f"cannot read {part}: {error}; the chunk is damaged") from None
        missing = [c for c in REQUIRED_COLUMNS if c not in table.column_names]
        if missing:
            raise UsageError(
                f"{part} lacks the record column(s) {', '.join(missing)}; it was not written "
                "by this version of `canary load`"
            )
        tables.append(table.select([f.name for f in SCHEMA if f.name in table.column_names]))
    if not tables:
        return SCHEMA.empty_table().to_pandas()
    try:
        frame = pa.concat_tables(tables, promote_options="permissive").to_pandas()
    except pa.ArrowException as error:
        raise UsageError(f"the record chunks of {run_dir} do not share one schema: {error}") from None
    if "phase" not in frame.columns:
        frame["phase"] = 0  # written before phases: one routing throughout
    frame["phase"] = frame["phase"].fillna(0).astype("int32")
    if "server_ms" not in frame.columns:
        frame["server_ms"] = float("nan")  # written before the server time was kept
    frame = frame.drop_duplicates(subset=["worker", "seq"], keep="first")
    return frame.sort_values(["time", "worker", "seq"], kind="stable").reset_index(drop=True)


def answered(records: pd.DataFrame) -> pd.DataFrame:
    """The successful responses attributed to a subset: what latency and accuracy are measured on
    (a failed request's time says nothing about a model that did not answer)."""
    if not len(records):
        return records
    return records[records["ok"].astype(bool) & ~records["subset"].isin([UNKNOWN, ERROR])]


def cell_counts(records: pd.DataFrame) -> dict[Cell, dict[str, int]]:
    """``{(protocol, group): {subset: responses}}``; ``"unknown"`` and ``"error"`` are kept
    as keys (a failed request counts as ``"error"`` whatever its subset column says).
    Select rows first (``records[records["phase"] == 1]``) to count one phase."""
    if not len(records):
        return {}
    subset = records["subset"].astype(str).where(records["ok"].astype(bool), ERROR)
    subset = subset.where(subset != "", UNKNOWN)
    table = pd.DataFrame({"protocol": records["protocol"], "group": records["group"], "subset": subset})
    out: dict[Cell, dict[str, int]] = {}
    for (protocol, group, name), n in table.groupby(["protocol", "group", "subset"], sort=True).size().items():
        out.setdefault((str(protocol), str(group)), {})[str(name)] = int(n)
    return out


def failure_counts(records: pd.DataFrame) -> list[tuple[str, int]]:
    """Why requests failed, most common first: ``[("404 Not Found: Could not find any versions of
    model image_classifer", 120), ("UNAVAILABLE: ...", 3)]``. Each failed request counts under its
    record's ``error`` on one line (its ``status`` when the error is empty)."""
    if not len(records):
        return []
    failed = records[~records["ok"].astype(bool)]
    reasons = failed["error"].fillna("").astype(str).map(lambda text: " ".join(text.split()))
    reasons = reasons.where(reasons != "", failed["status"].astype(str).replace("", "(no status)"))
    return sorted(((str(r), int(n)) for r, n in reasons.value_counts().items()), key=lambda rn: (-rn[1], rn[0]))
