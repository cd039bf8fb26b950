"""LiveCounts: the thread-safe aggregator behind the web UI's Canary tab."""

from __future__ import annotations

import threading

import pytest

from canary.stats import SplitPolicy, parse_expected, verify_group
from loadtest.live import LiveCounts

SUBSETS = ("resnet50", "resnet101")
SEVENTY = parse_expected("70/30", SUBSETS)
CANARY_ONLY = parse_expected("resnet101=100", SUBSETS)


def records(protocol: str, group: str, **counts: int) -> list[dict[str, str]]:
    return [
        {"protocol": protocol, "group": group, "subset": subset}
        for subset, n in counts.items()
        for _ in range(n)
    ]


def table(rows: list, protocol: str, group: str) -> dict[str, dict]:
    return {r["subset"]: r for r in rows if (r["protocol"], r["group"]) == (protocol, group)}


def test_counts_sorted_with_observed_shares_of_attributed_responses() -> None:
    live = LiveCounts()
    live.add(records("rest", "default", resnet50=70, resnet101=28, unknown=1, error=1))
    live.add(records("grpc", "canary", resnet101=5))
    rows = live.snapshot()
    keys = [(r["protocol"], r["group"], r["subset"]) for r in rows]
    assert keys == sorted(keys)
    rest = table(rows, "rest", "default")
    assert set(rest) == {"resnet50", "resnet101", "unknown", "error"}
    assert rest["resnet50"]["count"] == 70
    assert rest["resnet50"]["observed_share"] == pytest.approx(70 / 98)
    assert rest["resnet101"]["observed_share"] == pytest.approx(28 / 98)
    assert rest["unknown"]["count"] == rest["error"]["count"] == 1
    assert rest["unknown"]["observed_share"] is None and rest["error"]["observed_share"] is None
    assert {(r["attributed"], r["unknown"], r["error"], r["total"]) for r in rest.values()} == {
        (98, 1, 1, 100)
    }
    grpc = table(rows, "grpc", "canary")
    assert grpc["resnet101"]["observed_share"] == 1.0
    assert grpc["error"]["count"] == 0


def test_without_expectation_nothing_is_judged() -> None:
    live = LiveCounts()
    live.add(records("rest", "default", resnet50=7, resnet101=3))
    for row in live.snapshot():
        assert row["expected_share"] is None
        assert row["p_value"] is None
        assert row["verdict"] is None


def test_p_value_and_verdict_are_verify_splits() -> None:
    policy = SplitPolicy(alpha=0.05)
    live = LiveCounts(policy)
    live.set_expected({"default": SEVENTY, "canary": CANARY_ONLY})
    live.add(records("rest", "default", resnet50=640, resnet101=360, unknown=2))
    live.add(records("grpc", "default", resnet50=700, resnet101=300))
    live.add(records("rest", "canary", resnet101=400, resnet50=1))
    rows = live.snapshot()
    for protocol, counts in (
        ("rest", {"resnet50": 640, "resnet101": 360, "unknown": 2}),
        ("grpc", {"resnet50": 700, "resnet101": 300}),
    ):
        expected = verify_group(counts, SEVENTY, policy, group="default")
        for row in table(rows, protocol, "default").values():
            assert expected.sample_ratio is not None
            assert row["p_value"] == expected.sample_ratio.p_value
            assert row["verdict"] == expected.status
    rest = table(rows, "rest", "default")
    assert rest["resnet50"]["expected_share"] == pytest.approx(0.7)
    assert rest["resnet101"]["expected_share"] == pytest.approx(0.3)
    assert rest["unknown"]["expected_share"] is None
    assert rest["resnet50"]["p_value"] < 0.001
    # a header route expects one subset: no p-value; one wrong response refutes it
    canary = table(rows, "rest", "canary")
    assert canary["resnet101"]["expected_share"] == 1.0
    assert canary["resnet50"]["expected_share"] == 0.0
    assert canary["resnet50"]["p_value"] is None
    assert canary["resnet50"]["verdict"] == "refuted"


def test_expected_subsets_show_before_any_response_from_them() -> None:
    live = LiveCounts()
    live.set_expected({"default": SEVENTY})
    live.add(records("rest", "default", resnet50=3))
    rest = table(live.snapshot(), "rest", "default")
    assert rest["resnet101"]["count"] == 0
    assert rest["resnet101"]["observed_share"] == 0.0
    assert rest["resnet101"]["expected_share"] == pytest.approx(0.3)


def test_subsets_outside_the_expectation_are_shown_with_zero_expected_share() -> None:
    live = LiveCounts()
    live.set_expected({"default": SEVENTY})
    live.add(records("rest", "default", resnet50=30, resnet101=10, resnet152=1))
    rest = table(live.snapshot(), "rest", "default")
    assert rest["resnet152"]["expected_share"] == 0.0
    assert rest["resnet152"]["verdict"] == "refuted"


def test_missing_fields_fall_back_to_unknown_subset_and_default_group() -> None:
    live = LiveCounts()
    live.add([{"protocol": "rest", "subset": None}, {"protocol": "rest", "group": "default"}])
    rest = table(live.snapshot(), "rest", "default")
    assert rest["unknown"]["count"] == 2
    assert rest["unknown"]["attributed"] == 0


def test_reset_forgets_counts_but_keeps_expectations() -> None:
    live = LiveCounts()
    live.set_expected({"default": SEVENTY})
    live.add(records("rest", "default", resnet50=5))
    live.reset()
    assert live.snapshot() == []
    assert live.total() == 0
    live.add(records("rest", "default", resnet101=1))
    assert table(live.snapshot(), "rest", "default")["resnet101"]["expected_share"] == 0.3


def test_snapshot_is_cached_until_something_changes() -> None:
    live = LiveCounts()
    live.add(records("rest", "default", resnet50=1))
    first = live.snapshot()
    assert live.snapshot() is first
    live.add([])
    assert live.snapshot() is first
    live.set_expected({})
    assert live.snapshot() is first
    live.set_expected({"default": SEVENTY})
    second = live.snapshot()
    assert second is not first
    live.set_expected({"default": parse_expected("resnet50=70,resnet101=30")})
    assert live.snapshot() is second
    live.add(records("rest", "default", resnet50=1))
    assert table(live.snapshot(), "rest", "default")["resnet50"]["count"] == 2


def test_concurrent_adds_and_snapshots_lose_nothing() -> None:
    live = LiveCounts()
    live.set_expected({"default": SEVENTY})
    batch = records("rest", "default", resnet50=7, resnet101=3) + records(
        "grpc", "canary", resnet101=5
    )
    writers, batches = 8, 200
    errors: list[BaseException] = []

    def write() -> None:
        for _ in range(batches):
            live.add(batch)

    def read() -> None:
        try:
            for _ in range(50):
                live.snapshot()
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=write) for _ in range(writers)]
    threads += [threading.Thread(target=read) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not errors
    assert live.total() == writers * batches * len(batch)
    rest = table(live.snapshot(), "rest", "default")
    assert rest["resnet50"]["count"] == writers * batches * 7
    assert rest["resnet50"]["observed_share"] == pytest.approx(0.7)
