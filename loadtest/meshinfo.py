"""What the run directory records about the local mesh, when the load test targets it.

The manifests applied (with their sha256, from the mesh state), the ingress,
and Envoy's own request counters per subset before and after the run (as
``istio_requests_total`` is on a cluster). Calibration requests go to the
pods directly, so the counters' change over the run counts the load test's
requests only.
"""

from __future__ import annotations

import http.client
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from canary.errors import CanaryError

__all__ = [
    "MeshSnapshot",
    "counter_delta",
    "ingress_url",
    "local_mesh",
    "model_metadata",
    "same_endpoint",
    "subsets_in_order",
]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


@dataclass(frozen=True)
class MeshSnapshot:
    """The local mesh as the run found it."""

    home: str
    ingress_url: str
    targeted: bool  # the load test's host is this mesh's ingress
    applied: list[dict[str, Any]]
    counters: dict[str, dict[str, Any]]  # subset -> SubsetCounters.to_dict()
    envoy_running: bool


def same_endpoint(a: str, b: str) -> bool:
    """Whether two URLs name the same host and port (loopback spellings are equal)."""
    pa, pb = urlsplit(a if "://" in a else f"http://{a}"), urlsplit(b if "://" in b else f"http://{b}")
    host_a, host_b = pa.hostname or "", pb.hostname or ""
    same_host = host_a == host_b or (host_a in _LOOPBACK and host_b in _LOOPBACK)
    return same_host and (pa.port or 80) == (pb.port or 80)


def ingress_url(home: Path | None = None) -> str:
    """The running local mesh's ingress URL (raises :class:`MeshNotRunningError` when none runs)."""
    from mesh.api import mesh_status

    return mesh_status(home=home).state.ingress_url


def local_mesh(host: str | None, home: Path | None = None) -> MeshSnapshot | None:
    """The local mesh now, or None when none is running."""
    from mesh.api import mesh_status
    from mesh.local.state import MeshHome

    try:
        status = mesh_status(home=home)
    except (CanaryError, OSError):
        return None
    state = status.state
    return MeshSnapshot(
        home=str(MeshHome(home).root.parent),
        ingress_url=state.ingress_url,
        targeted=bool(host) and same_endpoint(str(host), state.ingress_url),
        applied=[asdict(a) for a in state.applied],
        counters={k or "": v.to_dict() for k, v in status.counters.items()},
        envoy_running=status.envoy_running,
    )


def counter_delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]]) -> dict[str, int]:
    """Requests per subset between two snapshots' counters."""
    names = sorted(set(before) | set(after))
    return {n: int(after.get(n, {}).get("requests", 0)) - int(before.get(n, {}).get("requests", 0)) for n in names}


def subsets_in_order(home: Path | None = None) -> list[str] | None:
    """The local mesh's DestinationRule subsets, stable first, or None without a mesh.

    "Stable" is the subset that routes without a header match send the most
    weight to (ResNet50 under weight-70, weight-100 and focused routing); the
    DestinationRule's own order breaks ties (and decides under the base
    routing, which names no subset).
    """
    from mesh.api import mesh_status
    from mesh.manifests import parse_objects
    from mesh.mesh_index import MeshIndex

    try:
        state = mesh_status(home=home).state
        index = MeshIndex.of(parse_objects((o.source, o.document) for o in state.objects))
    except (CanaryError, OSError):
        return None
    if len(index.rules) != 1:
        return None
    rule = next(iter(index.rules.values()))
    names = [s.name for s in rule.subsets]
    weight = dict.fromkeys(names, 0)
    for service in index.virtual_services:
        for route in service.http:
            if any(match.headers for match in route.match):
                continue
            for target in route.route:
                if target.destination.host == rule.host and target.destination.subset in weight:
                    weight[target.destination.subset] += target.weight
    return sorted(names, key=lambda name: (-weight[name], names.index(name)))


def model_metadata(endpoints: Mapping[str, Mapping[str, str]], model_name: str, timeout: float = 10.0) -> dict[str, Any]:
    """Each subset's model, as its own server describes it (REST ``/v1/models/<name>/metadata``).

    ``{subset: {"endpoint", "version", "canary_model"}}``; ``canary_model`` is
    the export's record (architecture, ``weights``: seeded or imagenet). A
    server that cannot say gets ``{"endpoint", "error"}``.
    """
    found: dict[str, Any] = {}
    for subset, endpoint in sorted(endpoints.items()):
        url = endpoint.get("rest")
        if not url:
            continue
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
        try:
            conn.request("GET", f"/v1/models/{model_name}/metadata")
            response = conn.getresponse()
            body = response.read()
            if response.status != 200:
                raise OSError(f"HTTP {response.status}")
            doc = orjson.loads(body)
            found[subset] = {
                "endpoint": url,
                "version": doc.get("model_spec", {}).get("version"),
                "canary_model": doc.get("metadata", {}).get("canary_model"),
            }
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError, AttributeError) as error:
            found[subset] = {"endpoint": url, "error": f"{type(error).__name__}: {error}"}
        finally:
            conn.close()
    return found
