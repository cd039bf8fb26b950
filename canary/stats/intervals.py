"""Fixed-sample confidence intervals for shares (vectorised).

* :func:`share_intervals` — simultaneous two-sided intervals for the k shares
  of a multinomial: each share's exact (Clopper–Pearson) binomial interval,
  from ``statsmodels.stats.proportion.proportion_confint(method="beta")``, at
  level ``1 − (1 − confidence)/m`` with ``m = bonferroni_factor(k)``. With
  ``m = k`` Bonferroni makes all k intervals hold together with probability at
  least ``confidence``. For k = 2 the two shares are ``p`` and ``1 − p`` and
  the intervals are mirror images (the interval for ``n − x`` is one minus the
  interval for ``x``), so one interval holding is the same event as both
  holding and ``m = 1`` is exact. Only the exact method is offered: its
  coverage is at least nominal for every true share and n, which the
  verdict's guarantees need (Wilson's is only on average: a false
  verification rate of 2.97% where 2.5% was promised).
* :func:`upper_bound` — the one-sided exact (Clopper–Pearson) upper bound on a
  share at ``confidence``; for zero events it is ``1 − (1 − confidence)^(1/n)``,
  the exact form of the "rule of three" (``≈ 3/n`` at 95%).
* :func:`deviation_interval` — an interval for ``max_i |p_i − e_i|`` read off
  simultaneous share intervals.
"""

from __future__ import annotations

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats
from statsmodels.stats.proportion import proportion_confint

__all__ = [
    "bonferroni_factor",
    "deviation_interval",
    "share_intervals",
    "upper_bound",
    "upper_bounds",
]

def bonferroni_factor(k: int) -> int:
    """How many intervals the confidence level is split over for k shares
    (1 for k ≤ 2, where the intervals are mirror images; k otherwise)."""
    return 1 if k <= 2 else k


def share_intervals(
    counts: ArrayLike,
    n: ArrayLike,
    confidence: float,
    *,
    simultaneous: int = 1,
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Two-sided intervals for ``counts / n``, each at ``1 − (1 − confidence)/simultaneous``.

    Broadcasts ``counts`` against ``n``. Where ``n`` is 0 the interval is [0, 1].
    """
    x = np.asarray(counts, dtype=np.float64)
    nobs = np.broadcast_to(np.asarray(n, dtype=np.float64), x.shape)
    safe = np.where(nobs > 0, nobs, 1.0)
    alpha = (1.0 - confidence) / simultaneous
    low, high = proportion_confint(x, safe, alpha=alpha, method="beta")
    low = np.where(nobs > 0, np.clip(low, 0.0, 1.0), 0.0)
    high = np.where(nobs > 0, np.clip(high, 0.0, 1.0), 1.0)
    return np.asarray(low, dtype=np.float64), np.asarray(high, dtype=np.float64)


def upper_bound(count: int, n: int, confidence: float) -> float:
    """One-sided exact (Clopper–Pearson) upper confidence bound on a share.

    ``scipy.stats.binomtest(count, n, alternative="less").proportion_ci`` —
    the p such that seeing ``count`` or fewer events has probability
    ``1 − confidence``. With ``n == 0`` nothing is known: 1.0.
    """
    if n <= 0:
        return 1.0
    result = stats.binomtest(int(count), int(n), alternative="less")
    return float(result.proportion_ci(confidence_level=confidence, method="exact").high)


def upper_bounds(counts: ArrayLike, n: ArrayLike, confidence: float) -> NDArray[np.float64]:
    """Vectorised :func:`upper_bound`: the Beta(count + 1, n − count) quantile at
    ``confidence`` (the same Clopper–Pearson bound; in closed form,
    1 − (1 − confidence)^(1/n), where count is 0), 1 where count ≥ n."""
    x = np.asarray(counts, dtype=np.float64)
    nobs = np.asarray(n, dtype=np.float64)
    x, nobs = np.broadcast_arrays(x, nobs)
    with np.errstate(divide="ignore"):
        bound = -np.expm1(np.log1p(-confidence) / nobs)  # count 0 (and 0 for n = 0: fixed below)
    some = (x > 0) & (nobs > x)
    if some.any():
        bound = np.array(bound, copy=True)
        bound[some] = stats.beta.ppf(confidence, x[some] + 1.0, nobs[some] - x[some])
    return np.asarray(np.where(nobs > x, bound, 1.0), dtype=np.float64)


def deviation_interval(
    low: ArrayLike, high: ArrayLike, expected: ArrayLike
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Interval for the largest absolute deviation ``max_i |p_i − e_i|``.

    If every true share ``p_i`` lies in its interval ``[low_i, high_i]`` (the
    simultaneous event), then ``|p_i − e_i|`` lies between the distance from
    ``e_i`` to the interval (0 when the interval contains ``e_i``) and the
    farther end's distance; the max over i of each bound brackets the true
    max deviation with the same joint confidence. The last axis is the subsets.
    """
    lo = np.asarray(low, dtype=np.float64)
    hi = np.asarray(high, dtype=np.float64)
    e = np.asarray(expected, dtype=np.float64)
    nearest = np.maximum(np.maximum(lo - e, e - hi), 0.0)
    farthest = np.maximum(np.abs(lo - e), np.abs(hi - e))
    return nearest.max(axis=-1), farthest.max(axis=-1)
