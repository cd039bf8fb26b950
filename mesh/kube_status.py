"""``canary mesh status --kube``: the cluster's side of the mesh under test, read-only.

The routing objects and Services of the namespace, its pods by subset (ready
or not, where they listen), the ingress URL a client outside the cluster uses,
and the mesh's own request counts per subset (Istio's ``istio_requests_total``
by ``destination_version``, from Prometheus) with each subset's share.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from canary.errors import CanaryError
from mesh.query import MeshView
from mesh.xds_types import PodEndpoint

__all__ = ["KubeStatus", "pods_by_subset"]


def pods_by_subset(view: MeshView) -> dict[str, list[PodEndpoint]]:
    """Each DestinationRule subset's pods (its labels selected), ready or not; ``""``: the
    namespace's other pods."""
    try:
        rule = view.destination_rule()
    except CanaryError:
        return {"": sorted(view.pods, key=lambda p: p.name)}
    found: dict[str, list[PodEndpoint]] = {s.name: [] for s in rule.subsets}
    for pod in sorted(view.pods, key=lambda p: p.name):
        subset = next((s.name for s in rule.subsets if s.labels.items() <= pod.labels.items()), "")
        found.setdefault(subset, []).append(pod)
    return found


@dataclass(frozen=True)
class KubeStatus:
    """What ``mesh status --kube`` shows (``--json``: :meth:`to_dict`)."""

    context: str
    server: str
    namespace: str
    ingress_url: str  # "" when none was found: problems say why
    problems: tuple[str, ...]  # what could not be read: the ingress, the counts
    view: MeshView
    counters: dict[str, dict[str, Any]]  # subset -> {"requests", "by_class"}
    counters_from: str  # "prometheus <where>", or "" when no Prometheus was found

    def subset_counts(self) -> dict[str, dict[str, Any]]:
        total = sum(int(row.get("requests", 0)) for row in self.counters.values())
        return {subset: {"requests": int(row.get("requests", 0)),
                         "share": (int(row.get("requests", 0)) / total) if total else None,
                         "by_class": dict(row.get("by_class") or {})}
                for subset, row in sorted(self.counters.items())}

    def to_dict(self) -> dict[str, Any]:
        return {
            "backend": "kube",
            "context": self.context,
            "server": self.server,
            "namespace": self.namespace,
            "ingress_url": self.ingress_url or None,
            "problems": list(self.problems),
            "objects": [{"kind": o.ref.kind, "namespace": o.ref.namespace, "name": o.ref.name}
                        for o in self.view.objects],
            "pods": {subset or "(no subset)": [
                {"name": p.name, "address": p.address, "ready": p.ready, "labels": p.labels,
                 "ports": sorted(p.ports)} for p in pods]
                for subset, pods in pods_by_subset(self.view).items()},
            "counters_from": self.counters_from,
            "counters": self.subset_counts(),
        }
