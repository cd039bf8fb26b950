"""Istio objects → one Envoy configuration for the ingress gateway. Pure.

The Gateway's servers become listeners (one per port), the VirtualServices
bound to them become route configurations, and every Service port and
DestinationRule subset becomes a cluster with its endpoints, as Istio's pilot
would configure ``istio-ingressgateway``. No I/O, no clock, no randomness:
the same objects and endpoints always give the same, sorted resources.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from canary.errors import ManifestError
from mesh.manifest_refs import validate_set
from mesh.mesh_index import MeshIndex
from mesh.model import Gateway, MeshObject
from mesh.xds_clusters import cluster_resource, cluster_specs, config_source, load_assignment
from mesh.xds_routes import route_config_name, route_configuration
from mesh.xds_types import (
    ClusterKey,
    EnvoyResources,
    IngressSettings,
    PodEndpoint,
    XdsLayout,
    XdsPaths,
)

__all__ = [
    "MAX_REQUEST_BYTES",
    "ClusterKey",
    "EnvoyResources",
    "IngressSettings",
    "PodEndpoint",
    "XdsLayout",
    "XdsPaths",
    "translate",
]

LISTENER_TYPE = "type.googleapis.com/envoy.config.listener.v3.Listener"
HCM_TYPE = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
FAULT_TYPE = "type.googleapis.com/envoy.extensions.filters.http.fault.v3.HTTPFault"
ROUTER_TYPE = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"

# How much of a request Envoy may buffer. Retries and mirroring need the whole
# body buffered; Envoy's 1 MiB default would silently give them up for the
# walkthrough's ~5 MB JSON predict requests.
MAX_REQUEST_BYTES = 32 * 1024 * 1024


def translate(
    objects: Sequence[MeshObject],
    endpoints: Sequence[PodEndpoint],
    ingress: IngressSettings,
    xds: XdsLayout,
) -> EnvoyResources:
    """The ingress gateway's whole configuration for ``objects`` and the pods in ``endpoints``.

    Raises ManifestError when the objects do not form a valid set (see
    ``mesh.manifests.validate_set``) or a Gateway port has no local port in
    ``ingress.ports``.
    """
    validate_set(objects)
    index = MeshIndex.of(objects)
    specs = cluster_specs(index)
    ports = _gateway_ports(index, ingress)
    return EnvoyResources(
        listeners=[_listener(port, ingress, xds) for port in ports],
        clusters=[cluster_resource(spec, xds) for spec in specs],
        route_configurations=[route_configuration(port, index) for port in ports],
        cluster_load_assignments=[load_assignment(spec, endpoints) for spec in specs],
        cluster_index={spec.stat_name: spec.key for spec in specs},
    )


def _gateway_ports(index: MeshIndex, ingress: IngressSettings) -> list[int]:
    ports: set[int] = set()
    for gateway in index.gateways.values():
        for position, server in enumerate(gateway.servers):
            if server.port not in ingress.ports:
                raise _no_local_port(gateway, position, ingress)
            ports.add(server.port)
    return sorted(ports)


def _no_local_port(gateway: Gateway, position: int, ingress: IngressSettings) -> ManifestError:
    configured = ", ".join(f"{g} → {ingress.address}:{p}" for g, p in sorted(ingress.ports.items()))
    return ManifestError(
        gateway.source,
        str(gateway.ref),
        f"spec.servers[{position}].port.number",
        f"the local ingress has no port for Gateway port {gateway.servers[position].port} "
        f"(configured: {configured or 'none'})",
    )


def _listener(port: int, ingress: IngressSettings, xds: XdsLayout) -> dict[str, Any]:
    name = route_config_name(port)
    manager = {
        "@type": HCM_TYPE,
        "stat_prefix": f"outbound_0.0.0.0_{port}",
        "codec_type": "AUTO",  # HTTP/1.1 REST and h2c gRPC on one port
        "rds": {
            "route_config_name": name,
            "config_source": config_source(str(xds.rds(name)), str(xds.directory)),
        },
        "http_filters": [
            {"name": "envoy.filters.http.fault", "typed_config": {"@type": FAULT_TYPE}},
            {"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER_TYPE}},
        ],
        "use_remote_address": True,
        "normalize_path": True,
    }
    return {
        "@type": LISTENER_TYPE,
        "name": f"0.0.0.0_{port}",
        "address": {
            "socket_address": {"address": ingress.address, "port_value": ingress.ports[port]}
        },
        "per_connection_buffer_limit_bytes": MAX_REQUEST_BYTES,
        "filter_chains": [
            {
                "filters": [
                    {
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": manager,
                    }
                ]
            }
        ],
    }
