"""A small, bounded predict-traffic driver for the mesh tests (the demo runs the load test itself).

Load tests proper run on Locust (``loadtest/``); this sends a fixed number of
REST or gRPC predict requests through the ingress from a few threads, bounded
in count and time, and counts the outcomes.
"""

from __future__ import annotations

import http.client
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from canary.conventions import GRPC_PREDICT_METHOD, rest_predict_path

__all__ = ["TrafficResult", "send_grpc", "send_rest"]


@dataclass
class TrafficResult:
    sent: int = 0
    statuses: Counter[str] = field(default_factory=Counter)
    latencies_ms: list[float] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def record(self, status: str, started: float) -> None:
        with self.lock:
            self.sent += 1
            self.statuses[status] += 1
            self.latencies_ms.append((time.perf_counter() - started) * 1000)

    @property
    def failures(self) -> int:
        return sum(n for s, n in self.statuses.items() if s not in ("200", "OK"))


def _split(n: int, parts: int) -> list[int]:
    return [n // parts + (1 if i < n % parts else 0) for i in range(parts)]


def send_rest(
    url: str,
    n: int,
    body: bytes,
    *,
    path: str = rest_predict_path(),
    headers: Mapping[str, str] | None = None,
    concurrency: int = 4,
    deadline_s: float = 300.0,
) -> TrafficResult:
    """POST ``body`` ``n`` times over keep-alive connections; stops early at the deadline."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    result = TrafficResult()
    stop_at = time.monotonic() + deadline_s
    hdrs = {"Content-Type": "application/json", **(headers or {})}

    def worker(count: int) -> None:
        conn = http.client.HTTPConnection(host, port, timeout=60)
        try:
            for _ in range(count):
                if time.monotonic() > stop_at:
                    return
                started = time.perf_counter()
                try:
                    conn.request("POST", path, body=body, headers=hdrs)
                    resp = conn.getresponse()
                    resp.read()
                    result.record(str(resp.status), started)
                except (OSError, http.client.HTTPException) as exc:
                    result.record(type(exc).__name__, started)
                    conn.close()
                    conn = http.client.HTTPConnection(host, port, timeout=60)
        finally:
            conn.close()

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, _split(n, concurrency)))
    return result


def send_grpc(
    url: str,
    n: int,
    request: bytes,
    *,
    metadata: Mapping[str, str] | None = None,
    concurrency: int = 4,
    deadline_s: float = 300.0,
) -> TrafficResult:
    """Call PredictionService.Predict ``n`` times through ``url``'s host:port (h2c).

    ``request`` is a serialised PredictRequest (``payloads.grpc_request_bytes``):
    it goes out as it is, so no TensorFlow is needed on the client side.
    """
    import grpc

    parts = urlsplit(url)
    target = f"{parts.hostname or '127.0.0.1'}:{parts.port or 80}"
    result = TrafficResult()
    stop_at = time.monotonic() + deadline_s
    md = tuple((metadata or {}).items())
    options = [("grpc.max_receive_message_length", 64 << 20), ("grpc.max_send_message_length", 64 << 20)]

    def worker(count: int) -> None:
        with grpc.insecure_channel(target, options=options) as channel:
            predict = channel.unary_unary(GRPC_PREDICT_METHOD)  # bytes in, bytes out
            for _ in range(count):
                if time.monotonic() > stop_at:
                    return
                started = time.perf_counter()
                try:
                    predict(request, timeout=60, metadata=md)
                    result.record("OK", started)
                except grpc.RpcError as exc:
                    result.record(exc.code().name, started)

    with ThreadPoolExecutor(concurrency) as pool:
        list(pool.map(worker, _split(n, concurrency)))
    return result
