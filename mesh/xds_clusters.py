"""Services and DestinationRule subsets → Envoy clusters and their endpoints. Pure.

One cluster per Service port and subset (plus the subset-less cluster of all
the Service's pods), named as Istio names them:
``outbound|<port>|<subset>|<service FQDN>``.

On a cluster, a pod whose readiness fails leaves the Service's endpoints. The
local mesh has no endpoint controller watching its pods after a push, so Envoy
checks them itself (:data:`HEALTH_CHECK`): a TCP connection to the endpoint's
port every half second, one failure takes the endpoint out of the load
balancing and one success puts it back. A host Envoy has not checked yet (a
pod just started) is routed to as soon as its first check passes, and while
no host passes, Envoy's panic threshold routes to all of them, as before; a
host the push removes is dropped at once (``ignore_health_on_host_removal``),
whatever its last check said.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from mesh.mesh_index import MeshIndex
from mesh.model import Service, ServicePort
from mesh.xds_types import ClusterKey, PodEndpoint, XdsLayout

__all__ = [
    "CLUSTER_TYPE",
    "HEALTH_CHECK",
    "ClusterSpec",
    "cluster_name",
    "cluster_resource",
    "cluster_specs",
    "config_source",
    "endpoint_port",
    "load_assignment",
]

CLUSTER_TYPE = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
LOAD_ASSIGNMENT_TYPE = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
HTTP_PROTOCOL_OPTIONS = "envoy.extensions.upstreams.http.v3.HttpProtocolOptions"
CONNECT_TIMEOUT = "10s"  # Istio's default connectTimeout
UNLIMITED = 4294967295  # Istio lifts Envoy's circuit breakers (default 1024 requests, 3 retries)
HEALTH_CHECK: dict[str, Any] = {
    "tcp_health_check": {},  # connect only: the server accepts once its model is loaded
    "interval": "0.5s",
    "timeout": "1s",
    "no_traffic_interval": "1s",  # Envoy's default (60 s) for clusters never routed to yet
    "unhealthy_threshold": 1,
    "healthy_threshold": 1,
    "reuse_connection": False,  # a fresh connection each time: a server closing an idle one is no failure
}


def cluster_name(port: int, subset: str, host: str) -> str:
    """``outbound|8501|resnet50|image-classifier.tf-serving.svc.cluster.local``."""
    return f"outbound|{port}|{subset}|{host}"


def stat_name(name: str) -> str:
    """The cluster's name without dots, so Envoy's tag extraction keeps it whole."""
    return name.replace(".", "_")


@dataclass(frozen=True)
class ClusterSpec:
    """Everything one cluster is built from."""

    name: str
    service: Service
    port: ServicePort
    subset: str
    subset_labels: dict[str, str]
    lb_policy: str

    @property
    def stat_name(self) -> str:
        return stat_name(self.name)

    @property
    def key(self) -> ClusterKey:
        return ClusterKey(
            self.service.fqdn, self.port.port, self.subset, self.service.ref.namespace
        )


def cluster_specs(index: MeshIndex) -> list[ClusterSpec]:
    """Every cluster the mesh needs, sorted by name."""
    specs: list[ClusterSpec] = []
    for host, service in index.services.items():
        subsets: list[tuple[str, dict[str, str]]] = [("", {})]
        subsets += [(s.name, s.labels) for s in index.subsets(host)]
        for port in service.ports:
            for subset, labels in subsets:
                specs.append(
                    ClusterSpec(
                        name=cluster_name(port.port, subset, host),
                        service=service,
                        port=port,
                        subset=subset,
                        subset_labels=labels,
                        lb_policy=index.load_balancer(host, subset).simple,
                    )
                )
    return sorted(specs, key=lambda spec: spec.name)


def config_source(path: str, directory: str) -> dict[str, Any]:
    """A file-based xDS source that Envoy reloads when a file is renamed into ``directory``."""
    return {
        "path_config_source": {"path": path, "watched_directory": {"path": directory}},
        "resource_api_version": "V3",
    }


def cluster_resource(spec: ClusterSpec, xds: XdsLayout) -> dict[str, Any]:
    cluster: dict[str, Any] = {
        "@type": CLUSTER_TYPE,
        "name": spec.name,
        "alt_stat_name": spec.stat_name,
        "type": "EDS",
        "eds_cluster_config": {
            "eds_config": config_source(str(xds.eds(spec.name)), str(xds.directory)),
        },
        "connect_timeout": CONNECT_TIMEOUT,
        "lb_policy": spec.lb_policy,
        "health_checks": [dict(HEALTH_CHECK)],
        "ignore_health_on_host_removal": True,
        "circuit_breakers": {
            "thresholds": [
                {
                    "max_connections": UNLIMITED,
                    "max_pending_requests": UNLIMITED,
                    "max_requests": UNLIMITED,
                    "max_retries": UNLIMITED,
                    "track_remaining": True,
                }
            ]
        },
    }
    protocol = spec.port.upstream_protocol
    if protocol != "http1":
        options: dict[str, Any] = (
            {"explicit_http_config": {"http2_protocol_options": {}}}
            if protocol == "http2"
            else {
                "use_downstream_protocol_config": {
                    "http_protocol_options": {},
                    "http2_protocol_options": {},
                }
            }
        )
        cluster["typed_extension_protocol_options"] = {
            HTTP_PROTOCOL_OPTIONS: {
                "@type": f"type.googleapis.com/{HTTP_PROTOCOL_OPTIONS}",
                **options,
            }
        }
    return cluster


def load_assignment(spec: ClusterSpec, endpoints: Sequence[PodEndpoint]) -> dict[str, Any]:
    """The ready pods the Service selects that carry the subset's labels, at their real ports."""
    lb_endpoints = []
    for pod in sorted(endpoints, key=lambda p: (p.address, p.namespace, p.name)):
        port = endpoint_port(spec, pod)
        if port is None:
            continue
        lb_endpoints.append(
            {
                "endpoint": {
                    "address": {"socket_address": {"address": pod.address, "port_value": port}},
                    "hostname": pod.name,
                }
            }
        )
    return {
        "@type": LOAD_ASSIGNMENT_TYPE,
        "cluster_name": spec.name,
        "endpoints": [{"lb_endpoints": lb_endpoints}] if lb_endpoints else [],
    }


def endpoint_port(spec: ClusterSpec, pod: PodEndpoint) -> int | None:
    """Where ``pod`` serves the cluster's port, or None when it is not an endpoint of it."""
    selector = spec.service.selector
    if not pod.ready or pod.namespace != spec.service.ref.namespace or not selector:
        return None  # a Service without a selector has no endpoints of its own
    for labels in (selector, spec.subset_labels):
        if any(pod.labels.get(key) != value for key, value in labels.items()):
            return None
    target = spec.port.target_port
    container_port = pod.port_names.get(target) if isinstance(target, str) else target
    return None if container_port is None else pod.ports.get(container_port)
