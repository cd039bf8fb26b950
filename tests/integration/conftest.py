"""A local mesh with tiny models, shared by the integration tests of one module."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.api import default_manifests, mesh_down, mesh_up
from mesh.local import procs
from tests.integration.meshkit import RunningMesh


@pytest.fixture(scope="session")
def tiny_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Tiny models exported once per session, linked into each mesh home."""
    from serving.export import ensure_models

    store = tmp_path_factory.mktemp("store") / "tiny"
    ensure_models(store, tiny=True)
    return store


@pytest.fixture(scope="module")
def mesh(tmp_path_factory: pytest.TempPathFactory, tiny_store: Path) -> Iterator[RunningMesh]:
    home = tmp_path_factory.mktemp("canary-home")
    (home / "models").mkdir()
    (home / "models" / "tiny").symlink_to(tiny_store)
    state = mesh_up([default_manifests("base")], tiny=True, port=procs.free_port(), home=home)
    running = RunningMesh(home, state)
    try:
        yield running
    finally:
        mesh_down(home=home)
