"""Sequential mode: error rates under optional stopping, checked by simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import (
    SequentialSplitTest,
    SplitPolicy,
    classify_counts,
    parse_expected,
    plan_requests,
)

POLICY = SplitPolicy()
W = parse_expected("70/30", ["resnet50", "resnet101"])
D = parse_expected("100/0", ["resnet50", "resnet101"])
BATCH = 10


def streams(truth, runs, looks, seed, batch=BATCH):
    """Cumulative counts (runs, looks, subsets): a look after every ``batch`` requests."""
    rng = np.random.default_rng(seed)
    return np.cumsum(rng.multinomial(batch, truth, size=(runs, looks)), axis=1)


def first_decisions(test, cumulative):
    """Each stream stopped at its first decision: (status, attributed n at that look)."""
    statuses = test.statuses(cumulative, time_axis=1)
    decided = statuses != "continue"
    first = np.where(decided.any(axis=1), decided.argmax(axis=1), -1)
    runs = np.arange(len(first))
    outcome = np.where(first >= 0, statuses[runs, np.maximum(first, 0)], "continue")
    n = np.where(first >= 0, cumulative[runs, np.maximum(first, 0)].sum(axis=-1), -1)
    return outcome, n


def slack(p, runs):
    return 4 * np.sqrt(p * (1 - p) / runs)


@pytest.mark.parametrize("truth", [0.73, 0.67, 0.70])
def test_false_refutations_stay_below_alpha_under_continuous_monitoring(truth):
    """Every true share inside the band (its edges included): refuted at most alpha, however
    often one looks (500 looks, to 5000 responses)."""
    runs = 2000
    outcome, _ = first_decisions(SequentialSplitTest(W, POLICY), streams([truth, 1 - truth], runs, 500, seed=10))
    assert np.mean(outcome == "refuted") <= POLICY.alpha + slack(POLICY.alpha, runs)


def test_one_sided_mixture_claims_keep_villes_bound():
    """P(ever claim "above p0") ≤ δ when the share is p0, measured with a large δ (0.2) so the
    rate is visible: M⁺_t(p0) is a martingale under p0."""
    from canary.stats.sequences import clears_above

    runs, looks = 4000, 400
    cumulative = streams([0.7, 0.3], runs, looks, seed=11)[..., 0]
    t = np.arange(1, looks + 1) * BATCH
    claimed = clears_above(cumulative, t, 0.72 * 400, 0.28 * 400, 0.7, np.log(1 / 0.2)).any(axis=1)
    assert 0.05 < np.mean(claimed) <= 0.2 + slack(0.2, runs)


def test_naive_peeking_at_the_fixed_test_is_not_safe():
    """The reason for the sequential test: re-checking the fixed verdict every batch. At the
    band's edge (73/27 checked as 70/30 ± 3) one look refutes at most alpha; 200 looks far more."""
    runs, looks = 1000, 200
    cumulative = streams([0.73, 0.27], runs, looks, seed=12)
    statuses = classify_counts(cumulative.reshape(-1, 2), W, POLICY).reshape(runs, looks)
    assert np.mean((statuses == "refuted").any(axis=1)) > 3 * POLICY.alpha


def test_a_50_50_split_is_refuted_quickly():
    test = SequentialSplitTest(W, POLICY)
    outcome, n = first_decisions(test, streams([0.5, 0.5], 1000, 100, seed=13))
    assert np.all(outcome == "refuted")
    assert np.median(n) <= 200 and n.max() <= 1000


@pytest.mark.parametrize("truth", [0.735, 0.665])
def test_a_share_outside_the_band_is_rarely_verified_under_monitoring(truth):
    runs = 2000
    test = SequentialSplitTest(W, POLICY)
    outcome, _ = first_decisions(test, streams([truth, 1 - truth], runs, 500, seed=15))
    assert np.mean(outcome == "verified") <= (1 - POLICY.confidence) / 2 + slack(0.025, runs)


def test_a_true_split_is_verified_well_before_the_fixed_plan():
    plan = plan_requests(W, POLICY)
    outcome, n = first_decisions(SequentialSplitTest(W, POLICY), streams([0.7, 0.3], 1000, 800, seed=14))
    assert np.mean(outcome == "verified") >= 0.98
    median = np.median(n[outcome == "verified"])
    # the plan verifies and refutes (10,041); verifying alone needs 3,618 at a fixed n
    assert median <= 0.5 * plan.n and median <= 0.75 * plan.n_verify


@pytest.mark.parametrize("truth", [0.75, 0.65])
def test_a_deviation_of_tolerance_plus_2_points_is_refuted_within_the_plan(truth):
    plan = plan_requests(W, POLICY)
    outcome, n = first_decisions(SequentialSplitTest(W, POLICY), streams([truth, 1 - truth], 300, 500, seed=17, batch=50))
    assert not np.any(outcome == "verified")
    # the median run refutes within the plan; by 2.5 plans (25,000) nearly every run has
    assert np.median(np.where(outcome == "refuted", n, np.inf)) <= plan.n
    assert np.mean(outcome == "refuted") >= 0.95


def test_a_smaller_share_of_alpha_refutes_less_and_verifies_as_fast():
    cumulative = streams([0.73, 0.27], 1000, 300, seed=22)
    full, _ = first_decisions(SequentialSplitTest(W, POLICY), cumulative)
    quarter, _ = first_decisions(SequentialSplitTest(W, POLICY, alpha=0.0025), cumulative)
    assert np.mean(quarter == "refuted") <= np.mean(full == "refuted")
    assert np.mean(quarter == "refuted") <= 0.0025 + slack(0.0025, 1000)
    with pytest.raises(UsageError):
        SequentialSplitTest(W, POLICY, alpha=0.02)  # more than the run's alpha


def test_deterministic_route():
    test = SequentialSplitTest(D, POLICY)
    statuses = [test.update({"resnet50": BATCH}).status for _ in range(13)]
    assert statuses == ["continue"] * 12 + ["verified"]  # 122 needed, so at the 13th look
    decision = test.decision
    assert decision is not None and decision.wrong_upper_bound == pytest.approx(1 - 0.025 ** (1 / 130))
    assert f"below {100 * (1 - 0.025 ** (1 / 130)):.3g}% at 97.5%" in decision.reason
    assert test.update({"resnet101": 1}).status == "refuted"
    # a wrong-subset share just over the tolerance: under continuous monitoring it
    # may escape notice long enough to be verified only with probability ≤ 2.5%
    runs = 2000
    outcome, _ = first_decisions(
        SequentialSplitTest(D, POLICY), streams([0.97, 0.03], runs, 50, seed=18)
    )
    assert np.mean(outcome == "verified") <= 0.025 + slack(0.025, runs)


def test_gates():
    test = SequentialSplitTest(W, SplitPolicy(max_error_rate=0.0))
    decision = test.update({"resnet50": 7, "resnet101": 3, "error": 1})
    assert decision.status == "refuted" and decision.failures == ("error_rate",)
    test = SequentialSplitTest(W, POLICY)
    assert test.update({"resnet50": 7, "resnet101": 3, "unknown": 1}).status == "continue"
    decision = test.update({"resnet50": 63, "resnet101": 27, "unknown": 10})
    assert decision.status == "refuted" and decision.failures == ("unknown_rate",)


def test_cap_makes_an_undecided_test_inconclusive():
    test = SequentialSplitTest(W, POLICY, max_requests=100)
    assert test.update({"resnet50": 70, "resnet101": 29}).status == "continue"
    decision = test.update({"resnet101": 1})
    assert decision.status == "inconclusive" and "cap" in decision.reason


def test_decide_matches_the_vectorised_statuses_look_by_look():
    cumulative = streams([0.72, 0.28], 4, 150, seed=19, batch=25)
    test = SequentialSplitTest(W, POLICY)
    fast = test.statuses(cumulative, time_axis=1)
    for stream, expected in zip(cumulative, fast, strict=True):
        one = SequentialSplitTest(W, POLICY)
        got = [one.decide(dict(zip(W.subsets, row.tolist(), strict=True))).status for row in stream]
        assert got == expected.tolist()


def test_decision_record():
    test = SequentialSplitTest(W, POLICY)
    decision = test.update({"resnet50": 700, "resnet101": 300})
    assert decision.looks == 1 and decision.n == 1000 and decision.status == "continue"
    share = decision.shares[0]
    assert share.cs_low < 0.7 < share.cs_high and share.wide_low < 0.7 < share.wide_high
    assert share.band_low - 0.05 < share.cs_low and share.cs_high < share.band_high + 0.05
    assert decision.log_bayes_factor is not None and decision.log_bayes_factor < 0
    assert decision.log_threshold == pytest.approx(np.log(100))
    record = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert record["alpha"] == 0.01 and record["counts"]["resnet50"] == 700
    again = test.decide({"resnet50": 1400, "resnet101": 600})
    assert again.looks == 2 and again.n == 2000


def test_usage_errors():
    test = SequentialSplitTest(W, POLICY)
    test.decide({"resnet50": 10, "resnet101": 5})
    with pytest.raises(UsageError, match="went from 10 to 9"):
        test.decide({"resnet50": 9, "resnet101": 5})
    with pytest.raises(UsageError):
        test.update({"resnet50": -1})
    with pytest.raises(UsageError):
        SequentialSplitTest(W, POLICY, refute_margin=0.9)
    with pytest.raises(UsageError):
        SequentialSplitTest(W, POLICY, max_requests=0)
    with pytest.raises(UsageError):
        test.statuses(np.zeros((3, 3)))


def test_three_subsets_under_monitoring():
    e3 = parse_expected("50/30/20", ["a", "b", "c"])
    runs = 1000
    test = SequentialSplitTest(e3, POLICY)
    outcome, _ = first_decisions(test, streams([0.5, 0.3, 0.2], runs, 800, seed=20))
    assert np.mean(outcome == "refuted") <= POLICY.alpha + slack(POLICY.alpha, runs)
    assert np.mean(outcome == "verified") >= 0.9
    shifted, n = first_decisions(test, streams([0.4, 0.3, 0.3], 300, 300, seed=21))
    assert np.all(shifted == "refuted") and np.median(n) < 800
