"""The mesh's own request counts per subset on a cluster: Istio's telemetry, from Prometheus.

``istio_requests_total`` (``reporter="destination"``) summed by
``destination_version`` and response code, as :mod:`mesh.prometheus` asks
it, mapped to the DestinationRule's subsets (a subset is the version its
``version`` label selects) in the shape the local mesh's counters have
(:class:`~mesh.counters.SubsetCounters`: requests and ``by_class``).
Prometheus is ``--prometheus URL`` when given (then a failure is an error),
else Istio's addon found through the API server (then a failure leaves the
counts out, and says why).
"""

from __future__ import annotations

from typing import Any

from canary.errors import CanaryError
from mesh.prometheus import (
    Prometheus,
    find_prometheus,
    prometheus_at,
    requests_by_class,
    total_query,
    version_subsets,
)
from mesh.query import MeshView
from mesh.target import KubeTarget

__all__ = ["cluster_counters"]

_LABELS = ("destination_version", "response_code")


def _counts(prometheus: Prometheus, view: MeshView, namespace: str) -> dict[str, dict[str, Any]]:
    rule = view.destination_rule()
    service = rule.host.split(".")[0]
    by_class = requests_by_class(prometheus.query_by(total_query(service, namespace), _LABELS))
    subsets = version_subsets(rule)
    counters: dict[str, dict[str, Any]] = {}
    for (version, klass), value in sorted(by_class.items()):
        subset = subsets.get(version, version)
        row = counters.setdefault(subset, {"subset": subset, "requests": 0, "by_class": {}, "by_port": {},
                                           "clusters": [], "by_cluster": {}})
        row["requests"] += round(value)
        row["by_class"][klass] = row["by_class"].get(klass, 0) + round(value)
    return counters


def cluster_counters(api: Any, target: KubeTarget,
                     view: MeshView) -> tuple[dict[str, dict[str, Any]], str, str]:
    """The counts per subset, whose they are (``"prometheus <where>"``) and why there are none:
    ``({}, "", why)`` when no Prometheus was given or found, or the one found cannot answer."""
    if target.prometheus:
        prometheus = prometheus_at(target.prometheus)
        return _counts(prometheus, view, target.namespace), f"prometheus {prometheus.where}", ""
    try:
        found = find_prometheus(api)
        if found is None:
            return {}, "", ("no Prometheus found (Istio's addon Service istio-system/prometheus); "
                            "give --prometheus URL for the mesh's own counts per subset")
        return _counts(found, view, target.namespace), f"prometheus {found.where}", ""
    except CanaryError as error:
        return {}, "", f"the mesh's own counts are left out: {error}"
