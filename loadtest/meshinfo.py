"""What the load test asks of the mesh: its ingress, its subsets, its own counters, its models.

All through the mesh's query API (:func:`mesh.api.snapshot`); nothing here
knows how a backend runs. Calibration requests go to the pods directly, so
the counters' change over the run counts the load test's requests only.
"""

from __future__ import annotations

import hashlib
import http.client
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import orjson

from canary.errors import CanaryError
from canary.rundir.document import MeshRecord, ModelRecord, RoutingRecord
from mesh.api import KubeTarget, MeshSnapshot, counters_reset, snapshot

__all__ = [
    "mesh_record",
    "model_metadata",
    "routing_record",
    "run_mesh",
    "same_endpoint",
    "subsets_in_order",
    "try_snapshot",
]

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "0.0.0.0"}


def same_endpoint(a: str, b: str) -> bool:
    """Whether two URLs name the same host and port (loopback spellings are equal)."""
    pa, pb = urlsplit(a if "://" in a else f"http://{a}"), urlsplit(b if "://" in b else f"http://{b}")
    host_a, host_b = pa.hostname or "", pb.hostname or ""
    same_host = host_a == host_b or (host_a in _LOOPBACK and host_b in _LOOPBACK)
    return same_host and (pa.port or 80) == (pb.port or 80)


def try_snapshot(home: Path | None = None, kube: KubeTarget | None = None) -> MeshSnapshot | None:
    """The local mesh now, or None when none is running (or it cannot be read). With ``kube``,
    the cluster's namespace, or the MeshError that says why it cannot be read (a cluster
    was asked for by name, so its absence is no "no mesh")."""
    if kube is not None:
        return snapshot(kube=kube)
    try:
        return snapshot(home=home)
    except (CanaryError, OSError):
        return None


def subsets_in_order(mesh: MeshSnapshot | None) -> list[str] | None:
    """The mesh's DestinationRule subsets, stable first, or None without a mesh (or with more
    than one DestinationRule: then the subsets must be named)."""
    if mesh is None:
        return None
    try:
        return list(mesh.view.subsets())
    except CanaryError:
        return None


def routing_record(mesh: MeshSnapshot, phase: int = 0) -> RoutingRecord:
    """The routing live in ``mesh`` now, as run.json keeps it for ``phase``."""
    digest = hashlib.sha256(orjson.dumps(list(mesh.routing), option=orjson.OPT_SORT_KEYS)).hexdigest()
    return RoutingRecord.model_validate({
        "phase": phase, "version": mesh.version, "applied_at": mesh.applied_at, "seen_at": mesh.taken_at or None,
        "sha256": digest, "objects": list(mesh.routing),
    })


def run_mesh(host: str | None, mesh: MeshSnapshot | None) -> MeshSnapshot | None:
    """``mesh`` when the run's host is its ingress (the run goes through it), else None."""
    if mesh is None or not host or not same_endpoint(host, mesh.ingress_url):
        return None
    return mesh


def mesh_record(host: str | None, before: MeshSnapshot | None, after: MeshSnapshot | None,
                routing: Sequence[RoutingRecord] = (), problems: Sequence[str] = ()) -> MeshRecord:
    """run.json's ``mesh`` section: the manifests applied, the routing of each phase and the
    mesh's counters around the run, when the run's host is the local mesh's ingress;
    ``local: false`` otherwise. Counters reset during the run (``POST /reset_counters``) are
    recorded as such (``counters_reset``), with no ``delta``."""
    if before is None or run_mesh(host, before) is None:
        return MeshRecord(local=False, problems=list(problems))
    if before.kube is not None:
        return _cluster_record(before, after, routing).model_copy(update={"problems": list(problems)})
    reset = counters_reset(before.counters, after.counters) if after else []
    record = MeshRecord.model_validate({
        "local": True,
        "backend": "local",
        "counters_from": "envoy",
        "home": before.home,
        "ingress_url": before.ingress_url,
        "applied": list(before.applied),
        "counters_before": before.counters,
        "counters_after": after.counters if after else None,
        "routing": [r.model_dump() for r in (routing or [routing_record(before)])],
        "counters_reset": bool(reset),
        "counters_reset_evidence": reset,
        "problems": list(problems),
    })
    return record.model_copy(update={"delta": record.requests_during_run()})


def _cluster_record(before: MeshSnapshot, after: MeshSnapshot | None,
                    routing: Sequence[RoutingRecord]) -> MeshRecord:
    """run.json's ``mesh`` for a run through a cluster's ingress: which cluster (names only),
    its routing, and the mesh's own cumulative counts around the run when Prometheus gave
    them (informational: Prometheus trails by a scrape, so the cross-check asks it for the
    run's window afterwards, ``verify-split``)."""
    kube = before.kube
    assert kube is not None
    return MeshRecord.model_validate({
        "local": False,
        "backend": "kube",
        "context": kube.context,
        "namespace": kube.namespace,
        "counters_from": before.counters_from,
        "ingress_url": before.ingress_url,
        "counters_before": before.counters or None,
        "counters_after": (after.counters or None) if after else None,
        "routing": [r.model_dump() for r in (routing or [routing_record(before)])],
    })


def model_metadata(endpoints: Mapping[str, Mapping[str, str]], model_name: str,
                   timeout: float = 10.0) -> dict[str, ModelRecord]:
    """Each subset's model, as its own server describes it.

    The version comes from TF Serving's REST metadata
    (``/v1/models/<name>/metadata``); ``canary_model``, the export's record
    (architecture, ``weights``: seeded or imagenet), from canary's model
    server at ``/canary/v1/models/<name>``. A server without that path (real
    TF Serving answers 404) gives ``canary_model`` None; a server that cannot
    say which version it serves gets ``error``.
    """
    found: dict[str, ModelRecord] = {}
    for subset, endpoint in sorted(endpoints.items()):
        url = endpoint.get("rest")
        if not url:
            continue
        parts = urlsplit(url)
        conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=timeout)
        try:
            status, doc = _get_json(conn, f"/v1/models/{model_name}/metadata")
            if status != 200:
                raise OSError(f"HTTP {status}")
            version = doc.get("model_spec", {}).get("version")
            status, record = _get_json(conn, f"/canary/v1/models/{model_name}")
            canary_model = record.get("canary_model") if status == 200 else None
            found[subset] = ModelRecord(endpoint=url, version=version, canary_model=canary_model)
        except (OSError, http.client.HTTPException, orjson.JSONDecodeError, AttributeError, ValueError) as error:
            found[subset] = ModelRecord(endpoint=url, error=f"{type(error).__name__}: {error}")
        finally:
            conn.close()
    return found


def _get_json(conn: http.client.HTTPConnection, path: str) -> tuple[int, Any]:
    """``GET path`` on ``conn``: the status, and the JSON body of a 200 (else None)."""
    conn.request("GET", path)
    response = conn.getresponse()
    body = response.read()
    return response.status, orjson.loads(body) if response.status == 200 else None
