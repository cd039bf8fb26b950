"""Anytime-valid split verification, for monitoring a load test as it runs.

A fixed-sample verdict is only valid at the n fixed in advance: re-checking
it after every batch and stopping at the first "refuted" inflates the false
refutation rate far above alpha. :class:`SequentialSplitTest` may be checked
after every batch, as often as wanted, and stopped at the first decision; its
guarantees are the fixed-sample verdict's (:mod:`canary.stats.split`), and
hold at whatever data-dependent time it is stopped.

**One-sided mixture claims** (:mod:`canary.stats.sequences`). "Share i is
above the edge p0" is claimed when the beta-binomial mixture over shares
above p0, M⁺_t(p0), reaches 1/δ: for every true share ≤ p0 that process is a
non-negative supermartingale starting at 1, so by Ville's inequality the
claim is ever made with probability at most δ, whenever one stops. "Below"
is the mirror image. The prior only decides how fast a true claim is made:

* verification priors: Beta with mean e_i and standard deviation
  ``verify_prior_sd`` (default tolerance/4), tight where the split should be;
* refutation priors: Beta with mean e_i ± (tolerance + ``refute_margin``)
  and standard deviation ``refute_margin`` (default 2 points, the deviation
  the fixed plan is sized to refute).

**Decision at each look** (k shares expected above 0, m = 1 for k ≤ 2 and k
otherwise; wrong = responses from subsets expected to get none)::

    refuted   wrong ≥ 1 (proof);
              or some share shown above e_i + tol, or below e_i − tol, each
                 at level alpha/(2m) (``alpha``: this test's share of the
                 run's budget, default policy.alpha);
              or an unknown/error rate's sequence (prior Beta(1, 1/max), level
                 alpha) lies wholly above its maximum (any error when the maximum is 0)
    verified  wrong = 0 and its exact zero-count bound 1 − ((1 − conf)/2)^(1/t)
              ≤ tol; every share shown above e_i − tol and below e_i + tol,
              each at level (1 − confidence)/(2m); observed unknown and error
              rates within their maxima
    inconclusive  the request cap was reached first;   continue  otherwise

**Guarantees**, under any stopping rule (the fixed-sample verdict's):
if every true share lies inside its band, "refuted" on the split happens
with probability at most alpha (it needs a claim about some share that is
false; 2m claims at alpha/(2m)); if some true share lies outside its band,
"verified" happens with probability at most (1 − confidence)/(2m) ≤
(1 − confidence)/2 (it needs the false claim on that share's side), and a
wrong-subset share above the tolerance goes unseen through the first
zero-count n responses with probability below (1 − tol)^n ≤ (1 − conf)/2.
Each rate gate falsely fails with probability ≤ alpha. These assume each
attributed response's subset is drawn independently with fixed shares
(Envoy's weighted choice is) and that unknowns and errors do not depend on
the subset. The Dirichlet-multinomial Bayes factor of Lindon & Malek (2022)
against "shares = e" is reported beside (``log_bayes_factor``): a
sample-ratio-mismatch finding, never a decision.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from canary.errors import UsageError

from .expectations import ERROR, UNKNOWN, Expectation
from .intervals import bonferroni_factor, upper_bounds
from .policy import SplitPolicy
from .sequences import (
    clears_above,
    clears_below,
    excludes_below,
    log_bayes_factor,
    one_sided_bounds,
)
from .split import bands
from .verdicts import SequentialDecision, SequentialShare

__all__ = ["SequentialSplitTest"]

_NAMES = np.array(["verified", "refuted", "continue", "inconclusive"])
_VERIFIED, _REFUTED, _CONTINUE, _INCONCLUSIVE = 0, 1, 2, 3
_EPS = 1e-12


@dataclass(frozen=True)
class _Looks:
    """Every quantity of the decision, as arrays over any leading shape."""

    status: NDArray[np.int8]
    log_bf: NDArray[np.float64]
    max_log_bf: NDArray[np.float64]
    n_attr: NDArray[np.int64]
    n_total: NDArray[np.int64]
    wrong: NDArray[np.int64]
    wrong_ub: NDArray[np.float64]
    dev: NDArray[np.float64]
    inside: NDArray[np.bool_]
    beyond: NDArray[np.bool_]
    unknown_fail: NDArray[np.bool_]
    error_fail: NDArray[np.bool_]
    rates_ok: NDArray[np.bool_]


def _beta(mean: float, sd: float) -> tuple[float, float]:
    """Beta(a, b) with this mean and standard deviation (sd capped so that a, b > 0)."""
    mean = min(max(mean, 1e-6), 1 - 1e-6)
    sd = min(sd, 0.99 * math.sqrt(mean * (1 - mean)))
    k = mean * (1 - mean) / sd**2 - 1
    return mean * k, (1 - mean) * k


class SequentialSplitTest:
    """Anytime-valid verification of one group's split (see the module docstring).

    Feed it counts as they arrive — :meth:`update` with the new responses, or
    :meth:`decide` with running totals — and stop at the first status other
    than ``"continue"``. ``max_requests`` (all requests, unknown and error
    included) turns a test still undecided at that size into ``"inconclusive"``.
    """

    def __init__(
        self,
        expected: Expectation,
        policy: SplitPolicy | None = None,
        *,
        max_requests: int | None = None,
        alpha: float | None = None,
        prior_concentration: float | None = None,
        verify_prior_sd: float | None = None,
        refute_margin: float = 0.02,
    ) -> None:
        self.expected = expected
        self.policy = pol = policy or SplitPolicy()
        if max_requests is not None and (int(max_requests) != max_requests or max_requests < 1):
            raise UsageError(f"max_requests must be a positive whole number, got {max_requests}")
        self.alpha = pol.table_alpha(alpha)
        self.max_requests = max_requests
        self.prior_concentration = float(prior_concentration or 1 / (16 * pol.tolerance**2))
        self.verify_prior_sd = float(verify_prior_sd or pol.tolerance / 4)
        self.refute_margin = float(refute_margin)
        if not self.prior_concentration > 0 or not 0 < self.verify_prior_sd < 0.5 or not 0 < self.refute_margin < 0.5:
            raise UsageError("prior_concentration must be > 0, verify_prior_sd and refute_margin in (0, 0.5)")
        self._e = np.array([expected.shares[s] for s in expected.subsets])
        self._pos = self._e > 0
        self._band_low, self._band_high = bands(expected, pol.tolerance)
        m = bonferroni_factor(int(self._pos.sum()))
        self._verify_threshold = math.log(2 * m / (1 - pol.confidence))
        self._refute_threshold = math.log(2 * m / self.alpha)
        self._bf_threshold = math.log(1 / self.alpha)
        self._counts: dict[str, int] = {}
        self._looks = 0
        self._max_log_bf = -math.inf
        self._decision: SequentialDecision | None = None

    @property
    def subsets(self) -> tuple[str, ...]:
        """Column order of :meth:`statuses`."""
        return self.expected.subsets

    @property
    def decision(self) -> SequentialDecision | None:
        """The latest decision (None before the first look)."""
        return self._decision

    def _priors(self, share: float) -> dict[str, tuple[float, float]]:
        """The Beta priors of one share's four claims."""
        tol, margin = self.policy.tolerance, self.refute_margin
        tight = _beta(share, self.verify_prior_sd)
        return {
            "inside_low": tight, "inside_high": tight,
            "beyond_high": _beta(min(share + tol + margin, 1 - 1e-6), margin),
            "beyond_low": _beta(max(share - tol - margin, 1e-6), margin),
        }

    # -- the vectorised core -------------------------------------------------

    def _log_bf(self, x: NDArray[np.int64]) -> NDArray[np.float64]:
        return log_bayes_factor(x, self._e[self._pos], self.prior_concentration)

    def _evaluate(
        self,
        counts: NDArray[np.int64],
        other: NDArray[np.int64],
        unknown: NDArray[np.int64],
        error: NDArray[np.int64],
        running: NDArray[np.float64],
        log_bf: NDArray[np.float64] | None = None,
    ) -> _Looks:
        """``running`` is the largest ln BF of earlier looks (−inf for none);
        ``log_bf`` this look's, when already computed."""
        pol, pos = self.policy, self._pos
        tol = pol.tolerance
        n_attr = counts.sum(axis=-1) + other
        wrong = other + counts[..., ~pos].sum(axis=-1)
        n_total = n_attr + unknown + error
        wrong_ub = upper_bounds(wrong, n_attr, pol.wrong_bound_level)
        shape = n_attr.shape
        inside = n_attr > 0
        beyond = np.zeros(shape, dtype=bool)
        if self.expected.deterministic:
            log_bf = np.full(shape, np.nan)
            max_log_bf = log_bf
            dev = np.full(shape, np.nan)
        else:
            log_bf = self._log_bf(counts[..., pos]) if log_bf is None else log_bf
            max_log_bf = np.maximum(log_bf, running)
            ep = self._e[pos]
            x = counts[..., pos]
            dev = np.where(n_attr > 0, np.abs(x / np.maximum(n_attr, 1)[..., None] - ep).max(axis=-1), np.nan)
            vt, rt = self._verify_threshold, self._refute_threshold
            for j, i in enumerate(np.flatnonzero(pos)):
                share, s = float(self._e[i]), x[..., j]
                low, high = float(self._band_low[i]), float(self._band_high[i])
                priors = self._priors(share)
                inside &= clears_above(s, n_attr, *priors["inside_low"], low, vt)
                inside &= clears_below(s, n_attr, *priors["inside_high"], high, vt)
                if share + tol < 1:
                    beyond |= clears_above(s, n_attr, *priors["beyond_high"], share + tol, rt)
                if share - tol > 0:
                    beyond |= clears_below(s, n_attr, *priors["beyond_low"], share - tol, rt)
        unknown_fail, unknown_ok = self._gate(unknown, n_total, pol.max_unknown_rate)
        error_fail, error_ok = self._gate(error, n_total, pol.max_error_rate)
        refuted = (wrong > 0) | beyond | unknown_fail | error_fail
        verified = (wrong == 0) & (n_attr > 0) & (wrong_ub <= tol + _EPS) & inside & unknown_ok & error_ok
        capped = (n_total >= self.max_requests) if self.max_requests else np.zeros(shape, bool)
        status = np.where(
            refuted,
            _REFUTED,
            np.where(verified, _VERIFIED, np.where(capped, _INCONCLUSIVE, _CONTINUE)),
        )
        return _Looks(
            status.astype(np.int8),
            log_bf,
            max_log_bf,
            n_attr,
            n_total,
            wrong,
            wrong_ub,
            dev,
            inside,
            beyond,
            unknown_fail,
            error_fail,
            unknown_ok & error_ok,
        )

    def _gate(
        self, count: NDArray[np.int64], total: NDArray[np.int64], limit: float
    ) -> tuple[NDArray[np.bool_], NDArray[np.bool_]]:
        """(rate shown above ``limit`` at level alpha, observed rate within ``limit``)."""
        within = count <= limit * total + _EPS
        if limit == 0:
            return count > 0, within
        fail = excludes_below(count, total, 1.0, 1.0 / limit, limit, self._bf_threshold)
        return fail, within

    def statuses(
        self,
        counts: ArrayLike,
        *,
        other: ArrayLike = 0,
        unknown: ArrayLike = 0,
        error: ArrayLike = 0,
        time_axis: int | None = None,
    ) -> NDArray[np.str_]:
        """Vectorised decisions for cumulative counts of any leading shape.

        The last axis of ``counts`` follows :attr:`subsets`; ``other``,
        ``unknown`` and ``error`` broadcast to the leading shape. With
        ``time_axis`` (an axis of the leading shape along which the looks of
        one stream follow each other), the reported Bayes factor's running
        maximum follows it, as repeated :meth:`decide` calls do (decisions do
        not depend on it: each look's claims are anytime-valid on their own).
        Does not touch this object's state. For simulation.
        """
        table = np.asarray(counts)
        if table.ndim < 1 or table.shape[-1] != len(self.subsets) or np.any(table < 0):
            raise UsageError(f"counts need one non-negative column per subset {self.subsets}")
        table = table.astype(np.int64)
        lead = table.shape[:-1]
        other_, unknown_, error_ = (
            np.broadcast_to(np.asarray(v, dtype=np.int64), lead) for v in (other, unknown, error)
        )
        running = np.full(lead, -np.inf)
        log_bf = None
        if time_axis is not None and not self.expected.deterministic:
            log_bf = self._log_bf(table[..., self._pos])
            earlier = np.maximum.accumulate(log_bf, axis=time_axis)
            running = np.concatenate(
                [
                    np.full_like(np.take(earlier, [0], axis=time_axis), -np.inf),
                    np.delete(earlier, -1, axis=time_axis),
                ],
                axis=time_axis,
            )
        looks = self._evaluate(table, other_, unknown_, error_, running, log_bf)
        return np.asarray(_NAMES[looks.status])

    # -- the stateful interface ------------------------------------------------

    def update(self, counts_delta: Mapping[str, int]) -> SequentialDecision:
        """Add newly observed responses (subset → count) and decide."""
        total = dict(self._counts)
        for key, value in counts_delta.items():
            if int(value) != value or value < 0:
                raise UsageError(f"count of {key!r} must be a non-negative whole number")
            total[str(key)] = total.get(str(key), 0) + int(value)
        return self.decide(total)

    def decide(self, cumulative_counts: Mapping[str, int]) -> SequentialDecision:
        """Decide on running totals (subset → count since the start, with
        ``"unknown"`` and ``"error"`` counted apart); totals may not go down."""
        counts: dict[str, int] = {}
        for key, value in cumulative_counts.items():
            if int(value) != value or value < 0:
                raise UsageError(f"count of {key!r} must be a non-negative whole number")
            counts[str(key)] = int(value)
        for key, before in self._counts.items():
            if counts.get(key, 0) < before:
                raise UsageError(
                    f"cumulative count of {key!r} went from {before} to {counts.get(key, 0)}; "
                    f"pass running totals to decide(), or new counts to update()"
                )
        self._counts = counts
        self._looks += 1
        names = self.subsets
        row = np.array([counts.get(s, 0) for s in names], dtype=np.int64)
        other = sum(v for k, v in counts.items() if k not in names and k not in (UNKNOWN, ERROR))
        unknown, error = counts.get(UNKNOWN, 0), counts.get(ERROR, 0)
        looks = self._evaluate(
            row,
            np.asarray(other),
            np.asarray(unknown),
            np.asarray(error),
            np.asarray(self._max_log_bf),
        )
        if not self.expected.deterministic:
            self._max_log_bf = float(looks.max_log_bf)
        self._decision = self._describe(looks, counts, row, unknown, error)
        return self._decision

    def _describe(
        self,
        looks: _Looks,
        counts: dict[str, int],
        row: NDArray[np.int64],
        unknown: int,
        error: int,
    ) -> SequentialDecision:
        pol = self.policy
        n = int(looks.n_attr)
        status = str(_NAMES[int(looks.status)])
        shares = []
        for i, name in enumerate(self.subsets):
            share = float(self._e[i])
            observed = int(row[i]) / n if n else math.nan
            band = (float(self._band_low[i]), float(self._band_high[i]))
            if share >= 1:  # a deterministic route: one minus the wrong-subset bound
                low, high = 1.0 - float(looks.wrong_ub), 1.0
                wide_low, wide_high = low, high
            elif share > 0:
                priors = self._priors(share)
                low, high = one_sided_bounds(
                    int(row[i]), n, priors["inside_low"], priors["inside_high"], self._verify_threshold
                )
                wide_low, wide_high = one_sided_bounds(
                    int(row[i]), n, priors["beyond_high"], priors["beyond_low"], self._refute_threshold
                )
            else:  # a subset that should get nothing: the exact zero-count bound
                low, high = 0.0, float(looks.wrong_ub)
                wide_low, wide_high = low, high
            shares.append(
                SequentialShare(
                    subset=name,
                    count=int(row[i]),
                    observed=observed,
                    expected=share,
                    band_low=band[0],
                    band_high=band[1],
                    cs_low=low,
                    cs_high=high,
                    inside_band=bool(n > 0 and low >= band[0] - _EPS and high <= band[1] + _EPS),
                    wide_low=wide_low,
                    wide_high=wide_high,
                    beyond_band=bool(n > 0 and (wide_low > band[1] or wide_high < band[0])),
                )
            )
        failures = []
        if looks.wrong > 0:
            failures.append("wrong_subset")
        elif looks.beyond:
            failures.append("split")
        if looks.unknown_fail:
            failures.append("unknown_rate")
        if looks.error_fail:
            failures.append("error_rate")
        deterministic = self.expected.deterministic
        return SequentialDecision(
            status=status,  # type: ignore[arg-type]
            reason=self._reason(status, looks, failures),
            failures=tuple(failures),
            n=n,
            n_total=int(looks.n_total),
            looks=self._looks,
            counts=dict(counts),
            log_bayes_factor=None if deterministic else float(looks.log_bf),
            max_log_bayes_factor=None if deterministic else self._max_log_bf,
            log_threshold=self._bf_threshold,
            shares=tuple(shares),
            deviation=None if deterministic or n == 0 else float(looks.dev),
            wrong=int(looks.wrong),
            wrong_upper_bound=float(looks.wrong_ub),
            unknown=unknown,
            unknown_rate=unknown / int(looks.n_total) if looks.n_total else 0.0,
            error=error,
            error_rate=error / int(looks.n_total) if looks.n_total else 0.0,
            alpha=self.alpha,
            policy=pol,
        )

    def _reason(self, status: str, looks: _Looks, failures: list[str]) -> str:
        pol = self.policy
        n = int(looks.n_attr)
        tol = f"±{100 * pol.tolerance:g} points"
        mismatch = (
            not self.expected.deterministic and float(looks.max_log_bf) >= self._bf_threshold
        )
        srm = (
            f" (a sample-ratio mismatch: Bayes factor {math.exp(min(float(looks.max_log_bf), 700.0)):.3g} "
            f"≥ {1 / self.alpha:g})"
            if mismatch
            else ""
        )
        if status == "refuted":
            parts = []
            if "wrong_subset" in failures:
                parts.append(f"{int(looks.wrong)} of {n} responses came from a subset that should get none")
            if "split" in failures:
                parts.append(
                    f"a share is shown beyond {tol} at level {self.alpha:.3g} "
                    f"(largest deviation {100 * float(looks.dev):.2g} points, n={n})"
                )
            if "unknown_rate" in failures:
                parts.append(
                    f"unattributable responses are significantly above {100 * pol.max_unknown_rate:g}% of requests"
                )
            if "error_rate" in failures:
                parts.append(f"failed requests are significantly above {100 * pol.max_error_rate:g}% of requests")
            return "; ".join(parts)
        level = f"{100 * (1 - (1 - pol.confidence) / 2):g}%"
        if status == "verified":
            if self.expected.deterministic:
                return (
                    f"all {n} attributed responses came from the expected subset: "
                    f"wrong-subset share below {100 * float(looks.wrong_ub):.3g}% at {level}"
                )
            return f"every share is shown inside {tol} (one-sided {level} each, anytime-valid); n={n}{srm}"
        waiting = "the request cap was reached without a decision" if status == "inconclusive" else "not decided yet"
        if n == 0:
            return f"{waiting}: no attributed responses"
        if not looks.rates_ok:
            return f"{waiting}: the unknown or error rate is above its maximum"
        return f"{waiting}: the shares are not yet shown inside or beyond {tol} (n={n}){srm}"
