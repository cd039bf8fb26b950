"""Pods' port-forward on the fake API server: ``GET .../pods/{name}/portforward?ports=N`` upgraded
to a websocket speaking ``v4.channel.k8s.io``, as the API server and the kubelet do.

:class:`FakePortForward` hooks itself on a :class:`~tests.mesh.fake_apiserver.FakeApiServer`
(its ``websocket_handler``) and maps ``(namespace, pod)`` to a real loopback address.
Per stream it dials that address, sends the two initial frames the protocol
starts with (channel 0 for data, 1 for errors, each the port as 2 little-endian
bytes), then pumps channel-0 frames to the pod's socket and back. When the pod's
server closes the connection the websocket is closed; when it cannot be dialled,
the error channel says so as the kubelet does and the websocket is closed. An
unknown pod gets the API server's 404 ``Status``, and :meth:`FakePortForward.forbid`
makes it answer 403. The framing is ``wsproto``'s; the handshake is answered here.
"""

from __future__ import annotations

import contextlib
import json
import re
import selectors
import socket
import ssl
import threading
import time
from http.server import BaseHTTPRequestHandler
from urllib.parse import parse_qs, urlsplit

from wsproto.connection import Connection, ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping
from wsproto.utilities import generate_accept_token

from tests.mesh.fake_apiserver import FakeApiServer, _status

__all__ = ["PROTOCOL", "FakePortForward"]

PROTOCOL = "v4.channel.k8s.io"
LIFETIME = 30.0  # seconds a stream may live at most (no test waits on one that long)
_PATH = re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<pod>[^/]+)/portforward$")


class FakePortForward:
    def __init__(self, api: FakeApiServer) -> None:
        self.pods: dict[tuple[str, str], tuple[str, int] | dict[int, tuple[str, int]]] = {}
        self.streams = 0  # websocket streams accepted
        self.forbidden: str | None = None
        self.close_delay = 0.0  # seconds before answering the client's close (a slow server)
        self._lock = threading.Lock()
        api.websocket_handler = self.serve

    def add_pod(self, namespace: str, name: str,
                address: tuple[str, int] | dict[int, tuple[str, int]]) -> None:
        """Forwards to ``name`` reach ``address`` (whatever port was asked for), or with
        ``{port: address}`` each of the pod's ports its own (another port refuses)."""
        self.pods[(namespace, name)] = address

    def forbid(self, user: str = "alice") -> None:
        """Refuse every port-forward as RBAC does without ``create pods/portforward``."""
        self.forbidden = user

    def serve(self, handler: BaseHTTPRequestHandler) -> None:
        url = urlsplit(handler.path)
        match = _PATH.match(url.path)
        ports = parse_qs(url.query).get("ports", [""])[0]
        if match is None or not ports.isdigit():
            return _answer(handler, 400, "BadRequest", "a port-forward needs ?ports=N")
        ns, pod, port = match["ns"], match["pod"], int(ports)
        if self.forbidden is not None:
            return _answer(
                handler, 403, "Forbidden",
                f'pods "{pod}" is forbidden: User "{self.forbidden}" cannot create resource '
                f'"pods/portforward" in API group "" in the namespace "{ns}"',
            )
        address = self.pods.get((ns, pod))
        if isinstance(address, dict):
            address = address.get(port, ("127.0.0.1", 1))  # a port the pod does not listen on refuses
        if address is None:
            return _answer(handler, 404, "NotFound", f'pods "{pod}" not found')
        offered = [p.strip() for p in handler.headers.get("Sec-WebSocket-Protocol", "").split(",")]
        if PROTOCOL not in offered:
            return _answer(handler, 400, "BadRequest", f"no {PROTOCOL} subprotocol offered")
        key = handler.headers["Sec-WebSocket-Key"]
        handler.connection.sendall(
            (
                "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Accept: {generate_accept_token(key.encode()).decode()}\r\n"
                f"Sec-WebSocket-Protocol: {PROTOCOL}\r\n\r\n"
            ).encode()
        )
        with self._lock:
            self.streams += 1
        with contextlib.suppress(OSError):  # the client went away
            _Stream(self, handler.connection, port, pod, address).run()


def _answer(handler: BaseHTTPRequestHandler, code: int, reason: str, message: str) -> None:
    data = json.dumps(_status(code, reason, message)).encode()
    handler.send_response(code)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


class _Stream:
    def __init__(
        self, owner: FakePortForward, conn: socket.socket, port: int, pod: str,
        address: tuple[str, int],
    ) -> None:
        self.owner, self.conn, self.port, self.pod, self.address = owner, conn, port, pod, address
        self.ws = Connection(ConnectionType.SERVER)
        self.channel: int | None = None  # of the message being received (None: at its start)

    def send(self, channel: int, data: bytes) -> None:
        self.conn.sendall(self.ws.send(BytesMessage(data=bytes([channel]) + data)))

    def run(self) -> None:
        port = self.port.to_bytes(2, "little")
        self.send(0, port)
        self.send(1, port)
        try:
            backend = socket.create_connection(self.address, timeout=2)
        except OSError as exc:  # as the kubelet says it
            self.send(1, (
                f"error forwarding port {self.port} to pod {self.pod}, uid : failed to connect "
                f"to localhost:{self.port} inside namespace: {exc}"
            ).encode())
            return self.close()
        with backend, selectors.DefaultSelector() as selector:
            backend.settimeout(None)
            for sock in (backend, self.conn):  # as the API server and the kubelet (Go) do
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            selector.register(self.conn, selectors.EVENT_READ)
            selector.register(backend, selectors.EVENT_READ)
            deadline = time.monotonic() + LIFETIME
            while time.monotonic() < deadline:
                for key, _ in selector.select(0.2):
                    if key.fileobj is backend:
                        data = backend.recv(65536)
                        if not data:  # the pod's server closed the connection
                            return self.close()
                        self.send(0, data)
                    elif not self.received(backend):
                        return None
        return self.close()

    def received(self, backend: socket.socket) -> bool:
        """Frames from the client; False once the websocket is closed."""
        data = self.conn.recv(65536)
        if not data:
            return False
        while isinstance(self.conn, ssl.SSLSocket) and self.conn.pending():  # select sees none
            data += self.conn.recv(self.conn.pending())
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, CloseConnection):
                time.sleep(self.owner.close_delay)
                self.conn.sendall(self.ws.send(event.response()))
                return False
            if isinstance(event, Ping):
                self.conn.sendall(self.ws.send(event.response()))
            elif isinstance(event, BytesMessage):
                chunk = bytes(event.data)
                if self.channel is None:
                    self.channel, chunk = chunk[0], chunk[1:]
                if self.channel == 0:
                    backend.sendall(chunk)
                if event.message_finished:
                    self.channel = None
        return True

    def close(self) -> None:
        """Close the websocket and wait (briefly) for the client's answer."""
        self.conn.sendall(self.ws.send(CloseConnection(code=1000)))
        self.conn.settimeout(2)
        try:
            while data := self.conn.recv(65536):
                self.ws.receive_data(data)
                if any(isinstance(e, CloseConnection) for e in self.ws.events()):
                    break
        except OSError:
            pass
