"""Shared fixtures: tiny models exported once, and one real server subprocess."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.seed import SEED

REPO = Path(__file__).resolve().parents[2]
GRACE_HOPPER = SEED / "grace_hopper.jpg" if (SEED / "grace_hopper.jpg").exists() else REPO / "payloads" / "images" / "grace_hopper.jpg"
MODEL_NAME = "image_classifier"


@dataclass(frozen=True)
class RunningServer:
    """A ``python -m serving.server`` subprocess on loopback."""

    process: subprocess.Popen[bytes]
    grpc_port: int
    rest_port: int
    log: Path

    @property
    def rest(self) -> str:
        return f"http://127.0.0.1:{self.rest_port}"

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"


def http_call(server: RunningServer, method: str, path: str, body: bytes | None = None) -> tuple[int, Any]:
    """``method path`` on the server's REST port: the HTTP status and the answer (JSON parsed, else text)."""
    request = urllib.request.Request(server.rest + path, data=body, method=method)
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, raw, kind = response.status, response.read(), response.headers.get_content_type()
    except urllib.error.HTTPError as error:
        status, raw, kind = error.code, error.read(), error.headers.get_content_type()
    return status, (json.loads(raw) if kind == "application/json" else raw.decode())


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def start_server(args: list[str], env: dict[str, str], log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [sys.executable, "-m", "serving.server", *args],
            cwd=REPO,
            env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **env},
            stdout=sink,
            stderr=subprocess.STDOUT,
        )


def wait_for_port(process: subprocess.Popen[bytes], port: int, log: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"server exited with {process.returncode}:\n{log.read_text()}")
        if port_open(port):
            return
        time.sleep(0.05)
    raise AssertionError(f"server not ready after {timeout} s:\n{log.read_text()}")


@contextlib.contextmanager
def serving(flags: list[str], env: dict[str, str], log: Path) -> Iterator[RunningServer]:
    """A server with ``flags`` (which must give ``--port=`` and ``--rest_api_port=``), until the block
    ends: then SIGTERM, and SIGKILL when it outlives 30 s. The caller checks its exit."""
    ports = {f.split("=", 1)[0]: int(f.split("=", 1)[1]) for f in flags if f.startswith(("--port=", "--rest_api_port="))}
    process = start_server(flags, env, log)
    try:
        wait_for_port(process, ports["--port"], log)
        yield RunningServer(process, ports["--port"], ports["--rest_api_port"], log)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


@pytest.fixture(scope="session")
def serving_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model store with the tiny resnet50 and resnet101, exported once per session."""
    from serving.export import ensure_models

    store = tmp_path_factory.mktemp("serving-store")
    ensure_models(store, tiny=True)
    return store


@pytest.fixture(scope="session")
def server(serving_store: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningServer]:
    """The tiny resnet50 served as the manifests run it: container paths mapped by CANARY_VOLUME_MAP."""
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path_factory.mktemp("server") / "server.log"
    flags = [
        f"--model_name={MODEL_NAME}",
        "--model_base_path=/models/resnet50",
        "--port=8500",
        "--rest_api_port=8501",
        f"--port={grpc_port}",  # appended overrides win, as the local mesh relies on
        f"--rest_api_port={rest_port}",
    ]
    with serving(flags, {"CANARY_VOLUME_MAP": json.dumps({"/models": str(serving_store)})}, log) as running:
        yield running
    process = running.process
    assert process.returncode == 0, f"server did not shut down cleanly:\n{log.read_text()}"


@pytest.fixture(scope="session")
def half_plus_two_store(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """TF Serving's half_plus_two, exported once per session: ``<store>/half_plus_two`` holds the tf1-style
    versions 00000123 (b=2) and 00000124 (b=3); ``<store>/half_plus_two_tf2/00000123`` the tf2 style (b=2)."""
    from tests.serving.half_plus_two import export_half_plus_two

    store = tmp_path_factory.mktemp("half-plus-two")
    export_half_plus_two(store / "half_plus_two", versions=("00000123", "00000124"), b=(2.0, 3.0))
    export_half_plus_two(store / "half_plus_two_tf2", style="tf2")
    return store


from tests.serving.tfs_compat_kit import classic, configured, servers  # noqa: E402,F401  (session fixtures)
