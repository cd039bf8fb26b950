"""Bounded-memory latency percentiles for the live view: a streaming log-binned histogram.

A :class:`LatencyHistogram` counts latencies into fixed bins whose edges grow
by 2% from 10 µs to 10⁶ ms (about 930 bins, one ``int64`` array: 7 KiB
whatever the number of requests). A percentile is the geometric middle of
the bin that holds the value of rank ``ceil(q·n)`` (the inverted CDF), so it
is within 1% of that value for every latency in range. Histograms add and
subtract bin by bin: the live view keeps one per cell and subset, sums them
per protocol, and takes the difference of two moments for a window.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

__all__ = ["HIGH_MS", "LOW_MS", "PERCENTILES", "LatencyHistogram", "LatencySummary", "summarize"]

LOW_MS = 0.01
HIGH_MS = 1e6
_RATIO = 1.02
_EDGES: NDArray[np.float64] = LOW_MS * _RATIO ** np.arange(
    math.ceil(math.log(HIGH_MS / LOW_MS) / math.log(_RATIO)) + 1, dtype=np.float64
)
_MIDDLES: NDArray[np.float64] = np.concatenate(
    ([LOW_MS], np.sqrt(_EDGES[:-1] * _EDGES[1:]), [_EDGES[-1]])
)
"""Each bin's reported value: below ``LOW_MS``, the geometric middles, above the last edge."""

PERCENTILES = (50.0, 95.0, 99.0)
"""The percentiles the live view shows."""


class LatencyHistogram:
    """Latencies (milliseconds) counted in log-spaced bins; not thread-safe (callers lock)."""

    __slots__ = ("_bins",)

    def __init__(self, bins: NDArray[np.int64] | None = None) -> None:
        self._bins = np.zeros(_MIDDLES.size, dtype=np.int64) if bins is None else bins

    @property
    def count(self) -> int:
        return int(self._bins.sum())

    def add(self, latencies_ms: Sequence[float] | NDArray[np.float64]) -> None:
        """Count latencies; NaN and negative values are ignored."""
        values = np.asarray(latencies_ms, dtype=np.float64)
        values = values[np.isfinite(values) & (values >= 0)]
        if values.size:
            where = np.searchsorted(_EDGES, values, side="right")
            self._bins += np.bincount(where, minlength=_MIDDLES.size)

    def copy(self) -> LatencyHistogram:
        return LatencyHistogram(self._bins.copy())

    def __add__(self, other: LatencyHistogram) -> LatencyHistogram:
        return LatencyHistogram(self._bins + other._bins)

    def __sub__(self, other: LatencyHistogram) -> LatencyHistogram:
        """What was counted since ``other`` (an earlier copy of this histogram)."""
        return LatencyHistogram(np.maximum(self._bins - other._bins, 0))

    def percentiles(self, qs: Sequence[float] = PERCENTILES) -> tuple[float | None, ...]:
        """The latency (ms) at each percentile in ``qs`` (0–100]; None when nothing was counted."""
        n = self.count
        if n == 0:
            return tuple(None for _ in qs)
        cumulative = np.cumsum(self._bins)
        ranks = np.maximum(1, np.ceil(np.asarray(qs, dtype=np.float64) / 100.0 * n - 1e-9))
        at = np.searchsorted(cumulative, ranks, side="left")
        return tuple(float(_MIDDLES[i]) for i in at)


@dataclass(frozen=True)
class LatencySummary:
    """p50/p95/p99 (ms) of ``n`` latencies; the percentiles are None when n is 0."""

    n: int
    p50: float | None
    p95: float | None
    p99: float | None


def summarize(histogram: LatencyHistogram) -> LatencySummary:
    """The live view's percentiles of a histogram."""
    p50, p95, p99 = histogram.percentiles(PERCENTILES)
    return LatencySummary(n=histogram.count, p50=p50, p95=p95, p99=p99)
