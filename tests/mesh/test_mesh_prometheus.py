"""Prometheus, one owner (mesh.prometheus): the queries, the answers, and both ways to reach it:
its URL (a fake Prometheus on loopback) and the API server's service proxy (the fake API server,
through a kubeconfig, as `canary mesh status --kube` reaches it)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary.errors import MeshError
from mesh.kube_client import ClusterClient, open_cluster
from mesh.prometheus import (
    find_prometheus,
    parse_prometheus_answer,
    parse_vector,
    prometheus_at,
    prometheus_via_api,
    requests_by_class,
    response_class,
    total_query,
    window_query,
)
from tests.mesh.fake_prometheus import (
    FakePrometheus,
    ProxyingApiServer,
    sample,
    vector,
    vector_by_version,
)

TOKEN = "fake-token"  # the fake kubeconfig's credential: never in a message
END = dt.datetime(2026, 1, 31, 12, 1, 0, tzinfo=dt.UTC)
TOTAL = total_query("image-classifier", "tf-serving")

# --- queries -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("query", "text"),
    [
        (window_query(59.5),  # verify-split's text, unchanged
         'sum by (destination_version) (increase(istio_requests_total{reporter="destination",'
         'destination_service_name="image-classifier"}[60s]))'),
        (window_query(0.2, "svc"),
         'sum by (destination_version) (increase(istio_requests_total{reporter="destination",'
         'destination_service_name="svc"}[1s]))'),
        (window_query(12.2, "svc", "ns"),
         'sum by (destination_version) (increase(istio_requests_total{reporter="destination",'
         'destination_service_namespace="ns",destination_service_name="svc"}[13s]))'),
        (TOTAL,
         'sum by (destination_version, response_code) (istio_requests_total{reporter="destination",'
         'destination_service_namespace="tf-serving",destination_service_name="image-classifier"})'),
        (total_query('a"b', "n\\s"),
         'sum by (destination_version, response_code) (istio_requests_total{reporter="destination",'
         'destination_service_namespace="n\\\\s",destination_service_name="a\\"b"})'),
    ],
)
def test_queries(query: str, text: str) -> None:
    assert query == text


# --- answers -------------------------------------------------------------------------------

V, C = "destination_version", "response_code"


@pytest.mark.parametrize(
    ("samples", "labels", "expected"),
    [
        ([], (V,), {}),
        ([sample({V: "resnet50"}, 70.5), sample({V: "resnet101"}, "29")], (V,),
         {("resnet50",): 70.5, ("resnet101",): 29.0}),
        ([sample({V: "resnet50", C: "200"}, 3), sample({V: "resnet50", C: "200", "x": "1"}, 4),
          sample({V: "resnet50", C: "503"}, 1), sample({C: "200"}, 2)], (V, C),
         {("resnet50", "200"): 7.0, ("resnet50", "503"): 1.0, ("", "200"): 2.0}),
        ([sample({V: "a"}, "NaN"), sample({V: "b"}, "+Inf"), sample({V: "c"}, 0)], (V,),
         {("c",): 0.0}),
    ],
)
def test_parse_vector(samples: list[dict[str, Any]], labels: tuple[str, ...],
                      expected: dict[tuple[str, ...], float]) -> None:
    assert parse_vector(vector(samples), labels) == expected


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"status": "error", "errorType": "bad_data", "error": "parse error"},
         "Prometheus answered bad_data: parse error; check the URL and the query"),
        ({"status": "success", "data": {"resultType": "matrix", "result": []}},
         "not an instant vector; is --prometheus the server's base URL"),
        ({"status": "success", "data": {"resultType": "vector", "result": [{"metric": {}}]}},
         "cannot read the Prometheus sample"),
        ({"status": "success", "data": {"resultType": "vector",
                                        "result": [{"metric": {}, "value": [1, "x"]}]}},
         "cannot read the Prometheus sample"),
    ],
)
def test_unreadable_answers_are_mesh_errors(document: dict[str, Any], message: str) -> None:
    with pytest.raises(MeshError, match=message):
        parse_vector(document, (V,))


def test_one_label_answer() -> None:
    answer = vector_by_version({"resnet50": 70.5, "resnet101": 29})
    assert parse_prometheus_answer(answer) == {"resnet50": 70.5, "resnet101": 29.0}


@pytest.mark.parametrize(
    ("code", "kind"),
    [("200", "2xx"), ("204", "2xx"), ("101", "1xx"), ("302", "3xx"), ("404", "4xx"),
     ("429", "4xx"), ("503", "5xx"), ("0", "other"), ("", "other"), ("600", "other"),
     ("2000", "other"), ("abc", "other")],
)
def test_response_class(code: str, kind: str) -> None:
    assert response_class(code) == kind


def test_requests_by_class_folds_codes() -> None:
    counts = {("resnet50", "200"): 90.0, ("resnet50", "201"): 5.0, ("resnet50", "503"): 2.0,
              ("resnet101", "0"): 1.0, ("resnet101", "200"): 30.0}
    assert requests_by_class(counts) == {
        ("resnet50", "2xx"): 95.0, ("resnet50", "5xx"): 2.0, ("resnet101", "other"): 1.0,
        ("resnet101", "2xx"): 30.0}


# --- by URL --------------------------------------------------------------------------------


@pytest.fixture
def prometheus() -> Iterator[FakePrometheus]:
    server = FakePrometheus()
    yield server
    server.close()


def test_query_by_url(prometheus: FakePrometheus) -> None:
    prometheus.body = vector_by_version({"resnet50": 700.0, "resnet101": 300.0})
    source = prometheus_at(prometheus.url + "/")
    assert source.where == prometheus.url + "/"
    query = window_query(59.5)
    assert source.query(query, END) == {"resnet50": 700.0, "resnet101": 300.0}
    asked = prometheus.queries[-1]
    assert asked["query"] == [query]
    assert float(asked["time"][0]) == pytest.approx(END.timestamp())
    prometheus.body = vector([sample({V: "resnet50", C: "200"}, 9), sample({V: "resnet50", C: "500"}, 1)])
    assert prometheus_at(prometheus.url.removeprefix("http://")).query_by(TOTAL, (V, C)) == {
        ("resnet50", "200"): 9.0, ("resnet50", "500"): 1.0}
    assert "time" not in prometheus.queries[-1]  # no time: Prometheus' now


def test_url_errors(prometheus: FakePrometheus) -> None:
    source = prometheus_at(prometheus.url, timeout=2)
    prometheus.code, prometheus.body = 400, {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}
    with pytest.raises(MeshError, match="bad_data: 1:5: parse error"):
        source.query("sum(")
    prometheus.code, prometheus.body = 200, b"<html>Grafana</html>"
    with pytest.raises(MeshError, match="did not answer JSON; is --prometheus the server's base URL"):
        source.query("up")
    prometheus.code, prometheus.body = 502, b""
    with pytest.raises(MeshError, match="answered HTTP 502; check --prometheus"):
        source.query("up")
    prometheus.close()
    with pytest.raises(MeshError, match=r"cannot reach Prometheus at .*kubectl -n istio-system "
                                        r"port-forward svc/prometheus 9090 and --prometheus http://127\.0\.0\.1:9090"):
        source.query("up")


def test_a_password_in_the_url_is_not_shown(prometheus: FakePrometheus) -> None:
    port = prometheus.url.rsplit(":", 1)[1]
    prometheus.close()
    source = prometheus_at(f"http://admin:s3cr3t@127.0.0.1:{port}", timeout=2)
    assert source.where == f"http://admin:[redacted]@127.0.0.1:{port}"
    with pytest.raises(MeshError, match=r"cannot reach Prometheus at http://admin:\[redacted\]@") as caught:
        source.query("up")
    assert "s3cr3t" not in str(caught.value)


# --- through the API server's service proxy -----------------------------------------------


@pytest.fixture
def api_server() -> Iterator[ProxyingApiServer]:
    server = ProxyingApiServer()
    server.required_token = TOKEN  # the cluster client's own credentials reach the proxy
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def cluster(api_server: ProxyingApiServer, tmp_path: Path) -> ClusterClient:
    config = api_server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
    return open_cluster("fake", config_file=config, discovery_cache=tmp_path / "discovery.json",
                        connect_timeout=2, read_timeout=5)


def test_query_through_the_service_proxy(api_server: ProxyingApiServer, cluster: ClusterClient) -> None:
    api_server.prometheus_body = vector([sample({V: "resnet50", C: "200"}, 70),
                                         sample({V: "resnet101", C: "503"}, 3)])
    source = prometheus_via_api(cluster)
    assert source.where == 'Service istio-system/prometheus:9090 through the API server of context "fake"'
    assert requests_by_class(source.query_by(TOTAL, (V, C), END)) == {
        ("resnet50", "2xx"): 70.0, ("resnet101", "5xx"): 3.0}
    asked = api_server.requests[-1]
    assert asked.path == "/api/v1/namespaces/istio-system/services/prometheus:9090/proxy/api/v1/query"
    assert asked.query["query"] == [TOTAL]  # quotes, braces and commas arrive intact
    assert float(asked.query["time"][0]) == pytest.approx(END.timestamp())


def test_prometheus_error_through_the_proxy(api_server: ProxyingApiServer, cluster: ClusterClient) -> None:
    api_server.prometheus_code = 400
    api_server.prometheus_body = {"status": "error", "errorType": "bad_data", "error": "1:5: parse error"}
    with pytest.raises(MeshError, match="Prometheus answered bad_data: 1:5: parse error"):
        prometheus_via_api(cluster).query("sum(")
    api_server.prometheus_code = 503
    api_server.prometheus_body = {"kind": "Status", "apiVersion": "v1", "status": "Failure",
                                  "message": 'no endpoints available for service "prometheus"', "code": 503}
    with pytest.raises(MeshError, match=r'could not reach it .no endpoints available for service "prometheus".'
                                        r".*get endpoints prometheus"):
        prometheus_via_api(cluster).query("up")
    api_server.prometheus_code, api_server.prometheus_body = 200, {"status": "success"}
    with pytest.raises(MeshError, match="not an instant vector; is the Service istio-system/prometheus port 9090"):
        prometheus_via_api(cluster).query("up")


def test_forbidden_proxy_is_one_line_without_the_token(
    api_server: ProxyingApiServer, cluster: ClusterClient
) -> None:
    api_server.fail("GET", 403, "Forbidden",
                    f'services "prometheus:9090" is forbidden: User "{TOKEN}" cannot get resource '
                    '"services/proxy" in API group "" in the namespace "istio-system"')
    with pytest.raises(MeshError) as caught:
        prometheus_via_api(cluster).query("up")
    message = str(caught.value)
    assert 'may not get services/proxy in namespace "istio-system"' in message
    assert "kubectl --context fake auth can-i get services/proxy -n istio-system" in message
    assert "\n" not in message and TOKEN not in message and "[redacted]" in message


def test_unreachable_api_server(api_server: ProxyingApiServer, cluster: ClusterClient) -> None:
    api_server.stop()
    with pytest.raises(MeshError, match=r'asking Prometheus .*cannot reach the API server .* of context "fake"'):
        prometheus_via_api(cluster).query("up")


def test_find_prometheus(api_server: ProxyingApiServer, cluster: ClusterClient) -> None:
    assert find_prometheus(cluster) is None  # no namespace istio-system
    api_server.add_namespace("istio-system")
    assert find_prometheus(cluster) is None  # no Service prometheus in it
    api_server.add_service("istio-system", "prometheus", [{"name": "http", "port": 9090, "targetPort": 9090}])
    found = find_prometheus(cluster)
    assert found is not None and "Service istio-system/prometheus:9090" in found.where
    api_server.prometheus_body = vector_by_version({"resnet50": 4.0})
    assert found.query(window_query(10), END) == {"resnet50": 4.0}
    api_server.add_service("monitoring", "prom", [{"name": "grpc", "port": 10901}, {"name": "web", "port": 9090}])
    other = find_prometheus(cluster, "monitoring", "prom")
    assert other is not None and "monitoring/prom:9090" in other.where
    api_server.fail("GET", 403, "Forbidden", f"no ({TOKEN})")
    with pytest.raises(MeshError, match=r'looking for Prometheus .*may not get services in namespace "istio-system"') as caught:
        find_prometheus(cluster)
    assert TOKEN not in str(caught.value)
