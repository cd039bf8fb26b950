"""A fake Prometheus for tests: its HTTP API on loopback, and behind the fake API server's
service proxy.

:class:`FakePrometheus` answers ``GET /api/v1/query`` with a canned JSON body
(and status), recording each query's parameters. :class:`ProxyingApiServer` is
the fake API server (:mod:`tests.mesh.fake_apiserver`) that also serves the
service proxy of one Service
(``/api/v1/namespaces/{ns}/services/{name}:{port}/proxy/api/v1/query``) with the
same kind of canned answer, after the server's own token and failure checks.
"""

from __future__ import annotations

import http.server
import json
import threading
import urllib.parse
from typing import Any

from tests.mesh.fake_apiserver import FakeApiServer

__all__ = ["FakePrometheus", "ProxyingApiServer", "sample", "vector", "vector_by_version"]


def sample(labels: dict[str, str], value: float | str) -> dict[str, Any]:
    return {"metric": labels, "value": [1769860800.0, str(value)]}


def vector(samples: list[dict[str, Any]]) -> dict[str, Any]:
    """An ``/api/v1/query`` answer holding an instant vector."""
    return {"status": "success", "data": {"resultType": "vector", "result": samples}}


def vector_by_version(values: dict[str, float]) -> dict[str, Any]:
    return vector([sample({"destination_version": k}, v) for k, v in values.items()])


class FakePrometheus:
    """A tiny HTTP server on 127.0.0.1 answering /api/v1/query with ``body`` and ``code``."""

    def __init__(self, body: dict[str, Any] | None = None) -> None:
        self.body: Any = body if body is not None else vector([])
        self.code = 200
        self.queries: list[dict[str, list[str]]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                outer.queries.append(urllib.parse.parse_qs(url.query))
                body = outer.body
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(outer.code if url.path == "/api/v1/query" else 404)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


class ProxyingApiServer(FakeApiServer):
    """The fake API server, also proxying to a canned Prometheus behind one Service."""

    def __init__(self, *args: Any, namespace: str = "istio-system", service: str = "prometheus",
                 port: int = 9090, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.proxy_path = f"/api/v1/namespaces/{namespace}/services/{service}:{port}/proxy/api/v1/query"
        self.prometheus_body: Any = vector([])
        self.prometheus_code = 200

    def add_service(self, namespace: str, name: str, ports: list[dict[str, Any]]) -> None:
        """Store the Service ``namespace/name`` (and its namespace) as an apply would."""
        self.add_namespace(namespace)
        body = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name},
                "spec": {"selector": {"app": name}, "ports": ports}}
        self.objects[("", "services", namespace, name)] = self._stored(body, None, namespace)

    def _route(
        self, method: str, path: str, query: dict[str, list[str]], content_type: str, body: Any
    ) -> tuple[int, Any]:
        if method == "GET" and path == self.proxy_path:
            return self.prometheus_code, self.prometheus_body
        return super()._route(method, path, query, content_type, body)
