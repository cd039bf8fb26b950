"""Cross-check of fingerprint counts against the mesh's counters: Envoy (run.json) and Prometheus."""

from __future__ import annotations

import datetime as dt
import http.server
import json
import threading
import urllib.parse
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary.errors import UsageError
from canary.rundir import parse_run_document
from commands.verify_split import main
from loadtest.meshinfo import mesh_record
from mesh.api import MeshSnapshot, MeshView
from tests.verifier.synthetic import CELLS, ONLY_50, ONLY_101, drawn_run
from verifier.crosscheck import (
    crosscheck,
    mesh_counts_from_run,
    parse_prometheus_answer,
    prometheus_counts,
    prometheus_query,
)

FP = {"resnet50": 700, "resnet101": 300}


@pytest.mark.parametrize(
    ("mesh", "unattributed", "slack", "status", "bad"),
    [
        ({"resnet50": 700, "resnet101": 300}, 0, 0.0, "agree", []),
        ({"resnet50": 700, "resnet101": 300, "": 0}, 0, 0.0, "agree", []),
        ({"resnet50": 702, "resnet101": 301}, 3, 0.0, "agree", []),  # unattributed may be anywhere
        ({"resnet50": 702, "resnet101": 302}, 3, 0.0, "mismatch", ["in all"]),  # but only once
        ({"resnet50": 699, "resnet101": 301}, 5, 0.0, "mismatch", ["resnet50"]),  # fewer than fingerprinted
        ({"resnet50": 600, "resnet101": 400}, 0, 0.0, "mismatch", ["resnet50", "resnet101"]),
        ({"resnet50": 700, "resnet101": 300, "": 12}, 0, 0.0, "mismatch", ["in all"]),  # 12 too many
        ({"": 1000}, 0, 0.0, "agree", []),  # routed to the Service, no subset: served by any subset's pods
        ({"resnet50": 650, "": 350}, 0, 0.0, "agree", []),
        ({"resnet50": 650, "": 340}, 0, 0.0, "mismatch", ["in all"]),  # ten answered that nobody routed
        ({"resnet50": 800, "": 200}, 0, 0.0, "mismatch", ["resnet50"]),  # more than fingerprinted
        ({"resnet50": 690.4, "resnet101": 309.9}, 0, 0.05, "agree", []),  # Prometheus' extrapolation
        ({"resnet50": 600.0, "resnet101": 400.0}, 0, 0.05, "mismatch", ["resnet50"]),
    ],
)
def test_crosscheck_rule(mesh: dict, unattributed: int, slack: float, status: str, bad: list[str]) -> None:
    check = crosscheck(FP, mesh, unattributed=unattributed, slack=slack, source="envoy",
                       subsets=["resnet50", "resnet101"])
    assert check.status == status, check.reason
    for name in bad:
        assert name in check.reason
    assert [r.subset for r in check.rows][:2] == ["resnet50", "resnet101"]
    if status == "mismatch":
        assert "disagree with the fingerprints" in check.reason
    assert check.to_dict()["status"] == status


def test_mesh_counts_from_run_json() -> None:
    def counts(mesh: dict | None) -> tuple[dict[str, int] | None, str]:
        return mesh_counts_from_run(parse_run_document({} if mesh is None else {"mesh": mesh}))

    assert counts({"local": True, "delta": {"resnet50": 3, "": 0}}) == ({"resnet50": 3, "": 0}, "")
    before = {"resnet50": {"requests": 10}, "resnet101": {"requests": 1}}
    after = {"resnet50": {"requests": 17}, "resnet101": {"requests": 4}}
    assert counts({"local": True, "delta": None, "counters_before": before, "counters_after": after}) == (
        {"resnet101": 3, "resnet50": 7}, "")
    assert "--prometheus" in counts({"local": False})[1]
    assert "--prometheus" in counts(None)[1]
    assert "interrupted" in counts({"local": True, "counters_after": None})[1]
    assert parse_run_document({"mesh": {"local": True}}).mesh.counters_reset is False  # an older run.json
    reset = counts({"local": True, "delta": None, "counters_before": before, "counters_after": after,
                    "counters_reset": True, "counters_reset_evidence": ["resnet50 (c50): 9 request(s) completed"]})
    assert reset[0] is None
    assert reset[1].startswith("the mesh's counters were reset during the run (POST /reset_counters")
    assert "cannot cross-check records against the mesh" in reset[1] and "9 request(s) completed" in reset[1]


def _answer(values: dict[str, float]) -> dict:
    return {"status": "success", "data": {"resultType": "vector", "result": [
        {"metric": {"destination_version": k}, "value": [1769860800.0, str(v)]} for k, v in values.items()]}}


def test_parse_prometheus_answer() -> None:
    assert parse_prometheus_answer(_answer({"resnet50": 70.5, "resnet101": 29})) == {"resnet50": 70.5, "resnet101": 29.0}
    with pytest.raises(UsageError, match="bad_data: parse error"):
        parse_prometheus_answer({"status": "error", "errorType": "bad_data", "error": "parse error"})
    with pytest.raises(UsageError, match="not an instant vector"):
        parse_prometheus_answer({"status": "success", "data": {"resultType": "matrix", "result": []}})
    assert 'reporter="destination"' in prometheus_query(12.2) and "[13s]" in prometheus_query(12.2)


class _Prometheus:
    """A tiny HTTP server on 127.0.0.1 answering /api/v1/query with a canned JSON body."""

    def __init__(self, body: dict) -> None:
        self.body = body
        self.queries: list[dict[str, list[str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                outer.queries.append(urllib.parse.parse_qs(url.query))
                data = json.dumps(outer.body).encode()
                self.send_response(200 if url.path == "/api/v1/query" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def prometheus() -> Iterator[_Prometheus]:
    server = _Prometheus(_answer({}))
    yield server
    server.close()


def test_prometheus_counts_over_http(prometheus: _Prometheus) -> None:
    prometheus.body = _answer({"resnet50": 700.0, "resnet101": 300.0})
    end = dt.datetime(2026, 1, 31, 12, 1, 0, tzinfo=dt.UTC)
    counts, query = prometheus_counts(prometheus.url + "/", window_s=59.5, at=end)
    assert counts == {"resnet50": 700.0, "resnet101": 300.0}
    asked = prometheus.queries[-1]
    assert asked["query"] == [query]
    assert 'destination_service_name="image-classifier"' in query and "[60s]" in query
    assert float(asked["time"][0]) == pytest.approx(end.timestamp())


def test_prometheus_unreachable_is_a_usage_error() -> None:
    server = _Prometheus(_answer({}))
    url = server.url
    server.close()
    with pytest.raises(UsageError, match="cannot reach Prometheus"):
        prometheus_counts(url, window_s=10, at=dt.datetime.now(dt.UTC), timeout=2)


def test_cli_cross_checks_against_prometheus(tmp_path: Path, prometheus: _Prometheus) -> None:
    truth = {cell: (ONLY_101 if cell[1] == "canary" else ONLY_50) for cell in CELLS}
    root = drawn_run(tmp_path / "run", truth, 150, seed=5, mesh=None)
    focused = "default: 100/0; canary: 0/100"
    prometheus.body = _answer({"resnet50": 300.0, "resnet101": 298.0})  # within the 5% slack
    assert main([str(root), "--expected", focused, "--prometheus", prometheus.url, "--no-write"]) == 0
    prometheus.body = _answer({"resnet50": 420.0, "resnet101": 180.0})  # the mesh saw another split
    summary = tmp_path / "s.json"
    assert main([str(root), "--expected", focused, "--prometheus", prometheus.url, "--json", str(summary),
                 "--no-write"]) == 1
    doc = json.loads(summary.read_text())
    assert doc["crosscheck"]["status"] == "mismatch" and doc["crosscheck"]["source"] == "prometheus"
    assert all(g["status"] == "verified" for g in doc["groups"])  # the split itself held
    assert doc["status"] == "refuted" and "cross-check" in doc["reason"]
    prometheus.body = {"status": "error", "errorType": "bad_data", "error": "x"}
    assert main([str(root), "--expected", focused, "--prometheus", prometheus.url, "--no-write"]) == 3


def test_cli_envoy_mismatch_refutes_and_missing_counters_do_not(tmp_path: Path) -> None:
    truth = {("rest", "default"): ONLY_50}
    agree = drawn_run(tmp_path / "a", truth, 200, seed=1)
    assert main([str(agree), "--expected", "100/0", "--no-write"]) == 0
    other = drawn_run(tmp_path / "b", truth, 200, seed=1, mesh={"delta": {"resnet50": 150, "resnet101": 50}})
    assert main([str(other), "--expected", "100/0", "--no-write"]) == 1
    none = drawn_run(tmp_path / "c", truth, 200, seed=1, mesh=None)
    assert main([str(none), "--expected", "100/0", "--no-write"]) == 0


def test_cli_counters_reset_during_the_run_make_the_cross_check_unavailable_not_a_refutation(
    tmp_path: Path,
) -> None:
    """What the adversarial run did: POST /reset_counters half-way, so after − before is far below
    the fingerprints. Recorded as a reset, the cross-check is unavailable and the split stands."""
    truth = {("rest", "default"): ONLY_50}
    counters = {"counters_before": {"resnet50": {"requests": 500}}, "counters_after": {"resnet50": {"requests": 80}}}
    unflagged = drawn_run(tmp_path / "a", truth, 200, seed=1, mesh={"delta": None, **counters})
    assert main([str(unflagged), "--expected", "100/0", "--no-write"]) == 1  # read as lost records
    flagged = drawn_run(tmp_path / "b", truth, 200, seed=1, mesh={
        "delta": None, **counters, "counters_reset": True,
        "counters_reset_evidence": ["resnet50 (c50): 200 request(s) completed (Envoy's upstream_rq_time histogram) "
                                    "but its request counter changed by -420"]})
    summary = tmp_path / "s.json"
    assert main([str(flagged), "--expected", "100/0", "--json", str(summary), "--no-write"]) == 0
    check = json.loads(summary.read_text())["crosscheck"]
    assert check["status"] == "unavailable" and not check["rows"]
    assert "the mesh's counters were reset during the run (POST /reset_counters" in check["reason"]
    assert "cannot cross-check records against the mesh" in check["reason"]


def _snapshot(requests: int, timed: int) -> MeshSnapshot:
    counts = {"subset": "resnet50", "requests": requests,
              "by_cluster": {"c50": {"requests": requests, "timed": timed, "active": 0}}}
    return MeshSnapshot(backend="local", home="/h", ingress_url="http://127.0.0.1:8080", view=MeshView((), ()),
                        applied=(), counters={"resnet50": counts}, running=True)


def test_the_run_record_says_when_the_counters_were_reset() -> None:
    whole = mesh_record("http://127.0.0.1:8080", _snapshot(100, 100), _snapshot(300, 300))
    assert not whole.counters_reset and whole.delta == {"resnet50": 200}
    reset = mesh_record("http://127.0.0.1:8080", _snapshot(100, 100), _snapshot(80, 300))
    assert reset.counters_reset and reset.delta is None and reset.requests_during_run() is None
    assert reset.counters_reset_evidence == [
        "resnet50 (c50): 200 request(s) completed (Envoy's upstream_rq_time histogram) "
        "but its request counter changed by -20"]
    assert parse_run_document({"mesh": reset.model_dump()}).mesh.counters_reset  # through run.json
