"""What a cluster says about the mesh under test: read through the API server, never changed.

:func:`read_cluster` lists, in the target's namespace, the Istio routing
objects (Gateways, VirtualServices, DestinationRules, each at the version the
cluster prefers) and the Services and Pods; reads the ingress gateway's
Service (and, for a NodePort, the nodes); and answers them as a
:class:`ClusterReading` (:mod:`mesh.kube_view` does the reading proper).
Every call is one of :data:`READS`: the verbs and resources the load
generator's Role grants (``manifests/loadgen/``), no more.

Errors are one line (:mod:`mesh.kube_errors`): an unreachable or refusing API
server; a cluster without Istio's CRDs ("is Istio installed?"); a namespace
with no DestinationRule.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from canary.errors import MeshError
from mesh.kube import DynamicApi
from mesh.kube_errors import Call, api_message
from mesh.kube_view import (
    INGRESS_NAMESPACE,
    INGRESS_SERVICE,
    ROUTING_KINDS_ON_CLUSTER,
    applied_at,
    ingress_url,
    live_document,
    view_of,
)
from mesh.query import MeshView
from mesh.target import KubeTarget

__all__ = ["ISTIO_GROUP", "READS", "ClusterReading", "read_cluster"]

ISTIO_GROUP = "networking.istio.io"

READS: tuple[Call, ...] = (
    Call("list", f"gateways.{ISTIO_GROUP}", "NAMESPACE"),
    Call("list", f"virtualservices.{ISTIO_GROUP}", "NAMESPACE"),
    Call("list", f"destinationrules.{ISTIO_GROUP}", "NAMESPACE"),
    Call("list", "services", "NAMESPACE"),
    Call("list", "pods", "NAMESPACE"),
    Call("get", "services", INGRESS_NAMESPACE),
    Call("list", "nodes"),
)
"""Every API call :func:`read_cluster` may make (``NAMESPACE``: the target's namespace);
``list nodes`` only when the ingress is a NodePort and no --ingress is given."""


@dataclass(frozen=True)
class ClusterReading:
    """The namespace as the API server lists it now."""

    view: MeshView
    ingress_url: str
    routing: tuple[dict[str, Any], ...]  # {"source", "document"} of each routing object
    applied_at: str | None  # when a routing object was last written (managedFields)
    ingress_problem: str = ""  # why no ingress URL was found (only when not required)


def _items(answer: Any) -> list[dict[str, Any]]:
    data = answer.to_dict() if hasattr(answer, "to_dict") else answer
    return [dict(item) for item in (data or {}).get("items") or ()]


class _Reader:
    def __init__(self, api: DynamicApi) -> None:
        self.api = api

    def _fail(self, exc: BaseException, call: Call) -> MeshError:
        problem = self.api.problem(exc, call)
        said = problem.message if problem else self.api.target.redact(api_message(exc))
        return MeshError(f"reading the mesh from the cluster failed ({call.text}): {said}")

    def resource(self, group: str, version: str | None, kind: str) -> Any:
        from kubernetes.dynamic.exceptions import ResourceNotFoundError

        try:
            if version is not None:
                return self.api.resources.get(api_version=f"{group}/{version}" if group else version, kind=kind)
            found = list(self.api.resources.search(group=group, kind=kind))
        except ResourceNotFoundError:
            found = []
        except Exception as exc:
            raise self._fail(exc, Call("get", "the API discovery (/api, /apis)")) from exc
        found = [r for r in found if not getattr(r, "kind", "").endswith("List")]
        if not found:
            raise MeshError(
                f"the cluster serves no {kind} ({group}): is Istio installed, with its CRDs? "
                "(`kubectl get crd | grep istio.io`)"
            )
        return next((r for r in found if getattr(r, "preferred", False)), found[0])

    def listed(self, resource: Any, namespace: str | None, plural: str) -> list[dict[str, Any]]:
        call = Call("list", plural, namespace or "")
        try:
            return _items(self.api.get(resource, namespace=namespace))
        except Exception as exc:
            raise self._fail(exc, call) from exc

    def ingress_service(self) -> dict[str, Any] | None:
        resource = self.resource("", "v1", "Service")
        try:
            answer = self.api.get(resource, name=INGRESS_SERVICE, namespace=INGRESS_NAMESPACE)
        except Exception as exc:
            if getattr(exc, "status", None) == 404:
                return None
            raise self._fail(exc, Call("get", "services", INGRESS_NAMESPACE)) from exc
        return dict(answer.to_dict() if hasattr(answer, "to_dict") else answer)

    def nodes(self) -> list[dict[str, Any]]:
        try:
            return self.listed(self.resource("", "v1", "Node"), None, "nodes")
        except MeshError:
            return []  # no right to list nodes: the message about the NodePort says what to give


def _needs_nodes(service: Mapping[str, Any] | None) -> bool:
    return service is not None and (service.get("spec") or {}).get("type") in ("NodePort", "LoadBalancer") and not (
        ((service.get("status") or {}).get("loadBalancer") or {}).get("ingress"))


def read_cluster(api: DynamicApi, target: KubeTarget, *, need_ingress: bool = True) -> ClusterReading:
    """The target namespace's routing, Services and pods, and the ingress URL (``target.ingress``
    when given, else discovered from Istio's ingress gateway Service). Without
    ``need_ingress`` an ingress that cannot be found is said in ``ingress_problem``."""
    reader = _Reader(api)
    namespace = target.namespace
    routing_objects: list[dict[str, Any]] = []
    for kind in ROUTING_KINDS_ON_CLUSTER:
        resource = reader.resource(ISTIO_GROUP, None, kind)
        routing_objects += reader.listed(resource, namespace, f"{kind.lower()}s.{ISTIO_GROUP}")
    services = reader.listed(reader.resource("", "v1", "Service"), namespace, "services")
    pods = reader.listed(reader.resource("", "v1", "Pod"), namespace, "pods")
    where = f'namespace "{namespace}" of context "{api.target.context}"'
    view = view_of([*routing_objects, *services], pods, where=where)
    if not any(o.ref.kind == "DestinationRule" for o in view.objects):
        raise MeshError(f"the {where} has no DestinationRule; apply the manifests first "
                        "(`canary mesh apply --kube -f manifests/base`), or give --namespace")
    url, problem = target.ingress or "", ""
    if not url:
        try:
            service = reader.ingress_service()
            url = ingress_url(service, reader.nodes() if _needs_nodes(service) else [], view)
        except MeshError as error:
            if need_ingress:
                raise
            problem = str(error)
    ordered = sorted(routing_objects, key=lambda o: (str(o.get("kind")), str((o.get("metadata") or {}).get("name"))))
    routing = tuple({"source": f"cluster:{namespace}", "document": live_document(o)} for o in ordered)
    return ClusterReading(view=view, ingress_url=url.rstrip("/"), routing=routing,
                          applied_at=applied_at(ordered), ingress_problem=problem)
