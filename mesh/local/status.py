"""What the local mesh's commands answer: an apply's result and the mesh's status.

:class:`MeshStatus` is what ``canary mesh status`` shows (and ``--json``
writes, :meth:`MeshStatus.to_dict`): the state, which processes run, each
pod's container (restarts, last exit) and Envoy's counters per subset, in
total and since the last routing change.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from mesh.counters import SinceChange, SubsetCounters, shares
from mesh.local.kubelet import KubeletStatus
from mesh.local.state import AppliedFile, MeshState
from mesh.query import MeshView

__all__ = ["ApplyResult", "MeshStatus"]


@dataclass(frozen=True)
class ApplyResult:
    version: int
    files: list[AppliedFile]
    started: list[str]  # pods
    stopped: list[str]
    unchanged: bool


@dataclass(frozen=True)
class MeshStatus:
    state: MeshState
    envoy_running: bool
    pods_running: dict[str, bool]
    counters: dict[str, SubsetCounters]
    view: MeshView  # the objects and the pods that run, for the mesh's queries
    since_change: SinceChange | None = None  # None: Envoy down, or no counts kept at the change
    # pod name → its running kubelet's status (server pid, restarts, last exit); absent when unknown
    containers: dict[str, KubeletStatus] = field(default_factory=dict)
    # the version whose push never finished, its command killed (None: none, or an apply under way)
    interrupted_push: int | None = None

    def subset_counts(self) -> dict[str, dict[str, Any]]:
        """Per subset ("": no subset): Envoy's counters and their share of all requests, and
        ``since_change``: the requests since the last routing change and their share."""
        total_share = shares({k: c.requests for k, c in self.counters.items()})
        since = self.since_change
        since_share = shares({k: since.requests(k) for k in self.counters}) if since else {}
        rows: dict[str, dict[str, Any]] = {}
        for subset, counters in self.counters.items():
            rows[subset] = {**counters.to_dict(), "share": total_share[subset], "since_change": None}
            if since is not None:
                by_class = {k: n for k, n in sorted(since.counts.get(subset, {}).items()) if k != "total"}
                rows[subset]["since_change"] = {
                    "requests": since.requests(subset), "share": since_share[subset], "by_class": by_class,
                }
        return rows

    def to_dict(self) -> dict[str, Any]:
        """``canary mesh status --json``."""
        st = self.state
        return {
            "ingress_url": st.ingress_url,
            "admin_socket": st.admin_socket,
            "envoy": {"pid": st.envoy_pid, "running": self.envoy_running},
            "version": st.version,
            "interrupted_push": self.interrupted_push,
            "store": st.store,
            "objects": sorted({str(obj.ref) for obj in self.view.objects}),
            "pods": [
                {
                    "namespace": p.namespace,
                    "name": p.name,
                    "deployment": p.deployment,
                    "labels": p.labels,
                    "pid": p.pid,
                    "ports": {str(k): v for k, v in p.ports.items()},
                    "running": self.pods_running.get(p.name, False),
                    "container": _container_json(self.containers.get(p.name)),
                }
                for p in st.pods
            ],
            "counters": {k or "(no subset)": v for k, v in self.subset_counts().items()},
            "routing_change": None if self.since_change is None else {
                "version": self.since_change.version, "applied_at": self.since_change.applied_at,
            },
        }


def _container_json(status: KubeletStatus | None) -> dict[str, Any] | None:
    """A pod's container in ``mesh status --json``: its state ("running", or "waiting" to be
    restarted at ``restart_at``), the model server's pid (0 while waiting), restarts and last
    exit; None when unknown (the pod's kubelet is gone, or the pod is of an older state)."""
    if status is None:
        return None
    last = status.last_exit
    return {"state": status.state, "server_pid": status.server_pid, "restarts": status.restarts,
            "restart_at": status.restart_at,
            "last_exit": None if last is None else {**asdict(last), "description": last.describe()}}
