"""Istio networking objects (Gateway, DestinationRule) from manifests, and Istio's host names.

Anything that changes routing and is not implemented is rejected by name: this
tool exists to verify routing, so a field it silently ignored would make the
verdict a lie. That holds for the local target; for the cluster target (see
:class:`~mesh.manifest_fields.Target`) every field Istio defines is accepted
and left to Istio, only what Istio refuses too is refused here. VirtualServices
are in :mod:`mesh.manifests_routes`.
"""

from __future__ import annotations

import re

from mesh.manifest_fields import Node
from mesh.manifests_k8s import check_dns_label
from mesh.model import (
    DestinationRule,
    Gateway,
    GatewayServer,
    LoadBalancer,
    ObjectRef,
    Subset,
    service_fqdn,
)

__all__ = [
    "GRPC_STATUS_CODES",
    "HEADER_NAME",
    "RETRY_ON_POLICIES",
    "check_host",
    "parse_destination_rule",
    "parse_gateway",
    "resolve_host",
]

GRPC_STATUS_CODES = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# Envoy's x-envoy-retry-on and x-envoy-retry-grpc-on policies, as Istio validates retryOn.
RETRY_ON_POLICIES = frozenset(
    {
        "5xx",
        "gateway-error",
        "reset",
        "reset-before-request",
        "connect-failure",
        "envoy-ratelimited",
        "retriable-4xx",
        "refused-stream",
        "retriable-status-codes",
        "retriable-headers",
        "http3-post-connect-failure",
        "cancelled",
        "deadline-exceeded",
        "internal",
        "resource-exhausted",
        "unavailable",
    }
)

_HOST = re.compile(r"^(\*|(\*\.)?[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*)$")
HEADER_NAME = re.compile(r"^[!#$%&'*+\-.^_`|~0-9a-z]+$")
# The server protocols the local ingress serves, and the others Istio's Gateway knows.
_LOCAL_PROTOCOLS = ("HTTP", "HTTP2", "GRPC")
_ISTIO_PROTOCOLS = ("HTTPS", "GRPC-WEB", "TCP", "TLS", "MONGO", "REDIS", "MYSQL")
_LOAD_BALANCERS = ("ROUND_ROBIN", "LEAST_REQUEST", "RANDOM")  # the local mesh's; + PASSTHROUGH


def resolve_host(host: str, namespace: str) -> str:
    """Istio's short-name resolution: ``name`` → ``name.namespace.svc.cluster.local``."""
    if host == "*" or "." in host:
        return host
    return service_fqdn(host, namespace)


def check_host(node: Node, namespace: str, *, wildcard: bool = True) -> str:
    """A host name, resolved as Istio resolves short names.

    ``wildcard=False`` where the local mesh needs one Service (destinations,
    DestinationRules); Istio takes ``*.suffix`` there too.
    """
    host = node.as_str().lower()
    if not _HOST.match(host) or len(host) > 253:
        node.fail(f"{host!r} is not a valid host name (DNS name, '*' or '*.suffix')")
    if not wildcard and "*" in host:
        node.refuse_locally("wildcard hosts are not supported here: name one Service")
    return resolve_host(host, namespace)


# --- Gateway ---------------------------------------------------------------------------


def parse_gateway(root: Node, ref: ObjectRef, source: str) -> Gateway:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only({"selector", "servers"})
    selector = spec.get("selector")
    servers = tuple(_gateway_server(node) for node in spec.req("servers").as_list())
    if not servers:
        spec.req("servers").fail("a Gateway needs at least one server")
    return Gateway(
        ref=ref,
        source=source,
        raw=root.as_map(),
        selector=selector.labels() if selector else {},
        servers=servers,
    )


def _gateway_server(node: Node) -> GatewayServer:
    node.only(
        {"port", "hosts", "name"},
        unsupported={
            "tls": "the local ingress serves plain-text HTTP (and h2c) only",
            "bind": "the local ingress listens on its own loopback address",
            "defaultEndpoint": "only ingress gateways are supported",
        },
    )
    port = node.req("port")
    port.only({"number", "name", "protocol"}, unsupported={"targetPort": "not supported"})
    protocol_node = port.req("protocol")
    protocol = protocol_node.as_str().upper()
    if protocol not in _LOCAL_PROTOCOLS:
        message = (
            f"protocol {protocol_node.value!r} is not supported by the local ingress "
            f"(supported: {', '.join(_LOCAL_PROTOCOLS)})"
        )
        if protocol not in _ISTIO_PROTOCOLS and not protocol_node.local:
            protocol_node.fail(
                f"protocol {protocol_node.value!r} is not a Gateway protocol Istio knows "
                f"({', '.join(_LOCAL_PROTOCOLS + _ISTIO_PROTOCOLS)})"
            )
        protocol_node.refuse_locally(message)
    hosts_node = node.req("hosts")
    hosts = tuple(_gateway_host(item) for item in hosts_node.as_list())
    if not hosts:
        hosts_node.fail("a server needs at least one host")
    name = port.get("name")
    return GatewayServer(
        port=port.req("number").as_int(1, 65535),
        port_name=name.as_str() if name else "",
        protocol=protocol,
        hosts=hosts,
    )


def _gateway_host(node: Node) -> str:
    """``[namespace/]host``, where namespace may be ``*`` or ``.``; kept as written."""
    namespace, _, host = node.as_str().rpartition("/")
    if namespace not in ("", "*", ".") and check_dns_label(namespace):
        node.fail(f"invalid namespace {namespace!r} in host {node.value!r}")
    if not _HOST.match(host.lower()):
        node.fail(f"{host!r} is not a valid host name (DNS name, '*' or '*.suffix')")
    return node.as_str().lower()


# --- DestinationRule -------------------------------------------------------------------


def parse_destination_rule(root: Node, ref: ObjectRef, source: str) -> DestinationRule:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"host", "trafficPolicy", "subsets"},
        ignored={"exportTo"},
        unsupported={"workloadSelector": "DestinationRules apply to the ingress as a whole"},
    )
    subsets: list[Subset] = []
    subsets_node = spec.get("subsets")
    for item in subsets_node.as_list() if subsets_node else ():
        subset = _subset(item)
        if any(s.name == subset.name for s in subsets):
            item.req("name").fail(f"duplicate subset name {subset.name!r}")
        subsets.append(subset)
    return DestinationRule(
        ref=ref,
        source=source,
        raw=root.as_map(),
        host=check_host(spec.req("host"), ref.namespace, wildcard=False),
        load_balancer=_traffic_policy(spec.get("trafficPolicy")),
        subsets=tuple(subsets),
    )


def _subset(node: Node) -> Subset:
    node.only({"name", "labels", "trafficPolicy"})
    name_node = node.req("name")
    name = name_node.as_str()
    problem = check_dns_label(name)
    if problem:
        name_node.fail(f"invalid subset name: {problem}")
    labels = node.get("labels")
    return Subset(
        name=name,
        labels=labels.labels() if labels else {},
        load_balancer=_traffic_policy(node.get("trafficPolicy")),
    )


def _traffic_policy(node: Node | None) -> LoadBalancer | None:
    if node is None:
        return None
    node.only(
        {"loadBalancer"},
        unsupported={
            key: "the local mesh implements trafficPolicy.loadBalancer.simple only"
            for key in (
                "connectionPool",
                "outlierDetection",
                "tls",
                "portLevelSettings",
                "tunnel",
                "proxyProtocol",
                "retryBudget",
            )
        },
    )
    balancer = node.get("loadBalancer")
    if balancer is None:
        return None
    balancer.only(
        {"simple"},
        unsupported={
            key: "the local mesh implements loadBalancer.simple only"
            for key in ("consistentHash", "localityLbSetting", "warmupDurationSecs", "warmup")
        },
    )
    simple_node = balancer.get("simple")
    simple = simple_node.as_str() if simple_node else "UNSPECIFIED"
    aliases = {"UNSPECIFIED": "LEAST_REQUEST", "LEAST_CONN": "LEAST_REQUEST"}
    simple = aliases.get(simple, simple)
    if simple not in _LOAD_BALANCERS:
        where = simple_node or balancer
        if simple != "PASSTHROUGH" and not where.local:
            where.fail(
                f"load balancer {simple!r} is not one Istio knows "
                f"({', '.join(_LOAD_BALANCERS)}, PASSTHROUGH)"
            )
        where.refuse_locally(
            f"load balancer {simple!r} is not supported (supported: {', '.join(_LOAD_BALANCERS)})"
        )
        return None  # a cluster's PASSTHROUGH: not modelled
    return LoadBalancer(simple=simple)  # type: ignore[arg-type]
