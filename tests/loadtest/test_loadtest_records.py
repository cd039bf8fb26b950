"""The record schema, the chunked Parquet sink (dedupe, gaps, flushing) and read_records."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from canary.errors import UsageError
from canary.rundir import SCHEMA, read_records, rows_to_table
from loadtest.records import RecordSink


def _row(worker: str, seq: int, **extra: Any) -> dict[str, Any]:
    row: dict[str, Any] = {
        "time": 1_800_000_000.0 + seq / 1000, "protocol": "rest", "group": "default", "header": "",
        "user": 0, "payload_id": "p", "format": "b64", "path": "/v1/models/m:predict", "versioned": False,
        "status": "200", "ok": True, "latency_ms": 12.5, "bytes": 100, "subset": "resnet50",
        "distance": 0.0, "top1": 3, "top5": [3, 1, 2, 0, 4], "label": None, "model_version": None,
        "error": None, "worker": worker, "seq": seq,
    }
    row.update(extra)
    return row


def test_schema_names_every_column_of_the_issue() -> None:
    wanted = {"time", "protocol", "group", "header", "payload_id", "format", "path", "status", "latency_ms",
              "bytes", "subset", "distance", "top1", "label", "model_version", "worker", "seq", "top5"}
    assert wanted <= set(SCHEMA.names)


def test_rows_to_table_keeps_values_and_nulls() -> None:
    table = rows_to_table([_row("w", 0), _row("w", 1, ok=False, subset="error", status="503", distance=None,
                                             top1=None, top5=None, error="HTTPError: 503", label=652)])
    assert table.schema == SCHEMA
    data = table.to_pylist()
    assert data[0]["time"].timestamp() == pytest.approx(1_800_000_000.0)
    assert data[1]["distance"] is None and data[1]["top5"] is None and data[1]["label"] == 652
    assert data[0]["top5"] == [3, 1, 2, 0, 4]


def test_sink_drops_duplicates_and_counts_gaps(tmp_path: Path) -> None:
    sink = RecordSink(tmp_path / "records", flush_rows=1000)
    assert len(sink.add([_row("a", 0), _row("a", 1), _row("b", 0)])) == 3
    assert sink.add([_row("a", 1)]) == []  # a batch sent twice
    assert len(sink.add([_row("a", 3)])) == 1  # seq 2 never came
    sink.close()
    stats = sink.stats
    assert stats.rows == 4 and stats.duplicates == 1 and stats.missing == 1
    assert stats.workers["a"].record().model_dump() == {"received": 3, "last_seq": 3, "missing": 1, "duplicates": 1}
    assert stats.by_subset == {"resnet50": 4} and stats.by_outcome == {"attributed": 4}
    assert len(read_records(tmp_path)) == 4


def test_sink_writes_a_chunk_per_flush_and_no_temporary_files(tmp_path: Path) -> None:
    sink = RecordSink(tmp_path / "records", flush_rows=3, flush_s=0.05)
    sink.add([_row("a", i) for i in range(3)])  # reaches flush_rows
    assert [p.name for p in (tmp_path / "records").iterdir()] == ["part-00000.parquet"]
    sink.add([_row("a", 3)])
    sink.flush_due()  # too young
    assert len(list((tmp_path / "records").glob("part-*.parquet"))) == 1
    time.sleep(0.06)
    sink.flush_due()
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]
    assert pq.read_table(tmp_path / "records" / "part-00001.parquet").num_rows == 1
    sink.close()
    with pytest.raises(RuntimeError):
        sink.add([_row("a", 4)])


def test_a_new_sink_continues_the_part_numbers(tmp_path: Path) -> None:
    first = RecordSink(tmp_path / "records")
    first.add([_row("a", 0)])
    first.close()
    second = RecordSink(tmp_path / "records")
    second.add([_row("b", 0)])
    second.close()
    assert sorted(p.name for p in (tmp_path / "records").iterdir()) == ["part-00000.parquet", "part-00001.parquet"]


def test_read_records_orders_by_time_and_drops_repeated_rows(tmp_path: Path) -> None:
    sink = RecordSink(tmp_path / "records")
    sink.add([_row("b", 0, time=5.0), _row("a", 0, time=1.0)])
    sink.close()
    again = RecordSink(tmp_path / "records")  # the same rows again, as a crash-and-replay would
    again.add([_row("a", 0, time=1.0)])
    again.close()
    frame = read_records(tmp_path)
    assert list(frame["worker"]) == ["a", "b"]
    assert read_records(tmp_path / "records").equals(frame)


def test_read_records_of_an_empty_run_has_the_columns(tmp_path: Path) -> None:
    (tmp_path / "records").mkdir()
    frame = read_records(tmp_path)
    assert frame.empty and list(frame.columns) == SCHEMA.names


def test_read_records_says_what_is_missing(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="records/"):
        read_records(tmp_path / "nowhere")
