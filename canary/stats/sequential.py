"""Anytime-valid split verification, for monitoring a load test as it runs.

A fixed-sample verdict is only valid at the n fixed in advance: re-checking
it after every batch and stopping at the first "refuted" inflates the false
refutation rate far above alpha. :class:`SequentialSplitTest` may be checked
after every batch, as often as wanted, and stopped at the first decision; its
guarantees hold at whatever data-dependent time it is stopped.

**Mismatch** — the Dirichlet–multinomial Bayes factor BF_t of Lindon & Malek
(2022, "Anytime-valid inference for multinomial count data", NeurIPS) against
the point null "shares = e", prior Dirichlet(c·e) (:mod:`canary.stats.sequences`).
Under H0 it is a non-negative martingale with BF_0 = 1, so by Ville's
inequality P(∃t: BF_t ≥ 1/alpha) ≤ alpha; "mismatch" means BF reached 1/alpha
at some look.

**Shares** — beta-binomial mixture confidence sequences (Robbins, 1970;
Howard, Ramdas, McAuliffe & Sekhon, 2021, "Time-uniform, nonparametric,
nonasymptotic confidence sequences", Ann. Statist. 49(2)): for each subset,
CS_t = {p : M_t(p) < m/(1 − confidence)} holds the true share at every t at
once with probability ≥ 1 − (1 − confidence)/m; Bonferroni over the m = k
subsets makes them simultaneous (m = 1 for two subsets, whose sequences are
mirror images). Whether CS_t clears a band edge is read off M_t at the edge,
with no root finding. Any prior gives a valid sequence; the prior only
decides where it is tight. Two are kept per subset:

* the *verification* sequence, prior centred on e_i with standard deviation
  ``cs_prior_sd`` (default tolerance/4): tight when the split is as expected;
* the *refutation* sequence, prior Beta(c·e_i, c·(1 − e_i)) with the Bayes
  factor's broad concentration c (default 1/(16·tolerance²)).

**Decision at each look** (wrong = responses from subsets expected to get none)::

    refuted   wrong ≥ 1;
              or mismatch and the deviation is beyond the tolerance —
                 refute_rule "confidence" (default): some share's refutation
                 sequence lies wholly outside its band [e_i − tol, e_i + tol];
                 refute_rule "estimate": max_i |p̂_i − e_i| > tol, as the fixed test;
              or an unknown/error rate's sequence (prior Beta(1, 1/max), level
                 alpha) lies wholly above its maximum (any error when the maximum is 0)
    verified  wrong = 0 and its exact zero-count bound 1 − (1 − confidence)^(1/t)
              ≤ tolerance; no mismatch so far; every verification sequence
              inside its band; observed unknown and error rates within their maxima
    inconclusive  the request cap was reached first;   continue  otherwise

**Guarantees**, under any stopping rule: if the shares equal e, P(refuted on
the split) ≤ alpha (both rules need the mismatch); with the "confidence" rule,
if every true share is inside its band, P(refuted on the split) ≤
1 − confidence as well (the refutation sequence must miss a true share), while
the "estimate" rule can then refute often — optional stopping waits for p̂ to
wander past the tolerance (a true 72.5/27.5 split against 70/30 ± 3 is
refuted about half the time), which is why it is not the default. If some true
share is outside its band, P(verified) ≤ 1 − confidence (its verification
sequence must miss it; for the zero-count bound, the first t* responses must
all avoid a wrong subset of share > tol, probability < (1 − tol)^t* ≤
1 − confidence). Each rate gate falsely fails with probability ≤ alpha.
These assume each attributed response's subset is drawn independently with
fixed shares (Envoy's weighted choice is) and that unknowns and errors do not
depend on the subset.
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
from .sequences import cs_bounds, excludes_above, excludes_below, log_bayes_factor
from .verdicts import RefuteRule, SequentialDecision, SequentialShare

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
    mismatch: NDArray[np.bool_]
    unknown_fail: NDArray[np.bool_]
    error_fail: NDArray[np.bool_]
    rates_ok: NDArray[np.bool_]


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
        refute_rule: RefuteRule = "confidence",
        prior_concentration: float | None = None,
        cs_prior_sd: float | None = None,
    ) -> None:
        self.expected = expected
        self.policy = pol = policy or SplitPolicy()
        if max_requests is not None and (int(max_requests) != max_requests or max_requests < 1):
            raise UsageError(f"max_requests must be a positive whole number, got {max_requests}")
        if refute_rule not in ("confidence", "estimate"):
            raise UsageError(f"refute_rule must be 'confidence' or 'estimate', got {refute_rule!r}")
        self.max_requests = max_requests
        self.refute_rule: RefuteRule = refute_rule
        self.prior_concentration = float(prior_concentration or 1 / (16 * pol.tolerance**2))
        self.cs_prior_sd = float(cs_prior_sd or pol.tolerance / 4)
        if not self.prior_concentration > 0 or not 0 < self.cs_prior_sd < 0.5:
            raise UsageError("prior_concentration must be > 0 and cs_prior_sd in (0, 0.5)")
        self._e = np.array([expected.shares[s] for s in expected.subsets])
        self._pos = self._e > 0
        ep = self._e[self._pos]
        self._tight = np.maximum(1.0, ep * (1 - ep) / self.cs_prior_sd**2 - 1)
        self._cs_threshold = math.log(bonferroni_factor(len(ep)) / (1 - pol.confidence))
        self._bf_threshold = math.log(1 / pol.alpha)
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

    def _priors(self, j: int, share: float) -> tuple[tuple[float, float], tuple[float, float]]:
        """(tight, broad) Beta priors of the j-th positive subset."""
        tight, broad = float(self._tight[j]), self.prior_concentration
        return (tight * share, tight * (1 - share)), (broad * share, broad * (1 - share))

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
        wrong_ub = upper_bounds(wrong, n_attr, pol.confidence)
        shape = n_attr.shape
        inside = n_attr > 0
        beyond = np.zeros(shape, dtype=bool)
        if self.expected.deterministic:
            log_bf = np.full(shape, np.nan)
            max_log_bf = log_bf
            dev = np.full(shape, np.nan)
            mismatch = np.zeros(shape, dtype=bool)
        else:
            ep = self._e[pos]
            x = counts[..., pos]
            log_bf = self._log_bf(x) if log_bf is None else log_bf
            max_log_bf = np.maximum(log_bf, running)
            mismatch = max_log_bf >= self._bf_threshold
            dev = np.where(
                n_attr > 0, np.abs(x / np.maximum(n_attr, 1)[..., None] - ep).max(axis=-1), np.nan
            )
            thr = self._cs_threshold
            for j, share in enumerate(ep):
                (a, b), (wa, wb) = self._priors(j, float(share))
                s = x[..., j]
                inside &= excludes_below(s, n_attr, a, b, share - tol, thr)
                inside &= excludes_above(s, n_attr, a, b, share + tol, thr)
                beyond |= excludes_below(s, n_attr, wa, wb, share + tol, thr)
                beyond |= excludes_above(s, n_attr, wa, wb, share - tol, thr)
        if self.refute_rule == "estimate":
            beyond = dev > tol
        unknown_fail, unknown_ok = self._gate(unknown, n_total, pol.max_unknown_rate)
        error_fail, error_ok = self._gate(error, n_total, pol.max_error_rate)
        refuted = (wrong > 0) | (mismatch & beyond) | unknown_fail | error_fail
        verified = (
            (wrong == 0)
            & (n_attr > 0)
            & (wrong_ub <= tol + _EPS)
            & ~mismatch
            & inside
            & unknown_ok
            & error_ok
        )
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
            mismatch,
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
        one stream follow each other), the "no mismatch so far" condition uses
        the running maximum of the Bayes factor along it, exactly as repeated
        :meth:`decide` calls do; without it each row is judged on its own.
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
        j = 0
        for i, name in enumerate(self.subsets):
            share = float(self._e[i])
            observed = int(row[i]) / n if n else math.nan
            if share >= 1:  # a deterministic route: one minus the wrong-subset bound
                low, high = 1.0 - float(looks.wrong_ub), 1.0
                wide_low, wide_high = low, high
                band = (1.0 - pol.tolerance, 1.0)
            elif share > 0:
                (a, b), (wa, wb) = self._priors(j, share)
                j += 1
                low, high = cs_bounds(int(row[i]), n, a, b, self._cs_threshold)
                wide_low, wide_high = cs_bounds(int(row[i]), n, wa, wb, self._cs_threshold)
                band = (max(0.0, share - pol.tolerance), min(1.0, share + pol.tolerance))
            else:  # a subset that should get nothing: the exact zero-count bound
                low, high = 0.0, float(looks.wrong_ub)
                wide_low, wide_high = low, high
                band = (0.0, pol.tolerance)
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
        elif looks.mismatch and looks.beyond:
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
            refute_rule=self.refute_rule,
            policy=pol,
        )

    def _reason(self, status: str, looks: _Looks, failures: list[str]) -> str:
        pol = self.policy
        n = int(looks.n_attr)
        tol = f"±{100 * pol.tolerance:g} points"
        conf = f"{100 * pol.confidence:g}%"
        bf = (
            ""
            if self.expected.deterministic
            else (
                f"Bayes factor {math.exp(min(float(looks.max_log_bf), 700.0)):.3g}, "
                f"threshold {1 / pol.alpha:g}"
            )
        )
        if status == "refuted":
            parts = []
            if "wrong_subset" in failures:
                parts.append(
                    f"{int(looks.wrong)} of {n} responses came from a subset that should get none"
                )
            if "split" in failures:
                how = (
                    f"a share's {conf} confidence sequence is wholly outside {tol}"
                    if self.refute_rule == "confidence"
                    else f"the deviation exceeds {tol}"
                )
                parts.append(
                    f"split differs from expected ({bf}) and {how} "
                    f"(largest deviation {100 * float(looks.dev):.2g} points, n={n})"
                )
            if "unknown_rate" in failures:
                parts.append(
                    f"unattributable responses are significantly above "
                    f"{100 * pol.max_unknown_rate:g}% of requests"
                )
            if "error_rate" in failures:
                parts.append(
                    f"failed requests are significantly above "
                    f"{100 * pol.max_error_rate:g}% of requests"
                )
            return "; ".join(parts)
        if status == "verified":
            if self.expected.deterministic:
                return (
                    f"all {n} attributed responses came from the expected subset: "
                    f"wrong-subset share below {100 * float(looks.wrong_ub):.3g}% at {conf}"
                )
            return (
                f"every share's {conf} confidence sequence is inside {tol} and no "
                f"mismatch ({bf}); n={n}"
            )
        waiting = (
            "the request cap was reached without a decision"
            if status == "inconclusive"
            else "not decided yet"
        )
        if n == 0:
            return f"{waiting}: no attributed responses"
        if looks.mismatch:
            return (
                f"{waiting}: the split differs from expected ({bf}), but not shown to "
                f"be beyond {tol} (largest deviation {100 * float(looks.dev):.2g} points)"
            )
        if not looks.rates_ok:
            return f"{waiting}: the unknown or error rate is above its maximum"
        return f"{waiting}: the confidence sequences do not fit inside {tol} yet (n={n})"
