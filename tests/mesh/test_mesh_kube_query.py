"""Reading the mesh under test from a cluster: the view, the pods, the ingress (mesh.kube_view,
mesh.kube_query), against the official client over HTTP to the fake API server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from canary.errors import MeshError
from mesh.kube import KubeMesh, connect
from mesh.kube_query import READS, read_cluster
from mesh.kube_view import ingress_url, live_document, pod_endpoint
from mesh.target import KubeTarget
from tests.mesh.fake_apiserver import RESOURCES, FakeApiServer
from tests.mesh.fake_cluster import CLUSTER_RESOURCES, add_pod, ingress_service, populate

NODES = [
    {"status": {"addresses": [{"type": "InternalIP", "address": "10.128.0.2"},
                              {"type": "ExternalIP", "address": "198.51.100.7"}],
                "conditions": [{"type": "Ready", "status": "True"}]}},
]
INTERNAL_ONLY = [{"status": {"addresses": [{"type": "InternalIP", "address": "10.128.0.3"}],
                             "conditions": [{"type": "Ready", "status": "True"}]}}]


@pytest.mark.parametrize(("service", "nodes", "url"), [
    (ingress_service("LoadBalancer"), [], "http://203.0.113.10"),
    (ingress_service("LoadBalancer", ip=None, hostname="a1b2.elb.amazonaws.com"), [], "http://a1b2.elb.amazonaws.com"),
    (ingress_service("LoadBalancer", ip="2001:db8::5"), [], "http://[2001:db8::5]"),
    (ingress_service("LoadBalancer", ip=None), NODES, "http://198.51.100.7:31380"),  # pending: its NodePort
    (ingress_service("NodePort"), NODES, "http://198.51.100.7:31380"),
    (ingress_service("NodePort"), INTERNAL_ONLY, "http://10.128.0.3:31380"),
])
def test_the_ingress_url_follows_istios_own_instructions(service: dict[str, Any], nodes: list[Any], url: str) -> None:
    assert ingress_url(service, nodes) == url


@pytest.mark.parametrize(("service", "nodes", "said"), [
    (None, [], "does not exist (is Istio's ingress gateway installed?); give --ingress"),
    (ingress_service("ClusterIP"), NODES, "is a ClusterIP with no address reachable from here; give --ingress"),
    (ingress_service("LoadBalancer", ip=None), [], "(its LoadBalancer has no address yet)"),
    ({"spec": {"type": "LoadBalancer", "ports": [{"name": "tcp", "port": 31400}]}}, [], "has no HTTP port"),
])
def test_an_ingress_that_cannot_be_reached_says_what_to_give(service: Any, nodes: list[Any], said: str) -> None:
    with pytest.raises(MeshError) as caught:
        ingress_url(service, nodes)
    assert said in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize(("status", "metadata", "ready"), [
    ({"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]}, {}, True),
    ({"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "False"}]}, {}, False),
    ({"phase": "Pending", "conditions": []}, {}, False),
    ({"phase": "Running", "podIP": "10.0.0.1", "conditions": [{"type": "Ready", "status": "True"}]},
     {"deletionTimestamp": "2026-12-01T10:00:00Z"}, False),  # terminating: the mesh drains it
])
def test_a_pod_is_ready_as_the_endpoints_controller_says(status: dict[str, Any], metadata: dict[str, Any],
                                                         ready: bool) -> None:
    pod = {"metadata": {"name": "p", "namespace": "n", "labels": {"version": "resnet50"}, **metadata},
           "spec": {"containers": [{"ports": [{"containerPort": 8501, "name": "http"}, {"containerPort": 8500}]}]},
           "status": status}
    endpoint = pod_endpoint(pod)
    assert endpoint.ready is ready
    assert endpoint.ports == {8501: 8501, 8500: 8500} and endpoint.port_names == {"http": 8501}


def test_a_live_object_reads_as_its_manifest() -> None:
    live = {"apiVersion": "v1", "kind": "Service", "status": {"loadBalancer": {}},
            "metadata": {"name": "s", "namespace": "n", "uid": "u", "resourceVersion": "7", "labels": {},
                         "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
                         "managedFields": [{"manager": "canary", "time": "2026-12-01T10:00:00Z"}]},
            "spec": {"ports": [{"port": 80}]}}
    assert live_document(live) == {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s", "namespace": "n"},
                                   "spec": {"ports": [{"port": 80}]}}


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[tuple[FakeApiServer, Any]]:
    server = FakeApiServer(CLUSTER_RESOURCES)
    server.start()
    try:
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
        api = connect("fake", config_file=config, discovery_cache=tmp_path / "discovery.json")
        yield server, api
    finally:
        server.stop()


def test_the_cluster_reads_as_the_local_mesh_does(cluster: tuple[FakeApiServer, Any]) -> None:
    server, api = cluster
    populate(server, KubeMesh(api))
    server.requests.clear()
    reading = read_cluster(api, KubeTarget())
    assert reading.ingress_url == "http://203.0.113.10"
    assert reading.view.subsets() == ("resnet50", "resnet101")  # weight-70: resnet50 is stable
    assert reading.view.subset_servers() == {
        "resnet101": {"rest": "http://10.8.0.11:8501", "grpc": "10.8.0.11:8500"},
        "resnet50": {"rest": "http://10.8.0.12:8501", "grpc": "10.8.0.12:8500"},
    }
    kinds = sorted(r["document"]["kind"] for r in reading.routing)
    assert kinds == ["DestinationRule", "Gateway", "VirtualService"]
    vs = next(r["document"] for r in reading.routing if r["document"]["kind"] == "VirtualService")
    assert [d["weight"] for d in vs["spec"]["http"][-1]["route"]] == [70, 30]
    assert reading.applied_at == "2026-12-01T10:00:00Z"
    # every call is one the load generator's Role grants (mesh.kube_query.READS)
    granted = {(c.verb, c.resource.split(".")[0], c.namespace.replace("NAMESPACE", "tf-serving")) for c in READS}
    for request in server.requests:
        parts = request.path.strip("/").split("/")
        if "namespaces" not in parts:
            continue  # discovery
        namespace, plural = parts[parts.index("namespaces") + 1], parts[parts.index("namespaces") + 2]
        name = parts[parts.index("namespaces") + 3] if len(parts) > parts.index("namespaces") + 3 else None
        assert request.method == "GET"
        assert (("get" if name else "list"), plural, namespace) in granted, request.path


def test_a_pod_not_ready_serves_no_subset(cluster: tuple[FakeApiServer, Any]) -> None:
    server, api = cluster
    populate(server, KubeMesh(api))
    for key in [k for k in server.objects if k[1] == "pods" and "resnet101" in k[3]]:
        del server.objects[key]
    add_pod(server, "tf-serving", "resnet101-new", {"app": "image-classifier", "version": "resnet101"},
            [{"containerPort": 8501, "name": "http"}], "10.8.0.99", ready=False)
    view = read_cluster(api, KubeTarget()).view
    assert set(view.subset_servers(allow_missing=True)) == {"resnet50"}
    with pytest.raises(MeshError, match=r"subset resnet101 .* has no ready pod"):
        view.subset_servers()


def test_a_node_port_ingress_is_found_on_a_node(cluster: tuple[FakeApiServer, Any]) -> None:
    server, api = cluster
    populate(server, KubeMesh(api), ingress=ingress_service("NodePort"))
    assert read_cluster(api, KubeTarget()).ingress_url == "http://198.51.100.7:31380"
    assert read_cluster(api, KubeTarget(ingress="http://127.0.0.1:8080/")).ingress_url == "http://127.0.0.1:8080"


def test_a_cluster_without_istio_says_so(tmp_path: Path) -> None:
    server = FakeApiServer([r for r in RESOURCES if r.group != "networking.istio.io"])
    server.start()
    try:
        api = connect("fake", config_file=server.write_kubeconfig(tmp_path / "kc", "fake"),
                      discovery_cache=tmp_path / "d.json")
        with pytest.raises(MeshError, match=r"serves no Gateway \(networking.istio.io\): is Istio installed"):
            read_cluster(api, KubeTarget())
    finally:
        server.stop()


def test_an_empty_namespace_or_a_forbidden_list_is_one_line(cluster: tuple[FakeApiServer, Any]) -> None:
    server, api = cluster
    populate(server, KubeMesh(api))
    with pytest.raises(MeshError, match=r'namespace "elsewhere" .* has no DestinationRule; apply the manifests'):
        read_cluster(api, KubeTarget(namespace="elsewhere"))
    server.fail("GET", 403, "Forbidden", 'pods is forbidden: User "dev" cannot list resource "pods"')
    with pytest.raises(MeshError) as caught:
        read_cluster(api, KubeTarget())
    message = str(caught.value)
    assert "forbidden" in message.lower() and "\n" not in message and "fake-token" not in message


def test_a_pod_that_declares_no_port_still_serves_a_numeric_target_port(cluster: tuple[FakeApiServer, Any]) -> None:
    server, api = cluster
    populate(server, KubeMesh(api))
    for key, pod in server.objects.items():
        if key[1] == "pods":
            pod["spec"]["containers"][0].pop("ports")  # Kubernetes routes targetPort 8501/8500 all the same
    servers = read_cluster(api, KubeTarget()).view.subset_servers()
    assert servers["resnet50"] == {"rest": "http://10.8.0.12:8501", "grpc": "10.8.0.12:8500"}
