"""``--until-verified`` without Locust: cells, expectations, the per-cell monitor, the options."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import SplitPolicy, parse_expected
from loadtest.load import LoadRequest, locust_argv
from loadtest.options import CanaryOptions
from loadtest.sequential import (
    SequentialMonitor,
    cells_of,
    expectations_for,
    monitor_for,
    summary_rows,
)

ROOT = Path(__file__).resolve().parents[2]
FOCUSED = ROOT / "manifests" / "routing" / "virtualservice-focused-routing.yaml"
SUBSETS = ["resnet50", "resnet101"]


def _rows(cell: tuple[str, str], subsets: list[str]) -> list[dict[str, object]]:
    return [{"protocol": cell[0], "group": cell[1], "subset": s, "ok": s != "error"} for s in subsets]


def test_cells_follow_protocol_and_canary_share() -> None:
    assert cells_of(CanaryOptions()) == [("rest", "default"), ("rest", "canary"), ("grpc", "default"),
                                         ("grpc", "canary")]
    assert cells_of(CanaryOptions(protocol="rest", canary_share=0.0)) == [("rest", "default")]
    assert cells_of(CanaryOptions(protocol="grpc", canary_share=1.0)) == [("grpc", "canary")]


def test_expectations_from_expected_and_from_manifest() -> None:
    both = expectations_for(CanaryOptions(expected="70/30"), SUBSETS)
    assert {e.label() for e in both.values()} == {"resnet50=70%,resnet101=30%"} and len(both) == 4
    focused = expectations_for(CanaryOptions(from_manifest=FOCUSED), SUBSETS)
    for (_, group), expectation in focused.items():
        assert expectation.positive == (("resnet101",) if group == "canary" else ("resnet50",))


@pytest.mark.parametrize("options", [
    CanaryOptions(),  # neither
    CanaryOptions(expected="70/30", from_manifest=FOCUSED),  # both
    CanaryOptions(expected="default: 100/0"),  # the canary group has users but no split
])
def test_expectation_usage_errors(options: CanaryOptions) -> None:
    with pytest.raises(UsageError) as raised:
        expectations_for(options, SUBSETS)
    assert raised.value.exit_code == 3


def test_monitor_only_with_until_verified() -> None:
    assert monitor_for(CanaryOptions(expected="70/30"), SUBSETS) is None
    monitor = monitor_for(CanaryOptions(expected="70/30", until_verified=True, tolerance=0.05), SUBSETS)
    assert monitor is not None and monitor.policy.tolerance == 0.05


def test_deterministic_cells_verify_and_the_first_decision_is_final() -> None:
    cells = {("rest", "default"): parse_expected("100/0", SUBSETS), ("rest", "canary"): parse_expected("0/100", SUBSETS)}
    monitor = SequentialMonitor(cells)
    assert not monitor.add(_rows(("rest", "default"), ["resnet50"] * 200))
    assert monitor.status(("rest", "default")) == "verified" and monitor.overall == "continue"
    assert monitor.add(_rows(("rest", "canary"), ["resnet101"] * 200))
    n = monitor.final[("rest", "default")].n
    assert n == 200  # one look per batch; the decision is never re-opened:
    monitor.add(_rows(("rest", "default"), ["resnet101"] * 5))
    assert monitor.status(("rest", "default")) == "verified" and monitor.final[("rest", "default")].n == n
    monitor.stop("decided", cells)
    assert (monitor.overall, monitor.exit_code) == ("verified", 0)
    section = monitor.record()
    assert section.requests_to_decide == 400 and section.status == "verified"
    assert [r[3] for r in summary_rows(section)] == ["verified", "verified"]


def test_a_wrong_subset_refutes_at_once() -> None:
    monitor = SequentialMonitor({("grpc", "canary"): parse_expected("0/100", SUBSETS)})
    assert monitor.add(_rows(("grpc", "canary"), ["resnet101", "resnet50"]))
    assert monitor.overall == "refuted" and monitor.exit_code == 1
    assert monitor.record().cells[0].decided_at_request == 2


def test_weighted_split_refuted_against_the_wrong_expectation() -> None:
    rng = np.random.default_rng(7)
    monitor = SequentialMonitor({("rest", "default"): parse_expected("50/50", SUBSETS)})
    draws = rng.choice(SUBSETS, size=2000, p=[0.7, 0.3]).tolist()
    for start in range(0, len(draws), 20):  # looks after every batch of 20
        if monitor.add(_rows(("rest", "default"), draws[start:start + 20])):
            break
    assert monitor.overall == "refuted"
    assert monitor.final[("rest", "default")].n < 1000


def test_undecided_cells_are_inconclusive_and_cells_without_users_are_dropped() -> None:
    cells = {("rest", "default"): parse_expected("70/30", SUBSETS), ("rest", "canary"): parse_expected("70/30", SUBSETS)}
    monitor = SequentialMonitor(cells)
    monitor.add(_rows(("rest", "default"), ["resnet50", "resnet101"] * 5))
    assert monitor.overall == "continue" and monitor.exit_code is None
    monitor.stop("--requests 10 reached", [("rest", "default")])
    assert list(monitor.tests) == [("rest", "default")]
    assert (monitor.overall, monitor.exit_code) == ("inconclusive", 2)
    assert monitor.record().ended == "--requests 10 reached"


def test_failed_requests_count_as_errors() -> None:
    monitor = SequentialMonitor({("rest", "default"): parse_expected("100/0", SUBSETS)})
    monitor.add(_rows(("rest", "default"), ["resnet50"] * 50 + ["error"] * 10))
    assert monitor.overall == "refuted"
    assert "error_rate" in monitor.final[("rest", "default")].failures


def test_load_request_options() -> None:
    for bad in ({"until_verified": True}, {"from_manifest": FOCUSED},
                {"until_verified": True, "expected": "70/30", "tolerance": 0.7}):
        with pytest.raises(UsageError):
            LoadRequest(options=CanaryOptions.model_validate(bad)).validate()
    request = LoadRequest(options=CanaryOptions(until_verified=True, from_manifest=FOCUSED, tolerance=0.05,
                                                requests=500))
    request.validate()
    argv = locust_argv(request, "http://127.0.0.1:1", Path("/tmp/run"))
    assert "--until-verified" in argv and argv[argv.index("--tolerance") + 1] == "0.05"
    assert argv[argv.index("--from-manifest") + 1] == str(FOCUSED)


WEIGHT_70 = ROOT / "manifests" / "routing" / "virtualservice-weight-70.yaml"
MIX = {("rest", "default"): 0.4, ("rest", "canary"): 0.1, ("grpc", "default"): 0.4, ("grpc", "canary"): 0.1}


def _stream(rng: np.random.Generator, n: int, shares: dict[tuple[str, str], float]) -> list[dict[str, object]]:
    cells = list(MIX)
    picks = rng.choice(len(cells), size=n, p=list(MIX.values()))
    rows = []
    for i in picks:
        cell = cells[i]
        p = shares.get(cell, 0.7)
        rows += _rows(cell, [str(rng.choice(SUBSETS, p=[p, 1 - p]))])
    return rows


def _decide(monitor: SequentialMonitor, rows: list[dict[str, object]], batch: int = 25) -> int | None:
    for start in range(0, len(rows), batch):
        if monitor.add(rows[start:start + batch]):
            return monitor.requests
    return None


def test_pooled_cells_decide_together_far_sooner_than_one_by_one() -> None:
    expected = parse_expected("70/30", SUBSETS)
    rows = _stream(np.random.default_rng(11), 12000, {})
    pooled = SequentialMonitor(dict.fromkeys(MIX, expected), SplitPolicy(tolerance=0.05))
    assert pooled.pools == [tuple(MIX)] and pooled.alpha_per_pool == pytest.approx(0.005)
    alone = SequentialMonitor(dict.fromkeys(MIX, expected), SplitPolicy(tolerance=0.05),
                              routes={cell: f"route-{i}" for i, cell in enumerate(MIX)})
    assert alone.pools == [] and alone.alpha_per_cell == pytest.approx(0.0025)
    at_pooled, at_alone = _decide(pooled, rows), _decide(alone, rows)
    assert pooled.overall == "verified" and at_pooled is not None
    assert at_alone is None or at_pooled < at_alone / 3
    section = pooled.record()
    assert all(c.pool == "rest/default, rest/canary, grpc/default, grpc/canary" for c in section.cells)
    assert all(c.reason.startswith("pooled over") for c in section.cells)
    assert section.policy["alpha_per_pool"] == pytest.approx(0.005)


def test_a_cell_off_its_split_refutes_on_its_own_inside_a_pool() -> None:
    expected = parse_expected("70/30", SUBSETS)
    rows = _stream(np.random.default_rng(5), 12000, {("rest", "canary"): 0.0})
    monitor = SequentialMonitor(dict.fromkeys(MIX, expected), SplitPolicy(tolerance=0.05))
    _decide(monitor, rows)
    assert monitor.status(("rest", "canary")) == "refuted"
    assert ("rest", "canary") not in monitor.pooled and monitor.overall == "refuted"


def test_from_manifest_pools_cells_of_one_route() -> None:
    options = CanaryOptions(from_manifest=WEIGHT_70, until_verified=True)
    monitor = monitor_for(options, SUBSETS)
    assert monitor is not None
    assert monitor.pools == [(("rest", "default"), ("rest", "canary")), (("grpc", "default"), ("grpc", "canary"))]
