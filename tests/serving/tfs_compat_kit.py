"""TF Serving compatibility kit: the servers and helpers of test_serving_tfs_compat_rest/_grpc.

The exchanges TF Serving documents, replayed against our server.

Each expectation comes from TF Serving's own documentation and tests, not from our implementation:
``g3doc/api_rest.md`` and ``g3doc/docker.md`` (REST: ``{"instances": [1.0, 2.0, 5.0]}`` ->
``{"predictions": [2.5, 3.0, 4.5]}``, status and metadata answers, ``{"error": ...}`` bodies),
``g3doc/serving_config.md`` (model config file, version policies, version labels),
``model_servers/tensorflow_model_server_test.py`` (gRPC Predict/Classify/Regress/MultiInference/
GetModelMetadata/GetModelStatus on half_plus_two, REST classify/regress ``{"results": ...}``), and
the error texts and HTTP statuses of TF Serving's sources (``Servable not found for request:
Latest(half)`` -> 404, ``JSON Parse error: ...`` -> 400, NOT_FOUND -> 404, INVALID_ARGUMENT and
FAILED_PRECONDITION -> 400).

Two servers run for the whole session (fixtures here, registered in conftest.py), started together:

* ``classic``: ``--model_name=half_plus_two --model_base_path=<one version, 00000123, b=2>``, TF
  Serving's documented example.
* ``configured``: ``--model_config_file`` in TF Serving's text format serving ``half_plus_two``
  (versions 123 with b=2 and 124 with b=3, a ``specific`` version policy and labels ``stable`` ->
  123, ``canary`` -> 124), ``half_plus_two_latest`` (the same two versions under the default
  policy, which serves only the newest) and ``half_plus_two_tf2`` (a TF2 ``tf.Module`` export);
  with ``--allow_version_labels_for_unavailable_models=true`` (TF Serving assigns a starting
  config's labels before it loads anything), ``--enable_serialization_as_tensor_content=true`` and
  TF Serving flags this server accepts and ignores.

Error messages are compared by prefix: TF Serving's text first, then, if anything, this server's
advice on what to do.
"""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from tensorflow_serving.apis import (
    get_model_status_pb2,
)

from tests.serving.conftest import RunningServer, free_port, http_call, start_server, wait_for_port

RPC_TIMEOUT = 20.0
HTTP_TIMEOUT = 20.0
NAME = "half_plus_two"
SIGNATURE_KEYS = {
    "serving_default",
    "classify_x_to_y",
    "regress_x_to_y",
    "regress_x_to_y2",
    "regress_x2_to_y3",
}
AVAILABLE = get_model_status_pb2.ModelVersionStatus.State.AVAILABLE


Server = RunningServer  # the conftest's server subprocess


@dataclass(frozen=True)
class Servers:
    """Both servers, started together (so that they load meanwhile); each fixture below awaits its own."""

    classic: Server
    configured: Server
    store: Path
    config_text: str


def config_text(store: Path) -> str:
    """A ModelServerConfig in TF Serving's text format (g3doc/serving_config.md)."""
    return f"""
model_config_list {{
  config {{
    name: "half_plus_two"
    base_path: "{store / "half_plus_two"}"
    model_platform: "tensorflow"
    model_version_policy {{
      specific {{
        versions: 123
        versions: 124
      }}
    }}
    version_labels {{
      key: "stable"
      value: 123
    }}
    version_labels {{
      key: "canary"
      value: 124
    }}
  }}
  config {{
    name: "half_plus_two_latest"
    base_path: "{store / "half_plus_two"}"
    model_platform: "tensorflow"
  }}
  config {{
    name: "half_plus_two_tf2"
    base_path: "{store / "half_plus_two_tf2"}"
    model_platform: "tensorflow"
  }}
}}
"""


def version_dir(base: Path, version: int) -> Path:
    """The directory of ``version`` under ``base`` (TF Serving's test data names it 00000123)."""
    return next(
        path for path in base.iterdir() if path.name.isdigit() and int(path.name) == version
    )


@pytest.fixture(scope="session")
def servers(
    half_plus_two_store: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Servers]:
    work = tmp_path_factory.mktemp("tfs-compat")
    one_version = work / "half_plus_two_one"
    first = version_dir(half_plus_two_store / NAME, 123)
    shutil.copytree(first, one_version / first.name)
    config = config_text(half_plus_two_store)
    (work / "models.config").write_text(config)
    flags = [
        [f"--model_name={NAME}", f"--model_base_path={one_version}"],
        [
            f"--model_config_file={work / 'models.config'}",
            # TF Serving assigns labels before it loads anything: labels in the config a server
            # starts with need this flag (serving_config.md; server_core.cc UpdateModelVersionLabelMap).
            "--allow_version_labels_for_unavailable_models=true",
            "--enable_serialization_as_tensor_content=true",
            "--enable_per_model_batching_parameters",
            "--num_request_iterations_for_warmup=1",
            "--xla_gpu_compilation_enabled=false",
            "--rest_api_timeout_in_ms=5000",
            "--grpc_channel_arguments=grpc.so_reuseaddr=1",
        ],
    ]
    started: list[Server] = []
    try:
        for index, extra in enumerate(flags):
            grpc_port, rest_port, log = free_port(), free_port(), work / f"server{index}.log"
            process = start_server(
                [*extra, f"--port={grpc_port}", f"--rest_api_port={rest_port}"], {}, log
            )
            started.append(Server(process, grpc_port, rest_port, log))
        yield Servers(started[0], started[1], half_plus_two_store, config)
    finally:
        for server in started:
            if server.process.poll() is None:
                server.process.send_signal(signal.SIGTERM)
        for server in started:
            try:
                server.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                server.process.kill()
                server.process.wait()


@pytest.fixture(scope="session")
def classic(servers: Servers) -> Server:
    wait_for_port(
        servers.classic.process, servers.classic.grpc_port, servers.classic.log, timeout=90
    )
    return servers.classic


@pytest.fixture(scope="session")
def configured(servers: Servers) -> Server:
    wait_for_port(
        servers.configured.process, servers.configured.grpc_port, servers.configured.log, timeout=90
    )
    return servers.configured


def call(server: Server, path: str, body: object = None, *, raw: bytes | None = None) -> tuple[int, Any]:
    """GET (no body) or POST ``path``; the HTTP status and the JSON answer, errors included."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    status, answer = http_call(server, "GET" if data is None else "POST", path, data)
    assert not isinstance(answer, str), f"not JSON: {answer!r}"  # TF Serving answers JSON, errors too
    return status, answer


def error_of(answer: Any) -> str:
    """TF Serving answers every error as ``{"error": <message>}`` and nothing else."""
    assert isinstance(answer, dict) and set(answer) == {"error"}, answer
    message: str = answer["error"]
    return message


def assert_error(result: tuple[int, Any], status: int, text: str) -> None:
    """An error answer with TF Serving's HTTP status whose message starts with TF Serving's text
    (what follows, if anything, is this server's advice on what to do)."""
    code, answer = result
    message = error_of(answer)
    assert (code, message[: len(text)]) == (status, text), message


