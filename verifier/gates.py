"""The canary against the stable model at a rollout step: errors, latency shift, p99 ratio. Pure.

Each gate is an estimate with an interval at ``confidence`` and a limit, and
fails only when the interval lies wholly beyond the limit: the data show
the canary worse than allowed, as Kayenta fails a canary on a significant
difference, not on a noisy point estimate. Otherwise it passes, and the
reason says whether the interval lies within the limit or merely reaches
past it (too few responses to tell).

* **error rate** — failed requests among all requests of the step (stable
  and canary alike: a failed request carries no fingerprint), exact
  Clopper–Pearson interval; the mesh's own per-subset 4xx/5xx counts (REST)
  are quoted where known.
* **latency shift** — the Hodges–Lehmann shift canary − stable per
  protocol, with its distribution-free interval (as the report's).
* **p99 ratio** — p99(canary) / p99(stable) per protocol, with a seeded
  percentile-bootstrap interval (:func:`verifier.percentiles.percentile_ratio`).
  A p99 from fewer than 100 responses is about the maximum, and the reason says so.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import stats

from canary.errors import UsageError
from canary.rundir.document import RunDocument
from canary.rundir.records import answered
from canary.rundir.steps import GateRecord

from .latency import stratum_samples
from .latency_compare import compare_latency

__all__ = ["GateLimits", "evaluate_gates", "gates_passed", "latency_gates", "mesh_error_counts", "parse_duration_ms"]

P99_RELIABLE_N = 100


@dataclass(frozen=True)
class GateLimits:
    """``--max-error-rate``, ``--max-latency-shift``, ``--max-p99-ratio``."""

    max_error_rate: float = 0.01
    max_latency_shift_ms: float = 20.0
    max_p99_ratio: float = 1.5
    confidence: float = 0.95

    def __post_init__(self) -> None:
        if not 0 <= self.max_error_rate < 1:
            raise UsageError(f"--max-error-rate is a fraction in [0, 1), e.g. 0.01; got {self.max_error_rate}")
        if not self.max_latency_shift_ms >= 0:
            raise UsageError(f"--max-latency-shift must not be negative; got {self.max_latency_shift_ms} ms")
        if not self.max_p99_ratio > 0:
            raise UsageError(f"--max-p99-ratio must be more than 0, e.g. 1.5; got {self.max_p99_ratio}")
        if not 0.5 < self.confidence < 1:
            raise UsageError(f"the gates' confidence must be in (0.5, 1), e.g. 0.95; got {self.confidence}")


def parse_duration_ms(text: str) -> float:
    """``20ms``, ``0.02s``, ``20`` (milliseconds) as milliseconds."""
    raw = str(text).strip().lower()
    scale = 1.0
    for suffix, factor in (("ms", 1.0), ("s", 1000.0)):
        if raw.endswith(suffix):
            raw, scale = raw[: -len(suffix)].strip(), factor
            break
    try:
        value = float(raw) * scale
    except ValueError:
        raise UsageError(f"{text!r} is not a duration; write e.g. 20ms or 0.5s") from None
    if not math.isfinite(value) or value < 0:
        raise UsageError(f"{text!r} is not a duration; write e.g. 20ms or 0.5s")
    return value


def _verdict(low: float | None, high: float | None, limit: float, what: str) -> tuple[str, str]:
    if low is not None and low > limit:
        return "fail", f"{what}: shown beyond the limit"
    if high is not None and high <= limit:
        return "pass", f"{what}: within the limit"
    return "pass", f"{what}: not shown beyond the limit (the interval reaches past it: too few responses to tell)"


def _error_gate(records: pd.DataFrame, limits: GateLimits, mesh_errors: Mapping[str, tuple[int, int]]) -> GateRecord:
    n = len(records)
    failed = int((~records["ok"].astype(bool)).sum()) if n else 0
    if n == 0:
        return GateRecord(name="error rate", status="not judged", limit=limits.max_error_rate, unit="fraction",
                          reason="no request in this step")
    ci = stats.binomtest(failed, n).proportion_ci(confidence_level=limits.confidence, method="exact")
    status, reason = _verdict(float(ci.low), float(ci.high), limits.max_error_rate,
                              f"{failed} of {n} requests failed ({100 * failed / n:.2f}%, "
                              f"{100 * limits.confidence:g}% interval {100 * ci.low:.2f}–{100 * ci.high:.2f}%, "
                              f"limit {100 * limits.max_error_rate:g}%)")
    quoted = [f"{subset} {bad} of {total}" for subset, (bad, total) in sorted(mesh_errors.items()) if total]
    if quoted:
        reason += "; the mesh counted 4xx/5xx answers (REST): " + ", ".join(quoted)
    return GateRecord(name="error rate", status=status, value=failed / n, low=float(ci.low), high=float(ci.high),
                      limit=limits.max_error_rate, unit="fraction", reason=reason)


def latency_gates(protocol: str, canary: np.ndarray, stable: np.ndarray, names: tuple[str, str],
                  limits: GateLimits) -> list[GateRecord]:
    """The latency shift and p99 ratio gates of ``canary`` against ``stable`` (``names``: theirs);
    ``protocol`` names the stratum in the gates' names."""
    shift_name, ratio_name = f"latency shift ({protocol})", f"p99 ratio ({protocol})"
    if canary.size < 2 or stable.size < 2:
        why = f"too few successful responses to compare ({canary.size} {names[0]}, {stable.size} {names[1]})"
        return [GateRecord(name=shift_name, status="not judged", limit=limits.max_latency_shift_ms, unit="ms",
                           reason=why),
                GateRecord(name=ratio_name, status="not judged", limit=limits.max_p99_ratio, unit="ratio",
                           reason=why)]
    comparison = compare_latency(canary, stable, protocol=protocol, canary_name=names[0], stable_name=names[1],
                                 confidence=limits.confidence)
    level = f"{100 * limits.confidence:g}%"
    low, high = comparison.ci_low, comparison.ci_high
    span = "no interval (too few responses)" if low is None or high is None else (
        f"{level} interval {low:.1f} to {high:.1f} ms")
    status, reason = _verdict(low, high, limits.max_latency_shift_ms,
                              f"{names[0]} − {names[1]} {comparison.shift_ms:+.1f} ms ({span}; "
                              f"limit +{limits.max_latency_shift_ms:g} ms)")
    shift = GateRecord(name=shift_name, status=status, value=comparison.shift_ms, low=low, high=high,
                       limit=limits.max_latency_shift_ms, unit="ms", reason=reason)
    p99 = comparison.p99_ratio
    if p99 is None:
        return [shift, GateRecord(name=ratio_name, status="not judged", limit=limits.max_p99_ratio, unit="ratio",
                                  reason="the stable p99 is not positive")]
    value, r_low, r_high = p99.value, p99.low, p99.high
    small = min(canary.size, stable.size)
    caveat = f"; a p99 of {small} responses is about their maximum" if small < P99_RELIABLE_N else ""
    status, reason = _verdict(r_low, r_high, limits.max_p99_ratio,
                              f"p99 {names[0]} / {names[1]} ×{value:.2f} ({level} bootstrap interval "
                              f"×{r_low:.2f}–×{r_high:.2f}; limit ×{limits.max_p99_ratio:g}){caveat}")
    ratio = GateRecord(name=ratio_name, status=status, value=value, low=r_low, high=r_high,
                       limit=limits.max_p99_ratio, unit="ratio", reason=reason)
    return [shift, ratio]


def evaluate_gates(
    records: pd.DataFrame,
    *,
    stable: str,
    canary: str,
    limits: GateLimits | None = None,
    protocols: Sequence[str] = ("rest", "grpc"),
    mesh_errors: Mapping[str, tuple[int, int]] | None = None,
) -> list[GateRecord]:
    """The gates of one step from its records (``ok``, ``subset``, ``protocol``,
    ``latency_ms``); ``mesh_errors``: subset → (4xx/5xx answers, requests) the mesh counted."""
    limits = limits or GateLimits()
    gates = [_error_gate(records, limits, mesh_errors or {})]
    if not len(records):
        return gates
    rows = answered(records)
    for protocol in protocols:
        if not (rows["protocol"] == protocol).any():
            continue
        samples = [stratum_samples(rows, s, protocol) for s in (canary, stable)]
        gates += latency_gates(protocol, samples[0], samples[1], (canary, stable), limits)
    return gates


def gates_passed(gates: Sequence[GateRecord]) -> bool:
    """No gate failed ("not judged" is not a failure: a step where the canary takes everything
    has no stable responses to compare with)."""
    return all(g.status != "fail" for g in gates)


def mesh_error_counts(document: RunDocument) -> dict[str, tuple[int, int]]:
    """subset → (4xx and 5xx answers, requests) the mesh counted during the run (Envoy's
    counters after − before; HTTP classes, so REST only: a gRPC error travels in a 200); empty when
    unknown, including after a reset of the counters during the run."""
    mesh = document.mesh
    if mesh is None or mesh.counters_reset or mesh.counters_before is None or mesh.counters_after is None:
        return {}  # unknown; after a reset of Envoy's counters, after − before means nothing
    out: dict[str, tuple[int, int]] = {}
    for subset, after in mesh.counters_after.items():
        before = mesh.counters_before.get(subset)
        bad = sum(after.by_class.get(k, 0) - (before.by_class.get(k, 0) if before else 0) for k in ("4xx", "5xx"))
        total = after.requests - (before.requests if before else 0)
        if subset:
            out[subset] = (bad, total)
    return out
