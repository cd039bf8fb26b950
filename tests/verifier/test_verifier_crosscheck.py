"""Cross-check of fingerprint counts against the mesh's counters: Envoy (run.json) and Prometheus."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from canary.errors import CanaryError
from canary.rundir import parse_run_document
from commands.verify_split import main
from loadtest.meshinfo import mesh_record
from mesh.api import MeshSnapshot, MeshView
from mesh.prometheus import prometheus_at
from tests.mesh.fake_prometheus import FakePrometheus
from tests.mesh.fake_prometheus import vector_by_version as _answer
from tests.verifier.synthetic import CELLS, ONLY_50, ONLY_101, drawn_run
from verifier.crosscheck import (
    crosscheck,
    mesh_counts_from_run,
    prometheus_counts,
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


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


def test_prometheus_counts_over_http(prometheus: FakePrometheus) -> None:
    prometheus.body = _answer({"resnet50": 700.0, "resnet101": 300.0})
    end = dt.datetime(2026, 1, 31, 12, 1, 0, tzinfo=dt.UTC)
    counts, query = prometheus_counts(prometheus.url + "/", window_s=59.5, at=end)
    assert counts == {"resnet50": 700.0, "resnet101": 300.0}
    asked = prometheus.queries[-1]
    assert asked["query"] == [query]
    assert 'destination_service_name="image-classifier"' in query and "[60s]" in query
    assert float(asked["time"][0]) == pytest.approx(end.timestamp())
    assert prometheus_counts(prometheus_at(prometheus.url), window_s=59.5, at=end) == (counts, query)


def test_prometheus_unreachable_exits_3() -> None:
    server = FakePrometheus()
    url = server.url
    server.close()
    with pytest.raises(CanaryError, match="cannot reach Prometheus") as caught:
        prometheus_counts(url, window_s=10, at=dt.datetime.now(dt.UTC), timeout=2)
    assert caught.value.exit_code == 3


def test_cli_cross_checks_against_prometheus(tmp_path: Path, prometheus: FakePrometheus) -> None:
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


def test_a_run_through_a_cluster_is_cross_checked_against_its_istio_prometheus(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """No --prometheus: the cluster the run recorded (context, namespace) is asked for Istio's
    Prometheus through its API server; without one the cross-check is unavailable, not refuted."""
    import tempfile

    from tests.mesh.fake_prometheus import ProxyingApiServer

    truth = {cell: (ONLY_101 if cell[1] == "canary" else ONLY_50) for cell in CELLS}
    cluster = {"local": False, "backend": "kube", "context": "fake", "namespace": "tf-serving"}
    root = drawn_run(tmp_path / "run", truth, 150, seed=5, mesh=cluster)
    focused = "default: 100/0; canary: 0/100"
    server = ProxyingApiServer()
    server.start()
    try:
        monkeypatch.setenv("KUBECONFIG", str(server.write_kubeconfig(tmp_path / "kubeconfig", "fake")))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the client's discovery cache
        summary = tmp_path / "s.json"
        assert main([str(root), "--expected", focused, "--json", str(summary), "--no-write"]) == 0
        check = json.loads(summary.read_text())["crosscheck"]
        assert check["status"] == "unavailable" and "no Prometheus found" in check["reason"]
        server.add_service("istio-system", "prometheus", [{"name": "http", "port": 9090}])
        server.prometheus_body = _answer({"resnet50": 300.0, "resnet101": 298.0})
        assert main([str(root), "--expected", focused, "--json", str(summary), "--no-write"]) == 0
        check = json.loads(summary.read_text())["crosscheck"]
        assert check["status"] == "agree" and check["source"] == "prometheus"
        asked = [r.query["query"][0] for r in server.requests if r.path.endswith("/proxy/api/v1/query")]
        assert asked and 'destination_service_namespace="tf-serving"' in asked[-1]
        # found, not given: a disagreement (or no counts for the window) is told, never a refutation
        server.prometheus_body = _answer({"resnet50": 420.0, "resnet101": 180.0})
        assert main([str(root), "--expected", focused, "--json", str(summary), "--no-write"]) == 0
        check = json.loads(summary.read_text())["crosscheck"]
        assert check["status"] == "unavailable" and "not used against the verdict" in check["reason"]
        assert "mesh 420 vs fingerprints" in check["reason"]
        server.prometheus_body = _answer({})
        assert main([str(root), "--expected", focused, "--json", str(summary), "--no-write"]) == 0
        assert "holds no istio_requests_total" in json.loads(summary.read_text())["crosscheck"]["reason"]
        server.prometheus_code = 503
        assert main([str(root), "--expected", focused, "--json", str(summary), "--no-write"]) == 0
        assert "cannot be asked" in json.loads(summary.read_text())["crosscheck"]["reason"]
        # given: the same disagreement refutes
        given = FakePrometheus(_answer({"resnet50": 420.0, "resnet101": 180.0}))
        try:
            assert main([str(root), "--expected", focused, "--prometheus", given.url, "--no-write"]) == 1
            assert 'destination_service_namespace="tf-serving"' in given.queries[-1]["query"][0]
            given.body = _answer({})  # given, but with nothing for the window: no evidence either way
            assert main([str(root), "--expected", focused, "--prometheus", given.url, "--json", str(summary),
                         "--no-write"]) == 0
            assert "holds no istio_requests_total" in json.loads(summary.read_text())["crosscheck"]["reason"]
        finally:
            given.close()
    finally:
        server.stop()
