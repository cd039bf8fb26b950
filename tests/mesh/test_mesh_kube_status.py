"""``canary mesh status --kube`` and the cluster's snapshot: pods by subset, the ingress, and the
mesh's own counts per subset from Istio's Prometheus (found through the API server, or given)."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from commands import cli
from mesh.api import KubeTarget, snapshot
from mesh.kube import KubeMesh, connect
from tests.mesh.fake_cluster import CLUSTER_RESOURCES, ingress_service, populate
from tests.mesh.fake_prometheus import FakePrometheus, ProxyingApiServer, sample, vector

COUNTS = vector([
    sample({"destination_version": "resnet50", "response_code": "200"}, 700),
    sample({"destination_version": "resnet50", "response_code": "503"}, 3),
    sample({"destination_version": "resnet101", "response_code": "200"}, 297),
])


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[ProxyingApiServer]:
    server = ProxyingApiServer(CLUSTER_RESOURCES)
    server.start()
    try:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
        monkeypatch.setenv("KUBECONFIG", str(config))
        monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))  # the client's discovery cache
        populate(server, KubeMesh(connect("fake", config_file=config, discovery_cache=tmp_path / "d.json")))
        yield server
    finally:
        server.stop()


def test_the_snapshot_counts_each_subset_from_istios_prometheus(cluster: ProxyingApiServer) -> None:
    cluster.add_service("istio-system", "prometheus", [{"name": "http", "port": 9090}])
    cluster.prometheus_body = COUNTS
    mesh = snapshot(kube=KubeTarget())
    assert mesh.backend == "kube" and mesh.kube == KubeTarget(context="fake")  # recorded by name
    assert mesh.ingress_url == "http://203.0.113.10"
    assert {s: (c["requests"], c["by_class"]) for s, c in mesh.counters.items()} == {
        "resnet50": (703, {"2xx": 700, "5xx": 3}), "resnet101": (297, {"2xx": 297})}
    assert mesh.counters_from.startswith("prometheus Service istio-system/prometheus:9090")
    query = next(r for r in cluster.requests if r.path.endswith("/proxy/api/v1/query")).query["query"][0]
    assert 'destination_service_namespace="tf-serving"' in query
    assert 'destination_service_name="image-classifier"' in query


def test_a_given_prometheus_is_asked_instead(cluster: ProxyingApiServer) -> None:
    prometheus = FakePrometheus(COUNTS)
    try:
        mesh = snapshot(kube=KubeTarget(prometheus=prometheus.url))
    finally:
        prometheus.close()
    assert mesh.counters["resnet101"]["requests"] == 297
    assert mesh.counters_from == f"prometheus {prometheus.url}"
    assert not any(r.path.endswith("/proxy/api/v1/query") for r in cluster.requests)


def test_status_shows_pods_by_subset_ingress_and_counts(cluster: ProxyingApiServer,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    cluster.add_service("istio-system", "prometheus", [{"name": "http", "port": 9090}])
    cluster.prometheus_body = COUNTS
    assert cli.main(["mesh", "status", "--kube", "--context", "fake"]) == 0
    out = capsys.readouterr().out
    for said in ('context "fake"', 'namespace "tf-serving"', "ingress http://203.0.113.10",
                 "resnet101-5d9c7-0", "10.8.0.11", "70.3%", "29.7%", "5xx: 3"):
        assert said in out, said
    assert cli.main(["mesh", "status", "--kube", "--json"]) == 0
    document: dict[str, Any] = json.loads(capsys.readouterr().out)
    assert document["backend"] == "kube" and document["ingress_url"] == "http://203.0.113.10"
    assert [p["name"] for p in document["pods"]["resnet50"]] == ["image-classifier-resnet50-5d9c7-0"]
    assert document["pods"]["resnet50"][0]["ready"] is True
    assert document["counters"]["resnet50"]["requests"] == 703
    assert "fake-token" not in json.dumps(document)


def test_status_says_what_is_missing_and_still_answers(cluster: ProxyingApiServer,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    cluster.objects[("", "services", "istio-system", "istio-ingressgateway")] = ingress_service("ClusterIP")
    assert cli.main(["mesh", "status", "--kube"]) == 0
    captured = capsys.readouterr()
    assert "ingress NOT FOUND" in captured.out
    assert "is a ClusterIP with no address reachable from here; give --ingress" in captured.err
    assert "no Prometheus found" in captured.err and "--prometheus URL" in captured.err


def test_kube_flags_without_kube_are_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    assert cli.main(["mesh", "status", "--context", "fake"]) == 3
    assert "--context goes with --kube" in capsys.readouterr().err
