"""Host names as Istio matches them: gateway hosts, VirtualService hosts, wildcards.

Shared by validation (a VirtualService bound to a Gateway must match one of its
hosts) and translation (which virtual hosts the ingress serves).
"""

from __future__ import annotations

from collections.abc import Iterable

from mesh.model import Gateway, GatewayServer, VirtualService

__all__ = ["bound_gateway_names", "intersect_hosts", "served_hosts", "visible_server_hosts"]


def intersect_hosts(vs_host: str, gateway_host: str) -> str | None:
    """The more specific of two host patterns when one covers the other, else None.

    ``*`` covers everything and ``*.example.com`` covers ``a.example.com`` and
    ``*.b.example.com``, as in Istio's gateway host matching.
    """
    if vs_host == gateway_host or gateway_host == "*":
        return vs_host
    if vs_host == "*":
        return gateway_host
    if gateway_host.startswith("*.") and vs_host.endswith(gateway_host[1:]):
        return vs_host
    if vs_host.startswith("*.") and gateway_host.endswith(vs_host[1:]):
        return gateway_host
    return None


def visible_server_hosts(server: GatewayServer, gateway: Gateway, vs_namespace: str) -> list[str]:
    """The hosts of ``server`` that a VirtualService in ``vs_namespace`` may bind to.

    A server host is ``[namespace/]host``: no namespace or ``*`` means any,
    ``.`` means the Gateway's own namespace.
    """
    out: list[str] = []
    for entry in server.hosts:
        namespace, _, host = entry.rpartition("/")
        if (
            namespace in ("", "*")
            or namespace == vs_namespace
            or (namespace == "." and gateway.ref.namespace == vs_namespace)
        ):
            out.append(host)
    return out


def served_hosts(
    vs: VirtualService, gateway: Gateway, servers: Iterable[GatewayServer]
) -> list[str]:
    """The host names under which ``servers`` of ``gateway`` serve ``vs``, in a stable order."""
    hosts: list[str] = []
    for server in servers:
        for gateway_host in visible_server_hosts(server, gateway, vs.ref.namespace):
            for vs_host in vs.hosts:
                host = intersect_hosts(vs_host, gateway_host)
                if host is not None and host not in hosts:
                    hosts.append(host)
    return hosts


def bound_gateway_names(vs: VirtualService) -> list[str]:
    """``namespace/name`` of each Gateway the VirtualService binds to (``mesh`` left out)."""
    return [name for name in vs.gateways if name != "mesh"]
