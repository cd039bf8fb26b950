"""A server's life: hot swap to a new version, and a graceful SIGTERM mid-request."""

from __future__ import annotations

import json
import shutil
import signal
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from tests.serving.conftest import free_port, port_open, start_server, wait_for_port


def get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=30) as response:
        return json.loads(response.read())


def test_hot_swap_then_graceful_shutdown(tmp_path: Path, serving_store: Path) -> None:
    base = tmp_path / "models" / "m"
    shutil.copytree(serving_store / "resnet50" / "1", base / "1")
    grpc_port, rest_port = free_port(), free_port()
    log = tmp_path / "server.log"
    process = start_server(
        [
            "--model_name=m",
            f"--model_base_path={base}",
            f"--port={grpc_port}",
            f"--rest_api_port={rest_port}",
            "--file_system_poll_wait_seconds=1",
        ],
        {},
        log,
    )
    rest = f"http://127.0.0.1:{rest_port}"
    try:
        wait_for_port(process, grpc_port, log)
        assert port_open(rest_port)  # REST opens before gRPC
        assert get(f"{rest}/v1/models/m/metadata")["metadata"]["canary_model"]["seed"] == 50

        shutil.copytree(serving_store / "resnet101" / "1", base / "2")
        deadline = time.monotonic() + 30
        states: list[tuple[str, str]] = []
        while time.monotonic() < deadline:
            status = get(f"{rest}/v1/models/m")
            states = [(s["version"], s["state"]) for s in status["model_version_status"]]
            if states == [("2", "AVAILABLE"), ("1", "END")]:
                break
            time.sleep(0.1)
        assert states == [("2", "AVAILABLE"), ("1", "END")], log.read_text()
        metadata = get(f"{rest}/v1/models/m/metadata")
        assert metadata["model_spec"]["version"] == "2"
        assert metadata["metadata"]["canary_model"]["seed"] == 101

        # A slow request (8 photos' worth of JSON) is answered even though SIGTERM arrives meanwhile.
        images = np.random.default_rng(2).integers(0, 256, (8, 600, 512, 3))
        body = orjson.dumps({"instances": images}, option=orjson.OPT_SERIALIZE_NUMPY)
        answer: dict[str, Any] = {}

        def send() -> None:
            request = urllib.request.Request(f"{rest}/v1/models/m:predict", data=body)
            with urllib.request.urlopen(request, timeout=60) as response:
                answer["status"] = response.status
                answer["body"] = json.loads(response.read())

        sender = threading.Thread(target=send)
        sender.start()
        time.sleep(0.3)  # let the upload reach the server
        process.send_signal(signal.SIGTERM)
        sender.join(timeout=60)
        assert answer.get("status") == 200, log.read_text()
        assert np.asarray(answer["body"]["predictions"]).shape == (8, 1000)
        assert process.wait(timeout=30) == 0, log.read_text()
        assert not port_open(rest_port) and not port_open(grpc_port)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
