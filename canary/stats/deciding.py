"""How many attributed responses decide a table: the zero-count n of a deterministic route, and
the n that would likely decide an inconclusive weighted share. Pure, exact (binomial tails)."""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from .intervals import bonferroni_factor, upper_bounds
from .policy import SplitPolicy

__all__ = ["decide_n", "zero_count_n"]


def zero_count_n(policy: SplitPolicy) -> int:
    """Fewest responses that, all from the expected subset, verify a deterministic route:
    the smallest n with 1 − ((1 − confidence)/2)^(1/n) ≤ tolerance."""
    level = policy.wrong_bound_level
    n = max(1, math.ceil(math.log1p(-level) / math.log1p(-policy.tolerance)))
    while n > 1 and float(upper_bounds(0, n - 1, level)) <= policy.tolerance:
        n -= 1
    while float(upper_bounds(0, n, level)) > policy.tolerance:
        n += 1
    return n


def _decision_power(n: NDArray[np.int64], truth: float, expected: float, policy: SplitPolicy,
                    alpha: float, m: int, verify: bool) -> NDArray[np.float64]:
    """P(verified) or P(refuted on this share) at each n when the share is ``truth``: exact.

    A Clopper–Pearson bound at level δ is above p0 exactly when P(X ≥ x | p0) ≤ δ (and below
    p0 when P(X ≤ x | p0) ≤ δ), so each rule is a range of counts found from binomial tails.
    """
    tol = policy.tolerance
    low_edge, high_edge = max(expected - tol, 0.0), min(expected + tol, 1.0)
    if verify:
        delta = (1 - policy.confidence) / (2 * m)
        # inside: lower bound ≥ e − t (vacuous at 0) and upper bound ≤ e + t (vacuous at 1)
        x_low = stats.binom.isf(delta, n, low_edge) + 1 if low_edge > 0 else np.zeros_like(n)
        x_high = stats.binom.ppf(delta, n, high_edge) - 1 if high_edge < 1 else n
        x_low = np.where(stats.binom.sf(x_low - 1, n, low_edge) <= delta, x_low, x_low + 1) if low_edge > 0 else x_low
        x_high = np.where(stats.binom.cdf(x_high, n, high_edge) <= delta, x_high, x_high - 1) if high_edge < 1 else x_high
        ok = x_high >= x_low
        prob = stats.binom.cdf(x_high, n, truth) - stats.binom.cdf(x_low - 1, n, truth)
        return np.where(ok, prob, 0.0)
    delta = alpha / (2 * m)
    if truth > expected:  # beyond above: lower bound > e + t
        if high_edge >= 1:
            return np.zeros(n.shape)
        x_crit = stats.binom.isf(delta, n, high_edge) + 1
        x_crit = np.where(stats.binom.sf(x_crit - 1, n, high_edge) < delta, x_crit, x_crit + 1)
        return np.asarray(stats.binom.sf(x_crit - 1, n, truth), dtype=np.float64)
    if low_edge <= 0:
        return np.zeros(n.shape)
    x_crit = stats.binom.ppf(delta, n, low_edge) - 1
    x_crit = np.where(stats.binom.cdf(x_crit, n, low_edge) < delta, x_crit, x_crit - 1)
    return np.asarray(stats.binom.cdf(x_crit, n, truth), dtype=np.float64)


def decide_n(
    observed: float,
    expected: float,
    policy: SplitPolicy,
    *,
    alpha: float | None = None,
    subsets: int = 2,
    seen: int = 0,
) -> int | None:
    """Attributed responses that would likely decide a share now seen at ``observed``.

    Takes the observed share as the truth and finds the smallest n above ``seen`` at which
    the decision it points to (verified when the deviation is inside the tolerance, refuted
    when beyond) happens with probability ``policy.power``, computed exactly from binomial
    tails (:func:`_decision_power`). None when the deviation sits on the tolerance, or when
    no n up to ten million reaches that power.
    """
    m = bonferroni_factor(subsets)
    a = policy.table_alpha(alpha)
    gap = policy.tolerance - abs(observed - expected)
    if abs(gap) < 1e-9:
        return None
    verify = gap > 0
    truth = min(max(observed, 1e-9), 1 - 1e-9)

    def power(sizes: NDArray[np.int64]) -> NDArray[np.float64]:
        return _decision_power(sizes, truth, expected, policy, a, m, verify)

    high = max(seen + 1, 2)
    while power(np.array([high]))[0] < policy.power:
        high *= 2
        if high > 10_000_000:
            return None
    low = max(seen, high // 2)  # power(low) < target, or low = seen
    while high - low > 1:  # bisection: the sawtooth of a discrete test moves it by a few at most
        mid = (low + high) // 2
        if power(np.array([mid]))[0] >= policy.power:
            high = mid
        else:
            low = mid
    return int(high)
