"""Port-forwarding to pods through the API server (mesh.portforward), over real HTTP and
websockets: the official client against the fake API server's port-forward endpoint
(tests/mesh/fake_portforward.py), which dials real servers on loopback (an echo server,
an HTTP/1.1 server, a gRPC server)."""

from __future__ import annotations

import http.client
import logging
import socket
import socketserver
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import grpc
import pytest

from canary.errors import MeshError
from mesh.kube import connect
from mesh.portforward import PortForwards
from tests.mesh.fake_apiserver import FakeApiServer, self_signed
from tests.mesh.fake_portforward import FakePortForward

NS, POD, PORT = "tf-serving", "resnet50-7d9f-abcde", 8501
OURS = ("canary-portforward", "Kubernetes port forward proxy")


class _Echo(socketserver.BaseRequestHandler):
    """Echoes what it gets; answers ``bye`` with ``bye`` and closes the connection."""

    def handle(self) -> None:
        while data := self.request.recv(65536):
            if data.startswith(b"bye"):
                self.request.sendall(b"bye\n")
                return
            self.request.sendall(data)


class _Http(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive

    def do_GET(self) -> None:
        body = f"{self.path} from {self.client_address[1]}".encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


def _serve(server: socketserver.BaseServer) -> Iterator[tuple[str, int]]:
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        address: Any = server.server_address
        yield address[0], address[1]
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


@pytest.fixture
def echo_server() -> Iterator[tuple[str, int]]:
    server = socketserver.ThreadingTCPServer(("127.0.0.1", 0), _Echo)
    server.daemon_threads = True
    yield from _serve(server)


@pytest.fixture
def http_server() -> Iterator[tuple[str, int]]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Http)
    server.daemon_threads = True
    yield from _serve(server)


@pytest.fixture
def pods(api_server: FakeApiServer) -> FakePortForward:
    return FakePortForward(api_server)


@pytest.fixture
def forwards(api_server: FakeApiServer, pods: FakePortForward, tmp_path: Path) -> Iterator[PortForwards]:
    config = api_server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
    api: Any = connect("fake", config_file=config, discovery_cache=tmp_path / "discovery.json")
    with PortForwards(api) as opened:
        yield opened


def _threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith(OURS)]


def _address(local: str) -> tuple[str, int]:
    host, port = local.rsplit(":", 1)
    assert host == "127.0.0.1"
    return host, int(port)


def _get(conn: http.client.HTTPConnection, path: str) -> str:
    conn.request("GET", path)
    response = conn.getresponse()
    assert response.status == 200
    return response.read().decode()


def test_http_keep_alive_runs_over_one_stream(forwards, pods, http_server) -> None:
    pods.add_pod(NS, POD, http_server)
    host, port = _address(forwards.open(NS, POD, PORT))
    conn = http.client.HTTPConnection(host, port, timeout=2)
    try:
        answers = [_get(conn, f"/v1/models/resnet50/{i}") for i in range(3)]
    finally:
        conn.close()
    assert [a.split(" from ")[0] for a in answers] == [f"/v1/models/resnet50/{i}" for i in range(3)]
    assert len({a.split(" from ")[1] for a in answers}) == 1  # one connection to the pod
    assert pods.streams == 2  # the check in open(), then one for the local connection


def test_concurrent_connections_get_their_own_streams(forwards, pods, http_server) -> None:
    pods.add_pod(NS, POD, http_server)
    host, port = _address(forwards.open(NS, POD, PORT))

    def client(n: int) -> list[str]:
        conn = http.client.HTTPConnection(host, port, timeout=2)
        try:
            return [_get(conn, f"/client/{n}/{i}") for i in range(2)]
        finally:
            conn.close()

    with ThreadPoolExecutor(6) as pool:
        answers = list(pool.map(client, range(6)))
    for n, got in enumerate(answers):
        assert [a.split(" from ")[0] for a in got] == [f"/client/{n}/0", f"/client/{n}/1"]
    assert len({a.split(" from ")[1] for got in answers for a in got}) == 6
    assert pods.streams == 7


def test_grpc_runs_over_one_http2_connection(forwards, pods) -> None:
    def echo(request: bytes, context: Any) -> bytes:
        return request[::-1]

    server = grpc.server(ThreadPoolExecutor(2))
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(
        "canary.test.Echo", {"Reverse": grpc.unary_unary_rpc_method_handler(echo)}),))
    backend = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        pods.add_pod(NS, POD, ("127.0.0.1", backend))
        local = forwards.open(NS, POD, 8500)
        with grpc.insecure_channel(local, options=[("grpc.enable_http_proxy", 0)]) as channel:
            reverse = channel.unary_unary("/canary.test.Echo/Reverse")
            assert [reverse(f"call {i}".encode(), timeout=2) for i in range(3)] == [
                f"call {i}".encode()[::-1] for i in range(3)
            ]
    finally:
        server.stop(None)
    assert pods.streams == 2


def test_the_pods_server_closing_is_an_eof_here(forwards, pods, echo_server) -> None:
    pods.add_pod(NS, POD, echo_server)
    with socket.create_connection(_address(forwards.open(NS, POD, PORT)), timeout=2) as conn:
        conn.sendall(b"hello")
        assert conn.recv(100) == b"hello"
        conn.sendall(b"bye")
        got = b""
        while data := conn.recv(100):
            got += data
        assert got == b"bye\n"


def test_a_failing_stream_closes_its_connection_and_warns_once(
    forwards, pods, caplog: pytest.LogCaptureFixture
) -> None:
    listener = socket.create_server(("127.0.0.1", 0))  # the pod's port: open for the check
    pods.add_pod(NS, POD, listener.getsockname()[:2])
    local = _address(forwards.open(NS, POD, PORT))
    listener.close()  # then nothing listens there any more
    for _ in range(2):
        with socket.create_connection(local, timeout=2) as conn:
            conn.sendall(b"anyone?")
            assert conn.recv(100) == b""
    forwards.close()  # waits for every thread: the warnings are written
    warned = [r for r in caplog.records if r.name == "mesh.portforward"]
    assert len(warned) == 1, [r.getMessage() for r in warned]
    message = warned[0].getMessage()
    assert warned[0].levelno == logging.WARNING
    assert f'pod "{POD}" in namespace "{NS}"' in message
    assert "error forwarding port 8501" in message
    assert "\n" not in message


def test_an_unknown_pod_is_one_line_naming_it(forwards) -> None:
    with pytest.raises(MeshError) as caught:
        forwards.open(NS, "resnet50-gone", PORT)
    message = str(caught.value)
    assert f'pod "resnet50-gone" in namespace "{NS}"' in message
    assert 'pods "resnet50-gone" not found' in message
    assert f"kubectl --context fake -n {NS} get pod resnet50-gone" in message
    assert "\n" not in message and "fake-token" not in message


def test_a_forbidden_port_forward_names_the_permission(forwards, pods, echo_server) -> None:
    pods.add_pod(NS, POD, echo_server)
    pods.forbid()
    with pytest.raises(MeshError) as caught:
        forwards.open(NS, POD, PORT)
    message = str(caught.value)
    assert f'may not create pods/portforward in namespace "{NS}"' in message
    assert f"auth can-i create pods/portforward -n {NS}" in message
    assert "\n" not in message and "fake-token" not in message


def test_an_unreachable_api_server_is_one_line(forwards, api_server) -> None:
    api_server.stop()
    with pytest.raises(MeshError) as caught:
        forwards.open(NS, POD, PORT)
    message = str(caught.value)
    assert f"cannot reach the API server {api_server.url}" in message
    assert "refused" in message.lower() and "\n" not in message


def test_close_ends_connections_and_leaves_no_thread(forwards, pods, http_server) -> None:
    pods.add_pod(NS, POD, http_server)
    local = _address(forwards.open(NS, POD, PORT))
    pods.close_delay = 0.3  # each stream's proxy thread now lives on a while after it closes
    with socket.create_connection(local, timeout=2) as conn:
        conn.sendall(b"GET /idle HTTP/1.1\r\nHost: pod\r\n\r\n")
        assert conn.recv(1000).startswith(b"HTTP/1.1 200")
        forwards.close()
        while conn.recv(1000):  # what is left, then the end
            pass
    assert _threads() == []
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(local, timeout=2).close()


def test_a_handshake_that_never_ends_times_out(api_server, tmp_path) -> None:
    release = threading.Event()
    api_server.websocket_handler = lambda handler: release.wait(5)  # never answers the upgrade
    config = api_server.write_kubeconfig(tmp_path / "kubeconfig", "fake")
    api: Any = connect("fake", config_file=config, discovery_cache=tmp_path / "discovery.json")
    forwards = PortForwards(api, handshake_timeout=0.3)
    try:
        with pytest.raises(MeshError) as caught:
            forwards.open(NS, POD, PORT)
    finally:
        release.set()
        forwards.close()
    message = str(caught.value)
    assert "did not open the stream within 0.3 s" in message
    assert f'pod "{POD}" in namespace "{NS}"' in message and "\n" not in message
    assert _threads() == []


def test_through_an_https_api_server(tmp_path, http_server) -> None:
    cert, key = self_signed(tmp_path)
    server = FakeApiServer(tls=(cert, key))
    server.start()
    try:
        pods = FakePortForward(server)
        pods.add_pod(NS, POD, http_server)
        config = server.write_kubeconfig(tmp_path / "kubeconfig", "fake", ca=cert)
        api: Any = connect("fake", config_file=config, discovery_cache=tmp_path / "d.json")
        with PortForwards(api) as forwards:
            host, port = _address(forwards.open(NS, POD, PORT))
            conn = http.client.HTTPConnection(host, port, timeout=2)
            try:
                assert [_get(conn, f"/tls/{i}").split(" from ")[0] for i in range(3)] == [
                    f"/tls/{i}" for i in range(3)
                ]
            finally:
                conn.close()
    finally:
        server.stop()
