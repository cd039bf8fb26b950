"""Fixed-sample verdicts: every branch, the gates, and cross-checks against scipy/statsmodels.

The rules (``canary/stats/split.py``): refuted when the exact (Clopper–Pearson)
interval of some share at 1 − alpha/m lies wholly outside its band
[e − 3 points, e + 3 points]; verified when every share's exact interval at
1 − (1 − confidence)/m lies inside its band and no wrong-subset response is
seen (with the zero-count bound at 1 − (1 − confidence)/2 under the
tolerance); inconclusive otherwise. A significant but small mismatch is a
sample-ratio finding, never a refutation. The expected statuses below are
argued from those rules (the arithmetic is in the comments) or recomputed
here with scipy/statsmodels, not copied from the code's output.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import gof
from statsmodels.stats.proportion import proportion_confint

from canary.errors import UsageError
from canary.stats import (
    SplitPolicy,
    classify_counts,
    confusion_matrix,
    overall,
    parse_expected,
    verify_group,
)
from canary.stats.deciding import decide_n, zero_count_n
from canary.stats.intervals import deviation_interval, upper_bound, upper_bounds

SUBSETS = ["resnet50", "resnet101"]
W = parse_expected("70/30", SUBSETS)
D = parse_expected("100/0", SUBSETS)
POLICY = SplitPolicy()  # alpha 0.01, tolerance 0.03, confidence 0.95, power 0.95


def c(r50=0, r101=0, **extra):
    out = {"resnet50": r50, "resnet101": r101}
    out.update(extra)
    return out


def cp(x: int, n: int, level: float) -> tuple[float, float]:
    """Two-sided exact (Clopper–Pearson) interval, from statsmodels."""
    low, high = proportion_confint(x, n, alpha=1 - level, method="beta")
    return float(low), float(high)


@pytest.mark.parametrize(
    ("counts", "status", "failures", "reason"),
    [
        # 70%, n=3600: 95% interval ±1.5 points ⊂ [67, 73]
        (
            c(2520, 1080),
            "verified",
            (),
            "every share's 95% interval lies inside its ±3 points band",
        ),
        # 75%: 99% interval [73.1, 76.9], wholly above 73
        (c(2700, 900), "refuted", ("split",), "wholly beyond ±3 points"),
        (c(900, 2700), "refuted", ("split",), "resnet50 off by 45 points"),
        # n=50: intervals ±13 points, decide nothing
        (c(35, 15), "inconclusive", (), "reaches outside its ±3 points band"),
        # 72.2%: significant (binomial p=0.004 < 0.01) but the 99% interval [70.3, 74.1]
        # reaches inside the band and the 95% one [70.7, 73.7] outside it
        (c(2600, 1000), "inconclusive", (), "is not wholly beyond it"),
        (c(40, 10), "inconclusive", (), "would likely decide it"),
        # 73.5% at n=100000: 99% interval [73.1, 73.9], wholly beyond; at n=10000 it is not
        (c(73500, 26500), "refuted", ("split",), "resnet50 off by 3.5 points"),
        (c(7350, 2650), "inconclusive", (), "is not wholly beyond it"),
        (c(2520, 1079, resnet152=1), "refuted", ("wrong_subset",), "came from resnet152"),
        ({}, "inconclusive", (), "no attributed responses"),
        (c(), "inconclusive", (), "no attributed responses"),
        # unknown and error are counted apart, never dropped
        (c(2520, 1080, unknown=10), "verified", (), "every share"),
        (c(2520, 1080, unknown=30), "refuted", ("unknown_rate",), "0.826% of requests"),
        (c(2520, 1080, error=3), "verified", (), "every share"),
        (c(2520, 1080, error=5), "refuted", ("error_rate",), "above the 0.1% allowed"),
        (
            c(2700, 900, unknown=50, error=50),
            "refuted",
            ("split", "unknown_rate", "error_rate"),
            "failed requests",
        ),
        (c(0, 0, unknown=10), "refuted", ("unknown_rate",), "no attributed responses"),
    ],
)
def test_weighted_branches(counts, status, failures, reason):
    verdict = verify_group(counts, W, POLICY, group="rest/no-header")
    assert verdict.status == status, verdict.reason
    assert verdict.failures == failures
    assert reason in verdict.reason
    assert verdict.exit_code == {"verified": 0, "refuted": 1, "inconclusive": 2}[status]
    assert verdict.unknown == counts.get("unknown", 0) and verdict.error == counts.get("error", 0)
    assert verdict.n_total == sum(counts.values())
    assert verdict.test == "exact-intervals" and verdict.kind == "weighted"
    assert (verdict.decide_n is not None) == (status == "inconclusive" and verdict.n > 0)
    json.dumps(verdict.to_dict(), allow_nan=False)  # NaN becomes null


def test_verified_numbers():
    v = verify_group(c(2520, 1080), W, POLICY)
    assert (v.kind, v.test, v.n, v.alpha) == ("weighted", "exact-intervals", 3600, 0.01)
    assert v.sample_ratio is not None
    assert v.sample_ratio.test == "exact binomial" and v.sample_ratio.p_value == pytest.approx(1)
    assert not v.sample_ratio.mismatch
    r50 = v.shares[0]
    assert r50.observed == 0.7 and r50.inside_band
    assert (r50.band_low, r50.band_high) == pytest.approx((0.67, 0.73))
    assert (r50.ci_low, r50.ci_high) == pytest.approx(cp(2520, 3600, 0.95))
    # the deviation's interval is read off the refutation interval, at 1 − alpha = 99%
    low99, high99 = cp(2520, 3600, 0.99)
    assert v.deviation is not None and v.deviation.size == 0 and v.deviation.ci_low == 0
    assert v.deviation.confidence == pytest.approx(0.99)
    assert v.deviation.ci_high == pytest.approx(max(0.7 - low99, high99 - 0.7))
    assert v.wrong.count == 0 and v.wrong.confidence == pytest.approx(0.975)
    assert v.wrong.upper_bound == pytest.approx(1 - 0.025 ** (1 / 3600))
    assert v.decide_n is None


def test_refuted_deviation_interval():
    v = verify_group(c(2700, 900), W, POLICY)
    assert v.deviation is not None
    assert v.deviation.subset == "resnet50" and v.deviation.signed == pytest.approx(0.05)
    # the 99% exact interval of 75%, shifted by the expected 70%, lies wholly beyond 3 points
    low99, high99 = cp(2700, 3600, 0.99)
    assert (v.deviation.ci_low, v.deviation.ci_high) == pytest.approx((low99 - 0.7, high99 - 0.7))
    assert 0.03 < v.deviation.ci_low < 0.05 < v.deviation.ci_high < 0.07
    assert v.sample_ratio is not None and v.sample_ratio.mismatch
    assert v.sample_ratio.p_value == pytest.approx(stats.binomtest(2700, 3600, 0.7).pvalue)


@pytest.mark.parametrize(("r50", "r101"), [(2600, 1000), (1108, 399), (7350, 2650)])
def test_significant_but_small_mismatch_is_a_finding_not_a_refutation(r50, r101):
    v = verify_group(c(r50, r101), W, POLICY)
    p = stats.binomtest(r50, r50 + r101, 0.7).pvalue
    assert p < POLICY.alpha  # the classic sample-ratio test rejects 70/30 ...
    assert v.sample_ratio is not None and v.sample_ratio.mismatch
    assert v.sample_ratio.p_value == pytest.approx(p) and v.sample_ratio.alpha == POLICY.alpha
    # ... but a deviation of up to 3 points is inside the tolerance: the 99% interval of the
    # deviation reaches below 3 points, so nothing is refuted
    low99, _ = cp(r50, r50 + r101, 0.99)
    assert low99 - 0.7 < 0.03
    assert v.status == "inconclusive" and v.failures == ()


def test_the_issues_example_is_inconclusive_and_says_how_many_would_decide_it():
    """1108/399 (73.5/26.5 over 1507 responses) checked as 70/30 is not refuted."""
    v = verify_group(c(1108, 399), W, POLICY)
    assert v.status == "inconclusive" and v.exit_code == 2
    assert v.deviation is not None and v.deviation.subset == "resnet50"
    assert v.deviation.signed == pytest.approx(1108 / 1507 - 0.7)  # 3.5 points
    # the 99% interval of the deviation straddles the 3-point tolerance
    low99, high99 = cp(1108, 1507, 0.99)
    assert (v.deviation.ci_low, v.deviation.ci_high) == pytest.approx((low99 - 0.7, high99 - 0.7))
    assert v.deviation.ci_low < 0.03 < v.deviation.ci_high
    # how many would decide it: the smallest n at which a true 73.5% is refuted with
    # probability `power`, and it does: checked by enumerating every count through the same rules
    need = v.decide_n
    assert need is not None and 120_000 < need < 135_000
    assert f"about {need:,} attributed responses would likely decide it" in v.reason
    p = 1108 / 1507
    x = np.arange(need + 1)
    refuted = classify_counts(np.stack([x, need - x], axis=1), W, POLICY) == "refuted"
    assert stats.binom.pmf(x[refuted], need, p).sum() >= POLICY.power
    x = np.arange(need)
    refuted = classify_counts(np.stack([x, need - 1 - x], axis=1), W, POLICY) == "refuted"
    assert stats.binom.pmf(x[refuted], need - 1, p).sum() < POLICY.power  # the smallest such n


@pytest.mark.parametrize(("expected", "counts"), [("90/10", c(149, 3)), ("70/30", c(7, 0)), ("70/30", c(35, 15))])
def test_decide_n_is_more_than_the_responses_already_seen(expected, counts):
    """Shares near 0 or 1 included (149/3 as 90/10 once said 137 < 152)."""
    v = verify_group(counts, parse_expected(expected, SUBSETS), POLICY)
    assert v.status == "inconclusive"
    assert v.decide_n is not None and v.decide_n > v.n


@pytest.mark.parametrize("observed", [0.68, 0.7, 0.72, 0.75, 0.80])
def test_decide_n_is_exact_and_close_to_the_normal_approximation(observed):
    e = 0.7
    n = decide_n(observed, e, POLICY)
    assert n is not None
    status = "verified" if abs(observed - e) < POLICY.tolerance else "refuted"
    x = np.arange(n + 1)
    hits = classify_counts(np.stack([x, n - x], axis=1), W, POLICY) == status
    assert stats.binom.pmf(x[hits], n, observed).sum() >= POLICY.power  # exact, by enumeration
    gap = POLICY.tolerance - abs(observed - e)
    tail = (1 - POLICY.confidence) / 2 if gap > 0 else POLICY.alpha / 2
    z = stats.norm.isf(tail) + stats.norm.isf(1 - POLICY.power)
    # the normal approximation with one tail is close (it ignores the other tail and discreteness)
    assert n == pytest.approx(z**2 * observed * (1 - observed) / gap**2, rel=0.2)


def test_decide_n_on_the_tolerance_and_for_three_subsets():
    assert decide_n(0.73, 0.7, POLICY) is None  # on the tolerance: no n decides it
    # three subsets: Bonferroni over the three intervals, so more than for two
    assert decide_n(0.51, 0.5, POLICY, subsets=3) > decide_n(0.51, 0.5, POLICY, subsets=2)


def test_zero_share_subset_in_a_weighted_split_is_a_deterministic_violation():
    e = parse_expected("70/30/0", ["a", "b", "c"])
    v = verify_group({"a": 2520, "b": 1079, "c": 1}, e, POLICY)
    assert v.status == "refuted" and v.failures == ("wrong_subset",)
    assert v.wrong.subsets == ("c",) and v.wrong.count == 1
    assert verify_group({"a": 2520, "b": 1080, "c": 0}, e, POLICY).status == "verified"


# 1 − 0.025^(1/n) ≤ 0.03  ⇔  n ≥ ln 0.025 / ln 0.97 = 121.1: 122 responses at the defaults
ZERO_COUNT_N = math.ceil(math.log(0.025) / math.log(0.97))


@pytest.mark.parametrize(
    ("counts", "status"),
    [
        (c(300, 0), "verified"),
        (c(299, 1), "refuted"),
        (c(50, 0), "inconclusive"),
        (c(ZERO_COUNT_N - 1, 0), "inconclusive"),
        (c(ZERO_COUNT_N, 0), "verified"),
        (c(0, 300), "refuted"),
        (c(300, 0, resnet152=1), "refuted"),
    ],
)
def test_deterministic_route(counts, status):
    v = verify_group(counts, D, POLICY)
    assert v.status == status, v.reason
    assert (v.kind, v.test) == ("deterministic", "exact-zero-count")
    assert v.sample_ratio is None and v.deviation is None
    n = sum(counts.values())
    if v.wrong.count == 0:
        # the upper end of the two-sided 95% interval: one-sided at 97.5%
        assert v.wrong.upper_bound == pytest.approx(1 - 0.025 ** (1 / n))
        assert v.wrong.confidence == pytest.approx(0.975)
    if status == "verified":
        assert f"wrong-subset share below {100 * v.wrong.upper_bound:.3g}% at 97.5%" in v.reason
    if status == "inconclusive":
        assert f"{ZERO_COUNT_N} attributed responses would decide it" in v.reason
        assert v.decide_n == ZERO_COUNT_N
    if status == "refuted":
        assert v.failures == ("wrong_subset",) and "not deterministic" in v.reason


def test_zero_count_n():
    assert ZERO_COUNT_N == 122
    assert zero_count_n(POLICY) == ZERO_COUNT_N
    for tolerance, confidence in [(0.01, 0.95), (0.05, 0.99), (0.02, 0.9), (0.03, 0.8)]:
        policy = SplitPolicy(tolerance=tolerance, confidence=confidence)
        tail = (1 - confidence) / 2
        n = zero_count_n(policy)
        assert 1 - tail ** (1 / n) <= tolerance < 1 - tail ** (1 / (n - 1))


def test_rule_of_three_is_the_zero_count_limit():
    for n in (300, 1000, 10_000):
        exact = verify_group(c(n, 0), D, POLICY).wrong.upper_bound
        ci = stats.binomtest(0, n, alternative="less").proportion_ci(0.975, method="exact")
        assert exact == pytest.approx(1 - 0.025 ** (1 / n)) == pytest.approx(ci.high)
        # −ln(0.025) ≈ 3.69: the "rule of three" at 97.5% one-sided
        assert exact == pytest.approx(-math.log(0.025) / n, rel=0.02)


def test_max_error_rate_zero_makes_any_failure_fatal():
    strict = SplitPolicy(max_error_rate=0.0)
    v = verify_group(c(300, 0, error=1), D, strict)
    assert v.status == "refuted" and v.failures == ("error_rate",)
    assert verify_group(c(300, 0), D, strict).status == "verified"


def test_small_counts_are_judged_by_exact_intervals():
    v = verify_group(c(7, 0), W, POLICY)
    assert v.test == "exact-intervals" and v.sample_ratio is not None
    assert v.sample_ratio.test == "exact binomial"
    assert v.sample_ratio.p_value == pytest.approx(stats.binomtest(7, 7, 0.7).pvalue)
    assert v.status == "inconclusive"  # 99% interval for 7/7 is [0.47, 1]: reaches the band
    # 0/10: the 99% interval of resnet50's share is [0, 1 − 0.005^(1/10)] = [0, 0.41],
    # wholly below 0.67: exact at any n, so ten responses refute
    assert cp(0, 10, 0.99)[1] == pytest.approx(1 - 0.005 ** (1 / 10))
    v = verify_group(c(0, 10), W, POLICY)
    assert v.status == "refuted" and v.failures == ("split",)


def test_three_subsets_with_small_counts_refute_when_an_exact_interval_is_decisive():
    e = parse_expected("50/45/5", ["a", "b", "c"])
    v = verify_group({"a": 0, "b": 0, "c": 40}, e, POLICY)
    # c's exact interval at 1 − 0.01/3 starts at (0.01/6)^(1/40) ≈ 0.85, far above 0.08
    low, _ = cp(40, 40, 1 - 0.01 / 3)
    assert low == pytest.approx((0.01 / 6) ** (1 / 40)) and low > 0.08
    assert v.status == "refuted" and v.failures == ("split",)
    assert v.deviation is not None and v.deviation.subset == "c"
    assert v.deviation.ci_low == pytest.approx(low - 0.05)
    assert v.sample_ratio is not None and v.sample_ratio.test == "Pearson χ² (approximate)"


def test_bad_counts_are_usage_errors():
    bad_counts: list[dict] = [{"resnet50": -1}, {"resnet50": 1.5}, {"resnet50": float("nan")}]
    for bad in bad_counts:
        with pytest.raises(UsageError):
            verify_group(bad, W, POLICY)


def test_table_alpha_must_be_within_the_runs():
    for bad in (0.0, 0.02, -0.001):
        with pytest.raises(UsageError):
            verify_group(c(70, 30), W, POLICY, alpha=bad)
        with pytest.raises(UsageError):
            classify_counts([[70, 30]], W, POLICY, alpha=bad)
    assert verify_group(c(70, 30), W, POLICY, alpha=0.0025).alpha == 0.0025


def test_the_interval_option_is_gone():
    with pytest.raises(TypeError):
        SplitPolicy(interval="wilson")  # type: ignore[call-arg]


# -- cross-checks against scipy and statsmodels on fixed tables ------------------

TABLES = [
    (W, {"resnet50": 2581, "resnet101": 1019}),
    (W, {"resnet50": 120, "resnet101": 80}),
    (parse_expected("50/30/20", ["a", "b", "c"]), {"a": 2950, "b": 1830, "c": 1220}),
    (parse_expected("25/25/25/25", ["a", "b", "c", "d"]), {"a": 260, "b": 240, "c": 255, "d": 245}),
]


@pytest.mark.parametrize(("expected", "counts"), TABLES)
def test_sample_ratio_matches_scipy_and_statsmodels(expected, counts):
    v = verify_group(counts, expected, POLICY)
    obs = np.array([counts[s] for s in expected.subsets], dtype=float)
    exp = obs.sum() * np.array([expected.shares[s] for s in expected.subsets])
    assert v.sample_ratio is not None
    if len(obs) == 2:
        exact = stats.binomtest(int(obs[0]), int(obs.sum()), exp[0] / obs.sum())
        assert v.sample_ratio.test == "exact binomial"
        assert v.sample_ratio.statistic == obs[0]
        assert v.sample_ratio.p_value == pytest.approx(exact.pvalue)
    else:
        scipy_result = stats.chisquare(obs, exp)
        sm_stat, sm_p = gof.chisquare(obs, exp)
        by_hand = float(((obs - exp) ** 2 / exp).sum())
        assert v.sample_ratio.statistic == pytest.approx(scipy_result.statistic)
        assert v.sample_ratio.statistic == pytest.approx(sm_stat) == pytest.approx(by_hand)
        assert v.sample_ratio.p_value == pytest.approx(scipy_result.pvalue) == pytest.approx(sm_p)
        assert v.sample_ratio.p_value == pytest.approx(stats.chi2.sf(by_hand, len(obs) - 1))
    assert v.sample_ratio.mismatch == (v.sample_ratio.p_value < POLICY.alpha)


def test_two_subset_exact_intervals_match_clopper_pearson():
    v = verify_group({"resnet50": 2581, "resnet101": 1019}, W, POLICY)
    low, high = proportion_confint(2581, 3600, alpha=0.05, method="beta")
    ci = stats.binomtest(2581, 3600).proportion_ci(0.95, method="exact")
    assert (v.shares[0].ci_low, v.shares[0].ci_high) == pytest.approx((low, high))
    assert (v.shares[0].ci_low, v.shares[0].ci_high) == pytest.approx((ci.low, ci.high))
    # mirror images, so no Bonferroni adjustment is needed for two subsets
    assert v.shares[1].ci_low == pytest.approx(1 - v.shares[0].ci_high)
    assert v.shares[1].ci_high == pytest.approx(1 - v.shares[0].ci_low)


@pytest.mark.parametrize("table", [2, 3])
def test_many_subset_exact_intervals_are_bonferroni_clopper_pearson(table):
    expected, counts = TABLES[table]
    k, n = len(counts), sum(counts.values())
    v = verify_group(counts, expected, POLICY)
    for share in v.shares:  # verification intervals at 1 − 0.05/k
        low, high = proportion_confint(share.count, n, alpha=0.05 / k, method="beta")
        assert (share.ci_low, share.ci_high) == pytest.approx((low, high))
    # refutation intervals at 1 − 0.01/k, read off as the deviation's interval
    e = np.array([expected.shares[s] for s in expected.subsets])
    low, high = proportion_confint(
        np.array(list(counts.values())), n, alpha=0.01 / k, method="beta"
    )
    nearest = np.maximum(np.maximum(low - e, e - high), 0).max()
    farthest = np.maximum(np.abs(low - e), np.abs(high - e)).max()
    assert v.deviation is not None
    assert (v.deviation.ci_low, v.deviation.ci_high) == pytest.approx((nearest, farthest))


@pytest.mark.parametrize(
    ("text", "n"), [("70/30", 1000), ("70/30", 2000), ("90/10", 1500), ("95/5", 800)]
)
def test_rule_boundaries_match_clopper_pearson(text, n):
    """Every count's status at one n, against the rules recomputed from statsmodels' intervals."""
    expected = parse_expected(text, SUBSETS)
    e = expected.shares[SUBSETS[0]]
    x = np.arange(n + 1)
    status = classify_counts(np.stack([x, n - x], axis=1), expected, POLICY)
    low99, high99 = proportion_confint(x, n, alpha=0.01, method="beta")
    low95, high95 = proportion_confint(x, n, alpha=0.05, method="beta")
    refute = (low99 > e + 0.03) | (high99 < e - 0.03)
    verify = (low95 >= e - 0.03) & (high95 <= e + 0.03)
    want = np.where(refute, "refuted", np.where(verify, "verified", "inconclusive"))
    assert refute.any()
    assert np.array_equal(status, want), x[status != want]


def test_upper_bound_matches_scipy_one_sided_exact():
    for count, n in [(0, 300), (1, 300), (5, 100), (0, 1)]:
        for level in (0.95, 0.975):
            ci = stats.binomtest(count, n, alternative="less").proportion_ci(level, method="exact")
            assert upper_bound(count, n, level) == pytest.approx(ci.high)
            assert upper_bounds([count], [n], level)[0] == pytest.approx(ci.high)
    assert upper_bound(0, 0, 0.95) == 1.0 and upper_bounds([3], [3], 0.95)[0] == 1.0


def test_deviation_interval():
    low, high = deviation_interval([0.60, 0.25], [0.66, 0.31], [0.7, 0.3])
    assert (float(low), float(high)) == pytest.approx((0.04, 0.10))
    low, high = deviation_interval([0.68, 0.28], [0.72, 0.32], [0.7, 0.3])
    assert (float(low), float(high)) == pytest.approx((0.0, 0.02))


def test_classify_counts_agrees_with_verify_group():
    rng = np.random.default_rng(7)
    e3 = parse_expected("50/30/20", ["a", "b", "c"])
    for expected, truth, alpha in [
        (W, [0.7, 0.3], None),
        (W, [0.74, 0.26], None),
        (W, [0.735, 0.265], 0.0025),
        (e3, [0.5, 0.3, 0.2], None),
        (e3, [0.53, 0.28, 0.19], 0.005),
        (D, [0.995, 0.005], None),
    ]:
        n = rng.integers(1, 5000, size=60)
        table = np.array([rng.multinomial(size, truth) for size in n])
        unknown = rng.poisson(3, size=60)
        fast = classify_counts(table, expected, POLICY, unknown=unknown, alpha=alpha)
        for row, u, status in zip(table, unknown, fast, strict=True):
            counts = dict(zip(expected.subsets, row.tolist(), strict=True)) | {"unknown": int(u)}
            assert verify_group(counts, expected, POLICY, alpha=alpha).status == status


def test_overall():
    assert overall(["verified", "verified"]) == "verified"
    assert overall(["verified", "inconclusive"]) == "inconclusive"
    assert overall(["inconclusive", "refuted", "verified"]) == "refuted"
    assert overall([verify_group(c(2520, 1080), W, POLICY)]) == "verified"
    assert overall([]) == "inconclusive"
    assert overall(["verified", "continue"]) == "continue"
    with pytest.raises(ValueError):
        overall(["maybe"])


def test_confusion_matrix():
    counts = {
        ("no-header", "resnet50"): 70,
        ("no-header", "resnet101"): 30,
        ("canary", "resnet101"): 99,
        ("canary", "unknown"): 1,
        ("no-header", "error"): 2,
    }
    table = confusion_matrix(counts)
    assert table.groups == ("no-header", "canary")
    assert table.subsets == ("resnet50", "resnet101", "unknown", "error")
    assert table.cells == ((70, 30, 0, 2), (0, 99, 1, 0))
    assert table.row_totals == (102, 100) and table.column_totals == (70, 129, 1, 2)
    assert table.count("canary", "resnet101") == 99 and table.count("x", "y") == 0
    assert table.shares[1][1] == pytest.approx(0.99)
    ordered = confusion_matrix(
        counts, groups=["canary", "no-header", "empty"], subsets=["resnet101", "resnet50"]
    )
    assert ordered.groups == ("canary", "no-header", "empty")
    assert ordered.subsets == ("resnet101", "resnet50", "unknown", "error")
    assert ordered.cells[2] == (0, 0, 0, 0) and ordered.shares[2] == (0.0, 0.0, 0.0, 0.0)
    assert json.loads(json.dumps(table.to_dict()))["cells"][0] == [70, 30, 0, 2]
    with pytest.raises(UsageError):
        confusion_matrix(counts, subsets=["resnet50"])
    with pytest.raises(UsageError):
        confusion_matrix({("g", "s"): -1})
    assert math.isclose(sum(table.shares[0]), 1.0)
