"""One record per request: the schema, the chunked Parquet sink, and the reader.

A record is a plain ``dict`` while it travels (msgpack between Locust
workers and the master, the web UI's hooks); :data:`SCHEMA` fixes its columns
once it is written. The master (or the local runner) hands batches to a
:class:`RecordSink`, which drops any ``(worker, seq)`` it has already seen and
appends ``records/part-NNNNN.parquet`` chunks (written to a hidden temporary
name, then renamed) at least every second, so an interrupted run keeps every
record already received. :func:`read_records` reads the directory back.

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
``status``         HTTP status (``200``), gRPC code name (``OK``), or the exception's name
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
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from canary.errors import UsageError

__all__ = [
    "ERROR",
    "RECORDS_DIR",
    "SCHEMA",
    "UNKNOWN",
    "RecordSink",
    "SinkStats",
    "WorkerTally",
    "read_records",
    "rows_to_table",
]

RECORDS_DIR = "records"
UNKNOWN = "unknown"
ERROR = "error"

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
    ],
    metadata={"canary.records": "1"},
)
"""The records' columns; ``time`` travels as epoch seconds (float) until written."""

_DEFAULTS: dict[str, Any] = {"header": "", "status": "", "ok": False, "latency_ms": 0.0, "bytes": 0,
                             "subset": UNKNOWN, "worker": "", "seq": 0, "protocol": "", "group": "default"}


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


@dataclass
class WorkerTally:
    """What one worker's rows looked like on arrival: sequence numbers seen, gaps, duplicates."""

    received: int = 0
    next_seq: int = 0  # every seq below this has arrived (or was skipped: see ``missing``)
    missing: int = 0
    duplicates: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"received": self.received, "last_seq": self.next_seq - 1,
                "missing": self.missing, "duplicates": self.duplicates}


@dataclass
class SinkStats:
    """Running totals of what the sink accepted, for progress and run.json."""

    rows: int = 0
    written: int = 0
    chunks: int = 0
    by_subset: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)  # ok / failed / unknown
    workers: dict[str, WorkerTally] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.workers.values())

    @property
    def missing(self) -> int:
        return sum(t.missing for t in self.workers.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "chunks": self.chunks,
            "by_subset": dict(sorted(self.by_subset.items())),
            "by_outcome": dict(sorted(self.by_outcome.items())),
            "duplicates_dropped": self.duplicates,
            "missing": self.missing,
            "workers": {w: t.to_dict() for w, t in sorted(self.workers.items())},
        }


class RecordSink:
    """Appends record batches to ``<run>/records/part-NNNNN.parquet``, deduplicated.

    Rows of one worker arrive in sequence order (one ordered connection per
    worker); a row whose ``seq`` is below the worker's next expected number
    is a duplicate and is dropped, a jump forward is counted as missing.
    :meth:`add` buffers; a chunk is written when ``flush_rows`` rows are
    buffered or :meth:`flush_due` finds the oldest buffered row older than
    ``flush_s``. Thread-safe.
    """

    def __init__(self, directory: Path, *, flush_rows: int = 5000, flush_s: float = 0.5) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.flush_rows = flush_rows
        self.flush_s = flush_s
        self.stats = SinkStats()
        self._buffer: list[Mapping[str, Any]] = []
        self._oldest = 0.0
        self._lock = threading.Lock()
        self._next_part = _next_part_number(self.directory)
        self.closed = False

    def add(self, rows: Iterable[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
        """Accept ``rows``; returns the ones that were new (duplicates dropped)."""
        accepted: list[Mapping[str, Any]] = []
        with self._lock:
            if self.closed:
                raise RuntimeError("the record sink is closed")
            workers = self.stats.workers
            last_worker: Any = None
            tally = WorkerTally()
            for row in rows:
                worker = row.get("worker", "")
                if worker != last_worker or type(worker) is not str:  # a batch is usually one worker's
                    key = str(worker)
                    tally = workers.get(key) or workers.setdefault(key, WorkerTally())
                    last_worker = worker
                seq = int(row.get("seq", 0))
                if seq < tally.next_seq:
                    tally.duplicates += 1
                    continue
                tally.missing += seq - tally.next_seq
                tally.next_seq = seq + 1
                tally.received += 1
                accepted.append(row)
                self._count(row)
            if accepted:
                if not self._buffer:
                    self._oldest = time.monotonic()
                self._buffer.extend(accepted)
            if len(self._buffer) >= self.flush_rows:
                self._write_locked()
        return accepted

    def flush_due(self) -> None:
        """Write the buffer if its oldest row has waited ``flush_s``."""
        with self._lock:
            if self._buffer and time.monotonic() - self._oldest >= self.flush_s:
                self._write_locked()

    def flush(self) -> None:
        with self._lock:
            self._write_locked()

    def close(self) -> None:
        with self._lock:
            self._write_locked()
            self.closed = True

    def _count(self, row: Mapping[str, Any]) -> None:
        stats = self.stats
        stats.rows += 1
        subset = str(row.get("subset") or UNKNOWN)
        stats.by_subset[subset] = stats.by_subset.get(subset, 0) + 1
        outcome = "failed" if not row.get("ok") else ("unknown" if subset == UNKNOWN else "attributed")
        stats.by_outcome[outcome] = stats.by_outcome.get(outcome, 0) + 1

    def _write_locked(self) -> None:
        if not self._buffer:
            return
        table = rows_to_table(self._buffer)
        name = f"part-{self._next_part:05d}.parquet"
        temporary = self.directory / f".{name}.tmp"
        pq.write_table(table, temporary, compression="zstd")
        os.replace(temporary, self.directory / name)
        self._next_part += 1
        self.stats.written += len(self._buffer)
        self.stats.chunks += 1
        self._buffer = []


def _next_part_number(directory: Path) -> int:
    numbers = [int(p.stem.split("-")[1]) for p in directory.glob("part-*.parquet") if p.stem.split("-")[1].isdigit()]
    return max(numbers, default=-1) + 1


def read_records(run_dir: Path | str) -> pd.DataFrame:
    """Every record of a run directory (or of its ``records/`` folder), in time order.

    Rows repeated across chunks (same ``worker`` and ``seq``) are kept once.
    An empty run gives an empty frame with the schema's columns.
    """
    path = Path(run_dir)
    directory = path if path.name == RECORDS_DIR or not (path / RECORDS_DIR).exists() else path / RECORDS_DIR
    if not directory.is_dir():
        raise UsageError(f"{path} has no {RECORDS_DIR}/ folder; is it a run directory written by `canary load`?")
    parts = sorted(directory.glob("part-*.parquet"))
    if not parts:
        return SCHEMA.empty_table().to_pandas()
    table = pa.concat_tables([pq.read_table(p, schema=SCHEMA) for p in parts])
    frame = table.to_pandas()
    frame = frame.drop_duplicates(subset=["worker", "seq"], keep="first")
    return frame.sort_values(["time", "worker", "seq"], kind="stable").reset_index(drop=True)
