"""Percentiles with exact intervals, ratios with bootstrap intervals, latency per format, the timeline:
numbers asserted on known distributions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from verifier.latency import latency_report, strata
from verifier.percentiles import percentile, percentile_ratio
from verifier.timeline import bucket_width, timeline


@pytest.mark.parametrize("q", [0.5, 0.9, 0.95, 0.99])
@pytest.mark.parametrize("n", [5, 20, 44, 100, 367, 368, 1000, 5000])
def test_the_order_statistic_interval_covers_at_least_95_percent_exactly(n: int, q: float) -> None:
    """Coverage by enumeration: the count of responses below the true quantile is Binomial(n, q)."""
    values = np.arange(1, n + 1, dtype=float)  # the interval's order statistics are their ranks
    p = percentile(values, q, 0.95)
    lower = 0 if p.low is None else int(p.low)  # 1-based ranks; 0: open below
    upper = n + 1 if p.high is None else int(p.high)  # n + 1: open above
    coverage = stats.binom.cdf(upper - 1, n, q) - (stats.binom.cdf(lower - 1, n, q) if lower >= 1 else 0.0)
    assert coverage >= 0.95 - 1e-12


def test_simulated_coverage_on_an_exponential() -> None:
    rng = np.random.default_rng(42)
    hits, trials = 0, 2000
    truth = -10 * np.log(1 - 0.9)  # the p90 of an exponential with mean 10 ms
    for _ in range(trials):
        p = percentile(rng.exponential(10, 300), 0.9)
        hits += (p.low or -np.inf) <= truth <= (p.high or np.inf)
    assert 0.94 <= hits / trials <= 0.985  # at least 95% exactly; the binomial's steps make it a bit more


def test_small_samples_say_what_they_cannot_bound() -> None:
    p99 = percentile(np.linspace(10, 50, 44), 0.99)
    assert p99.high is None and "needs 368" in p99.note and "the p99 of 44 responses is about their maximum" in p99.note
    assert percentile(np.linspace(10, 50, 368), 0.99).high is not None
    assert percentile([], 0.5).note == "no response"


def test_the_p99_ratio_and_its_interval() -> None:
    rng = np.random.default_rng(1)
    slow, fast = rng.exponential(20, 4000), rng.exponential(10, 4000)  # every quantile exactly doubles
    ratio = percentile_ratio(slow, fast, 0.99)
    assert ratio is not None and ratio.low < 2.0 < ratio.high and 1.6 < ratio.value < 2.5
    same = percentile_ratio(fast, rng.exponential(10, 4000), 0.5)
    assert same is not None and same.low < 1.0 < same.high
    assert percentile_ratio([1.0], [1.0, 2.0], 0.5) is None
    assert percentile_ratio(slow, fast, 0.99) == ratio  # seeded


def _records(rng: np.random.Generator, n: int = 1600, b64_delay: float = 25.0) -> pd.DataFrame:
    """REST and gRPC, both formats: the canary is 25 ms slower on b64 (it decodes a bigger JPEG), the
    same on instances."""
    rows = []
    start = dt.datetime(2026, 1, 31, 12, tzinfo=dt.UTC)
    for i in range(n):
        subset = "resnet101" if rng.random() < 0.3 else "resnet50"
        fmt = "b64" if i % 2 else "instances"
        latency = rng.lognormal(np.log(40), 0.2) + (b64_delay if subset == "resnet101" and fmt == "b64" else 0.0)
        rows.append({"time": start + dt.timedelta(milliseconds=10 * i), "protocol": "rest" if i % 4 < 2 else "grpc",
                     "format": fmt, "subset": subset, "ok": True, "latency_ms": latency})
    return pd.DataFrame(rows)


def test_latency_is_compared_like_with_like_per_format() -> None:
    records = _records(np.random.default_rng(3))
    assert strata(records) == ["b64", "instances"]
    report = latency_report(records, subsets=["resnet50", "resnet101"], stable="resnet50")
    verdicts = {(c.protocol, c.format): c.verdict for c in report.comparisons}
    assert verdicts == {("rest", "b64"): "slower", ("rest", "instances"): "no difference",
                        ("grpc", "b64"): "slower", ("grpc", "instances"): "no difference"}
    b64 = next(c for c in report.comparisons if (c.protocol, c.format) == ("rest", "b64"))
    assert b64.ci_low is not None and b64.ci_high is not None and b64.ci_low < 25 < b64.ci_high
    assert b64.line.startswith("resnet101 slower by 2") and "p99 ×" in b64.line
    assert b64.p50_ratio is not None and b64.p50_ratio.low > 1.4  # (40 + 25) / 40
    assert {(a.format, a.agree) for a in report.agreement} == {("b64", True), ("instances", True)}
    assert {s.stratum for s in report.stats} == {"rest/b64", "rest/instances", "grpc/b64", "grpc/instances"}
    stat = next(s for s in report.stats if s.stratum == "rest/instances" and s.subset == "resnet50")
    assert [p.label for p in stat.percentiles] == ["p50", "p90", "p95", "p99"]
    p50 = stat.percentiles[0]
    assert p50.low is not None and p50.high is not None and p50.low < 40 < p50.high


def test_one_format_is_not_stratified() -> None:
    records = _records(np.random.default_rng(4)).assign(format="b64")
    report = latency_report(records, subsets=["resnet50", "resnet101"], stable="resnet50")
    assert report.formats == ("all",) and {c.format for c in report.comparisons} == {"all"}


def test_the_timeline_counts_requests_shares_and_marks() -> None:
    records = _records(np.random.default_rng(5), n=3000)  # 30 s of requests, 10 ms apart
    assert bucket_width(30.0) == 1.0 and bucket_width(3.0) == 0.2 and bucket_width(3600.0) == 30.0
    line = timeline(records, ["resnet50", "resnet101"],
                    changes=[(1, 4, "2026-01-31T12:00:12Z", None)])
    assert line.width_s == 1.0 and len(line.buckets) == 30
    assert sum(sum(b.requests.values()) for b in line.buckets) == 3000
    assert all(sum(b.requests.values()) == 100 for b in line.buckets)
    shares = [b.shares()["resnet101"] for b in line.buckets]
    assert 0.25 < float(np.mean(shares)) < 0.35
    (mark,) = line.marks
    assert mark.at_s == 12.0 and mark.version == 4 and mark.took_effect == "unknown"
    rows = line.rows()
    assert {r["subset"] for r in rows} == {"resnet50", "resnet101"} and rows[0]["rps"] == rows[0]["requests"]


@pytest.mark.parametrize("n", [60, 600])
def test_the_order_statistic_bootstrap_matches_scipy_resampling(n: int) -> None:
    """Drawing each resample's quantile from its exact distribution is the bootstrap itself: the
    interval agrees with scipy.stats.bootstrap's resampling (different random draws, so within a few %)."""
    rng = np.random.default_rng(n)
    a, b = rng.lognormal(3.0, 0.5, n), rng.lognormal(2.8, 0.5, n)
    ours = percentile_ratio(a, b, 0.9, resamples=4000)

    def ratio(x: np.ndarray, y: np.ndarray, axis: int = -1) -> np.ndarray:
        return np.quantile(x, 0.9, axis=axis, method="inverted_cdf") / np.quantile(y, 0.9, axis=axis, method="inverted_cdf")

    theirs = stats.bootstrap((a, b), ratio, n_resamples=4000, vectorized=True, paired=False,
                             method="percentile", rng=np.random.default_rng(1)).confidence_interval
    assert ours is not None
    assert ours.low == pytest.approx(theirs.low, rel=0.04) and ours.high == pytest.approx(theirs.high, rel=0.04)
