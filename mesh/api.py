"""The mesh's public surface: one function per command, and the queries the layers above ask.

Commands: :func:`mesh_up`, :func:`mesh_apply`, :func:`kube_apply`,
:func:`mesh_status`, :func:`mesh_down`. Queries, backend-neutral:
:func:`snapshot` gives a :class:`MeshSnapshot` (the ingress, the applied
manifests, the mesh's own request counters per subset, and a
:class:`~mesh.query.MeshView` answering which subsets there are and which
endpoints serve each). The load test and the verifier ask these and never
reach into a backend.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from canary.conventions import canary_home, utc_now
from mesh.counters import counters_reset
from mesh.kube import DynamicApi, KubeApplyResult, KubeMesh, connect
from mesh.kube_status import KubeStatus
from mesh.local.backend import ApplyResult, LocalMesh, MeshStatus, Progress, no_progress
from mesh.local.state import ROUTING_KINDS, AppliedVersion, MeshHome, MeshState, routing_documents
from mesh.query import MeshView, SubsetEndpoint, SubsetServers
from mesh.target import KubeTarget

__all__ = [
    "ROUTING_KINDS",
    "AppliedVersion",
    "KubeStatus",
    "KubeTarget",
    "MeshSnapshot",
    "MeshView",
    "SubsetEndpoint",
    "SubsetServers",
    "counters_reset",
    "default_manifests",
    "kube_apply",
    "kube_apply_documents",
    "kube_delete",
    "kube_pods",
    "kube_port_forward",
    "kube_status",
    "mesh_apply",
    "mesh_down",
    "mesh_status",
    "mesh_up",
    "model_store",
    "reachable_servers",
    "resolved_context",
    "routing_versions",
    "snapshot",
]


@dataclass(frozen=True)
class MeshSnapshot:
    """The mesh as a client finds it: where to send traffic, what is applied, what it counted."""

    backend: str  # "local" or "kube"
    home: str  # where the local mesh keeps its state ("" on a cluster)
    ingress_url: str
    view: MeshView
    applied: tuple[dict[str, Any], ...]  # each applied manifest file: path, sha256, objects
    # subset ("": no subset) -> the mesh's own request counts (SubsetCounters.to_dict(): with
    # by_cluster, whose histogram counts tell a reset of the counters, see counters_reset)
    counters: dict[str, dict[str, Any]]
    running: bool  # the ingress (Envoy) is up
    version: int = 0  # the configuration version live now (each apply adds one)
    applied_at: str | None = None  # when that version was acknowledged by the ingress
    routing: tuple[dict[str, Any], ...] = ()  # {"source", "document"} of each routing object live now
    taken_at: str = ""  # when this snapshot was read (ISO 8601 UTC)
    kube: KubeTarget | None = None  # the cluster, on a cluster
    counters_from: str = "envoy"  # whose counts: "envoy", "prometheus <where>", "" (none on a cluster)


def _kube_snapshot(target: KubeTarget, api: DynamicApi | None = None, *,
                   need_ingress: bool = True) -> tuple[MeshSnapshot, list[str]]:
    """The cluster's namespace as a snapshot, and what is missing from it: why no ingress was
    found (when not needed), why there are no counts."""
    from mesh.kube_counts import cluster_counters
    from mesh.kube_query import read_cluster

    api = api or connect(target.context)
    target = replace(target, context=_named_context(api))  # recorded by name: the current one may change
    reading = read_cluster(api, target, need_ingress=need_ingress)
    counters, source, no_counts = cluster_counters(api, target, reading.view)
    return MeshSnapshot(
        backend="kube", home="", ingress_url=reading.ingress_url, view=reading.view, applied=(),
        counters=counters, running=True, applied_at=reading.applied_at, routing=reading.routing,
        taken_at=utc_now(), kube=target, counters_from=source,
    ), [p for p in (reading.ingress_problem, no_counts) if p]


def _named_context(api: DynamicApi) -> str | None:
    """The kubeconfig context ``api`` was reached by; None in a pod (its service account)."""
    from mesh.kube_client import IN_CLUSTER

    name = api.target.context
    return None if name == IN_CLUSTER else name


def resolved_context(target: KubeTarget) -> str | None:
    """The context ``target`` reaches its cluster by (the kubeconfig's current one when it names
    none); None in a pod."""
    return _named_context(connect(target.context))


def snapshot(*, home: Path | None = None, kube: KubeTarget | None = None,
             need_ingress: bool = True) -> MeshSnapshot:
    """The running local mesh now (:class:`~canary.errors.MeshNotRunningError` when none
    runs), or with ``kube`` the cluster's namespace as its API server lists it (MeshError,
    one line, when it cannot be read; without ``need_ingress`` an ingress that cannot be found
    leaves ``ingress_url`` empty)."""
    if kube is not None:
        return _kube_snapshot(kube, need_ingress=need_ingress)[0]
    status = mesh_status(home=home)
    state = status.state
    live = next((h for h in reversed(state.history) if h.applied_at is not None), None)
    return MeshSnapshot(
        backend="local",
        home=str(MeshHome(home).root.parent),
        ingress_url=state.ingress_url,
        view=status.view,
        applied=tuple(asdict(a) for a in state.applied),
        counters={k or "": v.to_dict() for k, v in status.counters.items()},
        running=status.envoy_running,
        version=live.version if live else state.version,
        taken_at=utc_now(),
        applied_at=live.applied_at if live else None,
        routing=tuple(routing_documents(state.objects)),
    )

PROJECT_ROOT = Path(__file__).resolve().parents[1]


@contextmanager
def reachable_servers(mesh: MeshSnapshot, host: str | None = None, *,
                      allow_missing: bool = False) -> Iterator[SubsetServers]:
    """Each subset's own server, reachable from here while the block runs: on the local mesh
    its pods' loopback ports; on a cluster a port-forward (through the API server, as
    ``kubectl port-forward``) to one ready pod of each subset, closed when the block ends.
    See :meth:`~mesh.query.MeshView.subset_servers` for which pod and port."""
    if mesh.kube is None:
        yield mesh.view.subset_servers(host, allow_missing=allow_missing)
        return
    from mesh.portforward import PortForwards

    endpoints = mesh.view.subset_endpoints(host, allow_missing=allow_missing)
    with PortForwards(connect(mesh.kube.context)) as forwards:
        servers: SubsetServers = {}
        for subset, found in endpoints.items():
            servers[subset] = {}
            for kind, endpoint in found.items():
                namespace, pod = endpoint.pod.split("/", 1)
                local = forwards.open(namespace, pod, endpoint.port)
                servers[subset][kind] = local if endpoint.grpc else f"http://{local}"
        yield servers


def routing_versions(*, home: Path | None = None) -> list[AppliedVersion]:
    """Every configuration version the local mesh has pushed, oldest first, each with its
    push start, acknowledgement (None while pending or failed) and routing. Reads the state
    file only (no Envoy query), so a load test can poll it; a pending version is listed from
    the moment its push starts. :class:`~canary.errors.MeshNotRunningError` when no mesh runs."""
    return list(MeshHome(home).load().history)


def default_manifests(*parts: str) -> Path:
    """``manifests/<parts>`` of the working directory, else of the project checkout."""
    local = Path("manifests", *parts)
    return local if local.exists() else PROJECT_ROOT.joinpath("manifests", *parts)


def model_store(tiny: bool, home: Path | None = None) -> Path:
    """The local model store the mesh maps the model-store volume to."""
    return (home or canary_home()) / "models" / ("tiny" if tiny else "full")


def mesh_up(
    manifests: Sequence[Path] = (),
    *,
    tiny: bool = False,
    port: int = 8080,
    weights_dir: Path | None = None,
    home: Path | None = None,
    progress: Progress = no_progress,
) -> MeshState:
    """Export the models if needed, start the mesh with ``manifests`` and wait until it is ready.
    A mesh already running on ``home`` (or a taken ``port``) is refused before any export."""
    from serving.export import ensure_models

    mesh = LocalMesh(MeshHome(home), progress)
    mesh.check_can_start(port)
    store = model_store(tiny, home)
    progress(f"model store {store} ({'tiny test models' if tiny else 'ResNet50 + ResNet101'})")
    ensure_models(store, tiny=tiny, weights_dir=weights_dir)
    return mesh.up(list(manifests) or [default_manifests("base")], store=store, tiny=tiny, port=port)


def mesh_apply(manifests: Sequence[Path], *, home: Path | None = None, progress: Progress = no_progress) -> ApplyResult:
    return LocalMesh(MeshHome(home), progress).apply(manifests)


def kube_apply(manifests: Sequence[Path], *, context: str | None = None) -> KubeApplyResult:
    """Server-side apply to the cluster of the kubeconfig's (or the given) context."""
    return KubeMesh(connect(context)).apply(manifests)


def kube_apply_documents(documents: Sequence[dict[str, Any]], source: str, *,
                         context: str | None = None) -> KubeApplyResult:
    """:func:`kube_apply` of documents made in memory (``source`` names them in messages)."""
    return KubeMesh(connect(context)).apply_documents(documents, source)


def kube_delete(target: KubeTarget, api_version: str, kind: str, name: str) -> bool:
    """Delete one object of the target's namespace (False: there was none)."""
    return KubeMesh(connect(target.context)).delete(api_version, kind, target.namespace, name)


def kube_pods(target: KubeTarget, selector: dict[str, str]) -> list[dict[str, Any]]:
    """The pods of the target's namespace whose labels hold ``selector``."""
    return KubeMesh(connect(target.context)).pods(target.namespace, selector)


@contextmanager
def kube_port_forward(target: KubeTarget, pod: str, port: int) -> Iterator[str]:
    """``127.0.0.1:PORT`` forwarded to ``port`` of ``pod`` while the block runs."""
    from mesh.portforward import PortForwards

    with PortForwards(connect(target.context)) as forwards:
        yield forwards.open(target.namespace, pod, port)


def kube_status(target: KubeTarget) -> KubeStatus:
    """``canary mesh status --kube``: the namespace, its pods by subset, the ingress, the counts."""
    api = connect(target.context)
    mesh, problems = _kube_snapshot(target, api, need_ingress=False)
    return KubeStatus(context=api.target.context, server=api.target.redact(api.target.server),
                      namespace=target.namespace, ingress_url=mesh.ingress_url, problems=tuple(problems),
                      view=mesh.view, counters=mesh.counters, counters_from=mesh.counters_from)


def mesh_status(*, home: Path | None = None) -> MeshStatus:
    return LocalMesh(MeshHome(home)).status()


def mesh_down(*, home: Path | None = None) -> list[str]:
    return LocalMesh(MeshHome(home)).down()
