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

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from canary.conventions import canary_home, utc_now
from mesh.counters import counters_reset
from mesh.kube import KubeApplyResult, KubeMesh, connect
from mesh.local.backend import ApplyResult, LocalMesh, MeshStatus, Progress, no_progress
from mesh.local.state import ROUTING_KINDS, AppliedVersion, MeshHome, MeshState, routing_documents
from mesh.query import MeshView, SubsetEndpoint, SubsetServers

__all__ = [
    "ROUTING_KINDS",
    "AppliedVersion",
    "MeshSnapshot",
    "MeshView",
    "SubsetEndpoint",
    "SubsetServers",
    "counters_reset",
    "default_manifests",
    "kube_apply",
    "mesh_apply",
    "mesh_down",
    "mesh_status",
    "mesh_up",
    "model_store",
    "routing_versions",
    "snapshot",
]


@dataclass(frozen=True)
class MeshSnapshot:
    """The mesh as a client finds it: where to send traffic, what is applied, what it counted."""

    backend: str  # "local"
    home: str  # where the local mesh keeps its state
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


def snapshot(*, home: Path | None = None) -> MeshSnapshot:
    """The running local mesh now; :class:`~canary.errors.MeshNotRunningError` when none runs."""
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


def mesh_status(*, home: Path | None = None) -> MeshStatus:
    return LocalMesh(MeshHome(home)).status()


def mesh_down(*, home: Path | None = None) -> list[str]:
    return LocalMesh(MeshHome(home)).down()
