"""Kubernetes core objects (Namespace, ConfigMap, PVC, Service) from manifests.

Each ``parse_*`` function takes the whole object as a :class:`Node` and its
identity, checks what Kubernetes would check, and rejects what the local mesh
cannot honour (for the local target; a cluster accepts every field Kubernetes
defines, see :class:`~mesh.manifest_fields.Target`). Deployments and their pod
templates are in :mod:`mesh.manifests_pods`.
"""

from __future__ import annotations

import re

from canary.conventions import check_dns_label
from mesh.manifest_fields import Node
from mesh.model import (
    ConfigMap,
    Namespace,
    ObjectRef,
    PersistentVolumeClaim,
    Service,
    ServicePort,
)

__all__ = [
    "PORT_PROTOCOLS",
    "check_dns_label",
    "metadata_labels",
    "parse_config_map",
    "parse_namespace",
    "parse_pvc",
    "parse_service",
    "port_protocol",
    "port_reference",
]

_PORT_NAME = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_CONFIG_KEY = re.compile(r"^[-._a-zA-Z0-9]+$")

# The protocols of Service and container ports Kubernetes knows; the local mesh routes TCP.
PORT_PROTOCOLS = ("TCP", "UDP", "SCTP")
_SERVICE_TYPES = ("ClusterIP", "NodePort", "LoadBalancer")  # the local mesh's; + ExternalName


def metadata_labels(root: Node) -> dict[str, str]:
    """The object's ``metadata.labels`` (checked), or {}."""
    labels = root.req("metadata").get("labels")
    return labels.labels() if labels else {}


def port_protocol(node: Node | None, why: str) -> str:
    """A port's ``protocol``: TCP, or for the cluster target any protocol Kubernetes knows.

    ``why`` says why the local mesh refuses the others.
    """
    if node is None:
        return "TCP"
    protocol = node.as_str()
    if protocol not in PORT_PROTOCOLS:
        node.fail(
            f"protocol {protocol!r} is not supported (Kubernetes: {', '.join(PORT_PROTOCOLS)})"
        )
    if protocol != "TCP":
        node.refuse_locally(f"protocol {protocol!r} is not supported ({why})")
    return protocol


def parse_namespace(root: Node, ref: ObjectRef, source: str) -> Namespace:
    root.only({"apiVersion", "kind", "metadata"}, ignored={"spec", "status"})
    labels = metadata_labels(root)
    return Namespace(ref=ref, source=source, raw=root.as_map(), labels=labels)


def parse_config_map(root: Node, ref: ObjectRef, source: str) -> ConfigMap:
    root.only(
        {"apiVersion", "kind", "metadata", "data"},
        ignored={"immutable"},
        unsupported={"binaryData": "the local mesh passes ConfigMap values as text only"},
    )
    data: dict[str, str] = {}
    node = root.get("data")
    for key, child in node.items() if node else ():
        if not _CONFIG_KEY.match(key) or len(key) > 253:
            child.fail("invalid key: alphanumerics, '-', '_' or '.', at most 253 characters")
        data[key] = child.as_str(empty=True)
    return ConfigMap(ref=ref, source=source, raw=root.as_map(), data=data)


def parse_pvc(root: Node, ref: ObjectRef, source: str) -> PersistentVolumeClaim:
    # The local mesh maps every claim to its model store; size and access modes do not apply.
    root.only({"apiVersion", "kind", "metadata"}, ignored={"spec", "status"})
    return PersistentVolumeClaim(ref=ref, source=source, raw=root.as_map())


# --- Service ---------------------------------------------------------------------------


def parse_service(root: Node, ref: ObjectRef, source: str) -> Service:
    root.only({"apiVersion", "kind", "metadata", "spec"}, ignored={"status"})
    spec = root.req("spec")
    spec.only(
        {"selector", "ports", "type"},
        ignored={
            "allocateLoadBalancerNodePorts",
            "clusterIP",
            "clusterIPs",
            "externalTrafficPolicy",
            "healthCheckNodePort",
            "internalTrafficPolicy",
            "ipFamilies",
            "ipFamilyPolicy",
            "loadBalancerClass",
            "loadBalancerIP",
            "loadBalancerSourceRanges",
            "sessionAffinity",
            "sessionAffinityConfig",
        },
        unsupported={
            "externalName": "ExternalName Services have no endpoints in the local mesh",
            "externalIPs": "the local mesh reaches Services through the ingress only",
            "publishNotReadyAddresses": "the local mesh routes to ready pods only",
            "trafficDistribution": "the local mesh spreads requests by its load balancer only",
        },
    )
    service_type = spec.get("type")
    portless = False  # Kubernetes: headless and ExternalName Services may have no ports
    if service_type and service_type.as_str() not in _SERVICE_TYPES:
        kind = service_type.as_str()
        if kind != "ExternalName" and not service_type.local:
            service_type.fail(
                f"Service type {kind!r} is not one Kubernetes knows "
                f"({', '.join(_SERVICE_TYPES)}, ExternalName)"
            )
        service_type.refuse_locally(
            f"Service type {kind!r} is not supported (supported: {', '.join(_SERVICE_TYPES)})"
        )
        portless = True
    cluster_ip = spec.get("clusterIP")
    if cluster_ip and cluster_ip.value == "None":
        cluster_ip.refuse_locally(
            "headless Services (clusterIP: None) are not supported by the local mesh"
        )
        portless = True
    selector = spec.get("selector")
    ports_node = spec.get("ports") if portless else spec.req("ports")
    ports: tuple[ServicePort, ...] = ()
    if ports_node is not None:
        ports = tuple(_service_port(node) for node in ports_node.as_list())
        _check_service_ports(ports_node, ports, required=not portless)
    return Service(
        ref=ref,
        source=source,
        raw=root.as_map(),
        selector=selector.labels() if selector else {},
        ports=ports,
    )


def _service_port(node: Node) -> ServicePort:
    node.only({"port", "targetPort", "name", "protocol", "appProtocol"}, ignored={"nodePort"})
    port = node.req("port").as_int(1, 65535)
    target = node.get("targetPort")
    target_port: int | str = port
    if target is not None:
        target_port = port_reference(target)
    protocol = port_protocol(node.get("protocol"), "the mesh routes TCP only")
    name = node.get("name")
    app_protocol = node.get("appProtocol")
    return ServicePort(
        port=port,
        target_port=target_port,
        name=name.as_str() if name else "",
        protocol=protocol,
        app_protocol=app_protocol.as_str() if app_protocol else "",
    )


def _check_service_ports(
    node: Node, ports: tuple[ServicePort, ...], *, required: bool = True
) -> None:
    items = node.as_list()
    if not ports and required:
        node.fail("a Service needs at least one port")
    seen_numbers: set[int] = set()
    seen_names: set[str] = set()
    for item, port in zip(items, ports, strict=True):
        if len(ports) > 1 and not port.name:
            item.fail("name is required when a Service has more than one port")
        if port.name:
            problem = check_dns_label(port.name)
            if problem:
                item.req("name").fail(f"invalid port name: {problem}")
        if port.port in seen_numbers:
            item.req("port").fail(f"duplicate port {port.port}")
        if port.name and port.name in seen_names:
            item.req("name").fail(f"duplicate port name {port.name!r}")
        seen_numbers.add(port.port)
        seen_names.add(port.name)


def port_reference(node: Node) -> int | str:
    """A port number, or an IANA service name naming a container port."""
    if isinstance(node.value, str):
        name = node.value
        if len(name) > 15 or not _PORT_NAME.match(name) or not re.search("[a-z]", name):
            node.fail(
                f"invalid port name {name!r}: at most 15 lower-case alphanumerics or '-', "
                "with at least one letter"
            )
        return name
    return node.as_int(1, 65535)
