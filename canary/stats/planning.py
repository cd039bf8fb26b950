"""How many requests a fixed-sample verification needs: per table, and for a whole run.

:func:`plan_requests` picks, for one table (a cell or a pool of cells), the
smallest number n of attributed responses such that both

(a) a mesh that splits exactly as expected is *verified* with probability at
    least ``policy.power`` (every share's interval inside its band), and
(b) a split off by ``detect`` on its least favourable share and direction
    (default: the tolerance + 2 points) is *refuted* with probability at
    least ``policy.power`` (that share's interval wholly beyond its band).

How power is computed, by the same decision code the verdict uses
(:func:`canary.stats.split.classify_counts`):

* two subsets: exactly, by enumerating every count of the first subset with
  binomial probability above 1e-16 (``scipy.stats.binom``);
* three or more: bounds from each share's exact binomial marginal — for (a)
  one minus the sum of the chances that a share's interval leaves its band,
  for (b) the largest chance that one share's interval lies beyond its band;
* deterministic routes: closed form. Verifying needs the zero-count bound
  1 − ((1 − confidence)/2)^(1/n) ≤ tolerance (122 responses at 95% and ±3
  points) and a wrong-subset share δ is refuted with probability 1 − (1 − δ)^n.

Exact power is not monotone in n (a discrete test's sawtooth): the planned n
itself reaches the target, found by bisection and then lowered while the
target still holds.

:func:`plan_run` turns tables into what a user types: the cells a load test
sends (:func:`cell_weights`: REST/gRPC x default/canary, from the protocol mix
and the canary share), pooled as the verifier pools them
(:mod:`canary.stats.pooling`, with its family-wise alpha), and the
``canary load --requests`` that gives every pool its n, with room for the
unknown and error rates the policy allows.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray
from scipy import stats

from canary.conventions import GROUPS, PROTOCOLS
from canary.errors import UsageError
from canary.jsonable import jsonable

from .deciding import zero_count_n
from .expectations import Expectation
from .intervals import bonferroni_factor, share_intervals
from .policy import SplitPolicy
from .pooling import CellTable, allocate_alpha, pool_cells
from .split import bands, classify_counts

__all__ = [
    "DETECT_MARGIN",
    "Plan",
    "PlannedPool",
    "RunPlan",
    "cell_weights",
    "plan_requests",
    "plan_run",
    "refute_power",
    "verify_power",
]

DETECT_MARGIN = 0.02
"""The default deviation to plan a refutation for: the tolerance plus this (2 points)."""


@dataclass(frozen=True)
class Plan:
    """The fixed-sample plan for one table, and what it buys."""

    expected: dict[str, float]
    kind: Literal["weighted", "deterministic"]
    n: int  # attributed responses needed for both claims
    n_verify: int  # … to verify the expected split with probability ≥ power
    n_refute: int  # … to refute a deviation of ``detect`` with probability ≥ power
    verify_power: float  # P(verified) at n when the split is exactly as expected
    detect: float  # the deviation (weighted) or wrong-subset share (deterministic) planned for
    detect_power: float  # P(refuted) at n for that deviation
    alpha: float  # this table's share of the false-refutation budget
    false_refute_rate: float  # bound on P(refuted) when every share is inside its band
    false_verify_rate: float  # bound on P(verified) when a share is outside its band
    method: str
    policy: SplitPolicy

    def summary(self) -> str:
        """Two lines: what verifying and refuting cost at n."""
        pol = self.policy
        what = "a wrong-subset share" if self.kind == "deterministic" else "a deviation"
        unit = "%" if self.kind == "deterministic" else " points"
        refute = (
            "false refutation: none (one wrong-subset response is proof)"
            if self.kind == "deterministic"
            else f"false refutation ≤ {100 * self.false_refute_rate:.3g}%"
        )
        return (
            f"{self.n:,} attributed responses: verified with probability "
            f"{100 * self.verify_power:.1f}% when exactly so (needs {self.n_verify:,}); "
            f"{what} of {100 * self.detect:.3g}{unit} refuted with probability "
            f"{100 * self.detect_power:.1f}% (needs {self.n_refute:,}); {refute}, "
            f"false verification ≤ {100 * self.false_verify_rate:.3g}% ({self.method}; "
            f"target power {100 * pol.power:g}%)"
        )

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


def _check_n(n: int) -> int:
    if int(n) != n or n < 1:
        raise UsageError(f"the number of responses must be a positive whole number, got {n!r}")
    return int(n)


@lru_cache(maxsize=1024)
def _statuses(
    expected: Expectation, policy: SplitPolicy, alpha: float, n: int, low: int, high: int
) -> NDArray[np.str_]:
    """Status of the two-subset tables with n responses whose first positive
    subset got x = low..high (zero-share subsets get nothing)."""
    x = np.arange(low, high + 1)
    table = np.zeros((x.size, len(expected.subsets)), dtype=np.int64)
    first, second = (expected.subsets.index(s) for s in expected.positive)
    table[:, first] = x
    table[:, second] = n - x
    return classify_counts(table, expected, policy, alpha=alpha)


def _two_subset_rate(
    expected: Expectation, policy: SplitPolicy, alpha: float, n: int, truth: float, status: str
) -> float:
    """P(status) when the first positive subset's true share is ``truth``, summed
    exactly over every count with probability above 1e-16 (the rest is ignored)."""
    low, high = (int(v) for v in stats.binom.ppf([1e-16, 1 - 1e-16], n, truth))
    low, high = max(0, low - 1), min(n, high + 1)
    window = max(64, (high - low) // 4)  # round to a grid so looks near each other share a cache
    low, high = max(0, low // window * window), min(n, -(-high // window) * window)
    hits = _statuses(expected, policy, alpha, n, low, high) == status
    pmf = stats.binom.pmf(np.arange(low, high + 1), n, truth)
    return float(pmf[hits].sum())


def _marginal_rate(
    n: int, level: float, m: int, band: tuple[float, float], truth: float, outcome: str
) -> float:
    """P(one share's interval at ``level``/m is inside (``"inside"``) or wholly beyond
    (``"beyond"``) its band) when its true share is ``truth``: exact, from its binomial marginal."""
    low, high = (int(v) for v in stats.binom.ppf([1e-16, 1 - 1e-16], n, truth))
    x = np.arange(max(0, low - 1), min(n, high + 1) + 1)  # the counts with any probability
    lo, hi = share_intervals(x, n, level, simultaneous=m)
    if outcome == "inside":
        hit = (lo >= band[0] - 1e-12) & (hi <= band[1] + 1e-12)
    else:
        hit = (lo > band[1] + 1e-12) | (hi < band[0] - 1e-12)
    return float(stats.binom.pmf(x, n, truth)[hit].sum())


def verify_power(expected: Expectation, policy: SplitPolicy, n: int) -> float:
    """P(verified) with n attributed responses when the true split is ``expected``
    (exact for one or two subsets, a lower bound for three or more)."""
    n = _check_n(n)
    if expected.deterministic:
        return 1.0 if n >= zero_count_n(policy) else 0.0
    pos = expected.positive
    if len(pos) == 2:
        return _two_subset_rate(expected, policy, policy.alpha, n, expected.shares[pos[0]], "verified")
    low, high = bands(expected, policy.tolerance)
    index = {s: i for i, s in enumerate(expected.subsets)}
    miss = sum(
        1.0
        - _marginal_rate(
            n, policy.confidence, len(pos), (low[index[s]], high[index[s]]), expected.shares[s], "inside"
        )
        for s in pos
    )
    return max(0.0, 1.0 - miss)


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
            out.append({t: (shifted if t == s else expected.shares[t] * scale) for t in expected.positive})
    return out


def refute_power(
    expected: Expectation, policy: SplitPolicy, n: int, deviation: float, *, alpha: float | None = None
) -> float:
    """P(refuted) with n attributed responses when one share is off by ``deviation``
    (the least favourable subset and direction; for a deterministic route, a
    wrong-subset share of ``deviation``). Exact for one or two subsets, a lower
    bound for three or more. ``alpha``: the table's share of the budget."""
    n = _check_n(n)
    alpha = policy.alpha if alpha is None else alpha
    if not 0.0 < deviation <= 1.0:
        raise UsageError(f"a deviation is a fraction in (0, 1], got {deviation!r}")
    if expected.deterministic:
        return float(-math.expm1(n * math.log1p(-deviation))) if deviation < 1 else 1.0
    pos = expected.positive
    alternatives = _alternatives(expected, deviation)
    if not alternatives:
        return 0.0
    if len(pos) == 2:
        return min(_two_subset_rate(expected, policy, alpha, n, alt[pos[0]], "refuted") for alt in alternatives)
    low, high = bands(expected, policy.tolerance)
    index = {s: i for i, s in enumerate(expected.subsets)}
    return min(
        max(
            _marginal_rate(n, 1.0 - alpha, len(pos), (low[index[s]], high[index[s]]), alt[s], "beyond")
            for s in pos
        )
        for alt in alternatives
    )


def _smallest(n_low: int, n_high: int, ok: Callable[[int], bool]) -> int:
    """Smallest n in (n_low, n_high] with ok(n), for an ok that is monotone up to
    the sawtooth of discrete tests: bisect, step up past a dip if needed, then
    step down while ok still holds."""
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


def _bracket(start: int, ok: Callable[[int], bool], limit: int = 10_000_000) -> tuple[int, int]:
    low = max(1, start // 2)
    while low > 1 and ok(low):
        low //= 2
    high = max(start, low + 1)
    while not ok(high):
        low, high = high, high * 2
        if high > limit:
            raise UsageError("the requested power needs more than 10 million responses per table")
    return low, high


def _start(expected: Expectation, gap: float, tail: float, policy: SplitPolicy) -> int:
    """Normal-approximation starting point for the search."""
    var = max(expected.shares[s] * (1 - expected.shares[s]) for s in expected.positive)
    z = stats.norm.isf(tail) + stats.norm.isf(1 - policy.power)
    return max(2, math.ceil(z * z * var / (gap * gap)))


def plan_requests(
    expected: Expectation,
    policy: SplitPolicy | None = None,
    *,
    detect: float | None = None,
    alpha: float | None = None,
) -> Plan:
    """The fixed-sample plan for one table (see the module docstring). ``alpha`` is the
    table's share of the run's false-refutation budget (default: all of it)."""
    policy = policy or SplitPolicy()
    alpha = policy.alpha if alpha is None else alpha
    detect = policy.tolerance + DETECT_MARGIN if detect is None else detect
    floor = 0.0 if expected.deterministic else policy.tolerance
    if not floor < detect <= 1.0:
        raise UsageError(
            f"detect must be a deviation above {floor:g} (the tolerance, for a weighted "
            f"split), as a fraction, got {detect!r}"
        )
    if expected.deterministic:
        n_verify = zero_count_n(policy)
        n_refute = math.ceil(math.log1p(-policy.power) / math.log1p(-detect)) if detect < 1 else 1
        method = "exact zero-count bound"
        false_verify, false_refute = (1 - policy.confidence) / 2, 0.0
    else:
        k = len(expected.positive)
        m = bonferroni_factor(k)
        target = detect

        def verifies(size: int) -> bool:
            return verify_power(expected, policy, size) >= policy.power

        def refutes(size: int) -> bool:
            return refute_power(expected, policy, size, target, alpha=alpha) >= policy.power

        start_v = _start(expected, policy.tolerance, (1 - policy.confidence) / (2 * m), policy)
        n_verify = _smallest(*_bracket(start_v, verifies), verifies)
        start_r = _start(expected, detect - policy.tolerance, alpha / (2 * m), policy)
        n_refute = _smallest(*_bracket(start_r, refutes), refutes)
        method = "exact binomial enumeration" if k == 2 else "bounds from exact binomial marginals"
        false_verify, false_refute = (1 - policy.confidence) / 2, alpha
    n = max(n_verify, n_refute)
    return Plan(
        expected=dict(expected.shares),
        kind="deterministic" if expected.deterministic else "weighted",
        n=n,
        n_verify=n_verify,
        n_refute=n_refute,
        verify_power=verify_power(expected, policy, n),
        detect=detect,
        detect_power=refute_power(expected, policy, n, detect, alpha=alpha),
        alpha=alpha,
        false_refute_rate=false_refute,
        false_verify_rate=false_verify,
        method=method,
        policy=policy,
    )


# --- a whole run ------------------------------------------------------------------------


def cell_weights(protocols: Sequence[str], canary_share: float) -> dict[str, float]:
    """The expected share of a load test's requests in each cell (``rest/default`` …):
    the protocols split users evenly, ``canary_share`` of them send the canary header.
    (Exact when every user sends at the same rate, as the load test's users do.)"""
    chosen = [p for p in PROTOCOLS if p in protocols]
    if not chosen or len(chosen) != len(set(protocols)):
        raise UsageError(f"protocols must be some of {', '.join(PROTOCOLS)}, got {list(protocols)!r}")
    if not 0.0 <= canary_share <= 1.0:
        raise UsageError(f"the canary share is a fraction in [0, 1], got {canary_share!r}")
    share = {"default": 1.0 - canary_share, "canary": canary_share}
    return {
        f"{p}/{g}": share[g] / len(chosen) for p in chosen for g in GROUPS if share[g] > 0
    }


@dataclass(frozen=True)
class PlannedPool:
    """One pool of the run's plan: its cells, their share of requests, its table's plan."""

    name: str
    cells: tuple[str, ...]
    route: str | None
    weight: float  # share of the run's requests that land in this pool
    plan: Plan
    requests: int  # run requests that give this pool its n

    def to_dict(self) -> dict[str, Any]:
        return dict(jsonable(self))


@dataclass(frozen=True)
class RunPlan:
    """What to send: ``canary load --requests`` for a mix, and what each pool gets of it."""

    requests: int
    protocols: tuple[str, ...]
    canary_share: float
    weights: dict[str, float]  # cell -> share of requests
    pools: tuple[PlannedPool, ...]
    alpha_cell: float
    alpha_pool: float | None
    policy: SplitPolicy

    def command(self) -> str:
        protocol = "both" if set(self.protocols) == set(PROTOCOLS) else self.protocols[0]
        return f"canary load --requests {self.requests} --protocol {protocol} --canary-share {self.canary_share:g}"

    def cell_responses(self) -> dict[str, int]:
        """Attributed responses each cell can expect at the planned requests."""
        room = 1 - self.policy.max_unknown_rate - self.policy.max_error_rate
        return {cell: math.floor(self.requests * w * room) for cell, w in self.weights.items()}

    def to_dict(self) -> dict[str, Any]:
        data = dict(jsonable(self))
        data["command"] = self.command()
        data["cell_responses"] = self.cell_responses()
        return data


def plan_run(
    cells: Mapping[str, tuple[Expectation, str | None]],
    weights: Mapping[str, float],
    policy: SplitPolicy | None = None,
    *,
    protocols: Sequence[str] = PROTOCOLS,
    canary_share: float = 0.2,
    detect: float | None = None,
) -> RunPlan:
    """The run's plan: ``cells`` maps each cell to (expectation, route); ``weights`` gives each
    cell's share of requests (:func:`cell_weights`). Cells are pooled as the verifier pools
    them, each pool planned with its share of the budget, and the run is sized for the
    pool that needs the most requests."""
    policy = policy or SplitPolicy()
    judged = [CellTable(name, {}, exp, route) for name, (exp, route) in cells.items() if weights.get(name, 0) > 0]
    if not judged:
        raise UsageError("no cell of this mix has an expectation to plan for")
    pools = pool_cells(judged)
    weighted = [p for p in pools if not p[0].expected.deterministic]
    alpha_cell, alpha_pool = allocate_alpha(
        policy, sum(len(p) for p in weighted), sum(1 for p in weighted if len(p) > 1)
    )
    room = 1 - policy.max_unknown_rate - policy.max_error_rate
    planned: list[PlannedPool] = []
    for pool in pools:
        names = tuple(c.name for c in pool)
        weight = sum(weights[n] for n in names)
        table_alpha = alpha_pool if len(pool) > 1 and alpha_pool is not None else alpha_cell
        plan = plan_requests(pool[0].expected, policy, detect=detect, alpha=table_alpha)
        planned.append(
            PlannedPool(
                name=" + ".join(names),
                cells=names,
                route=pool[0].route,
                weight=weight,
                plan=plan,
                requests=math.ceil(plan.n / (weight * room) - 1e-9),
            )
        )
    return RunPlan(
        requests=max(p.requests for p in planned),
        protocols=tuple(p for p in PROTOCOLS if p in protocols),
        canary_share=canary_share,
        weights=dict(weights),
        pools=tuple(planned),
        alpha_cell=alpha_cell,
        alpha_pool=alpha_pool,
        policy=policy,
    )
