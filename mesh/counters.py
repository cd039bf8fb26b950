"""The mesh's own request counters per subset, from Envoy's Prometheus text. Pure.

On a cluster Istio exports ``istio_requests_total`` by ``destination_version``;
locally the same facts are Envoy's upstream counters per cluster, and each
cluster belongs to one (service, port, subset).

Envoy's ``POST /reset_counters`` zeroes every counter but leaves histograms
alone. A request Envoy counts in ``upstream_rq_total`` when it starts is timed
into the ``upstream_rq_time`` histogram when its response completes, never the
other way round; so between two readings of a cluster, the requests timed can
exceed the requests counted only by those in flight at the first reading
(``upstream_rq_active``), unless the counters were reset in between
(:func:`counters_reset`). A cluster removed and made anew starts both again
from zero: then its counts since are compared alike. The histograms are whole only when merged from
Envoy's workers (``EnvoyAdmin.stats_prometheus(merged=True)``).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from mesh.translate import ClusterKey

__all__ = [
    "SinceChange",
    "SubsetCounters",
    "counter_marks",
    "counters_reset",
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
    # cluster → {"requests": counted, "timed": upstream_rq_time samples, "active": in flight}
    by_cluster: dict[str, dict[str, int]] = field(default_factory=dict)

    def to_dict(self) -> dict[str, object]:
        return {
            "subset": self.subset,
            "requests": self.requests,
            "by_class": dict(sorted(self.by_class.items())),
            "by_port": {str(k): v for k, v in sorted(self.by_port.items())},
            "clusters": sorted(self.clusters),
            "by_cluster": {k: dict(v) for k, v in sorted(self.by_cluster.items())},
        }


_FAMILIES = (
    "envoy_cluster_upstream_rq",  # the counter upstream_rq_total (and upstream_rq per code)
    "envoy_cluster_upstream_rq_xx",
    "envoy_cluster_upstream_rq_time",  # a histogram: its _count is the requests timed
    "envoy_cluster_upstream_rq_active",  # a gauge
)
_NOT_CLASSES = ("total", "timed", "active")


def parse_cluster_counters(text: str) -> dict[str, dict[str, int]]:
    """``{cluster stat name: {"total": n, "2xx": n, ..., "timed": n, "active": n}}`` from
    ``/stats/prometheus`` (``timed``: the ``upstream_rq_time`` histogram's sample count)."""
    out: dict[str, dict[str, int]] = {}
    for family in text_string_to_metric_families(text):
        if family.name not in _FAMILIES:
            continue
        for sample in family.samples:
            cluster = sample.labels.get("envoy_cluster_name")
            if cluster is None:
                continue
            counts = out.setdefault(cluster, {})
            if family.name == "envoy_cluster_upstream_rq_time":
                if sample.name.endswith("_count"):
                    counts["timed"] = int(sample.value)
            elif family.name == "envoy_cluster_upstream_rq_active":
                counts["active"] = int(sample.value)
            elif family.name == "envoy_cluster_upstream_rq_xx":
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
        entry.by_cluster[cluster] = {"requests": total, "timed": counts.get("timed", 0),
                                     "active": counts.get("active", 0)}
        for name, value in counts.items():
            if name not in _NOT_CLASSES:
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


# A reset is claimed only when more requests completed than were counted by more than this:
# the first reading's histograms may lag its counters by the requests that completed while it
# was taken (samples are merged per read), a few at most; a reset hides every request counted
# before it, the whole history of the cluster.
RESET_MARGIN = 10
RESET_MARGIN_SHARE = 0.01


def counters_reset(before: Mapping[str, Mapping[str, Any]], after: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Why Envoy's counters must have been reset between two readings (each ``{subset:
    SubsetCounters.to_dict()}``, as a snapshot keeps them), one line per cluster that shows it;
    empty when none does (or the readings predate ``by_cluster``). See the module docstring."""
    def clusters(reading: Mapping[str, Mapping[str, Any]]) -> dict[str, tuple[str, Mapping[str, int]]]:
        return {name: (subset, counts) for subset, entry in reading.items()
                for name, counts in (entry.get("by_cluster") or {}).items()}

    first, last = clusters(before), clusters(after)
    evidence: list[str] = []
    for name in sorted(set(first) & set(last)):
        (subset, b), (_, a) = first[name], last[name]
        if "timed" not in a or "timed" not in b:
            continue
        timed, counted = a["timed"] - b["timed"], a.get("requests", 0) - b.get("requests", 0)
        in_flight = b.get("active", 0)
        if timed < 0:  # the histogram started again: the cluster was removed and made anew since
            timed, counted, in_flight = a["timed"], a.get("requests", 0), 0
        if timed - counted - in_flight > max(RESET_MARGIN, RESET_MARGIN_SHARE * timed):
            evidence.append(
                f"{subset or '(no subset)'} ({name}): {timed} request(s) completed (Envoy's upstream_rq_time "
                f"histogram) but its request counter changed by {counted:+d}"
            )
    return evidence


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
