"""How many requests a fixed-sample verification needs.

:func:`plan_requests` picks the smallest number n of attributed responses per
group such that

(a) a mesh that splits exactly as expected is *verified* with probability at
    least ``policy.power`` — every simultaneous interval must fit inside the
    ±tolerance band and the mismatch test must not reject. Under that truth
    "refuted" happens with probability at most ``alpha`` whatever n is.

(b) cannot be asked for a deviation equal to the tolerance: "refuted" needs
    the observed deviation to exceed the tolerance, and a true deviation of
    exactly the tolerance does so about half the time at any n. So the plan
    reports, at the n of (a), the *detectable deviation*: the smallest true
    deviation that is refuted with probability at least ``policy.power``
    (about ``tolerance + z_power·σ``). Pass ``detect=δ`` (> tolerance) to
    raise n until a deviation of δ is also refuted with that probability.

How power is computed, by the same decision code the verdict uses
(:func:`canary.stats.split.classify_counts`):

* two subsets: exactly, by enumerating every count of the first subset with
  binomial probability above 1e-16 (``scipy.stats.binom``);
* three or more: a lower bound — one minus the union of each subset's chance
  (exact, from its binomial marginal) that its Bonferroni interval leaves the
  band, minus alpha for the χ² test; refutation power is bounded below by
  Fréchet's inequality from one subset's marginal and the noncentral χ² power
  (``scipy.stats.ncx2``), over the least favourable subset and direction;
* deterministic routes: closed form. With no wrong-subset response possible,
  verification needs the zero-count bound 1 − (1 − confidence)^(1/n) ≤
  tolerance, i.e. n ≥ log(1 − confidence)/log(1 − tolerance) (99 at 95% and
  3%), and a wrong-subset share δ is refuted with probability 1 − (1 − δ)^n
  (so ``detect`` may be below the tolerance here).

Exact power is not monotone in n (a discrete test's sawtooth): the planned n
itself reaches the target, found by bisection and then lowered while the
target still holds; a few sizes above it may fall short by a few tenths of a
percent (70/30 ± 3: n = 3621 gives 95.2%, 3623 gives 94.9%).

The requests to send add room for the unknown and error rates the policy
allows: ``ceil(n / (1 − max_unknown_rate − max_error_rate))``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from canary.errors import UsageError
from canary.jsonable import jsonable

from .expectations import Expectation
from .intervals import bonferroni_factor, share_intervals, upper_bound
from .policy import SplitPolicy
from .split import classify_counts

__all__ = ["Plan", "plan_requests", "refute_power", "verify_power"]


@dataclass(frozen=True)
class Plan:
    """The fixed-sample plan for one group, and what it buys."""

    expected: dict[str, float]
    kind: Literal["weighted", "deterministic"]
    n: int  # attributed responses needed
    requests: int  # requests to send, leaving room for allowed unknown/error rates
    verify_power: float  # P(verified) when the split is exactly as expected
    detectable_deviation: float | None  # smallest deviation refuted with P ≥ power at n
    detect: float | None  # the deviation asked for, if any
    detect_power: float | None  # P(refuted) at that deviation
    false_refute_rate: float  # bound on P(refuted) when the split is exactly right
    false_verify_rate: float  # bound on P(verified) when a share is outside the band
    method: str
    policy: SplitPolicy

    def summary(self) -> str:
        """One paragraph for ``verify-split --plan``."""
        pol = self.policy
        split = ",".join(f"{k}={100 * v:g}%" for k, v in self.expected.items())
        lines = [
            f"send {self.requests:,} requests per group ({self.n:,} attributed responses) "
            f"to judge {split} at ±{100 * pol.tolerance:g} points:",
            f"  a mesh splitting exactly so is verified with probability "
            f"{100 * self.verify_power:.1f}% (target {100 * pol.power:g}%)",
        ]
        what = "a wrong-subset share" if self.kind == "deterministic" else "a deviation"
        unit = "%" if self.kind == "deterministic" else " points"
        if self.detectable_deviation is not None:
            lines.append(
                f"  {what} of {100 * self.detectable_deviation:.2g}{unit} or more is "
                f"refuted with probability ≥ {100 * pol.power:g}%"
            )
        if self.detect is not None and self.detect_power is not None:
            lines.append(
                f"  {what} of {100 * self.detect:.3g}{unit} is refuted with probability "
                f"{100 * self.detect_power:.1f}%"
            )
        refute = (
            "false refutation: none (one wrong-subset response is proof)"
            if self.kind == "deterministic"
            else f"false refutation ≤ {100 * self.false_refute_rate:g}%"
        )
        lines.append(
            f"  {refute}, false verification ≤ {100 * self.false_verify_rate:.3g}% ({self.method})"
        )
        return "\n".join(lines)

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise UsageError(f"the number of responses must be a positive whole number, got {n!r}")
    return int(n)


@lru_cache(maxsize=1024)
def _statuses(
    expected: Expectation, policy: SplitPolicy, n: int, low: int, high: int
) -> NDArray[np.str_]:
    """Status of the two-subset tables with n responses whose first positive
    subset got x = low..high (zero-share subsets get nothing)."""
    x = np.arange(low, high + 1)
    table = np.zeros((x.size, len(expected.subsets)), dtype=np.int64)
    first, second = (expected.subsets.index(s) for s in expected.positive)
    table[:, first] = x
    table[:, second] = n - x
    return classify_counts(table, expected, policy)


def _two_subset_rate(
    expected: Expectation, policy: SplitPolicy, n: int, truth: float, status: str
) -> float:
    """P(status) when the first positive subset's true share is ``truth``, summed
    exactly over every count with probability above 1e-16 (the rest is ignored)."""
    low, high = (int(v) for v in stats.binom.ppf([1e-16, 1 - 1e-16], n, truth))
    low, high = max(0, low - 1), min(n, high + 1)
    window = max(64, (high - low) // 4)  # round to a grid so looks near each other share a cache
    low, high = max(0, low // window * window), min(n, -(-high // window) * window)
    hits = _statuses(expected, policy, n, low, high) == status
    pmf = stats.binom.pmf(np.arange(low, high + 1), n, truth)
    return float(pmf[hits].sum())


def _zero_count_n(policy: SplitPolicy) -> int:
    n = max(1, math.ceil(math.log1p(-policy.confidence) / math.log1p(-policy.tolerance)))
    while n > 1 and upper_bound(0, n - 1, policy.confidence) <= policy.tolerance:
        n -= 1
    while upper_bound(0, n, policy.confidence) > policy.tolerance:
        n += 1
    return n


def _band_miss(e: float, n: int, policy: SplitPolicy, k: int, truth: float) -> float:
    """P(one subset's interval leaves its band) when its true share is ``truth``."""
    x = np.arange(n + 1)
    lo, hi = share_intervals(
        x, n, policy.confidence, simultaneous=bonferroni_factor(k), method=policy.interval
    )
    inside = (lo >= max(e - policy.tolerance, 0.0) - 1e-12) & (
        hi <= min(e + policy.tolerance, 1.0) + 1e-12
    )
    return float(stats.binom.pmf(x, n, truth)[~inside].sum())


def verify_power(expected: Expectation, policy: SplitPolicy, n: int) -> float:
    """P(verified) with n attributed responses when the true split is ``expected``
    (exact for one or two subsets, a lower bound for three or more)."""
    n = _check_n(n)
    if upper_bound(0, n, policy.confidence) > policy.tolerance:
        return 0.0  # even the wrong-subset bound does not fit
    if expected.deterministic:
        return 1.0
    pos = expected.positive
    if len(pos) == 2:
        return _two_subset_rate(expected, policy, n, expected.shares[pos[0]], "verified")
    miss = sum(_band_miss(expected.shares[s], n, policy, len(pos), expected.shares[s]) for s in pos)
    return max(0.0, 1.0 - miss - policy.alpha)


def _alternatives(expected: Expectation, deviation: float) -> list[dict[str, float]]:
    """True splits off by ``deviation`` on one subset (others scaled to fit), every
    subset and direction that is possible."""
    out = []
    for s in expected.positive:
        e = expected.shares[s]
        for shifted in (e + deviation, e - deviation):
            if not 0.0 <= shifted <= 1.0 or e >= 1.0:
                continue
            scale = (1.0 - shifted) / (1.0 - e)
            out.append(
                {t: (shifted if t == s else expected.shares[t] * scale) for t in expected.positive}
            )
    return out


def refute_power(expected: Expectation, policy: SplitPolicy, n: int, deviation: float) -> float:
    """P(refuted) with n attributed responses when one share is off by ``deviation``
    (the least favourable subset and direction; for a deterministic route, a
    wrong-subset share of ``deviation``). Exact for one or two subsets, a lower
    bound for three or more."""
    n = _check_n(n)
    if not 0.0 < deviation <= 1.0:
        raise UsageError(f"a deviation is a fraction in (0, 1], got {deviation!r}")
    if expected.deterministic:
        return float(-math.expm1(n * math.log1p(-deviation))) if deviation < 1 else 1.0
    pos = expected.positive
    alternatives = _alternatives(expected, deviation)
    if not alternatives:
        return 0.0
    if len(pos) == 2:
        return min(
            _two_subset_rate(expected, policy, n, alt[pos[0]], "refuted") for alt in alternatives
        )
    k = len(pos)
    critical = stats.chi2.isf(policy.alpha, k - 1)
    powers = []
    for alt in alternatives:
        lam = n * sum((alt[s] - expected.shares[s]) ** 2 / expected.shares[s] for s in pos)
        chi2_power = float(stats.ncx2.sf(critical, k - 1, lam))
        best = 0.0
        for s in pos:  # any one subset's marginal beyond the tolerance suffices
            e = expected.shares[s]
            lo = math.ceil(n * (e + policy.tolerance) + 1e-9)
            hi = math.floor(n * (e - policy.tolerance) - 1e-9)
            beyond = float(stats.binom.sf(lo - 1, n, alt[s]) + stats.binom.cdf(hi, n, alt[s]))
            best = max(best, beyond)
        powers.append(max(0.0, best + chi2_power - 1.0))
    return min(powers)


def _smallest(n_low: int, n_high: int, ok: Any) -> int:
    """Smallest n in (n_low, n_high] with ok(n), for an ok that is monotone up to
    the sawtooth of discrete tests: bisect, step up past a dip if needed, then
    step down while ok still holds, so every size from the answer up to where
    the bisection ended satisfies ok."""
    while n_high - n_low > 1:
        mid = (n_low + n_high) // 2
        if ok(mid):
            n_high = mid
        else:
            n_low = mid
    n = n_high
    while not ok(n):
        n += 1
    while n > 1 and ok(n - 1):
        n -= 1
    return n


def _bracket(start: int, ok: Any, limit: int = 10_000_000) -> tuple[int, int]:
    low = max(1, start // 2)
    while low > 1 and ok(low):
        low //= 2
    high = max(start, low + 1)
    while not ok(high):
        low, high = high, high * 2
        if high > limit:
            raise UsageError("the requested power needs more than 10 million requests per group")
    return low, high


def plan_requests(
    expected: Expectation, policy: SplitPolicy | None = None, *, detect: float | None = None
) -> Plan:
    """The fixed-sample plan for one group (see the module docstring)."""
    policy = policy or SplitPolicy()
    floor = 0.0 if expected.deterministic else policy.tolerance
    if detect is not None and not floor < detect <= 1.0:
        raise UsageError(
            f"detect must be a deviation above {floor:g} (the tolerance, for a weighted "
            f"split), as a fraction, got {detect!r}"
        )
    pos = expected.positive
    if expected.deterministic:
        n = _zero_count_n(policy)
        method = "exact zero-count bound"
        if detect is not None:
            need = math.ceil(math.log1p(-policy.power) / math.log1p(-detect)) if detect < 1 else 1
            n = max(n, need)
        false_verify = 1 - policy.confidence
    else:
        if policy.power >= 1 - policy.alpha:
            raise UsageError(
                f"power {policy.power:g} is out of reach: a correct split passes the mismatch "
                f"test only with probability 1 − alpha = {1 - policy.alpha:g}"
            )
        k = len(pos)
        m = bonferroni_factor(k)
        z_c = stats.norm.isf((1 - policy.confidence) / (2 * m))
        z_p = stats.norm.isf(
            (1 - policy.power - (policy.alpha if k > 2 else 0.0)) / (2 * max(1, k - 1))
        )
        var = max(expected.shares[s] * (1 - expected.shares[s]) for s in pos)
        start = max(2, math.ceil((z_c + z_p) ** 2 * var / policy.tolerance**2))

        def enough(size: int) -> bool:
            return verify_power(expected, policy, size) >= policy.power

        n = _smallest(*_bracket(start, enough), enough)
        if detect is not None:
            target = detect

            def detects(size: int) -> bool:
                return refute_power(expected, policy, size, target) >= policy.power

            if not detects(n):
                n = _smallest(*_bracket(n, detects), detects)
        method = (
            "exact binomial enumeration" if k == 2 else "union lower bound over binomial marginals"
        )
        false_verify = (1 - policy.confidence) / 2
    return Plan(
        expected=dict(expected.shares),
        kind="deterministic" if expected.deterministic else "weighted",
        n=n,
        requests=math.ceil(n / (1 - policy.max_unknown_rate - policy.max_error_rate)),
        verify_power=verify_power(expected, policy, n),
        detectable_deviation=_detectable(expected, policy, n),
        detect=detect,
        detect_power=refute_power(expected, policy, n, detect) if detect is not None else None,
        false_refute_rate=0.0 if expected.deterministic else policy.alpha,
        false_verify_rate=false_verify,
        method=method,
        policy=policy,
    )


def _detectable(expected: Expectation, policy: SplitPolicy, n: int) -> float | None:
    """Smallest deviation refuted with probability ≥ power at n (to 1e-4), or None."""
    low = 1e-6 if expected.deterministic else policy.tolerance
    # the largest deviation possible in some direction: a share moved to 0 or to 1
    high = (
        1.0
        if expected.deterministic
        else max(max(e, 1 - e) for e in expected.shares.values() if e > 0)
    )
    if refute_power(expected, policy, n, high) < policy.power:
        return None
    while high - low > 1e-4:
        mid = (low + high) / 2
        if refute_power(expected, policy, n, mid) >= policy.power:
            high = mid
        else:
            low = mid
    return high
