"""The mesh's counters since the last routing change: the arithmetic, the change, the state format."""

from __future__ import annotations

import orjson
import pytest

from mesh.counters import SubsetCounters, counter_marks, counts_since, shares
from mesh.local.state import AppliedVersion, MeshState, last_routing_change


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
    state = MeshState(ingress_address="127.0.0.1", ingress_ports={80: 8081}, admin_port=9901, store="/s", tiny=True)
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
