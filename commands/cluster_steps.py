"""A demo's or rollout's step on a cluster: apply, then wait until the traffic shows the change.

The manifests are server-side applied (:func:`mesh.api.kube_apply`: a dry run
of everything first, Deployments watched until rolled out). A change of the
VirtualService is then watched for in the traffic through the ingress
(:func:`loadtest.routing_watch.watch_routing`), probes attributed with the
previous step's calibration; the step's *took effect* is the time from the
apply's end to the probe that decided. Without a VirtualService among the
manifests there is no routing change to wait for; without a calibration yet
(the first step) the answers cannot be attributed, and the step's own load
test is the only witness.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from canary.conventions import DEFAULT_HEADER, MODEL_NAME
from canary.errors import UsageError
from loadtest.calibration import load_calibration
from loadtest.propagation import Observation
from loadtest.routing_watch import routing_of, watch_routing
from mesh.api import KubeTarget, kube_apply, snapshot
from mesh.local.backend import Progress
from mesh.manifests import Target, load_manifests
from mesh.model import VirtualService
from mesh.routing import recorded_virtual_service
from payloads import load_payloads

__all__ = ["ClusterApply", "apply_on_cluster"]


@dataclass(frozen=True)
class ClusterApply:
    applied: tuple[str, ...]
    observation: Observation | None  # None: no routing change, or nothing to attribute with yet
    note: str = ""


def _new_virtual_service(paths: Sequence[Path]) -> VirtualService | None:
    """The VirtualService among ``paths``, read as the cluster reads it (None: none is applied)."""
    services = [o for o in load_manifests(list(paths), target=Target.CLUSTER) if isinstance(o, VirtualService)]
    return services[0] if len(services) == 1 else None


def apply_on_cluster(paths: Sequence[Path], kube: KubeTarget, calibration: Path | None, *,
                     deadline_s: float, progress: Progress) -> ClusterApply:
    """Apply ``paths`` to the cluster and watch for their routing in the traffic."""
    routing = _new_virtual_service(paths)
    watch = routing is not None and calibration is not None
    before = snapshot(kube=kube) if watch else None  # the routing live before the change
    progress(f"applying {', '.join(p.name for p in paths)} to the cluster ({kube.describe()})")
    applied = tuple(kube_apply(list(paths), context=kube.context).applied)
    if routing is None:
        return ClusterApply(applied, None, "no (single) VirtualService applied: no routing change to wait for")
    if before is None or calibration is None:
        return ClusterApply(applied, None, "not watched for in the traffic: no calibration yet to attribute "
                                           "probes with (the step's load test is the witness)")
    subsets = list(before.view.subsets())
    live = [(str(o["source"]), o["document"]) for o in before.routing]
    try:
        old = routing_of(recorded_virtual_service(live, "the cluster's live routing", cluster=True),
                         header=DEFAULT_HEADER, model_name=MODEL_NAME, subsets=subsets)
        new = routing_of(routing, header=DEFAULT_HEADER, model_name=MODEL_NAME, subsets=subsets)
    except UsageError as error:  # e.g. a route that names no subset: no split to tell old from new by
        return ClusterApply(applied, None, f"not watched for in the traffic: {error}")
    progress(f"waiting for the new routing to show in the traffic through {before.ingress_url}")
    observation = watch_routing(before.ingress_url, old, new, load_calibration(calibration), load_payloads(None),
                                header=DEFAULT_HEADER, model_name=MODEL_NAME, deadline_s=deadline_s)
    progress(observation.reason)
    return ClusterApply(applied, observation)
