"""Canary against stable latency, Kayenta-style: Mann-Whitney U and the Hodges-Lehmann shift. Pure.

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

Beside the shift, the p50 and p99 ratios canary / stable with seeded
bootstrap intervals (:func:`verifier.percentiles.percentile_ratio`), and one
plain line: "resnet101 slower by 62 ms (58–66), p99 ×1.9 (1.7–2.1)".
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from canary.errors import UsageError

from .percentiles import RatioInterval, percentile_ratio

__all__ = [
    "DEFAULT_CONFIDENCE",
    "DEFAULT_MARGIN",
    "LatencyComparison",
    "LatencyVerdict",
    "Margin",
    "compare_latency",
    "hodges_lehmann",
    "kth_difference",
    "parse_margin",
]

DEFAULT_CONFIDENCE = 0.98
DEFAULT_MARGIN = "10%"
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
class LatencyComparison:
    """A canary subset against the stable one over one protocol (and payload format)."""

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
    format: str = "all"  # the payload format compared ("all": one format only, or not stratified)
    p50_ratio: RatioInterval | None = None
    p99_ratio: RatioInterval | None = None

    @property
    def line(self) -> str:
        """One plain line: "resnet101 slower by 62 ms (58–66), p50 ×1.5 (1.4–1.6), p99 ×1.9 (1.7–2.1)"."""
        if self.shift_ms is None or self.ci_low is None or self.ci_high is None:
            head = f"{self.canary} vs {self.stable}: {self.verdict} (too few responses)"
        elif self.verdict in ("slower", "faster"):
            size = abs(self.shift_ms)
            low, high = sorted((abs(self.ci_low), abs(self.ci_high)))
            head = f"{self.canary} {self.verdict} by {_ms(size)} ms ({_ms(low)}–{_ms(high)})"
        elif self.verdict == "no difference":
            head = (f"{self.canary}: no difference beyond the {_ms(self.margin_ms or 0)} ms margin "
                    f"(shift {self.shift_ms:+.3g} ms, {_ms(self.ci_low)} to {_ms(self.ci_high)})")
        else:
            head = (f"{self.canary} vs {self.stable}: inconclusive (shift {self.shift_ms:+.3g} ms, "
                    f"{_ms(self.ci_low)} to {_ms(self.ci_high)}, reaches past the {_ms(self.margin_ms or 0)} ms margin)")
        ratios = [f"{r_label} ×{r.value:.2f} ({r.low:.2f}–{r.high:.2f})"
                  for r_label, r in (("p50", self.p50_ratio), ("p99", self.p99_ratio)) if r is not None]
        return ", ".join([head, *ratios])

    def to_dict(self) -> dict[str, Any]:
        from canary.jsonable import jsonable

        return {**dict(jsonable(self)), "line": self.line}


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
    fmt: str = "all",
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
            n_stable=int(b.size), confidence=confidence, verdict=verdict, reason=reason, format=fmt,
            p50_ratio=percentile_ratio(a, b, 0.5, confidence), p99_ratio=percentile_ratio(a, b, 0.99, confidence),
            **values,
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
