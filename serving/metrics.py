"""TF Serving's Prometheus metrics, under TF Serving's exact names.

TF Serving exports its monitoring counters as ``:tensorflow:serving:...``;
the request counter keeps its name without the ``_total`` suffix that
``prometheus_client`` would add, so this module renders the text exposition
format itself:

* ``:tensorflow:serving:request_count{model_name,status}`` counter: predict
  requests by outcome (``OK`` or a canonical error code name).
* ``:tensorflow:serving:request_latency{model_name,API,entrypoint,status}``
  histogram: wall time of each request in microseconds (``API`` is
  ``predict``/``GetModelMetadata``/``GetModelStatus`` on REST and
  ``Predict``/... on gRPC, ``entrypoint`` is ``REST`` or ``GRPC``).
* ``:tensorflow:serving:runtime_latency{model_name,API,runtime}`` histogram:
  time spent inside the model alone, so ``request - runtime`` is the
  server's own overhead.

Buckets are TF Serving's: exponential from 10 us, factor 1.8, 33 buckets.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from serving.status import Code

__all__ = ["LATENCY_BUCKETS_US", "PROMETHEUS_PATH", "Metrics"]

PROMETHEUS_PATH = "/monitoring/prometheus/metrics"
LATENCY_BUCKETS_US: tuple[float, ...] = tuple(10.0 * 1.8**k for k in range(33))

_REQUEST_COUNT = ":tensorflow:serving:request_count"
_REQUEST_LATENCY = ":tensorflow:serving:request_latency"
_RUNTIME_LATENCY = ":tensorflow:serving:runtime_latency"


@dataclass
class _Histogram:
    counts: list[int] = field(default_factory=lambda: [0] * (len(LATENCY_BUCKETS_US) + 1))
    total: float = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(LATENCY_BUCKETS_US, value)] += 1
        self.total += value


class Metrics:
    """Thread-safe counters and histograms, rendered as Prometheus text."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._requests: dict[tuple[str, str], int] = {}
        self._latency: dict[tuple[str, str, str, str], _Histogram] = {}
        self._runtime: dict[tuple[str, str, str], _Histogram] = {}

    def record_request(self, model_name: str, status: Code) -> None:
        """Count one predict request with its outcome."""
        key = (model_name, status.name)
        with self._lock:
            self._requests[key] = self._requests.get(key, 0) + 1

    def record_latency(
        self, model_name: str, api: str, entrypoint: str, status: Code, micros: float
    ) -> None:
        """Observe the wall time of one request, in microseconds."""
        key = (model_name, api, entrypoint, status.name)
        with self._lock:
            self._latency.setdefault(key, _Histogram()).observe(micros)

    def record_runtime(self, model_name: str, api: str, micros: float) -> None:
        """Observe the time spent running the model itself, in microseconds."""
        key = (model_name, api, "TF2")
        with self._lock:
            self._runtime.setdefault(key, _Histogram()).observe(micros)

    def render(self) -> str:
        """The Prometheus text exposition of every metric."""
        with self._lock:
            requests = sorted(self._requests.items())
            latency = sorted((k, (list(h.counts), h.total)) for k, h in self._latency.items())
            runtime = sorted((k, (list(h.counts), h.total)) for k, h in self._runtime.items())
        lines = [
            f"# HELP {_REQUEST_COUNT} The total number of requests.",
            f"# TYPE {_REQUEST_COUNT} counter",
        ]
        for (model, status), count in requests:
            lines.append(f"{_REQUEST_COUNT}{_labels(('model_name', model), ('status', status))} {count}")
        lines += [
            f"# HELP {_REQUEST_LATENCY} Distribution of wall time (in microseconds) for "
            "Tensorflow Serving request.",
            f"# TYPE {_REQUEST_LATENCY} histogram",
        ]
        for (model, api, entrypoint, status), (counts, total) in latency:
            labels = (("model_name", model), ("API", api), ("entrypoint", entrypoint), ("status", status))
            lines += _histogram_lines(_REQUEST_LATENCY, labels, counts, total)
        lines += [
            f"# HELP {_RUNTIME_LATENCY} Distribution of wall time (in microseconds) for "
            "Tensorflow runtime.",
            f"# TYPE {_RUNTIME_LATENCY} histogram",
        ]
        for (model, api, runtime_name), (counts, total) in runtime:
            pairs = (("model_name", model), ("API", api), ("runtime", runtime_name))
            lines += _histogram_lines(_RUNTIME_LATENCY, pairs, counts, total)
        return "\n".join(lines) + "\n"


def _histogram_lines(
    name: str, pairs: Sequence[tuple[str, str]], counts: Sequence[int], total: float
) -> list[str]:
    lines = []
    cumulative = 0
    for bound, count in zip((*LATENCY_BUCKETS_US, float("inf")), counts, strict=True):
        cumulative += count
        le = "+Inf" if bound == float("inf") else f"{bound:.6g}"
        lines.append(f"{name}_bucket{_labels(*pairs, ('le', le))} {cumulative}")
    lines.append(f"{name}_sum{_labels(*pairs)} {total:.17g}")
    lines.append(f"{name}_count{_labels(*pairs)} {cumulative}")
    return lines


def _labels(*pairs: tuple[str, str]) -> str:
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in pairs) + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')
