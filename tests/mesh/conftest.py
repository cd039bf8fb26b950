"""Fixtures for the mesh tests: a fake Kubernetes API server on loopback, and the kube
backend connected to it through a kubeconfig, as ``canary mesh apply --kube`` is."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mesh.kube import KubeMesh, connect
from tests.mesh.fake_apiserver import FakeApiServer


@pytest.fixture
def api_server() -> Iterator[FakeApiServer]:
    """A fake API server started for the test (port 0, in a thread) and stopped after it."""
    server = FakeApiServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def kube_mesh(api_server: FakeApiServer, tmp_path: Path) -> KubeMesh:
    """The kube backend on the official client, connected through a kubeconfig in tmp_path
    (discovery cached there too, never in the shared temporary directory); its rollout
    waits run on a fake clock."""
    config = api_server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
    api = connect("fake", config_file=config, discovery_cache=tmp_path / "discovery.json")
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    return KubeMesh(api, clock=lambda: now[0], sleep=sleep)
