"""The live view's latency histogram: bounded memory, percentiles within 1%."""

from __future__ import annotations

import numpy as np
import pytest

from loadtest.latency import HIGH_MS, LOW_MS, LatencyHistogram, summarize


def exact(values: np.ndarray, q: float) -> float:
    return float(np.percentile(values, q, method="inverted_cdf"))


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_percentiles_are_within_one_percent_of_the_exact_ones(seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.lognormal(mean=3.0, sigma=1.0, size=5_000)  # ~20 ms, long tail
    histogram = LatencyHistogram()
    for chunk in np.array_split(values, 7):
        histogram.add(chunk)
    qs = (1.0, 50.0, 95.0, 99.0, 100.0)
    for q, got in zip(qs, histogram.percentiles(qs), strict=True):
        assert got == pytest.approx(exact(values, q), rel=0.01), q


def test_small_samples_use_the_nearest_rank() -> None:
    histogram = LatencyHistogram()
    histogram.add([10.0, 20.0, 30.0, 40.0])
    p50, p99 = histogram.percentiles((50.0, 99.0))
    assert p50 == pytest.approx(20.0, rel=0.01)  # rank ceil(0.5 * 4) = 2
    assert p99 == pytest.approx(40.0, rel=0.01)


def test_empty_out_of_range_and_invalid_values() -> None:
    histogram = LatencyHistogram()
    assert histogram.percentiles() == (None, None, None)
    assert summarize(histogram).n == 0 and summarize(histogram).p50 is None
    histogram.add([float("nan"), -1.0])
    assert histogram.count == 0
    histogram.add([0.0, 1e9])
    low, high = histogram.percentiles((1.0, 100.0))
    assert low == LOW_MS and high is not None and high >= HIGH_MS


def test_memory_is_bounded_and_histograms_add_and_subtract() -> None:
    first = LatencyHistogram()
    size = first._bins.nbytes
    first.add(np.full(100_000, 5.0))
    assert first._bins.nbytes == size < 16_384
    earlier = first.copy()
    first.add(np.full(100, 500.0))
    window = first - earlier
    assert window.count == 100
    assert window.percentiles((50.0,))[0] == pytest.approx(500.0, rel=0.01)
    both = earlier + window
    assert both.count == first.count == 100_100
    assert summarize(both).p99 == pytest.approx(5.0, rel=0.01)
    assert summarize(both).p50 == pytest.approx(5.0, rel=0.01)
