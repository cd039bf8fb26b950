"""The mesh's own request counters per subset, from Envoy's Prometheus text. Pure.

On a cluster Istio exports ``istio_requests_total`` by ``destination_version``;
locally the same facts are Envoy's upstream counters per cluster, and each
cluster belongs to one (service, port, subset).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

from mesh.translate import ClusterKey

__all__ = [
    "SinceChange",
    "SubsetCounters",
    "counter_marks",
    "counts_since",
    "parse_cluster_counters",
    "shares",
    "subset_counters",
]


@dataclass
class SubsetCounters:
    """Requests Envoy sent to one subset, over all its clusters (REST and gRPC ports)."""

    subset: str
    requests: int = 0
    by_class: dict[str, int] = field(default_factory=dict)  # "2xx" → count
    by_port: dict[int, int] = field(default_factory=dict)
    clusters: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, object]:
        return {
            "subset": self.subset,
            "requests": self.requests,
            "by_class": dict(sorted(self.by_class.items())),
            "by_port": {str(k): v for k, v in sorted(self.by_port.items())},
            "clusters": sorted(self.clusters),
        }


def parse_cluster_counters(text: str) -> dict[str, dict[str, int]]:
    """``{cluster stat name: {"total": n, "2xx": n, ...}}`` from ``/stats/prometheus``."""
    out: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in ("envoy_cluster_upstream_rq", "envoy_cluster_upstream_rq_xx"):
            continue
        for sample in family.samples:
            cluster = sample.labels.get("envoy_cluster_name")
            if cluster is None:
                continue
            counts = out.setdefault(cluster, {})
            if family.name == "envoy_cluster_upstream_rq_xx":
                klass = sample.labels.get("envoy_response_code_class", "")
                counts[f"{klass}xx"] = counts.get(f"{klass}xx", 0) + int(sample.value)
            elif "envoy_response_code" not in sample.labels:
                counts["total"] = int(sample.value)
    return out


def subset_counters(text: str, cluster_index: Mapping[str, ClusterKey]) -> dict[str, SubsetCounters]:
    """Per-subset totals; the plain service cluster (no subset) is reported under ``""``."""
    result: dict[str, SubsetCounters] = {}
    for cluster, counts in sorted(parse_cluster_counters(text).items()):
        key = cluster_index.get(cluster)
        if key is None:
            continue
        entry = result.setdefault(key.subset, SubsetCounters(subset=key.subset))
        total = counts.get("total", 0)
        entry.requests += total
        entry.by_port[key.port] = entry.by_port.get(key.port, 0) + total
        entry.clusters.append(cluster)
        for name, value in counts.items():
            if name != "total":
                entry.by_class[name] = entry.by_class.get(name, 0) + value
    return dict(sorted(result.items()))


def counter_marks(counters: Mapping[str, SubsetCounters]) -> dict[str, dict[str, int]]:
    """``{subset: {"total": n, "2xx": n, ...}}``: the counts at one moment, as a version keeps them."""
    return {subset: {"total": c.requests, **c.by_class} for subset, c in counters.items()}


def counts_since(
    now: Mapping[str, SubsetCounters], marks: Mapping[str, Mapping[str, int]]
) -> dict[str, dict[str, int]]:
    """What each subset counted after ``marks`` were taken, in the marks' form.

    Envoy's counters only grow, except that a cluster removed and made anew
    starts again from zero: a count below its mark is then all new."""
    since: dict[str, dict[str, int]] = {}
    for subset, counts in counter_marks(now).items():
        mark = marks.get(subset, {})
        since[subset] = {k: n - mark.get(k, 0) if n >= mark.get(k, 0) else n for k, n in counts.items()}
    return since


def shares(counts: Mapping[str, int]) -> dict[str, float | None]:
    """Each count's fraction of their sum (None for all when the sum is zero)."""
    total = sum(counts.values())
    return {key: (n / total if total else None) for key, n in counts.items()}


@dataclass(frozen=True)
class SinceChange:
    """Envoy's counts per subset since the last routing change was acknowledged."""

    version: int
    applied_at: str
    counts: dict[str, dict[str, int]]  # subset -> {"total": n, "2xx": n, ...}

    def requests(self, subset: str) -> int:
        return self.counts.get(subset, {}).get("total", 0)
