"""Fixed-sample verdict on one header group's split: verified, refuted or inconclusive.

Decision rules (``policy`` = :class:`~canary.stats.policy.SplitPolicy`; n = attributed
responses; "wrong" = responses from a subset whose expected share is 0, or that
the expectation does not name; shares and intervals are over all n)::

    gates      unknown / (all requests) > max_unknown_rate  →  refuted ("unknown_rate")
               error   / (all requests) > max_error_rate    →  refuted ("error_rate")
               (point rates: data-quality limits, not statistical tests)

    deterministic route (one subset expected at 100%)
      refuted       wrong ≥ 1  (impossible if the route were deterministic)
      verified      wrong = 0 and U ≤ tolerance, where U is the exact one-sided
                    Clopper–Pearson upper bound at ``confidence``
                    (1 − (1 − confidence)^(1/n) for zero events: the exact
                    rule of three; 0 of 300 → 0.99% at 95%)
      inconclusive  otherwise (too few requests: n < log(1−conf)/log(1−tol))

    weighted split (≥ 2 subsets with non-zero share, k of them)
      mismatch test Pearson's χ² goodness of fit (``scipy.stats.chisquare``,
                    k − 1 dof) over the k subsets; when an expected count is
                    below 5 and k = 2 the exact two-sided binomial test
                    (``scipy.stats.binomtest``) replaces it; when k ≥ 3 the
                    χ² p-value is reported but cannot refute
      intervals     simultaneous two-sided intervals at ``confidence``
                    (:mod:`canary.stats.intervals`: Clopper–Pearson or Wilson,
                    Bonferroni over k for k ≥ 3, unadjusted for k = 2)
      refuted       wrong ≥ 1, or
                    p < alpha  and  max_i |p̂_i − e_i| > tolerance
      verified      wrong = 0, U ≤ tolerance, p ≥ alpha, and every interval
                    inside [e_i − tolerance, e_i + tolerance] (clipped to [0, 1])
      inconclusive  otherwise, with the reason

Guarantees. If the mesh splits exactly as expected, P(refuted) ≤ alpha (the
refutation region is inside the test's rejection region; the gates excepted).
If some true share is outside its band, P(verified) ≤ (1 − confidence)/2 for
exact intervals (that share's interval must miss it on one side). Too few
requests therefore give "inconclusive", never "verified". A significant but
small mismatch (the split is off, but within tolerance) is "inconclusive".
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy import stats

from canary.errors import UsageError

from .expectations import ERROR, UNKNOWN, Expectation
from .intervals import bonferroni_factor, deviation_interval, share_intervals, upper_bounds
from .policy import SplitPolicy
from .verdicts import Deviation, GroupVerdict, ShareEstimate, WrongSubset

__all__ = ["classify_counts", "overall", "verify_group"]

_NAMES = np.array(["verified", "refuted", "inconclusive"])
_VERIFIED, _REFUTED, _INCONCLUSIVE = 0, 1, 2
_EPS = 1e-12  # float slack when comparing bounds with band edges


@dataclass(frozen=True)
class _Assessment:
    """Every quantity of the decision, as arrays with one row per table."""

    status: NDArray[np.int8]
    split_status: NDArray[np.int8]
    n_attr: NDArray[np.int64]
    n_pos: NDArray[np.int64]
    wrong: NDArray[np.int64]
    wrong_ub: NDArray[np.float64]
    unknown_rate: NDArray[np.float64]
    error_rate: NDArray[np.float64]
    gate_unknown: NDArray[np.bool_]
    gate_error: NDArray[np.bool_]
    chi2: NDArray[np.float64]
    p_value: NDArray[np.float64]
    exact_binomial: NDArray[np.bool_]
    reliable: NDArray[np.bool_]
    observed: NDArray[np.float64]  # (rows, subsets of the expectation)
    low: NDArray[np.float64]
    high: NDArray[np.float64]
    inside: NDArray[np.bool_]
    dev: NDArray[np.float64]
    dev_at: NDArray[np.int64]
    dev_low: NDArray[np.float64]
    dev_high: NDArray[np.float64]


def _assess(
    counts: NDArray[np.int64],
    other: NDArray[np.int64],
    unknown: NDArray[np.int64],
    error: NDArray[np.int64],
    expected: Expectation,
    policy: SplitPolicy,
) -> _Assessment:
    e_all = np.array([expected.shares[s] for s in expected.subsets])
    pos = e_all > 0
    tol = policy.tolerance
    n_attr = counts.sum(axis=1) + other
    wrong = other + counts[:, ~pos].sum(axis=1)
    total = n_attr + unknown + error
    with np.errstate(invalid="ignore", divide="ignore"):
        unknown_rate = np.where(total > 0, unknown / np.maximum(total, 1), 0.0)
        error_rate = np.where(total > 0, error / np.maximum(total, 1), 0.0)
        observed = np.where(n_attr[:, None] > 0, counts / np.maximum(n_attr, 1)[:, None], np.nan)
    gate_unknown = unknown_rate > policy.max_unknown_rate
    gate_error = error_rate > policy.max_error_rate
    wrong_ub = upper_bounds(wrong, n_attr, policy.confidence)
    k = int(pos.sum())
    low, high = share_intervals(
        counts,
        n_attr[:, None],
        policy.confidence,
        simultaneous=bonferroni_factor(k),
        method=policy.interval,
    )
    rows = counts.shape[0]
    chi2 = np.full(rows, np.nan)
    p_value = np.full(rows, np.nan)
    exact_binomial = np.zeros(rows, dtype=bool)
    reliable = np.ones(rows, dtype=bool)
    inside = np.zeros(rows, dtype=bool)
    dev = np.full(rows, np.nan)
    dev_at = np.zeros(rows, dtype=np.int64)
    dev_low = np.full(rows, np.nan)
    dev_high = np.full(rows, np.nan)
    x = counts[:, pos]
    n_pos = x.sum(axis=1)

    if k == 1:
        split = np.where(
            wrong > 0,
            _REFUTED,
            np.where((n_attr > 0) & (wrong_ub <= tol + _EPS), _VERIFIED, _INCONCLUSIVE),
        )
    else:
        e = e_all[pos]
        some = n_pos > 0
        if some.any():
            f_exp = n_pos[some, None] * e
            chi2[some], p_value[some] = stats.chisquare(x[some], f_exp, axis=1)
            reliable[some] = f_exp.min(axis=1) >= 5
            if k == 2:
                for row in np.flatnonzero(some & ~reliable):
                    test = stats.binomtest(int(x[row, 0]), int(n_pos[row]), float(e[0]))
                    p_value[row] = test.pvalue
                    exact_binomial[row] = True
        band_low = np.maximum(e - tol, 0.0)
        band_high = np.minimum(e + tol, 1.0)
        lo, hi = low[:, pos], high[:, pos]
        inside = ((lo >= band_low - _EPS) & (hi <= band_high + _EPS)).all(axis=1) & (n_attr > 0)
        gap = np.round(np.abs(observed[:, pos] - e), 12)  # ties go to the first (stable) subset
        dev = np.where(
            n_attr > 0, np.nanmax(np.where(n_attr[:, None] > 0, gap, 0.0), axis=1), np.nan
        )
        dev_at = np.flatnonzero(pos)[np.argmax(np.where(n_attr[:, None] > 0, gap, 0.0), axis=1)]
        dev_low, dev_high = deviation_interval(lo, hi, e)
        testable = some & (reliable | exact_binomial)
        significant = p_value < policy.alpha  # False where NaN
        refuted = (wrong > 0) | (testable & significant & (dev > tol))
        verified = (
            (wrong == 0) & some & (p_value >= policy.alpha) & inside & (wrong_ub <= tol + _EPS)
        )
        split = np.where(refuted, _REFUTED, np.where(verified, _VERIFIED, _INCONCLUSIVE))
    status = np.where(gate_unknown | gate_error, _REFUTED, split)
    return _Assessment(
        status=status.astype(np.int8),
        split_status=split.astype(np.int8),
        n_attr=n_attr,
        n_pos=n_pos,
        wrong=wrong,
        wrong_ub=wrong_ub,
        unknown_rate=unknown_rate,
        error_rate=error_rate,
        gate_unknown=gate_unknown,
        gate_error=gate_error,
        chi2=chi2,
        p_value=p_value,
        exact_binomial=exact_binomial,
        reliable=reliable,
        observed=observed,
        low=low,
        high=high,
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
) -> NDArray[np.str_]:
    """Vectorised status of :func:`verify_group` for many tables at once.

    ``counts`` has shape ``(rows, len(expected.subsets))`` in the order of
    ``expected.subsets``; ``other`` (responses from subsets the expectation
    does not name), ``unknown`` and ``error`` broadcast to ``(rows,)``. Returns
    the status names. Same decision rules as :func:`verify_group`, for
    simulation and exact power computations.
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
    result = _assess(table, extra[0], extra[1], extra[2], expected, policy)
    return np.asarray(_NAMES[result.status])


def _pts(fraction: float) -> str:
    """A fraction as percent (points), to three significant digits."""
    return f"{100 * fraction:.3g}"


def _p(value: float) -> str:
    return f"{value:.3g}"


def _deterministic_reason(
    a: _Assessment, expected: Expectation, policy: SplitPolicy, wrong_seen: tuple[str, ...]
) -> str:
    n, wrong, ub = int(a.n_attr[0]), int(a.wrong[0]), float(a.wrong_ub[0])
    conf = f"{100 * policy.confidence:g}%"
    target = expected.positive[0]
    if wrong > 0:
        return (
            f"{wrong} of {n} attributed responses came from {', '.join(wrong_seen)} "
            f"instead of {target}: the route is not deterministic"
        )
    if n == 0:
        return "no attributed responses"
    bound = f"wrong-subset share below {_pts(ub)}% at {conf}"
    if a.split_status[0] == _VERIFIED:
        return (
            f"all {n} attributed responses came from {target}: {bound} "
            f"(tolerance {_pts(policy.tolerance)}%)"
        )
    need = int(np.ceil(np.log1p(-policy.confidence) / np.log1p(-policy.tolerance)))
    return (
        f"all {n} attributed responses came from {target}, but that only bounds the "
        f"{bound}, above the {_pts(policy.tolerance)}% tolerance; "
        f"need at least {need} attributed responses"
    )


def _weighted_reason(
    a: _Assessment, expected: Expectation, policy: SplitPolicy, wrong_seen: tuple[str, ...]
) -> str:
    n, wrong = int(a.n_attr[0]), int(a.wrong[0])
    if wrong > 0:
        return (
            f"{wrong} of {n} attributed responses came from {', '.join(wrong_seen)}, "
            f"which should get none"
        )
    if n == 0:
        return "no attributed responses"
    tol = f"±{_pts(policy.tolerance)} points"
    conf = f"{100 * policy.confidence:g}%"
    name = "exact binomial test" if a.exact_binomial[0] else f"χ²={a.chi2[0]:.3g}"
    test = f"{name}, p={_p(float(a.p_value[0]))}"
    alpha = f"α={policy.alpha:g}"
    dev = (
        f"{expected.subsets[int(a.dev_at[0])]} off by {_pts(float(a.dev[0]))} points "
        f"({conf} interval of the largest deviation {_pts(float(a.dev_low[0]))}–"
        f"{_pts(float(a.dev_high[0]))})"
    )
    significant = bool(a.p_value[0] < policy.alpha)
    if a.split_status[0] == _VERIFIED:
        return (
            f"every share within {tol} of the expectation at {conf} (simultaneous) "
            f"and no significant mismatch ({test} ≥ {alpha}); n={n}"
        )
    if a.split_status[0] == _REFUTED:
        return f"split differs from expected ({test} < {alpha}) and {dev}, beyond {tol}"
    if significant and not (a.reliable[0] or a.exact_binomial[0]):
        return (
            f"an expected count is below 5, so the χ² approximation ({test}) cannot "
            f"refute; collect more requests"
        )
    if significant:
        return (
            f"significant mismatch ({test} < {alpha}) but {dev}, within {tol}: "
            f"the split is off, though not beyond the tolerance"
        )
    if a.dev[0] > policy.tolerance:
        return (
            f"{dev}, but the mismatch is not significant ({test} ≥ {alpha}): "
            f"too few requests, collect more"
        )
    widest = float(np.max(np.maximum(a.high[0] - a.observed[0], a.observed[0] - a.low[0])))
    return (
        f"no significant mismatch ({test}), but the {conf} intervals (up to "
        f"±{_pts(widest)} points) do not fit inside {tol}: too few requests to verify"
    )


def verify_group(
    counts: Mapping[str, int],
    expected: Expectation,
    policy: SplitPolicy | None = None,
    *,
    group: str = "",
) -> GroupVerdict:
    """Judge one header group's responses against its expected split.

    ``counts`` maps subset → responses; the keys ``"unknown"`` and ``"error"``
    are counted apart (never dropped); subsets the expectation does not name
    count as wrong-subset responses. See the module docstring for the rules.
    """
    policy = policy or SplitPolicy()
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
    )
    wrong_seen = tuple(s for s in names if expected.shares[s] == 0 and clean.get(s, 0) > 0)
    wrong_seen += tuple(k for k, v in others.items() if v > 0)
    failures: list[str] = []
    if a.wrong[0] > 0:
        failures.append("wrong_subset")
    elif a.split_status[0] == _REFUTED:
        failures.append("split")
    gates: list[str] = []
    if a.gate_unknown[0]:
        failures.append("unknown_rate")
        gates.append(
            f"unattributable responses are {_pts(float(a.unknown_rate[0]))}% of "
            f"requests, above the {_pts(policy.max_unknown_rate)}% allowed"
        )
    if a.gate_error[0]:
        failures.append("error_rate")
        gates.append(
            f"failed requests are {_pts(float(a.error_rate[0]))}% of requests, "
            f"above the {_pts(policy.max_error_rate)}% allowed"
        )
    deterministic = expected.deterministic
    split_reason = (_deterministic_reason if deterministic else _weighted_reason)(
        a, expected, policy, wrong_seen
    )
    reason = "; ".join([*gates, split_reason])
    e_all = np.array([expected.shares[s] for s in names])
    band_low = np.where(e_all > 0, np.maximum(e_all - policy.tolerance, 0.0), 0.0)
    band_high = np.where(e_all > 0, np.minimum(e_all + policy.tolerance, 1.0), policy.tolerance)
    inside = (a.low[0] >= band_low - _EPS) & (a.high[0] <= band_high + _EPS)
    shares = tuple(
        ShareEstimate(
            subset=s,
            count=int(row[0, i]),
            observed=float(a.observed[0, i]),
            ci_low=float(a.low[0, i]),
            ci_high=float(a.high[0, i]),
            expected=float(e_all[i]),
            band_low=float(band_low[i]),
            band_high=float(band_high[i]),
            inside_band=bool(inside[i]) and a.n_attr[0] > 0,
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
            confidence=policy.confidence,
        )
    n_total = int(a.n_attr[0]) + unknown + error
    has_test = not deterministic and a.n_pos[0] > 0
    return GroupVerdict(
        group=group,
        status=_NAMES[a.status[0]].item(),
        reason=reason,
        failures=tuple(failures),
        kind="deterministic" if deterministic else "weighted",
        test="exact-zero-count"
        if deterministic
        else ("exact-binomial" if a.exact_binomial[0] else "pearson-chi2"),
        n=int(a.n_attr[0]),
        n_total=n_total,
        counts=clean,
        expected=dict(expected.shares),
        shares=shares,
        chi2=float(a.chi2[0]) if has_test else None,
        p_value=float(a.p_value[0]) if has_test else None,
        dof=len(expected.positive) - 1 if not deterministic else None,
        test_reliable=bool(a.reliable[0] or a.exact_binomial[0]),
        deviation=deviation,
        wrong=WrongSubset(
            count=int(a.wrong[0]),
            subsets=wrong_seen,
            upper_bound=float(a.wrong_ub[0]),
            confidence=policy.confidence,
        ),
        unknown=unknown,
        unknown_rate=float(a.unknown_rate[0]),
        error=error,
        error_rate=float(a.error_rate[0]),
        policy=policy,
    )


_RANK = {"refuted": 3, "continue": 2, "inconclusive": 1, "verified": 0}


def overall(verdicts: Iterable[GroupVerdict | str | Any]) -> str:
    """The run's status from its groups' verdicts (objects with ``.status``, or names).

    refuted if any group is refuted, else inconclusive if any is inconclusive,
    else verified. No groups at all is inconclusive (nothing was shown).
    Sequential decisions rank ``"continue"`` between refuted and inconclusive.
    """
    statuses = [v if isinstance(v, str) else str(v.status) for v in verdicts]
    unknown = [s for s in statuses if s not in _RANK]
    if unknown:
        raise ValueError(f"unknown verdict status {unknown[0]!r}")
    return max(statuses, key=_RANK.__getitem__, default="inconclusive")
