"""Collecting records on the master: dropping repeats, counting gaps, writing chunks.

A record is a plain ``dict`` while it travels (msgpack between Locust
workers and the master, the web UI's hooks); the run directory's format
(:mod:`canary.rundir.records`) fixes its columns once it is written. The
master (or the local runner) hands batches to a :class:`RecordSink`, which
drops any ``(worker, seq)`` it has already seen and appends a chunk at least
every ``flush_s``, so an interrupted run keeps every record already received.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from canary.conventions import UNKNOWN
from canary.rundir.document import RecordsRecord, WorkerTallyRecord
from canary.rundir.records import next_part_number, outcome, write_chunk

__all__ = ["RecordSink", "SinkStats", "WorkerTally"]

@dataclass
class WorkerTally:
    """What one worker's rows looked like on arrival: sequence numbers seen, gaps, duplicates."""

    received: int = 0
    next_seq: int = 0  # every seq below this has arrived (or was skipped: see ``missing``)
    missing: int = 0
    duplicates: int = 0

    def record(self) -> WorkerTallyRecord:
        return WorkerTallyRecord(received=self.received, last_seq=self.next_seq - 1,
                                 missing=self.missing, duplicates=self.duplicates)


@dataclass
class SinkStats:
    """Running totals of what the sink accepted, for progress and run.json."""

    rows: int = 0
    written: int = 0
    chunks: int = 0
    by_subset: dict[str, int] = field(default_factory=dict)
    by_outcome: dict[str, int] = field(default_factory=dict)  # canary.rundir.records.OUTCOMES
    workers: dict[str, WorkerTally] = field(default_factory=dict)

    @property
    def duplicates(self) -> int:
        return sum(t.duplicates for t in self.workers.values())

    @property
    def missing(self) -> int:
        return sum(t.missing for t in self.workers.values())

    def record(self, **more: Any) -> RecordsRecord:
        """run.json's ``records`` section (``more``: the fields only the master knows)."""
        return RecordsRecord(
            rows=self.rows,
            chunks=self.chunks,
            by_subset=dict(sorted(self.by_subset.items())),
            by_outcome=dict(sorted(self.by_outcome.items())),
            duplicates_dropped=self.duplicates,
            missing=self.missing,
            workers={w: t.record() for w, t in sorted(self.workers.items())},
            **more,
        )


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
        self._next_part = next_part_number(self.directory)
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
        ended = outcome(row.get("ok"), subset, row.get("status"))
        stats.by_outcome[ended] = stats.by_outcome.get(ended, 0) + 1

    def _write_locked(self) -> None:
        if not self._buffer:
            return
        write_chunk(self.directory, self._next_part, self._buffer)
        self._next_part += 1
        self.stats.written += len(self._buffer)
        self.stats.chunks += 1
        self._buffer = []
