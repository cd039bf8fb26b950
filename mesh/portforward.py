"""Loopback ports forwarded to pods' ports through the API server, as ``kubectl port-forward``.

:meth:`PortForwards.open` listens on a free ``127.0.0.1`` port and gives each
connection its own stream (the official client's ``kubernetes.stream.portforward``,
``v4.channel.k8s.io``), pumped both ways until either side closes: HTTP keep-alive
and gRPC work through it. ``open`` opens and closes one stream first, so a missing
pod, a refused ``create pods/portforward`` or an unreachable API server is one
redacted MeshError line at once; a stream failing later closes its connection and
the error channel's text is logged once at WARNING, naming the pod.

The client's ``portforward`` swaps ``call_api`` on its ``ApiClient`` while it
connects (unsafe across threads): each stream gets its own ``ApiClient``. Its
websocket handshake has no timeout: it runs in a daemon thread waited on for
:data:`HANDSHAKE_TIMEOUT` s. Its per-stream proxy thread is not exposed: it is found
by its target, to be joined on close and watched. It has no half-close: the end of
the local side ends the stream. Import this module where a cluster is used.
"""

from __future__ import annotations

import contextlib
import logging
import select
import socket
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any, Protocol

from kubernetes import client as k8s
from kubernetes.stream import portforward

from canary.errors import MeshError
from mesh.kube_errors import Call, ClusterProblem, api_message
from mesh.kubeconfig import ClusterTarget

__all__ = ["CLOSE_TIMEOUT", "HANDSHAKE_TIMEOUT", "ForwardingApi", "PortForwards"]

log = logging.getLogger(__name__)

HANDSHAKE_TIMEOUT = 15.0  # seconds for the API server to upgrade a stream (it dials the kubelet)
CLOSE_TIMEOUT = 5.0  # seconds close() waits for all threads, together
POLL = 0.25  # seconds between looks at a closed forward, or at a stream's proxy thread
CHUNK = 64 * 1024


class ForwardingApi(Protocol):
    """What :class:`~mesh.kube_client.ClusterClient` offers (``mesh.kube.DynamicApi`` too)."""

    @property
    def client(self) -> Any: ...

    @property
    def target(self) -> ClusterTarget: ...

    def problem(self, exc: BaseException, call: Call) -> ClusterProblem | None: ...


@dataclass(frozen=True, eq=False)
class _Stream:
    """One port-forward stream: the client's ``PortForward`` and its proxy thread."""

    forward: Any  # kubernetes.stream.ws_client.PortForward
    proxy: threading.Thread | None
    port: int

    @property
    def pipe(self) -> Any:  # our end of the socketpair the proxy pumps to the websocket
        return self.forward.socket(self.port)

    def close(self, timeout: float = CLOSE_TIMEOUT) -> None:
        """End the stream (the proxy sees our end close), wait for the proxy, free our end."""
        _shutdown(self.pipe, socket.SHUT_WR)
        if self.proxy is not None:
            self.proxy.join(timeout)
            if not self.proxy.is_alive():  # the proxy leaves it open when the server closed first
                self.forward.websocket.shutdown()
        self.forward.close()


@dataclass(frozen=True, eq=False)
class _Link:
    """One accepted local connection and its stream."""

    conn: socket.socket
    stream: _Stream

    def upload(self) -> None:
        try:
            with contextlib.suppress(OSError):
                while data := self.conn.recv(CHUNK):
                    self.stream.pipe.sendall(data)
        finally:
            self.finish()

    def download(self) -> None:
        pipe = self.stream.pipe
        try:
            with contextlib.suppress(OSError):
                while True:
                    if not select.select([pipe], [], [], POLL)[0]:
                        if (proxy := self.stream.proxy) is None or proxy.is_alive():
                            continue
                        break  # the client's proxy thread died: nothing more comes
                    if not (data := pipe.recv(CHUNK)):
                        break
                    self.conn.sendall(data)
        finally:
            self.finish()

    def finish(self) -> None:
        """Wake both pumps: the local connection ends, the proxy sees our end close."""
        _shutdown(self.conn, socket.SHUT_RDWR)
        _shutdown(self.stream.pipe, socket.SHUT_WR)


def _close_late(late: Future[_Stream]) -> None:  # a stream that opened too late
    if late.exception() is None:
        late.result().close()


def _shutdown(sock: Any, how: int) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(how)


@dataclass(frozen=True)
class _Pod:
    namespace: str
    name: str
    port: int

    @property
    def thread(self) -> str:
        return f"canary-portforward {self.namespace}/{self.name}:{self.port}"

    @property
    def where(self) -> str:
        return f'cannot port-forward to pod "{self.name}" in namespace "{self.namespace}"'

    def check(self, target: ClusterTarget) -> str:
        return f"`kubectl --context {target.context} -n {self.namespace} get pod {self.name}`"


class PortForwards:
    """Loopback ports forwarded to pods' ports through the API server (``kubectl port-forward``)."""

    def __init__(self, api: ForwardingApi, *, handshake_timeout: float = HANDSHAKE_TIMEOUT) -> None:
        self._api = api
        self._handshake_timeout = handshake_timeout
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._links: set[_Link] = set()  # connections being pumped
        self._warned: set[str] = set()

    def open(self, namespace: str, pod: str, port: int) -> str:
        """``127.0.0.1:NNNNN``, forwarded to ``port`` of ``pod``; MeshError when the pod cannot
        be forwarded to (one stream is opened and closed first)."""
        to = _Pod(namespace, pod, port)
        if not 0 < port < 65536:
            raise MeshError(f"{to.where}: its port {port} is not a port (1-65535)")
        if self._closed.is_set():
            raise MeshError(f"{to.where}: these port-forwards are closed; open new ones")
        self._stream(to).close()
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(POLL)
        self._start(to.thread, self._accept, listener, to)
        return f"127.0.0.1:{listener.getsockname()[1]}"

    def close(self) -> None:
        """Stop listening, close every stream and wait (at most :data:`CLOSE_TIMEOUT` s in all)
        for every thread; again: nothing."""
        self._closed.set()
        with self._lock:
            links = list(self._links)
        for link in links:
            link.finish()
        deadline = time.monotonic() + CLOSE_TIMEOUT
        while True:
            with self._lock:
                threads = [t for t in self._threads if t.is_alive()]
            left = deadline - time.monotonic()
            if not threads or left <= 0:
                break
            threads[0].join(left)

    def __enter__(self) -> PortForwards:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- threads -------------------------------------------------------------------

    def _start(self, name: str, target: Callable[..., None], *args: Any) -> threading.Thread:
        def run() -> None:
            try:
                target(*args)
            except Exception:
                log.exception("%s failed", name)
            finally:
                with self._lock:
                    self._threads.discard(thread)

        thread = threading.Thread(target=run, name=name, daemon=True)
        with self._lock:
            self._threads.add(thread)
        thread.start()
        return thread

    def _accept(self, listener: socket.socket, to: _Pod) -> None:
        with listener:
            while not self._closed.is_set():
                try:
                    conn, _ = listener.accept()
                except TimeoutError:
                    continue
                conn.settimeout(None)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                self._start(f"{to.thread} connection", self._serve, conn, to)

    def _serve(self, conn: socket.socket, to: _Pod) -> None:
        with conn:
            try:
                stream = self._stream(to)
            except MeshError as exc:
                return self._warn(f"{exc} (a connection through the port-forward was closed)")
            link = _Link(conn, stream)
            with self._lock:
                self._links.add(link)
            if self._closed.is_set():  # close() came while this stream opened
                link.finish()
            upload = self._start(f"{to.thread} upload", link.upload)
            link.download()
            upload.join(CLOSE_TIMEOUT)
            stream.close()
            with self._lock:
                self._links.discard(link)
        error = stream.forward.error(to.port)
        if error:  # what the error channel said (the pod gone, nothing listening on its port)
            target = self._api.target
            self._warn(f"{to.where}, port {to.port}: {target.redact(error.strip())}; its "
                       f"connection was closed (check {to.check(target)})")

    def _warn(self, message: str) -> None:
        with self._lock:
            if message in self._warned:
                return
            self._warned.add(message)
        log.warning("%s", message)

    # --- streams -------------------------------------------------------------------

    def _stream(self, to: _Pod) -> _Stream:
        """A new stream, its handshake bounded by the handshake timeout (the client has none)."""
        # its own ApiClient (portforward() swaps call_api on it while it connects), made here:
        # the first CoreV1Api is a long import, which is not the API server's time
        core = k8s.CoreV1Api(k8s.ApiClient(self._api.client.configuration))
        opened: Future[_Stream] = Future()

        def handshake() -> None:
            try:
                opened.set_result(self._handshake(core, to))
            except Exception as exc:
                opened.set_exception(exc)

        self._start(f"{to.thread} handshake", handshake)
        try:
            return opened.result(self._handshake_timeout)
        except TimeoutError:
            opened.add_done_callback(_close_late)
            target = self._api.target
            raise MeshError(
                f'{to.where}: the API server {target.server} of context "{target.context}" did '
                f"not open the stream within {self._handshake_timeout:g} s; check the cluster "
                f"({to.check(target)})"
            ) from None

    def _handshake(self, core: Any, to: _Pod) -> _Stream:
        try:
            forward = portforward(core.connect_get_namespaced_pod_portforward, to.name,
                                  to.namespace, ports=str(to.port))
        except Exception as exc:
            raise self._refused(exc, to) from exc
        finally:
            core.api_client.close()
        proxy = next((t for t in threading.enumerate()
                      if getattr(getattr(t, "_target", None), "__self__", None) is forward), None)
        return _Stream(forward, proxy, to.port)

    def _refused(self, exc: BaseException, to: _Pod) -> MeshError:
        """What a failed handshake means, in one redacted line."""
        target, ctx = self._api.target, self._api.target.context
        cause = exc.__context__ if getattr(exc, "status", None) == 0 and exc.__context__ else exc
        status = getattr(cause, "status_code", None)  # the API server's answer to the upgrade
        if isinstance(status, int):  # read as the client reads any other answer
            body = getattr(cause, "resp_body", None) or b""
            cause = k8s.ApiException(status=status, reason=getattr(cause, "status_message", None),
                                     body=body.decode("utf-8", "replace"))
        problem = self._api.problem(cause, Call("create", "pods/portforward", to.namespace))
        if problem is not None:
            return MeshError(problem.message)
        if isinstance(status, int):
            hint = "check its name and namespace" if status == 404 else "is it running?"
            return MeshError(f"{to.where}: the API server {target.server} says: "
                             f"{target.redact(api_message(cause))} ({status}); {hint} "
                             f"({to.check(target)})")
        what = "cannot reach" if isinstance(cause, OSError) else "no stream from"
        reason = target.redact(getattr(cause, "strerror", None) or str(cause))
        return MeshError(f'{to.where}: {what} the API server {target.server} of context "{ctx}" '
                         f"({reason}); is the cluster running, and is this the right context? "
                         f"(check with `kubectl --context {ctx} cluster-info`)")
