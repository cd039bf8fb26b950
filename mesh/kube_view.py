"""A cluster's live objects as the mesh's query answers them, and where its ingress is. Pure.

What the API server lists (Gateways, VirtualServices, DestinationRules and
Services of a namespace, its Pods, the ingress gateway's Service and the
nodes) becomes the same :class:`~mesh.query.MeshView` the local mesh gives:
objects read by the same parser as the manifests (``Target.CLUSTER``, after
dropping what the API server adds: ``status``, ``managedFields``, uid ...)
and one :class:`~mesh.xds_types.PodEndpoint` per pod (its IP, its
containers' ports, ready when its ``Ready`` condition is true and it is not
being deleted). The ingress URL follows Istio's own instructions for the
``istio-ingressgateway`` Service: a LoadBalancer's IP or hostname and the
Service port of the Gateway's server (or the port named ``http2``); else a
NodePort on a node's external (else internal) address.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import replace
from typing import Any

from canary.errors import CanaryError, MeshError
from mesh.manifest_fields import Target
from mesh.manifests import parse_objects
from mesh.model import Gateway, MeshObject, OtherObject, Service
from mesh.query import MeshView
from mesh.xds_types import PodEndpoint

__all__ = [
    "INGRESS_NAMESPACE",
    "INGRESS_SERVICE",
    "ROUTING_KINDS_ON_CLUSTER",
    "applied_at",
    "ingress_url",
    "live_document",
    "pod_endpoint",
    "view_of",
]

INGRESS_NAMESPACE = "istio-system"
INGRESS_SERVICE = "istio-ingressgateway"
ROUTING_KINDS_ON_CLUSTER = ("Gateway", "VirtualService", "DestinationRule")
_KEPT_METADATA = ("name", "namespace", "labels", "annotations")


def live_document(obj: Mapping[str, Any]) -> dict[str, Any]:
    """The object as its manifest would say it: ``apiVersion``, ``kind``, the metadata a
    manifest sets and ``spec`` (the API server's ``status``, uid, versions and managed
    fields dropped)."""
    metadata = obj.get("metadata") or {}
    kept = {k: metadata[k] for k in _KEPT_METADATA if metadata.get(k) not in (None, {})}
    kept.get("annotations", {}).pop("kubectl.kubernetes.io/last-applied-configuration", None)
    if not kept.get("annotations", True):
        kept.pop("annotations")
    document: dict[str, Any] = {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"),
                                "metadata": kept}
    if "spec" in obj:
        document["spec"] = obj["spec"]
    return document


def applied_at(objects: Iterable[Mapping[str, Any]]) -> str | None:
    """When the newest of ``objects`` was last written (its newest ``managedFields`` time)."""
    times = [str(entry.get("time")) for obj in objects
             for entry in (obj.get("metadata") or {}).get("managedFields") or () if entry.get("time")]
    return max(times, default=None)


def _ready(pod: Mapping[str, Any]) -> bool:
    metadata, status = pod.get("metadata") or {}, pod.get("status") or {}
    if metadata.get("deletionTimestamp") or status.get("phase") != "Running" or not status.get("podIP"):
        return False
    return any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or ())


def pod_endpoint(pod: Mapping[str, Any]) -> PodEndpoint:
    """One pod as the mesh sees it: its IP and its containers' ports, as they are (no host ports)."""
    metadata, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    ports: dict[int, int] = {}
    names: dict[str, int] = {}
    for container in spec.get("containers") or ():
        for port in container.get("ports") or ():
            number = port.get("containerPort")
            if isinstance(number, int):
                ports[number] = number
                if port.get("name"):
                    names[str(port["name"])] = number
    return PodEndpoint(
        namespace=str(metadata.get("namespace") or ""), name=str(metadata.get("name") or ""),
        labels=dict(metadata.get("labels") or {}), address=str((pod.get("status") or {}).get("podIP") or ""),
        ports=ports, port_names=names, ready=_ready(pod),
    )


def view_of(objects: Sequence[Mapping[str, Any]], pods: Sequence[Mapping[str, Any]],
            where: str = "the cluster") -> MeshView:
    """The view of a namespace: its routing objects and Services, and its pods.

    An object the mesh's parser refuses (a VirtualService feature the view
    cannot follow) is a MeshError naming it and where it was read."""
    docs = [(f"{where}: {o.get('kind')} {(o.get('metadata') or {}).get('name')}", live_document(o))
            for o in objects]
    try:
        parsed = parse_objects(docs, target=Target.CLUSTER)
    except CanaryError as error:
        raise MeshError(f"cannot read the live objects of {where}: {error}") from error
    mesh_objects: list[MeshObject] = [o for o in parsed if not isinstance(o, OtherObject)]
    # a numeric targetPort reaches the pod whether or not its container lists the port (as kube-proxy
    # and Istio route it); a named one only through a declared port
    numeric = {p.target_port for o in mesh_objects if isinstance(o, Service) for p in o.ports
               if isinstance(p.target_port, int)}
    endpoints = tuple(sorted(
        (replace(e, ports={**{n: n for n in numeric}, **e.ports}) for e in map(pod_endpoint, pods)),
        key=lambda p: (p.namespace, p.name)))
    return MeshView(objects=tuple(mesh_objects), pods=endpoints)


def _gateway_ports(view: MeshView) -> list[int]:
    return sorted({server.port for obj in view.objects if isinstance(obj, Gateway) for server in obj.servers})


def ingress_url(service: Mapping[str, Any] | None, nodes: Sequence[Mapping[str, Any]],
                view: MeshView | None = None) -> str:
    """The URL of the ingress gateway's Service, as a client outside the cluster reaches it.

    MeshError, saying what to give instead (``--ingress URL``), when the Service
    is missing, has no HTTP port, or is reachable only inside the cluster."""
    where = f"{INGRESS_NAMESPACE}/{INGRESS_SERVICE}"
    if service is None:
        raise MeshError(
            f"no ingress gateway found: the Service {where} does not exist (is Istio's ingress gateway "
            "installed?); give --ingress http://HOST:PORT"
        )
    spec, status = service.get("spec") or {}, service.get("status") or {}
    ports = [p for p in spec.get("ports") or () if isinstance(p, Mapping)]
    wanted = _gateway_ports(view) if view is not None else []
    port = (next((p for p in ports if p.get("port") in wanted), None)
            or next((p for p in ports if p.get("name") == "http2"), None)
            or next((p for p in ports if p.get("name") == "http"), None))
    if port is None:
        raise MeshError(f"the ingress gateway's Service {where} has no HTTP port (looked for "
                        f"{', '.join(map(str, wanted)) or 'the Gateway port'}, then http2, http); give --ingress URL")
    kind = spec.get("type", "ClusterIP")
    if kind == "LoadBalancer":
        for entry in (status.get("loadBalancer") or {}).get("ingress") or ():
            host = entry.get("ip") or entry.get("hostname")
            if host:
                return _url(str(host), int(port["port"]))
    if kind in ("LoadBalancer", "NodePort") and port.get("nodePort"):
        address = _node_address(nodes)
        if address:
            return _url(address, int(port["nodePort"]))
    pending = " (its LoadBalancer has no address yet)" if kind == "LoadBalancer" else ""
    raise MeshError(
        f"the ingress gateway's Service {where} is a {kind}{pending} with no address reachable from "
        f"here; give --ingress http://HOST:PORT (e.g. `kubectl -n {INGRESS_NAMESPACE} port-forward "
        f"svc/{INGRESS_SERVICE} 8080:{port.get('port')}` and --ingress http://127.0.0.1:8080)"
    )


def _node_address(nodes: Sequence[Mapping[str, Any]]) -> str | None:
    """A ready node's external address, else its internal one."""
    ready = [n for n in nodes if any(c.get("type") == "Ready" and c.get("status") == "True"
                                     for c in (n.get("status") or {}).get("conditions") or ())]
    for wanted in ("ExternalIP", "InternalIP"):
        for node in ready or nodes:
            for address in (node.get("status") or {}).get("addresses") or ():
                if address.get("type") == wanted and address.get("address"):
                    return str(address["address"])
    return None


def _url(host: str, port: int) -> str:
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}" if port == 80 else f"http://{host}:{port}"
