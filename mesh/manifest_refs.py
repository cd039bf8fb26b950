"""Cross-reference checks over a whole set of objects, as the set would be applied.

Kubernetes itself accepts dangling references (a Deployment's ConfigMap may
come later), and so does this module. Istio accepts a VirtualService routing
to a missing subset and answers 503 at run time; here that, and every other
routing reference that cannot work, is an error at apply time.

For the local mesh the set is the whole mesh. For a cluster it is only the
batch being applied: the cluster holds namespaces, Services, Gateways and
DestinationRules the batch does not name (``istio-system/ingressgateway``, or
everything when one VirtualService is applied), and its API server reports a
missing namespace itself. So for ``Target.CLUSTER`` only what the batch alone
proves broken is refused: a route to a port its Service (in the batch) does not
have, or to a subset its DestinationRule (in the batch) does not define. Istio
would accept both and answer 503.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from canary.errors import ManifestError
from mesh.hosts import bound_gateway_names, served_hosts
from mesh.manifest_fields import Target
from mesh.mesh_index import MeshIndex
from mesh.model import (
    Destination,
    DestinationRule,
    MeshObject,
    ObjectRef,
    Service,
    VirtualService,
)

__all__ = ["BUILTIN_NAMESPACES", "validate_set"]

BUILTIN_NAMESPACES = frozenset(
    {"default", "kube-system", "kube-public", "kube-node-lease", "istio-system"}
)


def _fail(obj: MeshObject, field: str, message: str) -> ManifestError:
    return ManifestError(obj.source, str(obj.ref), field, message)


def validate_set(objects: Sequence[MeshObject], *, target: Target = Target.LOCAL) -> None:
    """Raise ManifestError for the first reference in ``objects`` that cannot work.

    Checks: no object twice; namespaces exist; one DestinationRule per host,
    for a Service that exists; every VirtualService's Gateways exist and serve
    one of its hosts; every destination and mirror names an existing Service,
    port (required when the Service has several) and DestinationRule subset.

    For ``Target.CLUSTER`` (``objects`` is a batch, not the cluster): no object
    twice, and a destination's port and subset where its Service and
    DestinationRule are in the batch.
    """
    seen: dict[ObjectRef, MeshObject] = {}
    for obj in objects:
        if obj.ref in seen:
            raise _fail(
                obj, "metadata.name", f"the same object is also defined in {seen[obj.ref].source}"
            )
        seen[obj.ref] = obj
    index = MeshIndex.of(objects)
    if target is Target.CLUSTER:
        _check_batch(objects, index)
        return
    for obj in objects:
        namespace = obj.ref.namespace
        if namespace and namespace not in index.namespaces and namespace not in BUILTIN_NAMESPACES:
            raise _fail(
                obj,
                "metadata.namespace",
                f"namespace {namespace!r} does not exist: add a Namespace object",
            )
        if isinstance(obj, DestinationRule):
            _check_destination_rule(obj, index)
        elif isinstance(obj, VirtualService):
            _check_virtual_service(obj, index)


def _check_destination_rule(rule: DestinationRule, index: MeshIndex) -> None:
    first = index.rules[rule.host]
    if first is not rule:
        raise _fail(
            rule,
            "spec.host",
            f"host {rule.host} already has a DestinationRule ({first.ref}); "
            "the local mesh needs exactly one DestinationRule per host",
        )
    if rule.host not in index.services:
        raise _fail(rule, "spec.host", _no_service(rule.host))


def _no_service(host: str) -> str:
    return (
        f"no Service {host} in this mesh (name a Service by its name, "
        "resolved in this object's namespace, or as name.namespace.svc.cluster.local)"
    )


def _check_virtual_service(vs: VirtualService, index: MeshIndex) -> None:
    for position, name in enumerate(vs.gateways):
        if name != "mesh" and name not in index.gateways:
            raise _fail(vs, f"spec.gateways[{position}]", f"no Gateway {name} in this mesh")
    for name in bound_gateway_names(vs):
        gateway = index.gateways[name]
        if not served_hosts(vs, gateway, gateway.servers):
            hosts = sorted({host for server in gateway.servers for host in server.hosts})
            raise _fail(
                vs,
                "spec.hosts",
                f"none of the hosts {list(vs.hosts)} is served by Gateway {name} (its hosts: {hosts})",
            )
    for path, destination in _destinations(vs):
        service = index.services.get(destination.host)
        if service is None:
            raise _fail(vs, f"{path}.host", _no_service(destination.host))
        _check_port(vs, path, destination, service, index)
        if not destination.subset:
            continue
        rule = index.rules.get(destination.host)
        if rule is None:
            raise _fail(
                vs,
                f"{path}.subset",
                f"no DestinationRule defines subsets for host {destination.host}",
            )
        if index.subset(destination.host, destination.subset) is None:
            names = ", ".join(s.name for s in rule.subsets) or "none"
            raise _fail(
                vs,
                f"{path}.subset",
                f"DestinationRule {rule.ref} has no subset {destination.subset!r} (subsets: {names})",
            )


def _check_batch(objects: Sequence[MeshObject], index: MeshIndex) -> None:
    """A cluster's batch: a route to a Service or DestinationRule of the batch must name
    one of its ports and subsets. (Istio merges DestinationRules of one host, so any of
    the batch's rules for the host may define the subset.)"""
    subsets: dict[str, list[str]] = {}
    for obj in objects:
        if isinstance(obj, DestinationRule):
            subsets.setdefault(obj.host, []).extend(s.name for s in obj.subsets)
    for vs in (obj for obj in objects if isinstance(obj, VirtualService)):
        for path, destination in _destinations(vs):
            service = index.services.get(destination.host)
            if service is not None and service.ports:  # a headless Service may have none
                _check_port(vs, path, destination, service, index)
            names = subsets.get(destination.host)
            if destination.subset and names is not None and destination.subset not in names:
                raise _fail(
                    vs,
                    f"{path}.subset",
                    f"no DestinationRule for host {destination.host} in these manifests "
                    f"defines subset {destination.subset!r} (subsets: {', '.join(names) or 'none'})",
                )


def _destinations(vs: VirtualService) -> Iterator[tuple[str, Destination]]:
    """Every destination and mirror of ``vs``, with its field path."""
    for i, route in enumerate(vs.http):
        for j, target in enumerate(route.route):
            yield f"spec.http[{i}].route[{j}].destination", target.destination
        if route.mirror is not None:
            yield f"spec.http[{i}].mirror", route.mirror.destination


def _check_port(
    vs: VirtualService, path: str, destination: Destination, service: Service, index: MeshIndex
) -> None:
    ports = ", ".join(str(p.port) for p in service.ports)
    if destination.port is None and len(service.ports) > 1:
        raise _fail(
            vs,
            f"{path}.port",
            f"Service {service.ref} has several ports ({ports}): say which with port.number",
        )
    if index.service_port(destination) is None:
        raise _fail(
            vs,
            f"{path}.port.number",
            f"Service {service.ref} has no port {destination.port} (ports: {ports})",
        )
