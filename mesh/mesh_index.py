"""Look-ups over a whole set of mesh objects, shared by validation and translation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from mesh.model import (
    Destination,
    DestinationRule,
    Gateway,
    LoadBalancer,
    MeshObject,
    Namespace,
    Service,
    ServicePort,
    Subset,
    VirtualService,
)

__all__ = ["MeshIndex"]


@dataclass
class MeshIndex:
    """Services by FQDN, DestinationRules by host, Gateways by ``namespace/name``.

    Lists keep the order of the objects given; where two DestinationRules name
    the same host the first wins (validation rejects the second).
    """

    namespaces: set[str] = field(default_factory=set)
    services: dict[str, Service] = field(default_factory=dict)
    rules: dict[str, DestinationRule] = field(default_factory=dict)
    gateways: dict[str, Gateway] = field(default_factory=dict)
    virtual_services: list[VirtualService] = field(default_factory=list)

    @classmethod
    def of(cls, objects: Sequence[MeshObject]) -> MeshIndex:
        index = cls()
        for obj in objects:
            if isinstance(obj, Namespace):
                index.namespaces.add(obj.ref.name)
            elif isinstance(obj, Service):
                index.services[obj.fqdn] = obj
            elif isinstance(obj, DestinationRule):
                index.rules.setdefault(obj.host, obj)
            elif isinstance(obj, Gateway):
                index.gateways[f"{obj.ref.namespace}/{obj.ref.name}"] = obj
            elif isinstance(obj, VirtualService):
                index.virtual_services.append(obj)
        return index

    def subsets(self, host: str) -> tuple[Subset, ...]:
        rule = self.rules.get(host)
        return rule.subsets if rule else ()

    def subset(self, host: str, name: str) -> Subset | None:
        return next((s for s in self.subsets(host) if s.name == name), None)

    def load_balancer(self, host: str, subset: str) -> LoadBalancer:
        """The subset's policy, else the rule's, else Istio's default (LEAST_REQUEST)."""
        rule = self.rules.get(host)
        chosen = self.subset(host, subset) if subset else None
        return (
            (chosen.load_balancer if chosen else None)
            or (rule.load_balancer if rule else None)
            or LoadBalancer()
        )

    def service_port(self, destination: Destination) -> ServicePort | None:
        """The Service port a destination goes to: the one named, or the only one."""
        service = self.services.get(destination.host)
        if service is None:
            return None
        if destination.port is None:
            return service.ports[0] if len(service.ports) == 1 else None
        return service.port(destination.port)
