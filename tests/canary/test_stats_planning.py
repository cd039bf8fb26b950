"""Planning, and the fixed-sample error rates it promises, checked by simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import SplitPolicy, classify_counts, parse_expected, plan_requests
from canary.stats.planning import refute_power, verify_power

POLICY = SplitPolicy()
W = parse_expected("70/30", ["resnet50", "resnet101"])
RUNS = 4000


def simulate(expected, truth, n, runs=RUNS, seed=0, policy=POLICY):
    """Status counts of ``runs`` fixed-sample verdicts of n responses from ``truth``."""
    rng = np.random.default_rng(seed)
    table = rng.multinomial(n, truth, size=runs)
    statuses = classify_counts(table, expected, policy)
    return {s: float(np.mean(statuses == s)) for s in ("verified", "refuted", "inconclusive")}


def mc_slack(p, runs=RUNS):
    """Four binomial standard errors."""
    return 4 * np.sqrt(p * (1 - p) / runs)


def test_plan_70_30():
    plan = plan_requests(W, POLICY)
    assert plan.n == 3621  # pinned: a change here changes what `verify-split --plan` prints
    # normal approximation: (1.96 + 1.96)² · 0.21 / 0.03² ≈ 3586; exact enumeration says 3621
    assert 3500 < plan.n < 3700
    assert plan.kind == "weighted" and plan.method == "exact binomial enumeration"
    assert plan.verify_power >= 0.95
    assert verify_power(W, POLICY, plan.n - 40) < 0.95  # not far from the smallest n
    assert plan.requests == int(np.ceil(plan.n / (1 - 0.005 - 0.001)))
    assert plan.detectable_deviation is not None and 0.03 < plan.detectable_deviation < 0.05
    assert refute_power(W, POLICY, plan.n, plan.detectable_deviation) >= 0.95
    assert (plan.false_refute_rate, plan.false_verify_rate) == (0.01, pytest.approx(0.025))
    text = plan.summary()
    assert f"{plan.requests:,} requests per group" in text and "false refutation ≤ 1%" in text
    assert json.loads(json.dumps(plan.to_dict()))["n"] == plan.n


def test_plan_deterministic_route():
    plan = plan_requests(parse_expected("100/0", ["resnet50", "resnet101"]), POLICY)
    assert plan.n == 99  # log(0.05)/log(0.97) = 98.4
    assert plan.verify_power == 1.0 and plan.false_refute_rate == 0.0
    assert plan.detectable_deviation == pytest.approx(1 - 0.05 ** (1 / 99), abs=1e-3)
    assert "false refutation: none" in plan.summary()
    # any wrong-subset response refutes, so a leak below the tolerance can be planned for
    leak = plan_requests(parse_expected("100/0", ["resnet50", "resnet101"]), POLICY, detect=0.01)
    assert leak.n == 299 and leak.detect_power is not None and leak.detect_power >= 0.95


def test_plan_with_a_deviation_to_detect():
    base = plan_requests(W, POLICY)
    plan = plan_requests(W, POLICY, detect=0.04)
    assert plan.n > base.n and plan.detect_power is not None and plan.detect_power >= 0.95
    with pytest.raises(UsageError):
        plan_requests(W, POLICY, detect=0.02)  # at or below the tolerance: unreachable
    with pytest.raises(UsageError):
        plan_requests(W, SplitPolicy(alpha=0.05, power=0.96))  # power ≥ 1 − alpha


def test_at_planned_n_a_true_split_is_rarely_refuted_and_usually_verified():
    n = plan_requests(W, POLICY).n
    rates = simulate(W, [0.7, 0.3], n)
    assert rates["refuted"] <= POLICY.alpha + 0.01
    exact = verify_power(W, POLICY, n)
    assert abs(rates["verified"] - exact) <= mc_slack(exact)  # the enumeration is exact
    assert rates["verified"] >= 0.95 - mc_slack(0.95)


def test_at_planned_n_a_75_25_split_is_refuted():
    n = plan_requests(W, POLICY).n
    rates = simulate(W, [0.75, 0.25], n, seed=1)
    assert rates["refuted"] >= 0.95
    assert rates["verified"] == 0.0
    assert abs(rates["refuted"] - refute_power(W, POLICY, n, 0.05)) <= mc_slack(0.99)


@pytest.mark.parametrize("truth", [0.5, 0.7, 0.72, 0.75])
def test_too_few_requests_are_inconclusive_never_verified(truth):
    rates = simulate(W, [truth, 1 - truth], 50, seed=2)
    assert rates["verified"] == 0.0
    if truth == 0.7:
        assert rates["inconclusive"] >= 0.99


@pytest.mark.parametrize("n", [1000, 3621, 8000])
def test_a_share_outside_the_band_is_rarely_verified(n):
    # 73.5/26.5 is half a point outside 70/30 ± 3: the worst case is just outside
    rates = simulate(W, [0.735, 0.265], n, seed=3)
    assert rates["verified"] <= (1 - POLICY.confidence) / 2 + mc_slack(0.025)


def test_three_subsets_plan_and_rates():
    e3 = parse_expected("50/30/20", ["a", "b", "c"])
    plan = plan_requests(e3, POLICY)
    assert plan.method.startswith("union lower bound")
    rates = simulate(e3, [0.5, 0.3, 0.2], plan.n, runs=2000, seed=4)
    assert rates["refuted"] <= POLICY.alpha + 0.01
    assert rates["verified"] >= plan.verify_power - mc_slack(0.95, 2000)  # a lower bound
    shifted = simulate(e3, [0.45, 0.35, 0.2], plan.n, runs=2000, seed=5)
    assert shifted["refuted"] >= 0.95


def test_wilson_intervals_plan_too():
    wilson = SplitPolicy(interval="wilson")
    plan = plan_requests(W, wilson)
    rates = simulate(W, [0.7, 0.3], plan.n, runs=2000, seed=6, policy=wilson)
    assert rates["refuted"] <= 0.02 and rates["verified"] >= 0.95 - mc_slack(0.95, 2000)
