"""Fixed-sample verdicts: every branch, the gates, and cross-checks against scipy/statsmodels."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from scipy import stats
from statsmodels.stats import gof
from statsmodels.stats.proportion import multinomial_proportions_confint, proportion_confint

from canary.errors import UsageError
from canary.stats import (
    SplitPolicy,
    classify_counts,
    confusion_matrix,
    overall,
    parse_expected,
    verify_group,
)
from canary.stats.intervals import deviation_interval, upper_bound, upper_bounds

SUBSETS = ["resnet50", "resnet101"]
W = parse_expected("70/30", SUBSETS)
D = parse_expected("100/0", SUBSETS)
POLICY = SplitPolicy()


def c(r50=0, r101=0, **extra):
    out = {"resnet50": r50, "resnet101": r101}
    out.update(extra)
    return out


@pytest.mark.parametrize(
    ("counts", "status", "failures", "reason"),
    [
        (c(2520, 1080), "verified", (), "every share within ±3 points"),
        (c(2700, 900), "refuted", ("split",), "beyond ±3 points"),
        (c(900, 2700), "refuted", ("split",), "resnet50 off by 45 points"),
        (c(35, 15), "inconclusive", (), "do not fit inside ±3 points"),
        (c(2600, 1000), "inconclusive", (), "though not beyond the tolerance"),
        (c(40, 10), "inconclusive", (), "not significant"),
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
    json.dumps(verdict.to_dict(), allow_nan=False)  # NaN becomes null


def test_verified_numbers():
    v = verify_group(c(2520, 1080), W, POLICY)
    assert (v.kind, v.test, v.dof, v.n) == ("weighted", "pearson-chi2", 1, 3600)
    assert v.chi2 == 0 and v.p_value == 1
    r50 = v.shares[0]
    assert r50.observed == 0.7 and r50.inside_band
    assert (r50.band_low, r50.band_high) == pytest.approx((0.67, 0.73))
    assert v.deviation is not None and v.deviation.size == 0 and v.deviation.ci_low == 0
    assert v.deviation.ci_high == pytest.approx(max(0.7 - r50.ci_low, r50.ci_high - 0.7))
    assert v.wrong.count == 0 and v.wrong.upper_bound < 0.001


def test_refuted_deviation_interval():
    v = verify_group(c(2700, 900), W, POLICY)
    assert v.deviation is not None
    assert v.deviation.subset == "resnet50" and v.deviation.signed == pytest.approx(0.05)
    # 95% simultaneous interval of the largest deviation brackets it and excludes 0
    assert 0.03 < v.deviation.ci_low < 0.05 < v.deviation.ci_high < 0.07
    assert v.p_value is not None and v.p_value < 1e-10


def test_zero_share_subset_in_a_weighted_split_is_a_deterministic_violation():
    e = parse_expected("70/30/0", ["a", "b", "c"])
    v = verify_group({"a": 2520, "b": 1079, "c": 1}, e, POLICY)
    assert v.status == "refuted" and v.failures == ("wrong_subset",)
    assert v.wrong.subsets == ("c",) and v.wrong.count == 1
    assert verify_group({"a": 2520, "b": 1080, "c": 0}, e, POLICY).status == "verified"


@pytest.mark.parametrize(
    ("counts", "status", "bound"),
    [
        (c(300, 0), "verified", 0.00994),  # 1 − 0.05^(1/300) ≈ the rule of three, 3/300
        (c(299, 1), "refuted", None),
        (c(50, 0), "inconclusive", 0.0582),
        (c(98, 0), "inconclusive", 0.0301),
        (c(99, 0), "verified", 0.0298),
        (c(0, 300), "refuted", None),
        (c(300, 0, other=1), "refuted", None),
    ],
)
def test_deterministic_route(counts, status, bound):
    counts = {k: v for k, v in counts.items() if k != "other"} | (
        {"resnet152": 1} if "other" in counts else {}
    )
    v = verify_group(counts, D, POLICY)
    assert v.status == status, v.reason
    assert (v.kind, v.test, v.chi2, v.p_value) == ("deterministic", "exact-zero-count", None, None)
    if bound is not None:
        assert v.wrong.upper_bound == pytest.approx(bound, abs=5e-5)
    if status == "verified":
        assert f"wrong-subset share below {100 * v.wrong.upper_bound:.3g}% at 95%" in v.reason
    if status == "inconclusive":
        assert "need at least 99 attributed responses" in v.reason


def test_rule_of_three_is_the_zero_count_limit():
    for n in (300, 1000, 10_000):
        exact = verify_group(c(n, 0), D, POLICY).wrong.upper_bound
        assert exact == pytest.approx(1 - 0.05 ** (1 / n))
        assert exact == pytest.approx(3 / n, rel=0.01)


def test_max_error_rate_zero_makes_any_failure_fatal():
    strict = SplitPolicy(max_error_rate=0.0)
    v = verify_group(c(300, 0, error=1), D, strict)
    assert v.status == "refuted" and v.failures == ("error_rate",)
    assert verify_group(c(300, 0), D, strict).status == "verified"


def test_small_counts_use_the_exact_binomial_test():
    v = verify_group(c(7, 0), W, POLICY)  # expected 2.1 for resnet101 < 5
    assert v.test == "exact-binomial" and v.test_reliable
    assert v.p_value == pytest.approx(stats.binomtest(7, 7, 0.7).pvalue)
    assert v.status == "inconclusive"
    v = verify_group(c(0, 10), W, POLICY)
    assert v.test == "exact-binomial" and v.status == "refuted"


def test_three_subsets_with_small_expected_counts_cannot_refute():
    e = parse_expected("50/45/5", ["a", "b", "c"])
    v = verify_group({"a": 0, "b": 0, "c": 40}, e, POLICY)
    assert v.p_value is not None and v.p_value < 1e-10 and not v.test_reliable
    assert v.status == "inconclusive" and "below 5" in v.reason


def test_bad_counts_are_usage_errors():
    bad_counts: list[dict] = [{"resnet50": -1}, {"resnet50": 1.5}, {"resnet50": float("nan")}]
    for bad in bad_counts:
        with pytest.raises(UsageError):
            verify_group(bad, W, POLICY)


# -- cross-checks against scipy and statsmodels on fixed tables ------------------

TABLES = [
    (W, {"resnet50": 2581, "resnet101": 1019}),
    (W, {"resnet50": 120, "resnet101": 80}),
    (parse_expected("50/30/20", ["a", "b", "c"]), {"a": 2950, "b": 1830, "c": 1220}),
    (parse_expected("25/25/25/25", ["a", "b", "c", "d"]), {"a": 260, "b": 240, "c": 255, "d": 245}),
]


@pytest.mark.parametrize(("expected", "counts"), TABLES)
def test_chi_square_matches_scipy_and_statsmodels(expected, counts):
    v = verify_group(counts, expected, POLICY)
    obs = np.array([counts[s] for s in expected.subsets], dtype=float)
    exp = obs.sum() * np.array([expected.shares[s] for s in expected.subsets])
    scipy_result = stats.chisquare(obs, exp)
    sm_stat, sm_p = gof.chisquare(obs, exp)
    by_hand = float(((obs - exp) ** 2 / exp).sum())
    assert v.chi2 == pytest.approx(scipy_result.statistic) == pytest.approx(sm_stat)
    assert v.chi2 == pytest.approx(by_hand)
    assert v.p_value == pytest.approx(scipy_result.pvalue) == pytest.approx(sm_p)
    assert v.p_value == pytest.approx(stats.chi2.sf(by_hand, len(obs) - 1))
    assert v.dof == len(obs) - 1


def test_two_subset_exact_intervals_match_clopper_pearson():
    v = verify_group({"resnet50": 2581, "resnet101": 1019}, W, POLICY)
    low, high = proportion_confint(2581, 3600, alpha=0.05, method="beta")
    ci = stats.binomtest(2581, 3600).proportion_ci(0.95, method="exact")
    assert (v.shares[0].ci_low, v.shares[0].ci_high) == pytest.approx((low, high))
    assert (v.shares[0].ci_low, v.shares[0].ci_high) == pytest.approx((ci.low, ci.high))
    # mirror images, so no Bonferroni adjustment is needed for two subsets
    assert v.shares[1].ci_low == pytest.approx(1 - v.shares[0].ci_high)
    assert v.shares[1].ci_high == pytest.approx(1 - v.shares[0].ci_low)


def test_three_subset_wilson_intervals_are_goodmans():
    expected, counts = TABLES[2]
    v = verify_group(counts, expected, SplitPolicy(interval="wilson"))
    goodman = multinomial_proportions_confint(list(counts.values()), alpha=0.05, method="goodman")
    for share, (low, high) in zip(v.shares, goodman, strict=True):
        assert (share.ci_low, share.ci_high) == pytest.approx((low, high), rel=1e-9)


def test_three_subset_exact_intervals_are_bonferroni_clopper_pearson():
    expected, counts = TABLES[2]
    v = verify_group(counts, expected, POLICY)
    for share in v.shares:
        low, high = proportion_confint(share.count, 6000, alpha=0.05 / 3, method="beta")
        assert (share.ci_low, share.ci_high) == pytest.approx((low, high))


def test_upper_bound_matches_scipy_one_sided_exact():
    for count, n in [(0, 300), (1, 300), (5, 100), (0, 1)]:
        ci = stats.binomtest(count, n, alternative="less").proportion_ci(0.95, method="exact")
        assert upper_bound(count, n, 0.95) == pytest.approx(ci.high)
        assert upper_bounds([count], [n], 0.95)[0] == pytest.approx(ci.high)
    assert upper_bound(0, 0, 0.95) == 1.0 and upper_bounds([3], [3], 0.95)[0] == 1.0


def test_deviation_interval():
    low, high = deviation_interval([0.60, 0.25], [0.66, 0.31], [0.7, 0.3])
    assert (float(low), float(high)) == pytest.approx((0.04, 0.10))
    low, high = deviation_interval([0.68, 0.28], [0.72, 0.32], [0.7, 0.3])
    assert (float(low), float(high)) == pytest.approx((0.0, 0.02))


def test_classify_counts_agrees_with_verify_group():
    rng = np.random.default_rng(7)
    e3 = parse_expected("50/30/20", ["a", "b", "c"])
    for expected, truth in [
        (W, [0.7, 0.3]),
        (W, [0.74, 0.26]),
        (e3, [0.5, 0.3, 0.2]),
        (D, [0.995, 0.005]),
    ]:
        n = rng.integers(1, 5000, size=60)
        table = np.array([rng.multinomial(size, truth) for size in n])
        unknown = rng.poisson(3, size=60)
        fast = classify_counts(table, expected, POLICY, unknown=unknown)
        for row, u, status in zip(table, unknown, fast, strict=True):
            counts = dict(zip(expected.subsets, row.tolist(), strict=True)) | {"unknown": int(u)}
            assert verify_group(counts, expected, POLICY).status == status


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
