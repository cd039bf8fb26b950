"""The live view behind the Canary tab: rows per protocol × group, progress, latency, history."""

from __future__ import annotations

import threading
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import SplitPolicy, parse_expected, verify_group
from loadtest.latency import LatencySummary
from loadtest.live import (
    LiveCounts,
    LiveSettings,
    Progress,
    cell_rows,
    planned_requests,
    settings_from_options,
    snapshot_json,
    subset_order,
)
from loadtest.options import options_from_parsed
from verifier.planning import plan_checks

SUBSETS = ("resnet50", "resnet101")
SEVENTY = parse_expected("70/30", SUBSETS)
CANARY_ONLY = parse_expected("resnet101=100", SUBSETS)
ALL_CELLS = (("rest", "default"), ("rest", "canary"), ("grpc", "default"), ("grpc", "canary"))


def records(protocol: str, group: str, latency_ms: float = 10.0, **counts: int) -> list[dict[str, Any]]:
    return [
        {"protocol": protocol, "group": group, "subset": subset, "latency_ms": latency_ms}
        for subset, n in counts.items()
        for _ in range(n)
    ]


def settings(expected: str = "default: 70/30; canary: 0/100", **options: Any) -> LiveSettings:
    parsed = SimpleNamespace(expected=expected, **options)
    return settings_from_options(options_from_parsed(parsed), SUBSETS)


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def by_cell(rows: Any) -> dict[tuple[str, str], Any]:
    return {(r.protocol, r.group): r for r in rows}


# --- rows -----------------------------------------------------------------------------


def test_one_row_per_protocol_and_group_in_display_order() -> None:
    counts = {
        ("grpc", "canary"): {"resnet101": 5},
        ("rest", "default"): {"resnet50": 70, "resnet101": 28, "unknown": 1, "error": 1},
    }
    rows = cell_rows(counts, {}, LiveSettings(cells=(("rest", "canary"),), subsets=SUBSETS))
    assert [(r.protocol, r.group) for r in rows] == [
        ("rest", "default"),
        ("rest", "canary"),  # given users by the options: shown before any record
        ("grpc", "canary"),
    ]
    rest = rows[0]
    assert [(s.subset, s.count) for s in rest.shares] == [("resnet50", 70), ("resnet101", 28)]
    assert (rest.attributed, rest.unknown, rest.error, rest.total) == (98, 1, 1, 100)
    assert rest.shares[0].share == pytest.approx(70 / 98)
    assert rows[1].shares == () and rows[1].total == 0 and rows[1].verdict is None


def test_intervals_and_verdict_are_verify_groups() -> None:
    policy = SplitPolicy(alpha=0.05)
    three = parse_expected("50/25/25", ("a", "b", "c"))
    live_settings = LiveSettings(
        expected={("rest", "default"): SEVENTY, ("grpc", "default"): three}, policy=policy
    )
    tables = {
        ("rest", "default"): {"resnet50": 640, "resnet101": 360, "unknown": 2},
        ("grpc", "default"): {"a": 500, "b": 260, "c": 240},
    }
    for row in cell_rows(tables, {}, live_settings):
        cell = (row.protocol, row.group)
        verdict = verify_group(tables[cell], live_settings.expected[cell], policy, group=row.group)
        assert (row.verdict, row.reason) == (verdict.status, verdict.reason)
        assert [(s.subset, s.low, s.high, s.expected) for s in row.shares] == [
            (e.subset, e.ci_low, e.ci_high, e.expected) for e in verdict.shares
        ]
    rest = by_cell(cell_rows(tables, {}, live_settings))[("rest", "default")]
    assert rest.verdict == "refuted"  # 64% against 70% ± 3 points on 1000 responses


def test_exact_interval_without_expectation() -> None:
    (row,) = cell_rows({("rest", "default"): {"resnet50": 7, "resnet101": 3}}, {}, LiveSettings(subsets=SUBSETS))
    assert row.expected is None and row.verdict is None
    share = row.shares[0]
    assert (share.share, share.expected) == (0.7, None)
    # Clopper–Pearson 95% for 7 of 10
    assert share.low == pytest.approx(0.3475, abs=1e-4)
    assert share.high == pytest.approx(0.9333, abs=1e-4)


def test_subset_order_expected_first_then_mesh_order_then_names() -> None:
    assert subset_order(["zeta", "resnet101", "alpha", "unknown", "error"], None, SUBSETS) == [
        "resnet101", "alpha", "zeta",
    ]
    expectation = parse_expected("resnet101=100", SUBSETS)
    assert subset_order(["resnet152"], expectation, SUBSETS) == ["resnet50", "resnet101", "resnet152"]
    (row,) = cell_rows({("rest", "default"): {"resnet152": 1}},
                       {}, LiveSettings(expected={("rest", "default"): SEVENTY}))
    assert [(s.subset, s.count, s.expected) for s in row.shares] == [
        ("resnet50", 0, 0.7), ("resnet101", 0, 0.3), ("resnet152", 1, 0.0),
    ]
    assert row.verdict == "refuted"  # a subset that should get nothing answered


def test_latency_is_listed_per_subset_of_the_row() -> None:
    summary = LatencySummary(n=3, p50=1.0, p95=2.0, p99=3.0)
    (row,) = cell_rows({("rest", "default"): {"resnet50": 3, "error": 1}},
                       {("rest", "default"): {"resnet50": summary}}, LiveSettings())
    assert row.latency == {"resnet50": summary}


# --- progress -------------------------------------------------------------------------


def test_progress_toward_the_requests_budget_split_by_the_users_share() -> None:
    live_settings = settings(requests=1000, canary_share=0.2)
    assert live_settings.run_target() == 1000
    targets = live_settings.cell_targets()
    assert targets == {("rest", "default"): 400, ("rest", "canary"): 100,
                       ("grpc", "default"): 400, ("grpc", "canary"): 100}
    rows = by_cell(cell_rows({("rest", "default"): {"resnet50": 70, "resnet101": 30}}, {}, live_settings))
    assert rows[("rest", "default")].progress == Progress(100, 400)
    assert rows[("rest", "default")].progress.fraction == 0.25
    assert rows[("grpc", "canary")].progress == Progress(0, 100)


def test_progress_toward_what_verify_split_plan_would_ask() -> None:
    live_settings = settings(canary_share=0.25, tolerance=0.05)
    plan = plan_checks(expected="default: 70/30; canary: 0/100", policy=SplitPolicy(tolerance=0.05),
                       protocols=("rest", "grpc"), canary_share=0.25, stable="resnet50")
    assert planned_requests(live_settings) == live_settings.run_target() == plan.requests
    assert live_settings.cell_targets()[("rest", "default")] == round(plan.requests * 0.375)


def test_nothing_to_plan_without_expectation() -> None:
    live_settings = settings(expected="")
    assert live_settings.run_target() is None and live_settings.cell_targets() == {}
    assert Progress(5, None).fraction is None


# --- settings from options ------------------------------------------------------------


def test_settings_follow_the_options() -> None:
    live_settings = settings(expected="70/30", protocol="grpc", canary_share=0.0,
                             canary_header="x-canary: yes", tolerance=0.02)
    assert live_settings.cells == (("grpc", "default"),)
    assert live_settings.expected[("grpc", "default")] == SEVENTY
    assert live_settings.expected[("rest", "canary")] == SEVENTY  # a split without group: every group
    assert live_settings.header == "x-canary: yes"
    assert live_settings.policy.tolerance == 0.02
    assert live_settings.protocols == ("grpc",)


def test_bad_expected_split_is_a_usage_error() -> None:
    with pytest.raises(UsageError, match="sum"):
        settings(expected="70/40")


# --- the aggregator -------------------------------------------------------------------


def test_live_counts_rows_latency_and_json() -> None:
    live = LiveCounts(settings())
    live.add(records("rest", "default", latency_ms=20.0, resnet50=70, resnet101=30))
    live.add(records("rest", "default", latency_ms=500.0, error=2, unknown=1))
    live.add([{"protocol": "grpc", "subset": None}])
    snapshot = live.snapshot()
    rows = by_cell(snapshot.rows)
    rest = rows[("rest", "default")]
    assert (rest.attributed, rest.unknown, rest.error) == (100, 1, 2)
    assert rest.latency["resnet50"].p50 == pytest.approx(20.0, rel=0.01)  # failures' 500 ms left out
    assert rows[("grpc", "default")].unknown == 1  # a missing group is the default group
    assert snapshot.run.done == 104 == live.total()
    data = snapshot_json(snapshot)
    (rest_json,) = [r for r in data["rows"] if r["cell"] == "rest/default"]
    assert rest_json["shares"][0] == {"subset": "resnet50", "count": 70, "share": 0.7,
                                      "low": pytest.approx(rest.shares[0].low), "high": pytest.approx(
                                          rest.shares[0].high), "expected": 0.7}
    assert rest_json["latency_ms"]["resnet50"]["n"] == 70
    assert data["settings"]["expected"]["rest/canary"] == "resnet50=0%,resnet101=100%"


def test_history_samples_shares_and_latency_windows() -> None:
    clock = Clock()
    live = LiveCounts(settings(), sample_interval_s=1.0, clock=clock)
    live.add(records("rest", "default", latency_ms=10.0, resnet50=7, resnet101=3))  # starts the clock
    clock.now += 1.0
    live.add(records("rest", "default", latency_ms=50.0, resnet50=3, resnet101=7))
    clock.now += 0.5
    live.add(records("rest", "default", resnet50=1))  # before the interval: no point
    clock.now += 0.5
    live.add(records("grpc", "canary", latency_ms=30.0, resnet101=4))
    first, second = live.snapshot().history
    assert first.t == 1.0 and second.t == 2.0
    assert first.shares[("rest", "default")] == {"resnet50": 0.5, "resnet101": 0.5}
    assert first.latency["rest"]["resnet50"].n == 10  # 7 + 3 since the clock started
    assert second.latency["rest"]["resnet50"].n == 1  # only the window since the first point
    assert second.latency["rest"]["resnet50"].p50 == pytest.approx(10.0, rel=0.01)
    assert "resnet101" not in second.latency["rest"]
    assert second.latency["grpc"]["resnet101"].p95 == pytest.approx(30.0, rel=0.01)


def test_history_stays_bounded_by_thinning() -> None:
    clock = Clock()
    live = LiveCounts(sample_interval_s=1.0, max_points=10, clock=clock)
    for _ in range(200):
        live.add(records("rest", "default", resnet50=1))
        clock.now += 1.0
    history = live.snapshot().history
    assert 5 <= len(history) <= 10
    times = [p.t for p in history]
    assert times == sorted(times) and times[-1] >= 150  # still covers the whole run
    gaps = np.diff(times)
    assert gaps.max() >= 16  # the interval doubled as it thinned


def test_reset_clears_counts_and_history_but_keeps_settings() -> None:
    clock = Clock()
    live_settings = settings()
    live = LiveCounts(live_settings, sample_interval_s=1.0, clock=clock)
    for _ in range(3):
        live.add(records("rest", "default", resnet50=5))
        clock.now += 1.0
    assert live.snapshot().history
    live.reset()
    snapshot = live.snapshot()
    assert live.total() == 0 and snapshot.history == () and snapshot.settings is live_settings
    assert all(row.total == 0 for row in snapshot.rows)


def test_snapshot_is_cached_until_something_changes() -> None:
    live = LiveCounts()
    live.add(records("rest", "default", resnet50=1))
    first = live.snapshot()
    assert live.snapshot() is first
    live.add([])
    assert live.snapshot() is first
    live.configure(LiveSettings())
    assert live.snapshot() is first  # the same settings
    live.configure(settings())
    second = live.snapshot()
    assert second is not first and second.rows[0].expected == SEVENTY
    live.add(records("rest", "default", resnet50=1))
    assert live.snapshot().rows[0].shares[0].count == 2


def test_bad_sampling_arguments() -> None:
    with pytest.raises(ValueError):
        LiveCounts(sample_interval_s=0)
    with pytest.raises(ValueError):
        LiveCounts(max_points=1)


def test_concurrent_adds_and_snapshots_lose_nothing() -> None:
    live = LiveCounts(settings(), sample_interval_s=0.001)
    batch = records("rest", "default", resnet50=7, resnet101=3) + records("grpc", "canary", resnet101=5)
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
    rest = by_cell(live.snapshot().rows)[("rest", "default")]
    assert rest.shares[0].count == writers * batches * 7
    assert rest.latency["resnet50"].n == writers * batches * 7
