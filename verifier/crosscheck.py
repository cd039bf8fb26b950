"""Cross-check: the mesh's own per-subset request counters against the fingerprint counts.

Two independent witnesses count the requests each subset served: the
fingerprints (which model answered, from each response) and the mesh's
telemetry — locally Envoy's upstream counters per cluster (run.json
``mesh.delta``: after − before, per subset, both ports), on a cluster
Istio's ``istio_requests_total`` by ``destination_version`` from Prometheus.

Decision (pure, :func:`crosscheck`). With ``U`` the run's unattributed
requests (``unknown`` + ``error`` records: each may have been served by any
subset, or by none) and ``s_i = slack × max(fingerprint_i, mesh_i)``, the
witnesses agree when, for every subset,

    fingerprint_i − s_i  ≤  mesh_i  ≤  fingerprint_i + U + s_i

and over all subsets ``Σ fingerprint − Σ s ≤ Σ mesh ≤ Σ fingerprint + U + Σ s``.
Requests routed to the Service without a subset (a VirtualService that names
no subset, as the base routing does: the mesh counts them under ``""``, "no
subset") were served by some subset's pods, so they may stand for any
subset's fingerprints: each subset's lower bound drops by that count. The slack is 0
for Envoy's counters (exact integers; the requests a fingerprint names were
served by that subset, so the mesh must have counted them) and 5% by default
for Prometheus (``increase()`` extrapolates across scrapes and the last
scrape may trail the run's end). A mismatch means the mesh did something the
responses do not show (or other traffic went through the ingress, or a
retried attempt was counted twice): it makes the overall verdict *refuted*.
No counters (a run that did not target the local mesh, and no
``--prometheus``) is *unavailable* and leaves the verdict alone; so are
Envoy's counters reset during the run (``POST /reset_counters``: run.json
``mesh.counters_reset``, told by Envoy's histograms, which a reset leaves
alone): their after − before is no count of the run's requests, and the
cross-check says so rather than refuting the run.

The Prometheus query (HTTP API ``/api/v1/query``, evaluated at the run's end; asked
and read by :mod:`mesh.prometheus`, whose errors are MeshErrors, exit code 3)::

    sum by (destination_version) (increase(istio_requests_total{
        reporter="destination", destination_service_name="image-classifier"}[<duration>s]))

``reporter="destination"`` counts each request once (the ingress gateway
reports it too, as ``reporter="source"``). ``destination_version`` is the
pod's ``version`` label, which the DestinationRule's subsets select on
(``resnet50``, ``resnet101``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from canary.errors import CanaryError, UsageError
from canary.jsonable import jsonable
from canary.rundir import RunDocument
from mesh.manifests import Target, parse_objects
from mesh.model import DestinationRule
from mesh.prometheus import (
    DEFAULT_SERVICE,
    Prometheus,
    by_subset,
    cluster_prometheus,
    prometheus_at,
    window_query,
)

__all__ = [
    "DEFAULT_SERVICE",
    "PROMETHEUS_SLACK",
    "CrossCheck",
    "CrossCheckRow",
    "crosscheck",
    "mesh_counts_from_run",
    "prometheus_counts",
    "prometheus_crosscheck",
    "unavailable",
]

PROMETHEUS_SLACK = 0.05
CrossStatus = Literal["agree", "mismatch", "unavailable"]


@dataclass(frozen=True)
class CrossCheckRow:
    """One subset's two counts (``subset`` ``""``: the Service's cluster without a subset)."""

    subset: str
    fingerprint: int
    mesh: float
    difference: float  # mesh − fingerprint
    low: float  # the mesh count allowed, from ...
    high: float  # ... to
    agrees: bool


@dataclass(frozen=True)
class CrossCheck:
    """The cross-check's outcome; ``rows`` is empty when unavailable."""

    status: CrossStatus
    source: str  # "envoy", "prometheus", or "" when unavailable
    reason: str
    rows: tuple[CrossCheckRow, ...] = ()
    unattributed: int = 0
    slack: float = 0.0
    query: str | None = None

    @property
    def fingerprint_total(self) -> int:
        return sum(r.fingerprint for r in self.rows)

    @property
    def mesh_total(self) -> float:
        return sum(r.mesh for r in self.rows)

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def unavailable(reason: str) -> CrossCheck:
    """A cross-check that could not be made, and why."""
    return CrossCheck(status="unavailable", source="", reason=reason)


def _n(value: float) -> str:
    return f"{value:.0f}" if float(value).is_integer() else f"{value:.1f}"


def crosscheck(
    fingerprint: Mapping[str, int],
    mesh: Mapping[str, float],
    *,
    unattributed: int,
    source: str,
    slack: float = 0.0,
    subsets: Sequence[str] = (),
    query: str | None = None,
) -> CrossCheck:
    """Compare per-subset counts (see the module docstring for the rule). Pure."""
    if not 0 <= slack < 1 or unattributed < 0:
        raise UsageError(f"cross-check slack must be in [0, 1), got {slack!r}")
    names = list(dict.fromkeys([*subsets, *fingerprint, *(k for k, v in mesh.items() if v)]))
    no_subset = float(mesh.get("", 0.0))  # served by the Service's pods, whichever subset they are
    rows: list[CrossCheckRow] = []
    for name in names:
        fp, seen = int(fingerprint.get(name, 0)), float(mesh.get(name, 0.0))
        room = slack * max(fp, seen)
        low, high = fp - room - no_subset, fp + unattributed + room
        if name == "":
            low, high = 0.0, seen
        rows.append(
            CrossCheckRow(
                subset=name,
                fingerprint=fp,
                mesh=seen,
                difference=seen - fp,
                low=low,
                high=high,
                agrees=low - 1e-9 <= seen <= high + 1e-9,
            )
        )
    fp_total = sum(r.fingerprint for r in rows)
    mesh_total = sum(r.mesh for r in rows)
    total_high = fp_total + unattributed + slack * sum(max(r.fingerprint, r.mesh) for r in rows)
    total_low = fp_total - slack * sum(max(r.fingerprint, r.mesh) for r in rows)
    bad = [r for r in rows if not r.agrees]
    total_ok = total_low - 1e-9 <= mesh_total <= total_high + 1e-9
    what = "Envoy's counters" if source == "envoy" else "Prometheus (istio_requests_total)"
    allowance = f"{unattributed} unattributed request(s)" + (
        f" and {100 * slack:g}% slack" if slack else ""
    )
    if not bad and total_ok:
        reason = (
            f"{what} agree with the fingerprints: {_n(mesh_total)} vs {fp_total} requests "
            f"(allowing {allowance})"
        )
        status: CrossStatus = "agree"
    else:
        parts = [
            f"{r.subset or '(no subset)'}: mesh {_n(r.mesh)} vs fingerprints {r.fingerprint} "
            f"({r.difference:+.0f}; allowed {_n(max(r.low, 0))}–{_n(r.high)})"
            for r in bad
        ]
        if not total_ok:
            parts.append(
                f"in all: mesh {_n(mesh_total)} vs fingerprints {fp_total}, "
                f"{'more' if mesh_total > total_high else 'fewer'} than {allowance} explain"
            )
        reason = (
            f"{what} disagree with the fingerprints: {'; '.join(parts)}; the mesh routed "
            "differently from what the responses show, or other traffic used the ingress "
            "during the run"
        )
        status = "mismatch"
    return CrossCheck(
        status=status,
        source=source,
        reason=reason,
        rows=tuple(rows),
        unattributed=unattributed,
        slack=slack,
        query=query,
    )


def mesh_counts_from_run(document: RunDocument) -> tuple[dict[str, int] | None, str]:
    """Envoy's per-subset requests over the run from run.json, or ``(None, why not)``."""
    mesh = document.mesh
    if mesh.counters_reset:
        evidence = "; ".join(mesh.counters_reset_evidence)
        return None, (
            "the mesh's counters were reset during the run (POST /reset_counters on Envoy's admin); "
            "cannot cross-check records against the mesh" + (f" ({evidence})" if evidence else "")
        )
    if not mesh.local:
        return None, (
            "the run did not target the local mesh, so run.json holds no mesh counters; "
            "on a cluster, give --prometheus URL"
        )
    counts = mesh.requests_during_run()
    if counts is None:
        return None, (
            "run.json has no usable mesh counters after the run (mesh.delta / counters_after); "
            "the run may have been interrupted before the mesh was read again"
        )
    return counts, ""


# --- Prometheus (reached through mesh.prometheus, its one owner) ------------------------


def prometheus_counts(
    prometheus: str | Prometheus,
    *,
    window_s: float,
    at: dt.datetime,
    service: str = DEFAULT_SERVICE,
    namespace: str | None = None,
    timeout: float = 10.0,
) -> tuple[dict[str, float], str]:
    """Ask Prometheus (a URL, or one :mod:`mesh.prometheus` reached) for the requests per subset
    over the run's ``window_s`` ending ``at``; returns ``(counts, query)``. MeshError (exit 3)
    when it cannot be asked or its answer cannot be read."""
    source = prometheus_at(prometheus, timeout) if isinstance(prometheus, str) else prometheus
    query = window_query(window_s, service, namespace)
    return source.query(query, at), query


def _recorded_rule(document: RunDocument) -> DestinationRule | None:
    """The DestinationRule of the routing the run recorded (its first phase), if any."""
    phases = document.mesh.routing
    docs = [(o.source, o.document) for o in phases[0].objects if o.document.get("kind") == "DestinationRule"] \
        if phases else []
    try:
        rules = [o for o in parse_objects(docs, target=Target.CLUSTER) if isinstance(o, DestinationRule)]
    except CanaryError:
        return None
    return rules[0] if len(rules) == 1 else None


def prometheus_crosscheck(
    fingerprint: Mapping[str, int],
    document: RunDocument,
    url: str | None,
    *,
    window_s: float,
    end: dt.datetime,
    unattributed: int,
    slack: float,
    subsets: Sequence[str],
    service: str = DEFAULT_SERVICE,
    timeout: float = 10.0,
) -> CrossCheck:
    """The fingerprints against Istio's ``istio_requests_total`` over the run's window.

    ``url`` given (``--prometheus``): that Prometheus; it must answer (MeshError, exit 3) and a
    disagreement refutes. Else, for a run through a cluster, that cluster's Istio Prometheus
    (the context and namespace run.json records), found through its API server: anything that
    keeps it from answering, no counts for the window (not scraped yet, retention passed, model
    pods without a sidecar) and even a disagreement make the cross-check *unavailable* with the
    figures, never a refutation, since nobody asked for that Prometheus. Versions are mapped to
    the recorded DestinationRule's subsets, the service is its host."""
    mesh = document.mesh
    rule = _recorded_rule(document)
    if rule is not None:
        service = rule.host.split(".")[0]
    namespace = mesh.namespace if mesh.backend == "kube" else None
    if url:
        counts, query = prometheus_counts(url, window_s=window_s, at=end, service=service, namespace=namespace,
                                          timeout=timeout)
        if sum(counts.values()) <= 0 < sum(fingerprint.values()):  # no telemetry is no evidence of routing
            return unavailable(f"Prometheus at {url} holds no istio_requests_total for the run's {window_s:.0f} s "
                               "window (a window shorter than its scrape interval, retention passed, another "
                               "service name, or no Istio sidecar on the model pods); nothing to cross-check")
        return crosscheck(fingerprint, by_subset(counts, rule), unattributed=unattributed, source="prometheus",
                          slack=slack, subsets=subsets, query=query)
    context = f'context "{mesh.context}"' if mesh.context else "the kubeconfig's current context"
    try:
        found = cluster_prometheus(mesh.context)
        if found is None:
            return unavailable(f"the run went through a cluster ({context}) with no Prometheus found (Istio's "
                               "addon Service istio-system/prometheus); give --prometheus URL to cross-check")
        counts, query = prometheus_counts(found, window_s=window_s, at=end, service=service, namespace=namespace,
                                          timeout=timeout)
    except CanaryError as error:
        return unavailable(f"the cluster's Prometheus ({context}) cannot be asked: {error}")
    mapped = by_subset(counts, rule)
    if sum(mapped.values()) <= 0:
        return unavailable(f"the cluster's Prometheus ({context}) holds no istio_requests_total for the run's "
                           "window (not scraped yet, retention passed, or no Istio sidecar on the model pods); "
                           "give --prometheus URL to cross-check strictly")
    check = crosscheck(fingerprint, mapped, unattributed=unattributed, source="prometheus", slack=slack,
                       subsets=subsets, query=query)
    if check.status == "mismatch":
        return unavailable(f"not used against the verdict (the cluster's Prometheus was found, not given: its "
                           f"last scrape may trail the run): {check.reason}; give --prometheus URL to "
                           "cross-check strictly")
    return check
