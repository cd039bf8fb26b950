"""Planning: per table (exact enumeration, simulation) and per run (the load test's mix, pools)."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import (
    SplitPolicy,
    cell_weights,
    classify_counts,
    parse_expected,
    plan_requests,
    plan_run,
)
from canary.stats.planning import refute_power, verify_power

POLICY = SplitPolicy()
W = parse_expected("70/30", ["resnet50", "resnet101"])
D = parse_expected("100/0", ["resnet50", "resnet101"])
RUNS = 4000


def simulate(expected, truth, n, runs=RUNS, seed=0, policy=POLICY, alpha=None):
    """Status rates of ``runs`` fixed-sample verdicts of n responses drawn from ``truth``."""
    rng = np.random.default_rng(seed)
    statuses = classify_counts(rng.multinomial(n, truth, size=runs), expected, policy, alpha=alpha)
    return {s: float(np.mean(statuses == s)) for s in ("verified", "refuted", "inconclusive")}


def mc_slack(p, runs=RUNS):
    """Four binomial standard errors."""
    return 4 * np.sqrt(p * (1 - p) / runs)


def test_plan_70_30():
    plan = plan_requests(W, POLICY)
    # pinned: a change here changes what `verify-split --plan` prints
    assert (plan.n_verify, plan.n_refute, plan.n) == (3618, 10041, 10041)
    # normal approximations: verify (1.96 + 1.96)² · 0.21 / 0.03² ≈ 3586;
    # refute 5 points with a 99% interval beyond 3: (2.576 + 1.645)² · 0.21 / 0.02² ≈ 9350
    assert plan.kind == "weighted" and plan.method == "exact binomial enumeration"
    assert plan.detect == pytest.approx(0.05)  # the tolerance + 2 points
    assert verify_power(W, POLICY, plan.n_verify) >= 0.95 > verify_power(W, POLICY, plan.n_verify - 40)
    assert refute_power(W, POLICY, plan.n_refute, 0.05) >= 0.95 > refute_power(W, POLICY, plan.n_refute - 150, 0.05)
    assert (plan.false_refute_rate, plan.false_verify_rate) == (0.01, pytest.approx(0.025))
    assert "false refutation ≤ 1%" in plan.summary() and "10,041 attributed responses" in plan.summary()
    assert json.loads(json.dumps(plan.to_dict()))["n"] == plan.n


def test_a_smaller_share_of_alpha_needs_more_to_refute_and_the_same_to_verify():
    full, share = plan_requests(W, POLICY), plan_requests(W, POLICY, alpha=0.0025)
    assert share.n_verify == full.n_verify and share.n_refute > full.n_refute
    assert share.false_refute_rate == 0.0025


def test_plan_deterministic_route():
    plan = plan_requests(D, POLICY)
    assert plan.n_verify == 122 == math.ceil(math.log(0.025) / math.log(0.97))
    assert plan.n_refute == 59  # 1 − 0.95^59 ≥ 0.95: a 5% leak shows up
    assert plan.verify_power == 1.0 and plan.false_refute_rate == 0.0
    assert "false refutation: none" in plan.summary()
    leak = plan_requests(D, POLICY, detect=0.01)  # any wrong response refutes: a leak below the tolerance
    assert leak.n == 299 and leak.detect_power >= 0.95


def test_plan_rejects_a_deviation_inside_the_tolerance():
    with pytest.raises(UsageError):
        plan_requests(W, POLICY, detect=0.02)
    with pytest.raises(UsageError):
        plan_requests(W, POLICY, detect=1.5)


def test_at_the_planned_n_a_true_split_is_verified_and_a_deviation_refuted():
    plan = plan_requests(W, POLICY)
    rates = simulate(W, [0.7, 0.3], plan.n_verify)
    exact = verify_power(W, POLICY, plan.n_verify)
    assert abs(rates["verified"] - exact) <= mc_slack(exact)  # the enumeration is exact
    assert rates["refuted"] <= POLICY.alpha
    up = simulate(W, [0.75, 0.25], plan.n_refute, seed=1)
    down = simulate(W, [0.65, 0.35], plan.n_refute, seed=2)
    assert up["verified"] == down["verified"] == 0.0
    # refute_power is the least favourable direction's (65/35: its share has the larger variance)
    least = min(up["refuted"], down["refuted"])
    assert least >= 0.95 - mc_slack(0.95)
    assert abs(least - refute_power(W, POLICY, plan.n_refute, 0.05)) <= mc_slack(0.95)


@pytest.mark.parametrize("truth", [0.5, 0.7, 0.72, 0.75])
def test_too_few_requests_are_inconclusive_never_verified(truth):
    rates = simulate(W, [truth, 1 - truth], 50, seed=2)
    assert rates["verified"] == 0.0
    if truth in (0.7, 0.72):
        assert rates["refuted"] <= POLICY.alpha  # inside the tolerance


def test_three_subsets_plan_bounds_hold_in_simulation():
    e3 = parse_expected("50/30/20", ["a", "b", "c"])
    plan = plan_requests(e3, POLICY)
    assert plan.method.startswith("bounds from exact binomial marginals")
    rates = simulate(e3, [0.5, 0.3, 0.2], plan.n_verify, runs=2000, seed=4)
    assert rates["verified"] >= verify_power(e3, POLICY, plan.n_verify) - mc_slack(0.95, 2000)  # a lower bound
    assert rates["refuted"] <= POLICY.alpha
    shifted = simulate(e3, [0.55, 0.3 * 0.9, 0.2 * 0.9], plan.n_refute, runs=2000, seed=5)
    assert shifted["refuted"] >= refute_power(e3, POLICY, plan.n_refute, 0.05) - mc_slack(0.95, 2000)


@pytest.mark.parametrize(
    ("protocols", "share", "weights"),
    [
        (("rest", "grpc"), 0.2, {"rest/default": 0.4, "rest/canary": 0.1, "grpc/default": 0.4, "grpc/canary": 0.1}),
        (("rest",), 0.5, {"rest/default": 0.5, "rest/canary": 0.5}),
        (("grpc",), 0.0, {"grpc/default": 1.0}),
    ],
)
def test_cell_weights(protocols, share, weights):
    assert cell_weights(protocols, share) == pytest.approx(weights)


@pytest.mark.parametrize(("protocols", "share"), [((), 0.2), (("http",), 0.2), (("rest",), 1.5)])
def test_cell_weights_reject_bad_mixes(protocols, share):
    with pytest.raises(UsageError):
        cell_weights(protocols, share)


def test_run_plan_pools_cells_and_sizes_the_run_for_the_neediest_pool():
    weights = cell_weights(("rest", "grpc"), 0.2)
    one = plan_run({c: (W, None) for c in weights}, weights, POLICY)
    (pool,) = one.pools
    assert pool.weight == pytest.approx(1.0) and one.alpha_pool == 0.005 and one.alpha_cell == 0.00125
    assert pool.plan.alpha == 0.005  # the pooled table's share of the budget
    assert one.requests == math.ceil(pool.plan.n / 0.994)
    assert one.command() == f"canary load --requests {one.requests} --protocol both --canary-share 0.2"
    by_route = plan_run({c: (W, c.split("/")[0]) for c in weights}, weights, POLICY)
    assert [p.cells for p in by_route.pools] == [("rest/default", "rest/canary"), ("grpc/default", "grpc/canary")]
    assert by_route.requests == max(p.requests for p in by_route.pools) > 1.9 * one.requests  # half the data each
    mixed = plan_run(
        {"rest/default": (D, "a"), "rest/canary": (parse_expected("0/100", ["resnet50", "resnet101"]), "b")},
        cell_weights(("rest",), 0.1), POLICY,
    )
    assert mixed.requests == math.ceil(122 / (0.1 * 0.994))  # the 10% canary cell sets the size
    assert sum(mixed.cell_responses().values()) <= mixed.requests
    with pytest.raises(UsageError):
        plan_run({}, weights, POLICY)
