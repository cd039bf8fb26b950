"""What the mesh answers about itself, whatever runs it: subsets and the endpoints serving them. Pure.

A :class:`MeshView` is the applied objects plus the pods that run, as a
backend sees them: the local mesh's processes (loopback host ports) or, on
a cluster, the pods of the namespace (their IPs and container ports). It
answers from the same selector matching that builds Envoy's clusters
(:mod:`mesh.xds_clusters`), so "who serves subset S on port P" means
exactly what the ingress does with a request routed there:

* :meth:`MeshView.subsets` — the DestinationRule's subsets, stable first;
* :meth:`MeshView.endpoints` — the ready pods serving one subset on one Service port;
* :meth:`MeshView.subset_servers` — for each subset, one pod's REST URL and gRPC target
  (to ask each version directly, bypassing the routing: calibration, metadata).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from canary.errors import MeshError
from mesh.mesh_index import MeshIndex
from mesh.model import DestinationRule, MeshObject, ServicePort
from mesh.xds_clusters import ClusterSpec, cluster_specs, endpoint_port
from mesh.xds_types import PodEndpoint

__all__ = ["MeshView", "SubsetEndpoint", "SubsetServers"]


@dataclass(frozen=True)
class SubsetEndpoint:
    """One pod serving one subset on one Service port, and where to reach it."""

    subset: str
    pod: str  # namespace/name
    address: str
    port: int  # where the pod listens for the Service port
    service_port: int
    grpc: bool  # the Service port speaks gRPC (appProtocol, or the port name's prefix)

    @property
    def target(self) -> str:
        """``http://address:port`` for a REST port, ``address:port`` for a gRPC one."""
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{host}:{self.port}" if self.grpc else f"http://{host}:{self.port}"


SubsetServers = dict[str, dict[str, str]]
"""``{subset: {"rest": "http://host:port", "grpc": "host:port"}}``."""


@dataclass(frozen=True)
class MeshView:
    """The applied objects and the running pods; every answer is computed from them."""

    objects: tuple[MeshObject, ...]
    pods: tuple[PodEndpoint, ...]

    @functools.cached_property
    def _index(self) -> MeshIndex:
        return MeshIndex.of(list(self.objects))

    @functools.cached_property
    def _specs(self) -> tuple[ClusterSpec, ...]:
        return tuple(cluster_specs(self._index))

    def destination_rule(self, host: str | None = None) -> DestinationRule:
        """The one DestinationRule (or the one for ``host``: its FQDN or short name)."""
        rules = self._index.rules
        hosts = sorted(rules)
        if host is not None:
            hosts = [h for h in hosts if h == host or h.split(".")[0] == host]
        if len(hosts) != 1:
            found = ", ".join(sorted(rules)) or "none"
            raise MeshError(
                f"exactly one DestinationRule host{f' matching {host!r}' if host else ''} is needed "
                f"(found: {found}); apply one, or name the host"
            )
        return rules[hosts[0]]

    def subsets(self, host: str | None = None) -> tuple[str, ...]:
        """The DestinationRule's subsets, stable first.

        The stable subset is the one that routes without a header match send
        the most weight to (ResNet50 under weight-70, weight-100 and focused
        routing); the DestinationRule's own order breaks ties (and decides
        under the base routing, which names no subset).
        """
        rule = self.destination_rule(host)
        names = [s.name for s in rule.subsets]
        weight = dict.fromkeys(names, 0)
        for service in self._index.virtual_services:
            for route in service.http:
                if any(match.headers for match in route.match):
                    continue
                for target in route.route:
                    if target.destination.host == rule.host and target.destination.subset in weight:
                        weight[target.destination.subset] += target.weight
        return tuple(sorted(names, key=lambda name: (-weight[name], names.index(name))))

    def endpoints(self, subset: str, service_port: int, host: str | None = None) -> tuple[SubsetEndpoint, ...]:
        """The ready pods serving ``subset`` on the Service's ``service_port``, by pod name."""
        rule = self.destination_rule(host)
        spec = next((s for s in self._specs if s.service.fqdn == rule.host and s.subset == subset
                     and s.port.port == service_port), None)
        if spec is None:
            return ()
        found = []
        for pod in sorted(self.pods, key=lambda p: (p.namespace, p.name)):
            port = endpoint_port(spec, pod)
            if port is not None:
                found.append(SubsetEndpoint(subset=subset, pod=f"{pod.namespace}/{pod.name}", address=pod.address,
                                            port=port, service_port=service_port, grpc=spec.port.is_grpc))
        return tuple(found)

    def service_ports(self, host: str | None = None) -> tuple[ServicePort, ...]:
        """The ports of the DestinationRule's Service (none when the Service is not applied)."""
        service = self._index.services.get(self.destination_rule(host).host)
        return service.ports if service else ()

    def subset_endpoints(self, host: str | None = None, *,
                         allow_missing: bool = False) -> dict[str, dict[str, SubsetEndpoint]]:
        """For each subset, its first ready pod on the Service's REST port and on its gRPC port
        (``{subset: {"rest": endpoint, "grpc": endpoint}}``; see :meth:`subset_servers`)."""
        rule = self.destination_rule(host)
        ports = self.service_ports(host)
        if not ports:
            raise MeshError(f"the Service {rule.host} of the DestinationRule is not applied; apply it first")
        rest = next((p.port for p in ports if not p.is_grpc), None)
        grpc = next((p.port for p in ports if p.is_grpc), None)
        servers: dict[str, dict[str, SubsetEndpoint]] = {}
        for subset in sorted(s.name for s in rule.subsets):
            found: dict[str, SubsetEndpoint] = {}
            for kind, port in (("rest", rest), ("grpc", grpc)):
                members = self.endpoints(subset, port, host) if port is not None else ()
                if members:
                    found[kind] = members[0]
            if not found and allow_missing:
                continue
            if not found:
                raise MeshError(
                    f"subset {subset} of {rule.host} has no ready pod serving the Service's ports "
                    f"({', '.join(str(p.port) for p in ports)}); check `canary mesh status`"
                )
            servers[subset] = found
        if not servers:
            raise MeshError(f"no subset of {rule.host} has a ready pod; check `canary mesh status`")
        return servers

    def subset_servers(self, host: str | None = None, *, allow_missing: bool = False) -> SubsetServers:
        """For each subset, its first ready pod's REST URL and gRPC target.

        The REST port is the Service's first HTTP port, the gRPC port its
        first gRPC port. Raises :class:`MeshError` naming the subset when one
        has no ready pod on either; with ``allow_missing``, such subsets are left
        out and only a mesh where no subset has a pod raises.
        """
        return {subset: {kind: endpoint.target for kind, endpoint in found.items()}
                for subset, found in self.subset_endpoints(host, allow_missing=allow_missing).items()}
