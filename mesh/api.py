"""The mesh operations the CLI calls, one function per command."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from mesh.kube import KubeApplyResult, KubeMesh, connect
from mesh.local.backend import ApplyResult, LocalMesh, MeshStatus, Progress, no_progress
from mesh.local.state import MeshHome, MeshState, canary_home

__all__ = [
    "default_manifests",
    "kube_apply",
    "mesh_apply",
    "mesh_down",
    "mesh_status",
    "mesh_up",
    "model_store",
]

PROJECT_ROOT = Path(__file__).resolve().parents[1]


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
    """Export the models if needed, start the mesh with ``manifests`` and wait until it is ready."""
    from serving.export import ensure_models

    store = model_store(tiny, home)
    progress(f"model store {store} ({'tiny test models' if tiny else 'ResNet50 + ResNet101'})")
    ensure_models(store, tiny=tiny, weights_dir=weights_dir)
    mesh = LocalMesh(MeshHome(home), progress)
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
