"""Fixed-sample verdict on one table of responses: verified, refuted or inconclusive.

A table is one protocol x header group, or a pool of them (:mod:`canary.stats.pooling`).
Decision rules (``policy`` = :class:`~canary.stats.policy.SplitPolicy`; n = attributed
responses; "wrong" = responses from a subset whose expected share is 0, or that
the expectation does not name; shares are over all n; k = subsets with a
non-zero expected share; m = 1 for k ≤ 2 and k otherwise, the Bonferroni
factor of :func:`~canary.stats.intervals.bonferroni_factor`)::

    gates      unknown / (all requests) > max_unknown_rate  →  refuted ("unknown_rate")
               error   / (all requests) > max_error_rate    →  refuted ("error_rate")
               (point rates: data-quality limits, not statistical tests)

    every route
      refuted       wrong ≥ 1: a subset that should get nothing answered (proof,
                    not an estimate: impossible if the expectation held)

    deterministic route (one subset expected at 100%)
      verified      wrong = 0 and U ≤ tolerance, U the exact one-sided
                    Clopper–Pearson upper bound on the wrong-subset share at
                    1 − (1 − confidence)/2 (the upper end of the two-sided
                    interval): 1 − ((1 − confidence)/2)^(1/n) for zero events,
                    so 122 requests at 95% and ±3 points
      inconclusive  otherwise (too few requests)

    weighted split (k ≥ 2)
      refuted       some share's two-sided Clopper–Pearson interval at
                    1 − alpha/m lies wholly outside its band
                    [e − tolerance, e + tolerance]: the interval of the largest
                    deviation lies wholly beyond the tolerance
      verified      wrong = 0, U ≤ tolerance, and every share's two-sided
                    Clopper–Pearson interval at 1 − (1 − confidence)/m lies
                    inside its band
      inconclusive  otherwise, with the reason and the attributed responses
                    that would likely decide it

Guarantees, at every n, for every true split:

* a true split inside the tolerance (every share within its band, no response
  from a zero-share subset) is refuted with probability at most ``alpha``:
  refuting needs an interval that misses its true share, and the m intervals
  miss together with probability at most alpha (Clopper–Pearson coverage is at
  least nominal for every p and n; Bonferroni over m);
* a true split with some share outside its band is verified with probability
  at most (1 − confidence)/2: verifying needs that share's interval to miss it
  on the one side facing the band (probability ≤ (1 − confidence)/(2m)), and
  a wrong-subset share above the tolerance is verified only when none of its
  responses shows up, which the bound U keeps below (1 − confidence)/2.

Exact enumeration over n = 5…2000 (``tests/canary/test_stats_guarantees.py``)
checks both. A significant but small mismatch (the exact binomial test for two
subsets, Pearson's χ² for more) is reported as a sample-ratio-mismatch finding
(:class:`~canary.stats.verdicts.SampleRatio`) and never changes the status.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from canary.errors import UsageError

from .deciding import decide_n, zero_count_n
from .expectations import ERROR, UNKNOWN, Expectation
from .intervals import bonferroni_factor, deviation_interval, share_intervals, upper_bounds
from .policy import SplitPolicy
from .verdicts import Deviation, GroupVerdict, SampleRatio, ShareEstimate, WrongSubset

__all__ = ["bands", "classify_counts", "overall", "verify_group"]

_NAMES = np.array(["verified", "refuted", "inconclusive"])
_VERIFIED, _REFUTED, _INCONCLUSIVE = 0, 1, 2
_EPS = 1e-12  # float slack when comparing bounds with band edges


@dataclass(frozen=True)
class _Assessment:
    """Every quantity of the decision, as arrays with one row per table."""

    status: NDArray[np.int8]
    split_status: NDArray[np.int8]
    n_attr: NDArray[np.int64]
    wrong: NDArray[np.int64]
    wrong_ub: NDArray[np.float64]
    unknown_rate: NDArray[np.float64]
    error_rate: NDArray[np.float64]
    gate_unknown: NDArray[np.bool_]
    gate_error: NDArray[np.bool_]
    observed: NDArray[np.float64]  # (rows, subsets of the expectation)
    low: NDArray[np.float64]  # verification intervals, at confidence
    high: NDArray[np.float64]
    band_low: NDArray[np.float64]  # (subsets,)
    band_high: NDArray[np.float64]
    inside: NDArray[np.bool_]  # (rows, subsets)
    dev: NDArray[np.float64]
    dev_at: NDArray[np.int64]
    dev_low: NDArray[np.float64]  # refutation interval of the largest deviation, at 1 − alpha
    dev_high: NDArray[np.float64]


def bands(expected: Expectation, tolerance: float) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Each subset's band ``[e − tolerance, e + tolerance]`` clipped to [0, 1] (``[0, tolerance]``
    for a zero share), in the order of ``expected.subsets``."""
    e = np.array([expected.shares[s] for s in expected.subsets])
    low = np.where(e > 0, np.maximum(e - tolerance, 0.0), 0.0)
    high = np.minimum(e + tolerance, 1.0)
    return low, high


def _assess(
    counts: NDArray[np.int64],
    other: NDArray[np.int64],
    unknown: NDArray[np.int64],
    error: NDArray[np.int64],
    expected: Expectation,
    policy: SplitPolicy,
    alpha: float,
    gates: bool = True,
) -> _Assessment:
    e_all = np.array([expected.shares[s] for s in expected.subsets])
    pos = e_all > 0
    tol = policy.tolerance
    n_attr = counts.sum(axis=1) + other
    wrong = other + counts[:, ~pos].sum(axis=1)
    total = n_attr + unknown + error
    some = n_attr > 0
    with np.errstate(invalid="ignore", divide="ignore"):
        unknown_rate = np.where(total > 0, unknown / np.maximum(total, 1), 0.0)
        error_rate = np.where(total > 0, error / np.maximum(total, 1), 0.0)
        observed = np.where(some[:, None], counts / np.maximum(n_attr, 1)[:, None], np.nan)
    gate_unknown = (unknown_rate > policy.max_unknown_rate) & gates
    gate_error = (error_rate > policy.max_error_rate) & gates
    wrong_ub = upper_bounds(wrong, n_attr, policy.wrong_bound_level)
    k = int(pos.sum())
    m = bonferroni_factor(k)
    low, high = share_intervals(counts, n_attr[:, None], policy.confidence, simultaneous=m)
    band_low, band_high = bands(expected, tol)
    inside = (low >= band_low - _EPS) & (high <= band_high + _EPS) & some[:, None]
    rows = counts.shape[0]
    dev = np.full(rows, np.nan)
    dev_at = np.zeros(rows, dtype=np.int64)
    dev_low = np.full(rows, np.nan)
    dev_high = np.full(rows, np.nan)
    wrong_ok = (wrong == 0) & some & (wrong_ub <= tol + _EPS)
    if k == 1:
        verified = wrong_ok
        refuted = wrong > 0
    else:
        e = e_all[pos]
        rlow, rhigh = share_intervals(counts[:, pos], n_attr[:, None], 1.0 - alpha, simultaneous=m)
        gap = np.round(np.abs(observed[:, pos] - e), 12)  # ties go to the first (stable) subset
        gap = np.where(some[:, None], gap, 0.0)
        dev = np.where(some, gap.max(axis=1), np.nan)
        dev_at = np.flatnonzero(pos)[np.argmax(gap, axis=1)]
        dev_low, dev_high = deviation_interval(rlow, rhigh, e)
        dev_low = np.where(some, dev_low, np.nan)
        dev_high = np.where(some, dev_high, np.nan)
        beyond = some & (np.nan_to_num(dev_low) > tol + _EPS)
        refuted = (wrong > 0) | beyond
        verified = wrong_ok & inside[:, pos].all(axis=1)
    split = np.where(refuted, _REFUTED, np.where(verified, _VERIFIED, _INCONCLUSIVE))
    status = np.where(gate_unknown | gate_error, _REFUTED, split)
    return _Assessment(
        status=status.astype(np.int8),
        split_status=split.astype(np.int8),
        n_attr=n_attr,
        wrong=wrong,
        wrong_ub=wrong_ub,
        unknown_rate=unknown_rate,
        error_rate=error_rate,
        gate_unknown=gate_unknown,
        gate_error=gate_error,
        observed=observed,
        low=low,
        high=high,
        band_low=band_low,
        band_high=band_high,
        inside=inside,
        dev=dev,
        dev_at=dev_at,
        dev_low=dev_low,
        dev_high=dev_high,
    )


def _int_array(values: ArrayLike, name: str) -> NDArray[np.int64]:
    array = np.asarray(values)
    if array.size and (
        not np.issubdtype(array.dtype, np.number)
        or not np.all(np.isfinite(array))
        or np.any(array < 0)
        or np.any(array != np.round(array))
    ):
        raise UsageError(f"{name} must be non-negative whole numbers of responses")
    return array.astype(np.int64)


def classify_counts(
    counts: ArrayLike,
    expected: Expectation,
    policy: SplitPolicy,
    *,
    other: ArrayLike = 0,
    unknown: ArrayLike = 0,
    error: ArrayLike = 0,
    alpha: float | None = None,
) -> NDArray[np.str_]:
    """Vectorised status of :func:`verify_group` for many tables at once.

    ``counts`` has shape ``(rows, len(expected.subsets))`` in the order of
    ``expected.subsets``; ``other`` (responses from subsets the expectation
    does not name), ``unknown`` and ``error`` broadcast to ``(rows,)``.
    ``alpha`` (default ``policy.alpha``) is this table's share of the
    false-refutation budget. Returns the status names. Same decision rules as
    :func:`verify_group`, for simulation and exact enumeration.
    """
    table = np.atleast_2d(_int_array(counts, "counts"))
    if table.shape[1] != len(expected.subsets):
        raise UsageError(
            f"counts have {table.shape[1]} columns; expected one per subset {expected.subsets}"
        )
    rows = table.shape[0]
    extra = [
        np.broadcast_to(_int_array(v, name), (rows,))
        for v, name in ((other, "other"), (unknown, "unknown"), (error, "error"))
    ]
    result = _assess(table, extra[0], extra[1], extra[2], expected, policy, policy.table_alpha(alpha))
    return np.asarray(_NAMES[result.status])


def _pts(fraction: float) -> str:
    """A fraction as percent (points), to three significant digits."""
    return f"{100 * fraction:.3g}"


def _deterministic_reason(
    a: _Assessment, expected: Expectation, policy: SplitPolicy, wrong_seen: tuple[str, ...]
) -> tuple[str, int | None]:
    n, wrong, ub = int(a.n_attr[0]), int(a.wrong[0]), float(a.wrong_ub[0])
    conf = f"{100 * policy.wrong_bound_level:g}%"
    target = expected.positive[0]
    need = zero_count_n(policy)
    if wrong > 0:
        return (
            f"{wrong} of {n} attributed responses came from {', '.join(wrong_seen)} "
            f"instead of {target}: the route is not deterministic"
        ), None
    if n == 0:
        return "no attributed responses", need
    bound = f"wrong-subset share below {_pts(ub)}% at {conf}"
    if a.split_status[0] == _VERIFIED:
        return (
            f"all {n} attributed responses came from {target}: {bound} "
            f"(tolerance {_pts(policy.tolerance)}%)"
        ), None
    return (
        f"all {n} attributed responses came from {target}, but that only bounds the "
        f"{bound}, above the {_pts(policy.tolerance)}% tolerance; "
        f"{need} attributed responses would decide it"
    ), need


def _weighted_reason(
    a: _Assessment,
    expected: Expectation,
    policy: SplitPolicy,
    alpha: float,
    wrong_seen: tuple[str, ...],
    explain: bool,
) -> tuple[str, int | None]:
    n, wrong = int(a.n_attr[0]), int(a.wrong[0])
    k = len(expected.positive)
    if wrong > 0:
        return (
            f"{wrong} of {n} attributed responses came from {', '.join(wrong_seen)}, "
            f"which should get none"
        ), None
    if n == 0:
        return "no attributed responses", None
    tol = f"±{_pts(policy.tolerance)} points"
    conf = f"{100 * policy.confidence:g}%"
    at = int(a.dev_at[0])
    worst = expected.subsets[at]
    level = f"{100 * (1 - alpha):.4g}%"
    dev = (
        f"{worst} off by {_pts(float(a.dev[0]))} points ({level} interval of the largest "
        f"deviation {_pts(float(a.dev_low[0]))}–{_pts(float(a.dev_high[0]))})"
    )
    if a.split_status[0] == _VERIFIED:
        return f"every share's {conf} interval lies inside its {tol} band; n={n}", None
    if a.split_status[0] == _REFUTED:
        return f"{dev}, wholly beyond {tol}", None
    pos = [i for i, s in enumerate(expected.subsets) if expected.shares[s] > 0]
    outside = [expected.subsets[i] for i in pos if not a.inside[0, i]][: 1 if k == 2 else None]
    need = (
        decide_n(float(a.observed[0, at]), expected.shares[worst], policy, alpha=alpha, subsets=k, seen=n)
        if explain
        else None
    )
    if not explain:
        more = "too few responses to decide it alone"
    elif need:
        more = f"about {need:,} attributed responses would likely decide it"
    else:
        more = "the deviation sits on the tolerance, so no number of requests is likely to decide it"
    if not a.wrong_ub[0] <= policy.tolerance + _EPS and not outside:
        return (
            f"the shares fit their bands, but {n} responses bound an unexpected subset's share "
            f"only below {_pts(float(a.wrong_ub[0]))}%; {more}"
        ), need
    return (
        f"the {conf} interval of {', '.join(outside)} reaches outside its {tol} band and {dev} "
        f"is not wholly beyond it; {more}"
    ), need


def _sample_ratio(
    row: NDArray[np.int64], expected: Expectation, alpha: float
) -> SampleRatio | None:
    """The classic sample-ratio-mismatch test over the positive subsets (a finding only)."""
    pos = [i for i, s in enumerate(expected.subsets) if expected.shares[s] > 0]
    if len(pos) < 2:
        return None
    x = row[pos]
    n = int(x.sum())
    if n == 0:
        return None
    e = np.array([expected.shares[expected.subsets[i]] for i in pos])
    if len(pos) == 2:
        p = float(stats.binomtest(int(x[0]), n, float(e[0])).pvalue)
        statistic, test = float(x[0]), "exact binomial"
    else:
        statistic, p = (float(v) for v in stats.chisquare(x, n * e))
        test = "Pearson χ² (approximate)"
    return SampleRatio(test=test, statistic=statistic, p_value=p, alpha=alpha, mismatch=p < alpha)


def verify_group(
    counts: Mapping[str, int],
    expected: Expectation,
    policy: SplitPolicy | None = None,
    *,
    group: str = "",
    alpha: float | None = None,
    gates: bool = True,
    explain: bool = True,
) -> GroupVerdict:
    """Judge one table of responses against its expected split.

    ``counts`` maps subset → responses; the keys ``"unknown"`` and ``"error"``
    are counted apart (never dropped); subsets the expectation does not name
    count as wrong-subset responses. ``alpha`` (default ``policy.alpha``) is
    this table's share of the run's false-refutation budget. ``gates=False``
    leaves the unknown and error rates to the pool the table belongs to. See
    the module docstring for the rules.
    """
    policy = policy or SplitPolicy()
    a_table = policy.table_alpha(alpha)
    clean: dict[str, int] = {}
    for key, value in counts.items():
        clean[str(key)] = int(_int_array(np.asarray(value), f"count of {key!r}"))
    names = expected.subsets
    others = {k: v for k, v in clean.items() if k not in names and k not in (UNKNOWN, ERROR)}
    row = np.array([[clean.get(s, 0) for s in names]], dtype=np.int64)
    unknown, error = clean.get(UNKNOWN, 0), clean.get(ERROR, 0)
    a = _assess(
        row,
        np.array([sum(others.values())]),
        np.array([unknown]),
        np.array([error]),
        expected,
        policy,
        a_table,
        gates,
    )
    wrong_seen = tuple(s for s in names if expected.shares[s] == 0 and clean.get(s, 0) > 0)
    wrong_seen += tuple(k for k, v in others.items() if v > 0)
    failures: list[str] = []
    if a.wrong[0] > 0:
        failures.append("wrong_subset")
    elif a.split_status[0] == _REFUTED:
        failures.append("split")
    gate_reasons: list[str] = []
    if a.gate_unknown[0]:
        failures.append("unknown_rate")
        gate_reasons.append(
            f"unattributable responses are {_pts(float(a.unknown_rate[0]))}% of "
            f"requests, above the {_pts(policy.max_unknown_rate)}% allowed"
        )
    if a.gate_error[0]:
        failures.append("error_rate")
        gate_reasons.append(
            f"failed requests are {_pts(float(a.error_rate[0]))}% of requests, "
            f"above the {_pts(policy.max_error_rate)}% allowed"
        )
    deterministic = expected.deterministic
    if deterministic:
        split_reason, need = _deterministic_reason(a, expected, policy, wrong_seen)
    else:
        split_reason, need = _weighted_reason(a, expected, policy, a_table, wrong_seen, explain)
    reason = "; ".join([*gate_reasons, split_reason])
    e_all = np.array([expected.shares[s] for s in names])
    shares = tuple(
        ShareEstimate(
            subset=s,
            count=int(row[0, i]),
            observed=float(a.observed[0, i]),
            ci_low=float(a.low[0, i]),
            ci_high=float(a.high[0, i]),
            expected=float(e_all[i]),
            band_low=float(a.band_low[i]),
            band_high=float(a.band_high[i]),
            inside_band=bool(a.inside[0, i]),
        )
        for i, s in enumerate(names)
    )
    deviation = None
    if not deterministic and a.n_attr[0] > 0:
        at = int(a.dev_at[0])
        deviation = Deviation(
            subset=names[at],
            signed=float(a.observed[0, at] - e_all[at]),
            size=float(a.dev[0]),
            ci_low=float(a.dev_low[0]),
            ci_high=float(a.dev_high[0]),
            confidence=1.0 - a_table,
        )
    status = _NAMES[a.status[0]].item()
    return GroupVerdict(
        group=group,
        status=status,
        reason=reason,
        failures=tuple(failures),
        kind="deterministic" if deterministic else "weighted",
        test="exact-zero-count" if deterministic else "exact-intervals",
        n=int(a.n_attr[0]),
        n_total=int(a.n_attr[0]) + unknown + error,
        counts=clean,
        expected=dict(expected.shares),
        shares=shares,
        deviation=deviation,
        sample_ratio=None if deterministic else _sample_ratio(row[0], expected, a_table),
        wrong=WrongSubset(
            count=int(a.wrong[0]),
            subsets=wrong_seen,
            upper_bound=float(a.wrong_ub[0]),
            confidence=policy.wrong_bound_level,
        ),
        unknown=unknown,
        unknown_rate=float(a.unknown_rate[0]),
        error=error,
        error_rate=float(a.error_rate[0]),
        alpha=a_table,
        decide_n=need if status == "inconclusive" else None,
        policy=policy,
    )


_RANK = {"refuted": 3, "continue": 2, "inconclusive": 1, "verified": 0}


def overall(verdicts: Iterable[GroupVerdict | str | Any]) -> str:
    """The run's status from its tables' verdicts (objects with ``.status``, or names).

    refuted if any is refuted, else inconclusive if any is inconclusive,
    else verified. No verdict at all is inconclusive (nothing was shown).
    Sequential decisions rank ``"continue"`` between refuted and inconclusive.
    """
    statuses = [v if isinstance(v, str) else str(v.status) for v in verdicts]
    unknown = [s for s in statuses if s not in _RANK]
    if unknown:
        raise ValueError(f"unknown verdict status {unknown[0]!r}")
    return max(statuses, key=_RANK.__getitem__, default="inconclusive")
