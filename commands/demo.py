"""``canary demo``: the walkthrough on the local mesh, end to end.

Brings the mesh up with the base objects, applies the 70/30 VirtualService,
sends a few hundred REST and gRPC predict requests through the ingress and
reports how many requests each subset received, as Envoy counted them.
"""

from __future__ import annotations

from dataclasses import dataclass

from commands.traffic import TrafficResult, send_grpc, send_rest
from mesh.api import default_manifests, mesh_apply, mesh_down, mesh_status, mesh_up
from mesh.counters import SubsetCounters
from mesh.local.backend import Progress, no_progress
from payloads import grpc_request_bytes, load_payloads

__all__ = ["DemoResult", "run_demo"]

PHOTO_ID = "grace_hopper"  # the walkthrough photo


@dataclass(frozen=True)
class DemoResult:
    ingress_url: str
    rest: TrafficResult
    grpc: TrafficResult
    delta: dict[str, int]  # subset → requests during the demo, as Envoy counted them
    kept_running: bool


def _delta(before: dict[str, SubsetCounters], after: dict[str, SubsetCounters]) -> dict[str, int]:
    return {
        subset: counts.requests - (before[subset].requests if subset in before else 0)
        for subset, counts in after.items()
    }


def run_demo(
    *,
    tiny: bool = False,
    port: int = 8080,
    rest_requests: int = 240,
    grpc_requests: int = 60,
    keep: bool = False,
    progress: Progress = no_progress,
) -> DemoResult:
    state = mesh_up([default_manifests("base")], tiny=tiny, port=port, progress=progress)
    try:
        progress("applying manifests/routing/virtualservice-weight-70.yaml")
        mesh_apply([default_manifests("routing", "virtualservice-weight-70.yaml")], progress=progress)
        before = mesh_status().counters
        progress(f"sending {rest_requests} REST and {grpc_requests} gRPC predict requests")
        photo = load_payloads().get(PHOTO_ID)
        rest = send_rest(state.ingress_url, rest_requests, photo.body("b64"), concurrency=2)
        grpc = send_grpc(state.ingress_url, grpc_requests, grpc_request_bytes(photo, "b64"), concurrency=2)
        after = mesh_status().counters
    finally:
        if not keep:
            progress("taking the mesh down (use --keep to leave it running)")
            mesh_down()
    return DemoResult(state.ingress_url, rest, grpc, _delta(before, after), keep)
