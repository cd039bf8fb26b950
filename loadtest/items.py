"""What the users send: every payload x format x path, prepared once, and who is in which group.

Each :class:`PredictItem` carries its request body already serialised (the
REST JSON, or the gRPC ``PredictRequest`` bytes), so a request costs no
serialisation. Formats map to signatures (``instances`` -> ``serving_default``,
``b64`` -> ``serving_preprocess``); paths are the versioned
``/v1/models/<name>/versions/<v>:predict`` and unversioned
``/v1/models/<name>:predict`` (over gRPC: ``model_spec.version`` set or not).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from urllib.parse import urlsplit

from canary.conventions import GRPC_PREDICT_METHOD, rest_predict_path
from canary.errors import UsageError
from payloads import FORMATS, PayloadSet, grpc_request_bytes

__all__ = ["PredictItem", "build_items", "group_of", "grpc_target"]


@dataclass(frozen=True, slots=True)
class PredictItem:
    """One prepared request."""

    payload_id: str
    fmt: str
    path: str  # REST URL path, or the gRPC method
    versioned: bool
    body: bytes
    label: int | None
    name: str  # Locust's statistics name


def build_items(payloads: PayloadSet, protocol: str, model_name: str, version: int) -> list[PredictItem]:
    """Every payload x format x (unversioned, versioned) for ``protocol`` ("rest" or "grpc")."""
    items: list[PredictItem] = []
    for payload in payloads:
        for fmt in FORMATS:
            for versioned in (False, True):
                if protocol == "rest":
                    path = rest_predict_path(model_name, version if versioned else None)
                    body = payload.body(fmt)
                    name = f"{path} [{fmt}]"
                else:
                    path = GRPC_PREDICT_METHOD
                    body = grpc_request_bytes(payload, fmt, model_name, version=version if versioned else None)
                    name = f"Predict{f' version={version}' if versioned else ''} [{fmt}]"
                items.append(PredictItem(payload.id, fmt, path, versioned, body, payload.label, name))
    return items


def group_of(index: int, share: float) -> str:
    """The header group of user ``index`` (in start order per protocol) for a canary ``share``.

    The smaller group (the canary group for a share up to one half, else the default group)
    takes user ``i`` when ``ceil((i + 1) * p) > ceil(i * p)`` with ``p`` its share: any first
    ``n`` users hold ``ceil(n * p)`` of it, so the split is exact at every multiple of
    ``1 / p``, user 0 is in the smaller group and user 1 in the larger: with a share strictly
    between 0 and 1, two users of a protocol are enough for both groups to get one.
    """
    if share <= 0:
        return "default"
    if share >= 1:
        return "canary"
    exact = Fraction(share).limit_denominator(1_000_000)
    smaller, larger, p = ("canary", "default", exact) if exact <= Fraction(1, 2) else ("default", "canary", 1 - exact)
    return smaller if math.ceil((index + 1) * p) > math.ceil(index * p) else larger


def grpc_target(host: str | None) -> str:
    """``http://127.0.0.1:8080`` -> ``127.0.0.1:8080`` (gRPC goes to the same ingress port, h2c)."""
    if not host:
        raise UsageError("no host to send gRPC to; give --host http://HOST:PORT (the ingress)")
    parts = urlsplit(host if "://" in host else f"http://{host}")
    if parts.scheme not in ("http", "grpc", ""):
        raise UsageError(f"--host {host!r}: the gRPC users speak plaintext HTTP/2 (h2c); give an http:// URL")
    return f"{parts.hostname or '127.0.0.1'}:{parts.port or 80}"
