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
* :func:`log_upper_mixture` — ln M⁺_t(p0), the same mixture with the prior
  truncated to p' > p0 (Howard et al. 2021, one-sided mixtures)::

      M⁺_t(p0) = ∫_{p0}^1 L(p')/L(p0) dBeta(p'; a, b) / P_Beta(p' > p0)
               = B(a + s, b + t − s) Ī_{p0}(a + s, b + t − s) / [B(a, b) Ī_{p0}(a, b) p0^s (1 − p0)^(t − s)]

  with Ī the regularised upper incomplete beta function (``scipy.special.betaincc``).
  For a fixed p0 it is a martingale when the true share is p0 and a
  supermartingale when it is below p0 (each factor's expectation, p·p'/p0 +
  (1 − p)(1 − p')/(1 − p0), grows with p when p' > p0), so the chance it ever
  reaches 1/δ is at most δ for every true share ≤ p0: :func:`clears_above`
  claims "the share is above p0" at one-sided level δ, and :func:`clears_below`
  mirrors it. A one-sided claim at δ needs no split of δ between two sides.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray
from scipy import optimize, special

__all__ = [
    "clears_above",
    "clears_below",
    "cs_bounds",
    "excludes_above",
    "excludes_below",
    "log_bayes_factor",
    "log_mixture",
    "log_upper_mixture",
    "one_sided_bounds",
]


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


def log_upper_mixture(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, p0: float
) -> NDArray[np.float64]:
    """ln M⁺_t(p0): the beta-binomial mixture over p' > p0 only (p0 strictly inside (0, 1))."""
    with np.errstate(divide="ignore", invalid="ignore"):
        truncation = np.log(special.betaincc(a + s, b + t - s, p0)) - np.log(special.betaincc(a, b, p0))
        return np.asarray(log_mixture(s, t, a, b, p0) + truncation, dtype=np.float64)


def clears_above(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, edge: float, threshold: float
) -> NDArray[np.bool_]:
    """The share is shown above ``edge`` at one-sided level e^(−threshold): p̂ > edge and
    ln M⁺_t(edge) ≥ threshold (prior Beta(a, b) truncated above ``edge``). Always for
    edge ≤ 0, never for edge ≥ 1."""
    if edge <= 0:
        return np.ones(np.shape(s), dtype=bool)
    if edge >= 1:
        return np.zeros(np.shape(s), dtype=bool)
    return np.asarray((s > edge * t) & (log_upper_mixture(s, t, a, b, edge) >= threshold))


def clears_below(
    s: NDArray[Any], t: NDArray[Any], a: float, b: float, edge: float, threshold: float
) -> NDArray[np.bool_]:
    """The share is shown below ``edge`` (the mirror image of :func:`clears_above`; the prior
    Beta(a, b) is on the share itself)."""
    return clears_above(t - s, t, b, a, 1.0 - edge, threshold)


def one_sided_bounds(
    s: int, t: int, lower_prior: tuple[float, float], upper_prior: tuple[float, float], threshold: float
) -> tuple[float, float]:
    """For reports: the largest p0 below p̂ that :func:`clears_above` rejects, and the smallest
    above p̂ that :func:`clears_below` rejects (0 and 1 when none), by root finding."""
    if t == 0:
        return 0.0, 1.0
    p_hat = s / t
    tiny = 1e-12

    def above(p: float) -> float:
        return float(log_upper_mixture(np.asarray(s), np.asarray(t), *lower_prior, p)) - threshold

    def below(p: float) -> float:
        b, a = upper_prior
        return float(log_upper_mixture(np.asarray(t - s), np.asarray(t), a, b, 1.0 - p)) - threshold

    low = 0.0
    if s > 0 and p_hat > tiny and above(tiny) >= 0 and above(p_hat - tiny) < 0:
        low = optimize.brentq(above, tiny, p_hat - tiny)
    high = 1.0
    if s < t and p_hat < 1 - tiny and below(1 - tiny) >= 0 and below(p_hat + tiny) < 0:
        high = optimize.brentq(below, p_hat + tiny, 1 - tiny)
    return float(low), float(high)
