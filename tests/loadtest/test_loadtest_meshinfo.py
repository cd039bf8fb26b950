"""loadtest.meshinfo.model_metadata: each subset's model from TF Serving's metadata and canary's own record."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from loadtest.meshinfo import model_metadata

METADATA = {
    "model_spec": {"name": "resnet", "signature_name": "", "version": "7"},
    "metadata": {"signature_def": {"signature_def": {}}},
}
RECORD = {"model_spec": METADATA["model_spec"], "canary_model": {"architecture": "ResNet50", "weights": "seeded"}}


def serve(routes: dict[str, tuple[int, Any]]) -> ThreadingHTTPServer:
    """A server answering GET ``path`` with ``routes[path]`` (JSON), else 404 as TF Serving does."""

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            status, doc = routes.get(self.path, (404, {"error": "Malformed request: GET " + self.path}))
            body = json.dumps(doc).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture
def servers() -> Iterator[dict[str, str]]:
    ours = serve({"/v1/models/resnet/metadata": (200, METADATA), "/canary/v1/models/resnet": (200, RECORD)})
    tf_serving = serve({"/v1/models/resnet/metadata": (200, METADATA)})  # no canary path: real TF Serving
    broken = serve({})
    started = [ours, tf_serving, broken]
    try:
        yield {
            name: f"http://127.0.0.1:{server.server_address[1]}"
            for name, server in zip(("ours", "tf_serving", "broken"), started, strict=True)
        }
    finally:
        for server in started:
            server.shutdown()
            server.server_close()


def test_model_records_from_our_server_and_from_tf_serving(servers: dict[str, str]) -> None:
    found = model_metadata({name: {"rest": url} for name, url in servers.items()} | {"grpc_only": {}}, "resnet")
    assert set(found) == {"ours", "tf_serving", "broken"}
    assert found["ours"].version == 7 and found["ours"].error is None
    assert found["ours"].canary_model == RECORD["canary_model"]
    assert found["tf_serving"].version == 7 and found["tf_serving"].error is None
    assert found["tf_serving"].canary_model is None  # no record, and no error: TF Serving has no such path
    assert found["broken"].error == "OSError: HTTP 404" and found["broken"].version is None
