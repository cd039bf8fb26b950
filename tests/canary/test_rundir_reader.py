"""Reading run directories: synthetic runs in the load test's format, newest-run discovery, errors."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from canary.conventions import parse_header
from canary.errors import UsageError
from canary.rundir import (
    SCHEMA,
    cell_counts,
    failure_counts,
    find_newest_run,
    read_records,
    read_run,
    resolve_run_dir,
    write_chunk,
)
from tests.verifier.synthetic import CELLS, make_run

COUNTS = {
    ("rest", "default"): {"resnet50": 7, "resnet101": 3, "unknown": 1},
    ("grpc", "canary"): {"resnet101": 4, "error": 2},
}


def test_load_run_reads_what_the_load_test_writes(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS, header="X-Team: beta")
    run = read_run(root)
    assert run.run_id == "run"
    assert run.header == ("x-team", "beta")
    assert run.model_name == "image_classifier"
    assert run.subsets == ("resnet101", "resnet50")  # the calibration's order, not a stable-first order
    assert run.cells == (("rest", "default"), ("grpc", "canary"))
    assert run.paths[("grpc", "canary")] == ("/tensorflow.serving.PredictionService/Predict",)
    assert len(run.records) == 17  # the row written into two chunks counts once
    assert list(run.records.columns) == SCHEMA.names
    assert run.duration_s == pytest.approx(1.0)
    assert run.notes == ()


def test_records_read_from_the_run_or_its_records_folder_alike(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS, chunks=3)
    pd.testing.assert_frame_equal(read_records(root), read_records(root / "records"))


def test_cell_counts_keep_unknown_and_error_apart(tmp_path: Path) -> None:
    run = read_run(make_run(tmp_path / "run", COUNTS))
    assert cell_counts(run.records) == {
        ("rest", "default"): {"resnet101": 3, "resnet50": 7, "unknown": 1},
        ("grpc", "canary"): {"error": 2, "resnet101": 4},
    }
    failed_but_attributed = run.records.copy()
    failed_but_attributed.loc[0, "ok"] = False  # a failed request counts as an error, whatever its subset
    counts = cell_counts(failed_but_attributed)
    assert sum(counts[("rest", "default")].values()) == 11
    assert counts[("rest", "default")].get("error") == 1


def test_failure_counts_say_why_requests_failed_most_common_first(tmp_path: Path) -> None:
    """Failed records count under their error (on one line), else their status; successes and
    unattributed responses are not failures."""
    wrong_model = "404 Not Found: Could not find any versions of model image_classifer"
    rows = (
        [{"ok": False, "status": "404", "error": wrong_model, "seq": i} for i in range(5)]
        + [{"ok": False, "status": "UNAVAILABLE", "error": "UNAVAILABLE: no healthy\n  upstream", "seq": 10 + i}
           for i in range(2)]
        + [{"ok": False, "status": "ConnectTimeout", "error": None, "seq": 20}]
        + [{"ok": False, "status": "503", "error": "503 Service Unavailable: fault filter abort", "seq": 30 + i}
           for i in range(2)]
        + [{"ok": True, "status": "200", "subset": "resnet50", "seq": 40},
           {"ok": True, "status": "200", "subset": "unknown", "error": "no calibrated reference", "seq": 41}]
    )
    (tmp_path / "records").mkdir()
    write_chunk(tmp_path / "records", 0, [{"time": 1.0, "worker": "w", **row} for row in rows])
    assert failure_counts(read_records(tmp_path)) == [
        (wrong_model, 5),
        ("503 Service Unavailable: fault filter abort", 2),
        ("UNAVAILABLE: no healthy upstream", 2),
        ("ConnectTimeout", 1),
    ]
    assert failure_counts(read_records(tmp_path).iloc[5:7]) == [("UNAVAILABLE: no healthy upstream", 2)]
    assert failure_counts(read_records(tmp_path).iloc[-2:]) == []
    assert failure_counts(SCHEMA.empty_table().to_pandas()) == []


def test_empty_run_and_cells_from_users(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", {cell: {} for cell in CELLS})
    run = read_run(root)
    assert len(run.records) == 0
    assert set(run.cells) == set(CELLS)  # users enrolled, no request: still a cell to report
    assert cell_counts(run.records) == {}


def test_newest_run_is_the_last_name_with_a_run_json(tmp_path: Path) -> None:
    reports = tmp_path / "reports"
    make_run(reports / "20260131T120000Z-aaaaaa", COUNTS)
    newest = make_run(reports / "20260131T130000Z-bbbbbb", COUNTS)
    (reports / "20260131T140000Z-cccccc").mkdir()  # started, no run.json yet
    (reports / "README.md").write_text("x")
    assert find_newest_run(reports) == newest
    assert resolve_run_dir(None, reports) == newest
    assert resolve_run_dir(newest, reports) == newest


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda p: None, "no run directory to read: {reports} does not exist; "),
        (lambda p: (p / "reports").mkdir(), "no run directory (a folder with run.json) under {reports}; "),
    ],
)
def test_no_run_to_find_names_the_folder_and_how_to_make_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              setup, message: str) -> None:
    setup(tmp_path)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UsageError) as raised:
        find_newest_run(Path("reports"))  # relative, as the commands' default: the message says where
    text = str(raised.value)
    assert text.startswith(message.format(reports=tmp_path / "reports"))
    assert "`canary load` writes each run into reports/ of the directory it runs in" in text
    assert "give the run directory, e.g. reports/<run>" in text


def test_unreadable_inputs_say_which_file(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="is not a directory"):
        resolve_run_dir(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(UsageError, match=r"has no run.json"):
        resolve_run_dir(tmp_path / "empty")
    root = make_run(tmp_path / "run", COUNTS)
    (root / "run.json").write_text("{")
    with pytest.raises(UsageError, match=r"run.json is not valid JSON"):
        read_run(root)
    (root / "run.json").write_text("[1]")
    with pytest.raises(UsageError, match="does not hold a JSON object"):
        read_run(root)


def test_damaged_or_foreign_chunks(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS)
    (root / "records" / "part-00009.parquet").write_bytes(b"not parquet")
    with pytest.raises(UsageError, match=r"part-00009.parquet.*damaged"):
        read_records(root)
    (root / "records" / "part-00009.parquet").unlink()
    pq.write_table(pa.table({"time": [1]}), root / "records" / "part-00009.parquet")
    with pytest.raises(UsageError, match="lacks the record column"):
        read_records(root)
    with pytest.raises(UsageError, match="no records/ folder"):
        read_records(tmp_path)


def test_header_parsing() -> None:
    assert parse_header("User-Group:  canary ") == ("user-group", "canary")
    for bad in ("user-group canary", ": x", "a b: c", "x:"):
        with pytest.raises(UsageError, match="must be 'name: value'"):
            parse_header(bad)


def test_notes_for_an_unfinished_run_without_header(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS, status="interrupted",
                    run_extra={"arguments": {}, "problems": ["3 records were lost"]})
    run = read_run(root)
    assert run.header == ("user-group", "canary")
    text = " ".join(run.notes)
    assert "assumed 'user-group: canary'" in text
    assert "'interrupted'" in text and "3 records were lost" in text


def test_weights_from_run_json_or_the_savedmodel(tmp_path: Path) -> None:
    run = read_run(make_run(tmp_path / "a", COUNTS, run_extra={
        "models": {"resnet50": {"canary_model": {"weights": "seeded"}}, "resnet101": {"weights": "imagenet"}}}))
    assert run.weights == {"resnet50": "seeded", "resnet101": "imagenet"}
    root = make_run(tmp_path / "b", COUNTS)
    model = tmp_path / "store" / "resnet50" / "1"
    (model / "assets.extra").mkdir(parents=True)
    (model / "assets.extra" / "canary_model.json").write_text(json.dumps({"weights": "seeded"}))
    (root / "calibration.json").write_text(json.dumps(
        {"subsets": ["resnet101", "resnet50"], "meta": {"model_dirs": {"resnet50": str(model), "resnet101": "/nowhere"}}}))
    assert read_run(root).weights == {"resnet50": "seeded"}


# --- records a run cannot be judged by: unreadable input ------------------------------------------


def test_a_records_folder_without_chunks_is_unreadable(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS, run_extra={"records": {"rows": 17, "chunks": 2}})
    for part in (root / "records").glob("part-*.parquet"):
        part.unlink()
    (root / "records" / ".part-00002.parquet.tmp").write_bytes(b"half")  # a chunk being written is no chunk
    with pytest.raises(UsageError, match=r"records holds no record chunk \(part-\*.parquet; run.json says 17 were "
                                         r"written\), so the run has nothing to judge"):
        read_run(root)


@pytest.mark.parametrize(("said", "drop"), [({"rows": 18, "chunks": 2}, False), ({"rows": 17, "chunks": 2}, True)])
def test_fewer_records_or_chunks_than_run_json_says_is_unreadable(tmp_path: Path, said: dict, drop: bool) -> None:
    root = make_run(tmp_path / "run", COUNTS, run_extra={"records": said})
    if drop:
        (root / "records" / "part-00001.parquet").unlink()
    with pytest.raises(UsageError, match=r"records is incomplete: \d+ records in \d chunk\(s\), but run.json says "
                                         rf"{said['rows']} records in 2 chunk\(s\) were written"):
        read_run(root)
    complete = make_run(tmp_path / "whole", COUNTS, run_extra={"records": {"rows": 17, "chunks": 2}})
    assert len(read_run(complete).records) == 17


def test_a_truncated_chunk_is_unreadable(tmp_path: Path) -> None:
    root = make_run(tmp_path / "run", COUNTS)
    part = root / "records" / "part-00000.parquet"
    part.write_bytes(part.read_bytes()[: part.stat().st_size // 2])
    with pytest.raises(UsageError, match=r"part-00000.parquet.*damaged"):
        read_run(root)


def test_an_interrupted_run_says_by_what_and_when(tmp_path: Path) -> None:
    stop = {"signal": "SIGTERM", "at": "2026-01-31T12:00:00.500000Z", "requests": 15, "in_flight": 1}
    run = read_run(make_run(tmp_path / "run", COUNTS, status="interrupted", run_extra={"interrupted": stop}))
    assert run.document.interrupted is not None and run.document.interrupted.signal == "SIGTERM"
    assert run.notes == (
        "the run was interrupted by SIGTERM at 2026-01-31T12:00:00.500000Z (the load test exited 130): the verdicts "
        "cover the 17 requests it made before it stopped; 1 request(s) in flight were cut short by the stop "
        "timeout (status 'interrupted', counted as failed, never as answered)",
    )
