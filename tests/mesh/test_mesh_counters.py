"""The mesh's counters since the last routing change: the arithmetic, the change, the state format."""

from __future__ import annotations

import orjson
import pytest

from mesh.counters import (
    SubsetCounters,
    counter_marks,
    counters_reset,
    counts_since,
    shares,
    subset_counters,
)
from mesh.local.state import AppliedVersion, MeshState, last_routing_change
from mesh.translate import ClusterKey


def _now(**requests: tuple[int, dict[str, int]]) -> dict[str, SubsetCounters]:
    return {s: SubsetCounters(subset=s, requests=n, by_class=dict(c)) for s, (n, c) in requests.items()}


def test_counts_since_subtracts_the_marks_per_subset_and_class() -> None:
    marks = {"resnet50": {"total": 120, "2xx": 118, "5xx": 2}, "resnet101": {"total": 0}}
    now = _now(resnet50=(190, {"2xx": 187, "5xx": 3}), resnet101=(30, {"2xx": 30}))
    assert counts_since(now, marks) == {
        "resnet50": {"total": 70, "2xx": 69, "5xx": 1},
        "resnet101": {"total": 30, "2xx": 30},
    }


def test_a_subset_new_since_the_marks_counts_everything() -> None:
    assert counts_since(_now(canary=(12, {"2xx": 12})), {}) == {"canary": {"total": 12, "2xx": 12}}


def test_a_counter_below_its_mark_was_restarted_and_counts_from_zero() -> None:
    # the subset's clusters were removed and made anew: Envoy started them again at zero
    assert counts_since(_now(resnet101=(7, {"2xx": 7})), {"resnet101": {"total": 50, "2xx": 50}}) == {
        "resnet101": {"total": 7, "2xx": 7}
    }


def test_marks_are_what_counts_since_reads_back() -> None:
    now = _now(resnet50=(40, {"2xx": 40}), resnet101=(10, {"2xx": 9, "5xx": 1}))
    assert counter_marks(now) == {"resnet50": {"total": 40, "2xx": 40}, "resnet101": {"total": 10, "2xx": 9, "5xx": 1}}
    assert all(c["total"] == 0 for c in counts_since(now, counter_marks(now)).values())


def test_shares_are_fractions_of_the_sum_and_none_without_requests() -> None:
    assert shares({"resnet50": 21, "resnet101": 9, "": 0}) == {"resnet50": 0.7, "resnet101": 0.3, "": 0.0}
    assert shares({"resnet50": 0, "resnet101": 0}) == {"resnet50": None, "resnet101": None}


def _version(n: int, sha: str, *, applied: bool = True, failed: bool = False) -> AppliedVersion:
    return AppliedVersion(n, f"t{n}", f"a{n}" if applied else None, [], routing_sha256=sha, failed=failed)


@pytest.mark.parametrize(
    ("history", "expected"),
    [
        ([], None),
        ([_version(1, "A", applied=False)], None),
        ([_version(1, "A")], 1),
        ([_version(1, "A"), _version(2, "B")], 2),
        ([_version(1, "A"), _version(2, "B"), _version(3, "B")], 2),  # pods only: no routing change
        ([_version(1, "A"), _version(2, "B"), _version(3, "C", failed=True)], 2),
        ([_version(1, "A"), _version(2, "B"), _version(3, "C", applied=False)], 2),  # still pending
        ([_version(1, "A"), _version(2, "B"), _version(3, "A")], 3),  # back to A is a change too
    ],
)
def test_the_last_routing_change_is_the_newest_acknowledged_new_routing(
    history: list[AppliedVersion], expected: int | None
) -> None:
    change = last_routing_change(history)
    assert (change.version if change else None) == expected


def _state_json(**version: object) -> bytes:
    state = MeshState(ingress_address="127.0.0.1", ingress_ports={80: 8081}, store="/s", tiny=True,
                      admin_socket="/s/mesh/admin/envoy.sock")
    doc = orjson.loads(state.to_json())
    doc["history"] = [{"version": 1, "started_at": "t1", "applied_at": "a1", "files": [], **version}]
    return orjson.dumps(doc)


def test_a_state_file_from_before_the_counters_loads_without_them() -> None:
    [version] = MeshState.from_json(_state_json()).history
    assert version.counters is None


def test_the_counters_at_a_version_survive_the_state_file() -> None:
    counters = {"resnet50": {"total": 20, "2xx": 20}, "": {"total": 0}}
    state = MeshState.from_json(_state_json(counters=counters))
    assert MeshState.from_json(state.to_json()).history[0].counters == counters


# --- a reset of Envoy's counters (POST /reset_counters) -------------------------------------------

_PROMETHEUS = """# TYPE envoy_cluster_upstream_rq_total counter
envoy_cluster_upstream_rq_total{envoy_cluster_name="c50"} 40
envoy_cluster_upstream_rq_total{envoy_cluster_name="other"} 9
# TYPE envoy_cluster_upstream_rq_xx counter
envoy_cluster_upstream_rq_xx{envoy_response_code_class="2",envoy_cluster_name="c50"} 38
envoy_cluster_upstream_rq_xx{envoy_response_code_class="5",envoy_cluster_name="c50"} 1
# TYPE envoy_cluster_upstream_rq_active gauge
envoy_cluster_upstream_rq_active{envoy_cluster_name="c50"} 1
# TYPE envoy_cluster_upstream_rq_time histogram
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c50",le="5"} 30
envoy_cluster_upstream_rq_time_bucket{envoy_cluster_name="c50",le="+Inf"} 39
envoy_cluster_upstream_rq_time_sum{envoy_cluster_name="c50"} 120
envoy_cluster_upstream_rq_time_count{envoy_cluster_name="c50"} 39
"""


def test_subset_counters_keep_each_clusters_timed_and_active_requests_apart_from_the_classes() -> None:
    index = {"c50": ClusterKey(service="svc", port=8501, subset="resnet50", namespace="ns")}
    [entry] = subset_counters(_PROMETHEUS, index).values()
    assert entry.requests == 40 and entry.by_class == {"2xx": 38, "5xx": 1}
    assert entry.by_cluster == {"c50": {"requests": 40, "timed": 39, "active": 1}}
    assert entry.to_dict()["by_cluster"] == {"c50": {"requests": 40, "timed": 39, "active": 1}}


def _reading(**clusters: tuple[int, int, int]) -> dict[str, dict[str, object]]:
    """{subset "resnet50": to_dict()} with each cluster's (requests, timed, active)."""
    by_cluster = {c: {"requests": r, "timed": t, "active": a} for c, (r, t, a) in clusters.items()}
    return {"resnet50": {"requests": sum(r for r, _, _ in clusters.values()), "by_cluster": by_cluster}}


@pytest.mark.parametrize(
    ("before", "after", "reset"),
    [
        ((100, 100, 0), (160, 160, 0), False),  # counted and timed grew alike
        ((100, 98, 2), (160, 160, 0), False),  # two in flight at the first reading completed
        ((100, 100, 0), (170, 160, 0), False),  # ten failed before a response: counted, never timed
        ((100, 100, 0), (60, 60, 0), False),  # the cluster was made anew: both started again
        ((100, 100, 0), (20, 60, 0), True),  # made anew, then zeroed
        ((100, 100, 0), (60, 160, 0), True),  # zeroed, then 60 requests: 60 timed more than counted
        ((100, 100, 0), (130, 160, 0), True),  # zeroed after 30 of them
        ((100, 98, 2), (60, 161, 0), True),
        ((0, 0, 0), (60, 60, 0), False),  # zeroed while it had counted nothing: no harm, no reset
        ((100, 92, 0), (160, 160, 0), False),  # the first reading's histogram lagged by 8: within the margin
        ((1000, 1000, 0), (5025, 5060, 0), False),  # 35 more timed of 4,060: within 1% (a lag under foreign traffic)
        ((1000, 1000, 0), (4000, 5060, 0), True),  # 1,060 more timed than counted: a reset
        ((12, 12, 0), (1, 13, 0), True),  # a reset that hid 11 requests: just beyond the margin
    ],
)
def test_counters_reset_when_more_requests_were_timed_than_counted(
    before: tuple[int, int, int], after: tuple[int, int, int], reset: bool
) -> None:
    evidence = counters_reset(_reading(c50=before), _reading(c50=after))
    assert bool(evidence) is reset
    if reset:
        assert evidence[0].startswith("resnet50 (c50): ") and "upstream_rq_time" in evidence[0]


def test_counters_reset_compares_clusters_read_both_times_only() -> None:
    before = _reading(c50=(100, 100, 0), gone=(50, 40, 0))
    assert counters_reset(before, _reading(c50=(160, 160, 0), new=(0, 30, 0))) == []
    old = {"resnet50": {"requests": 100}}  # a reading from before by_cluster says nothing
    assert counters_reset(old, _reading(c50=(5, 160, 0))) == []
