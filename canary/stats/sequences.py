"""Anytime-valid building blocks: a Bayes factor and confidence sequences (vectorised).

See :mod:`canary.stats.sequential` for how they decide. Both are mixture
martingales: non-negative, starting at 1, so by Ville's inequality the chance
they ever reach 1/δ is at most δ, whenever one stops.

* :func:`log_bayes_factor` — ln of the Dirichlet–multinomial Bayes factor of
  Lindon & Malek (2022) against the point null e, prior Dirichlet(c·e)::

      BF_t = [B(c·e + x) / B(c·e)] / ∏_i e_i^{x_i},   B(a) = ∏ Γ(a_i) / Γ(Σ a_i)

* :func:`log_mixture` — ln M_t(p) of the beta-binomial mixture (Robbins 1970;
  Howard et al. 2021) for s events in t trials, prior Beta(a, b)::

      M_t(p) = B(a + s, b + t − s) / [B(a, b) · p^s · (1 − p)^(t − s)]

  The confidence sequence is {p : ln M_t(p) < threshold}. ln M_t is convex in
  p with its minimum at p̂ = s/t, so the sequence is an interval around p̂:
  :func:`excludes_below` / :func:`excludes_above` decide whether it clears an
  edge by evaluating ln M_t at the edge alone, and :func:`cs_bounds` finds
  the endpoints (``scipy.optimize.brentq``) for reports.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

__all__ = ["cs_bounds", "excludes_above", "excludes_below", "log_bayes_factor", "log_mixture"]


def log_bayes_factor(
    x: NDArray[np.int64], expected: NDArray[np.float64], concentration: float
) -> NDArray[np.float64]:
    """ln BF_t for counts ``x`` (last axis: subsets with expected shares > 0)."""
    prior = concentration * expected
    return np.asarray(
        special.gammaln(prior + x).sum(axis=-1)
        - special.gammaln(prior.sum() + x.sum(axis=-1))
        - special.gammaln(prior).sum()
        + special.gammaln(prior.sum())
        - (x * np.log(expected)).sum(axis=-1),
        dtype=np.float64,
    )


def log_mixture(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, p: float | NDArray[np.float64]
) -> NDArray[np.float64]:
    """ln M_t(p) of the beta-binomial mixture (p strictly inside (0, 1))."""
    return np.asarray(
        special.betaln(a + s, b + t - s)
        - special.betaln(a, b)
        - s * np.log(p)
        - (t - s) * np.log1p(-p),
        dtype=np.float64,
    )


def excludes_below(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, edge: float, threshold: float
) -> NDArray[np.bool_]:
    """Every p ≤ ``edge`` is outside the CS {p : ln M_t(p) < threshold}, i.e. the
    CS lies above ``edge``: vacuous for edge ≤ 0, impossible for edge ≥ 1, else
    p̂ > edge and ln M_t(edge) ≥ threshold (ln M_t is convex with its minimum
    at p̂, so it is then above the threshold on all of (0, edge])."""
    if edge <= 0:
        return np.ones(np.shape(s), dtype=bool)
    if edge >= 1:
        return np.zeros(np.shape(s), dtype=bool)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.asarray((s > edge * t) & (log_mixture(s, t, a, b, edge) >= threshold))


def excludes_above(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, edge: float, threshold: float
) -> NDArray[np.bool_]:
    """Every p ≥ ``edge`` is outside the CS (the mirror image of :func:`excludes_below`)."""
    return excludes_below(t - s, t, b, a, 1.0 - edge, threshold)


def cs_bounds(s: int, t: int, a: float, b: float, threshold: float) -> tuple[float, float]:
    """Endpoints of {p : ln M_t(p) < threshold} by root finding."""
    if t == 0:
        return 0.0, 1.0
    p_hat = s / t

    def f(p: float) -> float:
        return float(log_mixture(np.asarray(s), np.asarray(t), a, b, p)) - threshold

    tiny = 1e-15
    low = 0.0 if s == 0 or f(tiny) < 0 else optimize.brentq(f, tiny, p_hat)
    high = 1.0 if s == t or f(1 - tiny) < 0 else optimize.brentq(f, p_hat, 1 - tiny)
    return float(low), float(high)
