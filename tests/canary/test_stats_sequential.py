"""Sequential mode: error rates under optional stopping, checked by simulation."""

from __future__ import annotations

import json

import numpy as np
import pytest

from canary.errors import UsageError
from canary.stats import SequentialSplitTest, SplitPolicy, classify_counts, parse_expected

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


@pytest.mark.parametrize("rule", ["confidence", "estimate"])
def test_null_false_refutations_stay_below_alpha_under_continuous_monitoring(rule):
    runs = 2000
    test = SequentialSplitTest(W, POLICY, refute_rule=rule)
    outcome, _ = first_decisions(test, streams([0.7, 0.3], runs, 500, seed=10))  # to 5000
    assert np.mean(outcome == "refuted") <= POLICY.alpha + slack(POLICY.alpha, runs)
    assert np.mean(outcome == "verified") >= 0.9


def test_the_bayes_factor_alone_keeps_villes_bound():
    # a tiny tolerance with the "estimate" rule refutes on (nearly) every crossing of 1/alpha,
    # so this measures P(sup_t BF_t ≥ 1/alpha) itself over 1000 looks
    runs = 2000
    policy = SplitPolicy(tolerance=0.001, alpha=0.05)
    test = SequentialSplitTest(W, policy, refute_rule="estimate", prior_concentration=69)
    outcome, _ = first_decisions(test, streams([0.7, 0.3], runs, 1000, seed=11))
    assert np.mean(outcome == "refuted") <= 0.05 + slack(0.05, runs)


def test_naive_peeking_at_the_fixed_test_is_not_safe():
    """The reason for the sequential test: re-checking the fixed verdict every batch."""
    runs, looks = 1000, 200
    cumulative = streams([0.7, 0.3], runs, looks, seed=12)
    statuses = classify_counts(cumulative.reshape(-1, 2), W, POLICY).reshape(runs, looks)
    assert np.mean((statuses == "refuted").any(axis=1)) > 3 * POLICY.alpha


def test_a_50_50_split_is_refuted_quickly():
    test = SequentialSplitTest(W, POLICY)
    outcome, n = first_decisions(test, streams([0.5, 0.5], 1000, 100, seed=13))
    assert np.all(outcome == "refuted")
    assert np.median(n) <= 200 and n.max() <= 1000


def test_a_true_split_is_verified_before_the_fixed_plan():
    test = SequentialSplitTest(W, POLICY)
    outcome, n = first_decisions(test, streams([0.7, 0.3], 1000, 800, seed=14))
    assert np.mean(outcome == "verified") >= 0.98
    assert np.median(n[outcome == "verified"]) < 3621  # the fixed plan for 70/30 ± 3


@pytest.mark.parametrize("truth", [0.735, 0.665])
def test_a_share_outside_the_band_is_rarely_verified_under_monitoring(truth):
    runs = 2000
    test = SequentialSplitTest(W, POLICY)
    outcome, _ = first_decisions(test, streams([truth, 1 - truth], runs, 500, seed=15))
    assert np.mean(outcome == "verified") <= (1 - POLICY.confidence) + slack(0.05, runs)


def test_within_tolerance_is_rarely_refuted_with_the_confidence_rule():
    runs = 1000
    cumulative = streams([0.725, 0.275], runs, 600, seed=16)
    confident, _ = first_decisions(SequentialSplitTest(W, POLICY), cumulative)
    assert np.mean(confident == "refuted") <= (1 - POLICY.confidence) + slack(0.05, runs)
    # the point-estimate rule has no such guarantee: optional stopping finds a wide deviation
    estimate, _ = first_decisions(
        SequentialSplitTest(W, POLICY, refute_rule="estimate"), cumulative
    )
    assert np.mean(estimate == "refuted") > 0.2


def test_a_75_25_split_is_refuted():
    test = SequentialSplitTest(W, POLICY)
    outcome, _ = first_decisions(test, streams([0.75, 0.25], 500, 1000, seed=17))
    assert np.mean(outcome == "refuted") >= 0.9 and not np.any(outcome == "verified")


def test_deterministic_route():
    test = SequentialSplitTest(D, POLICY)
    statuses = [test.update({"resnet50": BATCH}).status for _ in range(10)]
    assert statuses == ["continue"] * 9 + ["verified"]  # 99 needed, so at the 10th look
    decision = test.decision
    assert decision is not None and decision.wrong_upper_bound == pytest.approx(1 - 0.05**0.01)
    assert "below 2.95% at 95%" in decision.reason
    assert test.update({"resnet101": 1}).status == "refuted"
    # a wrong-subset share just over the tolerance: under continuous monitoring it
    # may escape notice long enough to be verified only with probability ≤ 5%
    runs = 2000
    outcome, _ = first_decisions(
        SequentialSplitTest(D, POLICY), streams([0.97, 0.03], runs, 50, seed=18)
    )
    assert np.mean(outcome == "verified") <= 0.05 + slack(0.05, runs)


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
    assert decision.log_bayes_factor is not None and decision.log_bayes_factor < 0
    assert decision.log_threshold == pytest.approx(np.log(100))
    record = json.loads(json.dumps(decision.to_dict(), allow_nan=False))
    assert record["refute_rule"] == "confidence" and record["counts"]["resnet50"] == 700
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
        SequentialSplitTest(W, POLICY, refute_rule="vibes")  # type: ignore[arg-type]
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
    assert np.all(shifted == "refuted") and np.median(n) < 600
