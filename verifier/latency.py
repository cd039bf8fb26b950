"""Latency per subset and protocol, and canary against stable, Kayenta-style. Pure.

Only successful responses attributed to a subset count (a failed request's
time says nothing about the model that did not answer); how many were left
out is reported.

Per subset × protocol: n, mean, p50/p90/p99, min/max, the CDF at every
percentile (for the report's plot) and a histogram on edges shared by the
protocol's subsets.

Canary against stable, per protocol (each non-stable subset against the
stable one), as Kayenta's Mann-Whitney judge does:

* ``scipy.stats.mannwhitneyu`` (two-sided) for "do the distributions differ";
* the Hodges-Lehmann shift: the median of every difference canary − stable
  (all n·m pairs, found by selection without building them), with its
  distribution-free confidence interval at ``confidence`` (98% by default, as
  Kayenta): the k-th smallest and k-th largest pairwise differences, with
  ``k = ⌊nm/2 − z·√(nm(n+m+1)/12)⌋`` and ``z`` the normal quantile (Hollander &
  Wolfe's large-sample form). The interval excludes 0 exactly when the
  Mann-Whitney test rejects at ``1 − confidence`` (up to the normal
  approximation).

Verdict against a margin ``M`` (``--latency-margin``: milliseconds, ``5ms``,
or a share of the stable subset's median, ``10%`` by default):

* ``slower``: the interval lies above ``+M``;
* ``faster``: the interval lies below ``−M``;
* ``no difference``: the interval lies inside ``[−M, +M]`` (no shift beyond M);
* ``inconclusive``: the interval straddles ``±M`` (too few responses to tell).

The latency verdict is reported, not part of the exit code (which is the split's).
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from canary.conventions import ERROR, UNKNOWN
from canary.errors import UsageError
from canary.jsonable import jsonable

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MARGIN",
    "LatencyComparison",
    "LatencyReport",
    "LatencyStats",
    "Margin",
    "compare_latency",
    "hodges_lehmann",
    "kth_difference",
    "latency_report",
    "parse_margin",
]

DEFAULT_CONFIDENCE = 0.98
DEFAULT_MARGIN = "10%"
HISTOGRAM_BINS = 40
LatencyVerdict = Literal["slower", "faster", "no difference", "inconclusive"]


@dataclass(frozen=True)
class Margin:
    """The smallest shift that matters: ``value`` ms, or ``value`` × the stable median."""

    value: float
    relative: bool

    def ms(self, stable_median: float) -> float:
        return self.value * stable_median if self.relative else self.value

    def label(self) -> str:
        return f"{100 * self.value:g}% of the stable median" if self.relative else f"{self.value:g} ms"


def parse_margin(text: str) -> Margin:
    """``"10%"`` (of the stable median), ``"5ms"`` or ``"5"`` (milliseconds)."""
    body = str(text).strip().lower()
    match = re.fullmatch(r"([0-9]*\.?[0-9]+)\s*(%|ms)?", body)
    if not match:
        raise UsageError(
            f"latency margin {text!r}: write milliseconds ('5ms') or a share of the stable "
            "median ('10%')"
        )
    value = float(match.group(1))
    if match.group(2) == "%":
        if not 0 < value < 1000:
            raise UsageError(f"latency margin {text!r} must be a positive percentage")
        return Margin(value / 100, relative=True)
    return Margin(value, relative=False)


@dataclass(frozen=True)
class LatencyStats:
    """One subset's latency over one protocol (milliseconds)."""

    protocol: str
    subset: str
    n: int
    mean: float
    p50: float
    p90: float
    p99: float
    min: float
    max: float
    cdf: tuple[float, ...]  # the 0th, 1st, ..., 100th percentile
    histogram: tuple[int, ...]  # counts on the protocol's edges; the last bin holds the tail


@dataclass(frozen=True)
class LatencyComparison:
    """A canary subset against the stable one over one protocol."""

    protocol: str
    canary: str
    stable: str
    n_canary: int
    n_stable: int
    u_statistic: float | None
    p_value: float | None
    shift_ms: float | None  # Hodges-Lehmann: canary − stable
    ci_low: float | None
    ci_high: float | None
    confidence: float
    margin_ms: float | None
    verdict: LatencyVerdict
    reason: str


@dataclass(frozen=True)
class LatencyReport:
    """Every latency figure of a run."""

    stable: str | None
    stats: tuple[LatencyStats, ...]
    comparisons: tuple[LatencyComparison, ...]
    edges: dict[str, tuple[float, ...]]  # protocol -> histogram edges (ms)
    confidence: float
    margin: str
    excluded: int  # failed or unattributed requests left out

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def kth_difference(a: ArrayLike, b: ArrayLike, k: int) -> float:
    """The ``k``-th smallest (1-based) of all differences ``a_i − b_j``, without building them.

    ``a`` and ``b`` must be sorted. Bisection on the value, counting the pairs at
    or below it with ``searchsorted`` (O((n + m) log) per step), snapping to the
    next actual difference as soon as it is the k-th.
    """
    x = np.asarray(a, dtype=np.float64)
    y = np.asarray(b, dtype=np.float64)
    total = x.size * y.size
    if not 1 <= k <= total:
        raise ValueError(f"k={k} outside 1..{total}")

    def prefix(t: float) -> NDArray[np.intp]:
        # per b_j, how many a_i have fl(a_i − b_j) <= t (a prefix, as a is sorted); the
        # searchsorted guess on b_j + t can be an ulp off, so fix it up against the differences
        index = np.searchsorted(x, y + t, side="right")
        for _ in range(x.size + 1):
            up = index < x.size
            up[up] = x[index[up]] - y[up] <= t
            down = index > 0
            down[down] = x[index[down] - 1] - y[down] > t
            if not up.any() and not down.any():
                break
            index = index + up - down
        return index

    def count(t: float) -> int:
        return int(prefix(t).sum())

    def next_above(t: float) -> float:
        index = prefix(t)
        valid = index < x.size
        return float(np.min(x[index[valid]] - y[valid]))

    lo, hi = float(x[0] - y[-1]), float(x[-1] - y[0])
    if count(lo) >= k:
        return lo
    for _ in range(200):  # invariant: count(lo) < k <= count(hi)
        candidate = next_above(lo)
        if count(candidate) >= k:
            return candidate
        mid = lo + (hi - lo) / 2
        if not lo < mid < hi:
            break
        if count(mid) >= k:
            hi = mid
        else:
            lo = mid
    return hi


def hodges_lehmann(
    canary: ArrayLike, stable: ArrayLike, confidence: float = DEFAULT_CONFIDENCE
) -> tuple[float, float, float]:
    """The Hodges-Lehmann shift (canary − stable) and its confidence interval.

    The interval is infinite on both sides when the samples are too small for
    the asked confidence.
    """
    a = np.sort(np.asarray(canary, dtype=np.float64))
    b = np.sort(np.asarray(stable, dtype=np.float64))
    n, m = a.size, b.size
    if n == 0 or m == 0:
        raise ValueError("both samples need at least one value")
    total = n * m
    shift = (kth_difference(a, b, (total + 1) // 2) + kth_difference(a, b, total // 2 + 1)) / 2
    z = float(stats.norm.isf((1 - confidence) / 2))
    k = math.floor(total / 2 - z * math.sqrt(total * (n + m + 1) / 12))
    if k < 1:
        return shift, -math.inf, math.inf
    return shift, kth_difference(a, b, k), kth_difference(a, b, total - k + 1)


def _ms(value: float) -> str:
    return f"{value:.3g}" if abs(value) < 100 else f"{value:.0f}"


def compare_latency(
    canary: ArrayLike,
    stable: ArrayLike,
    *,
    protocol: str = "",
    canary_name: str = "canary",
    stable_name: str = "stable",
    confidence: float = DEFAULT_CONFIDENCE,
    margin: Margin | None = None,
) -> LatencyComparison:
    """Mann-Whitney U and the Hodges-Lehmann shift of ``canary`` against ``stable`` (see module)."""
    margin = margin or parse_margin(DEFAULT_MARGIN)
    a = np.asarray(canary, dtype=np.float64)
    b = np.asarray(stable, dtype=np.float64)
    who = f"{canary_name} vs {stable_name}"
    level = f"{100 * confidence:g}%"

    def result(verdict: LatencyVerdict, reason: str, **numbers: Any) -> LatencyComparison:
        values: dict[str, Any] = dict.fromkeys(
            ("u_statistic", "p_value", "shift_ms", "ci_low", "ci_high", "margin_ms")
        )
        values.update(numbers)
        return LatencyComparison(
            protocol=protocol, canary=canary_name, stable=stable_name, n_canary=int(a.size),
            n_stable=int(b.size), confidence=confidence, verdict=verdict, reason=reason, **values,
        )

    if a.size < 2 or b.size < 2:
        return result(
            "inconclusive",
            f"{who}: too few successful responses to compare ({a.size} and {b.size})",
        )
    test = stats.mannwhitneyu(a, b, alternative="two-sided")
    shift, low, high = hodges_lehmann(a, b, confidence)
    bound = margin.ms(float(np.median(b)))
    numbers = {
        "u_statistic": float(test.statistic),
        "p_value": float(test.pvalue),
        "shift_ms": shift,
        "ci_low": low if math.isfinite(low) else None,
        "ci_high": high if math.isfinite(high) else None,
        "margin_ms": bound,
    }
    if not math.isfinite(low):
        return result(
            "inconclusive",
            f"{who}: too few responses for a {level} interval of the shift",
            **numbers,
        )
    span = f"shift {_ms(shift)} ms, {level} interval {_ms(low)} to {_ms(high)} ms; Mann-Whitney p={test.pvalue:.3g}"
    beyond = f"the {_ms(bound)} ms margin ({margin.label()})"
    if low > bound:
        return result("slower", f"{canary_name} is slower than {stable_name} beyond {beyond}: {span}", **numbers)
    if high < -bound:
        return result("faster", f"{canary_name} is faster than {stable_name} beyond {beyond}: {span}", **numbers)
    if -bound <= low and high <= bound:
        return result(
            "no difference", f"no difference beyond {beyond} between {who}: {span}", **numbers
        )
    return result(
        "inconclusive",
        f"{who}: the interval reaches past {beyond}, too few responses to tell: {span}",
        **numbers,
    )


def _stats(protocol: str, subset: str, values: NDArray[np.float64], edges: NDArray[np.float64]) -> LatencyStats:
    if values.size == 0:
        nan = math.nan
        return LatencyStats(protocol, subset, 0, nan, nan, nan, nan, nan, nan, (), ())
    q = np.quantile(values, [0.5, 0.9, 0.99])
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    return LatencyStats(
        protocol=protocol,
        subset=subset,
        n=int(values.size),
        mean=float(values.mean()),
        p50=float(q[0]),
        p90=float(q[1]),
        p99=float(q[2]),
        min=float(values.min()),
        max=float(values.max()),
        cdf=tuple(float(v) for v in np.quantile(values, np.linspace(0, 1, 101))),
        histogram=tuple(int(c) for c in counts),
    )


def latency_report(
    records: pd.DataFrame,
    *,
    subsets: Sequence[str],
    stable: str | None,
    protocols: Sequence[str] = ("rest", "grpc"),
    confidence: float = DEFAULT_CONFIDENCE,
    margin: Margin | str = DEFAULT_MARGIN,
) -> LatencyReport:
    """Latency figures from the records' ``protocol``, ``subset``, ``ok``, ``latency_ms``."""
    if not 0.5 < confidence < 1:
        raise UsageError(f"latency confidence must be in (0.5, 1), e.g. 0.98; got {confidence!r}")
    chosen = parse_margin(margin) if isinstance(margin, str) else margin
    if len(records):
        ok = records["ok"].astype(bool) & ~records["subset"].isin([UNKNOWN, ERROR])
        used = records.loc[ok, ["protocol", "subset", "latency_ms"]]
    else:
        ok = pd.Series([], dtype=bool)
        used = pd.DataFrame({"protocol": [], "subset": [], "latency_ms": []})
    names = list(dict.fromkeys([*subsets, *sorted(set(used["subset"].astype(str)))]))
    seen_protocols = [p for p in protocols if (used["protocol"] == p).any()]
    seen_protocols += sorted(set(used["protocol"].astype(str)) - set(seen_protocols))
    all_stats: list[LatencyStats] = []
    comparisons: list[LatencyComparison] = []
    edges_by_protocol: dict[str, tuple[float, ...]] = {}
    for protocol in seen_protocols:
        rows = used[used["protocol"] == protocol]
        pooled = rows["latency_ms"].to_numpy(dtype=np.float64)
        low, high = float(pooled.min()), float(np.quantile(pooled, 0.995))
        edges = np.linspace(low, high if high > low else low + 1.0, HISTOGRAM_BINS + 1)
        edges_by_protocol[protocol] = tuple(float(e) for e in edges)
        samples = {
            s: np.sort(rows.loc[rows["subset"] == s, "latency_ms"].to_numpy(dtype=np.float64))
            for s in names
        }
        all_stats.extend(_stats(protocol, s, samples[s], edges) for s in names if samples[s].size)
        if stable is None or stable not in samples:
            continue
        for canary in names:
            if canary == stable or samples[canary].size == 0:
                continue
            comparisons.append(
                compare_latency(
                    samples[canary], samples[stable], protocol=protocol, canary_name=canary,
                    stable_name=stable, confidence=confidence, margin=chosen,
                )
            )
    return LatencyReport(
        stable=stable,
        stats=tuple(all_stats),
        comparisons=tuple(comparisons),
        edges=edges_by_protocol,
        confidence=confidence,
        margin=chosen.label(),
        excluded=int((~ok).sum()),
    )
