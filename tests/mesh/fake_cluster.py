"""A cluster with Istio as the fake API server serves it: the manifests applied, their pods
running, Istio's ingress gateway Service and the nodes.

:func:`populate` server-side applies manifests through the real kube backend,
then stores what the cluster's controllers would make: one Pod per
Deployment replica (its template's labels and container ports, an IP, a
``Ready`` condition), the ``istio-system`` namespace with the
``istio-ingressgateway`` Service (LoadBalancer, NodePort or ClusterIP) and two
Nodes. Objects get ``managedFields`` with a time, as an API server keeps them.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

from mesh.kube import KubeMesh
from tests.mesh.fake_apiserver import RESOURCES, ApiResource, FakeApiServer

__all__ = ["CLUSTER_RESOURCES", "add_pod", "ingress_service", "populate"]

CLUSTER_RESOURCES = (*RESOURCES, ApiResource("", "v1", "Node", "nodes", namespaced=False))
ROOT = Path(__file__).resolve().parents[2]


def _key(kind: str, namespace: str, name: str) -> tuple[str, str, str, str]:
    resource = next(r for r in CLUSTER_RESOURCES if r.kind == kind)
    return resource.group, resource.plural, namespace, name


def add_pod(server: FakeApiServer, namespace: str, name: str, labels: dict[str, str],
            ports: list[dict[str, Any]], ip: str, *, ready: bool = True) -> None:
    server.objects[_key("Pod", namespace, name)] = {
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": name, "namespace": namespace, "labels": labels, "uid": f"uid-{name}"},
        "spec": {"containers": [{"name": "tf-serving", "image": "tensorflow/serving", "ports": ports},
                                {"name": "istio-proxy", "image": "istio/proxyv2",
                                 "ports": [{"containerPort": 15090, "name": "http-envoy-prom"}]}]},
        "status": {"phase": "Running", "podIP": ip,
                   "conditions": [{"type": "Ready", "status": "True" if ready else "False"}]},
    }


def ingress_service(kind: str = "LoadBalancer", *, ip: str | None = "203.0.113.10",
                    hostname: str | None = None) -> dict[str, Any]:
    """Istio's ``istio-ingressgateway`` Service, as ``istioctl install`` makes it."""
    ports = [{"name": "status-port", "port": 15021, "targetPort": 15021, "protocol": "TCP"},
             {"name": "http2", "port": 80, "targetPort": 8080, "protocol": "TCP"},
             {"name": "https", "port": 443, "targetPort": 8443, "protocol": "TCP"}]
    if kind in ("LoadBalancer", "NodePort"):
        for number, port in zip((31021, 31380, 31390), ports, strict=True):
            port["nodePort"] = number
    status: dict[str, Any] = {"loadBalancer": {}}
    if kind == "LoadBalancer" and (ip or hostname):
        status["loadBalancer"]["ingress"] = [{"ip": ip} if ip else {"hostname": hostname}]
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": "istio-ingressgateway", "namespace": "istio-system",
                         "labels": {"istio": "ingressgateway"}},
            "spec": {"type": kind, "selector": {"istio": "ingressgateway"}, "ports": ports,
                     "clusterIP": "10.96.0.20"},
            "status": status}


def _node(name: str, internal: str, external: str | None) -> dict[str, Any]:
    addresses = [{"type": "InternalIP", "address": internal}, {"type": "Hostname", "address": name}]
    if external:
        addresses.append({"type": "ExternalIP", "address": external})
    return {"apiVersion": "v1", "kind": "Node", "metadata": {"name": name},
            "status": {"addresses": addresses, "conditions": [{"type": "Ready", "status": "True"}]}}


def populate(server: FakeApiServer, mesh: KubeMesh, manifests: list[Path] | None = None, *,
             ingress: dict[str, Any] | None = None, external_ip: str | None = "198.51.100.7") -> None:
    """Apply ``manifests`` (default manifests/base + the weight-70 routing), run their pods,
    and add Istio's ingress Service (default a LoadBalancer with an IP) and two nodes."""
    for manifest in manifests or [ROOT / "manifests/base", ROOT / "manifests/routing/virtualservice-weight-70.yaml"]:
        mesh.apply([manifest])
    server.add_namespace("istio-system")
    server.objects[_key("Service", "istio-system", "istio-ingressgateway")] = ingress or ingress_service()
    server.objects[_key("Node", "", "node-a")] = _node("node-a", "10.128.0.2", external_ip)
    server.objects[_key("Node", "", "node-b")] = _node("node-b", "10.128.0.3", None)
    address = 10
    for (_, plural, namespace, name), obj in sorted(server.objects.items()):
        metadata = obj.setdefault("metadata", {})
        metadata.setdefault("managedFields", [{"manager": "canary", "operation": "Apply",
                                               "time": "2026-12-01T10:00:00Z"}])
        if plural != "deployments":
            continue
        template = obj["spec"]["template"]
        ports = [copy.deepcopy(p) for c in template["spec"]["containers"] for p in c.get("ports") or ()]
        for replica in range(obj["spec"].get("replicas", 1)):
            address += 1
            add_pod(server, namespace, f"{name}-5d9c7-{replica}", dict(template["metadata"]["labels"]),
                    ports, f"10.8.0.{address}")
