"""Latency: quantiles per subset x protocol, and the Kayenta-style canary vs stable comparison."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from canary.errors import UsageError
from verifier.latency import (
    Margin,
    compare_latency,
    hodges_lehmann,
    kth_difference,
    latency_report,
    parse_margin,
)


def test_kth_difference_matches_brute_force() -> None:
    rng = np.random.default_rng(7)
    for trial in range(60):
        n, m = (int(v) for v in rng.integers(1, 30, 2))
        if trial % 2:  # whole milliseconds: many ties
            a, b = np.sort(rng.integers(0, 8, n).astype(float)), np.sort(rng.integers(0, 8, m).astype(float))
        else:
            a, b = np.sort(rng.lognormal(3, 1, n)), np.sort(rng.lognormal(3, 1, m))
        every = np.sort(np.subtract.outer(a, b).ravel())
        for k in {1, every.size, (every.size + 1) // 2, int(rng.integers(1, every.size + 1))}:
            assert kth_difference(a, b, k) == every[k - 1]
    with pytest.raises(ValueError):
        kth_difference([1.0], [2.0], 2)


def test_hodges_lehmann_shift_and_interval() -> None:
    rng = np.random.default_rng(11)
    stable = rng.lognormal(np.log(40), 0.2, 3000)
    canary = rng.lognormal(np.log(40), 0.2, 1000) + 5.0
    shift, low, high = hodges_lehmann(canary, stable, 0.98)
    assert low < 5.0 < high and shift == pytest.approx(5.0, abs=0.5)
    brute = np.median(np.subtract.outer(canary[:200], stable[:300]))
    assert hodges_lehmann(canary[:200], stable[:300])[0] == pytest.approx(brute)
    assert hodges_lehmann([1.0, 2.0], [1.5], 0.98)[1] == -math.inf  # too few for 98%


def test_interval_covers_the_true_shift_about_as_promised() -> None:
    rng = np.random.default_rng(3)
    hits = 0
    for _ in range(200):
        _, low, high = hodges_lehmann(rng.normal(2.0, 1, 40), rng.normal(0.0, 1, 50), 0.9)
        hits += low <= 2.0 <= high
    assert 0.85 <= hits / 200 <= 0.97


@pytest.mark.parametrize(
    ("shift", "verdict"),
    [(6.0, "slower"), (-6.0, "faster"), (0.0, "no difference")],
)
def test_verdicts_on_seeded_samples(shift: float, verdict: str) -> None:
    rng = np.random.default_rng(5)
    stable = rng.lognormal(np.log(40), 0.25, 4000)
    canary = rng.lognormal(np.log(40), 0.25, 2000) + shift
    result = compare_latency(canary, stable, canary_name="resnet101", stable_name="resnet50",
                             margin=Margin(2.0, relative=False))
    assert result.verdict == verdict, result.reason
    expected_p = stats.mannwhitneyu(canary, stable, alternative="two-sided").pvalue
    assert result.p_value == pytest.approx(expected_p)
    assert result.margin_ms == 2.0
    if verdict == "no difference":
        assert "no difference beyond the 2 ms margin" in result.reason
    else:
        assert f"{'slower' if shift > 0 else 'faster'} than resnet50" in result.reason


def test_small_or_straddling_samples_are_inconclusive() -> None:
    assert compare_latency([1.0], [1.0, 2.0]).verdict == "inconclusive"
    rng = np.random.default_rng(2)
    straddle = compare_latency(rng.normal(42, 5, 30), rng.normal(40, 5, 30), margin=Margin(2.0, False))
    assert straddle.verdict == "inconclusive" and "too few responses to tell" in straddle.reason


def test_parse_margin() -> None:
    assert parse_margin("10%") == Margin(0.1, relative=True)
    assert parse_margin("5ms") == Margin(5.0, relative=False)
    assert parse_margin(" 2.5 ") == Margin(2.5, relative=False)
    assert parse_margin("10%").ms(40.0) == pytest.approx(4.0)
    for bad in ("fast", "-3ms", "0%"):
        with pytest.raises(UsageError, match="latency margin"):
            parse_margin(bad)


def test_report_quantiles_per_subset_and_protocol() -> None:
    rng = np.random.default_rng(9)
    frames = []
    for protocol, base in (("rest", 40.0), ("grpc", 20.0)):
        for subset, extra in (("resnet50", 0.0), ("resnet101", 10.0)):
            values = base + extra + rng.exponential(2.0, 500)
            frames.append(pd.DataFrame({"protocol": protocol, "subset": subset, "ok": True, "latency_ms": values}))
    frames.append(pd.DataFrame({"protocol": ["rest"] * 3, "subset": ["error", "unknown", "resnet50"],
                                "ok": [False, True, False], "latency_ms": [9e3, 9e3, 9e3]}))
    records = pd.concat(frames, ignore_index=True)
    report = latency_report(records, subsets=["resnet50", "resnet101"], stable="resnet50", margin="5ms")
    assert report.excluded == 3
    cells = {(s.protocol, s.subset): s for s in report.stats}
    assert set(cells) == {("rest", "resnet50"), ("rest", "resnet101"), ("grpc", "resnet50"), ("grpc", "resnet101")}
    rest = records[(records.protocol == "rest") & (records.subset == "resnet50") & records.ok]["latency_ms"]
    assert cells[("rest", "resnet50")].p90 == pytest.approx(np.quantile(rest, 0.9))
    assert cells[("rest", "resnet50")].n == 500 and len(cells[("rest", "resnet50")].cdf) == 101
    assert sum(cells[("grpc", "resnet101")].histogram) == 500
    assert [c.protocol for c in report.comparisons] == ["rest", "grpc"]
    assert all(c.verdict == "slower" and c.shift_ms == pytest.approx(10, abs=0.5) for c in report.comparisons)
    assert report.to_dict()["comparisons"][0]["canary"] == "resnet101"
    empty = latency_report(records.iloc[0:0], subsets=["resnet50"], stable="resnet50")
    assert empty.stats == () and empty.comparisons == ()
