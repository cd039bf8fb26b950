"""``canary compare RUN_A RUN_B``: two runs side by side, before and after a change. Pure over runs.

For every subset × protocol × payload format both runs answered (formats kept
apart as in the report), run B against run A:

* the latency comparison (Mann-Whitney U, Hodges-Lehmann shift B − A with its
  interval, p50 and p99 ratios B / A with bootstrap intervals, one plain line);
* the regression gates of :mod:`verifier.gates` on the same samples
  (``--max-latency-shift``, ``--max-p99-ratio``): a regression is *shown with
  confidence* only when the interval lies wholly beyond the limit.

Beside them the splits (each protocol × group's share per subset in both
runs, with exact intervals) and accuracy (top-1 and top-5 per subset in both
runs). The comparison says "regression" when any gate failed (exit code 1),
else "no regression shown" (0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from canary.conventions import ERROR, UNKNOWN
from canary.jsonable import jsonable
from canary.rundir.reader import Run
from canary.rundir.records import answered, cell_counts
from canary.rundir.steps import GateRecord
from canary.stats.intervals import share_intervals

from .accuracy import AccuracyReport, accuracy_report
from .gates import GateLimits, latency_gates
from .latency import ALL_FORMATS, strata, stratum_key, stratum_samples
from .latency_compare import LatencyComparison, compare_latency

__all__ = ["RunComparison", "ShareRow", "StratumComparison", "compare_runs"]


@dataclass(frozen=True)
class StratumComparison:
    """One subset over one protocol and format: run B against run A."""

    subset: str
    protocol: str
    format: str
    comparison: LatencyComparison
    gates: tuple[GateRecord, ...]

    @property
    def regression(self) -> bool:
        return any(g.status == "fail" for g in self.gates)


@dataclass(frozen=True)
class ShareRow:
    """One protocol × group × subset: its share of the attributed responses in each run."""

    cell: str
    subset: str
    a: tuple[int, int, float | None, float | None]  # count, cell total, interval low, high
    b: tuple[int, int, float | None, float | None]

    def share(self, which: str) -> float | None:
        count, total, _, _ = self.a if which == "a" else self.b
        return count / total if total else None


@dataclass(frozen=True)
class RunComparison:
    a: str  # run ids
    b: str
    limits: GateLimits
    strata: tuple[StratumComparison, ...]
    shares: tuple[ShareRow, ...]
    accuracy_a: AccuracyReport
    accuracy_b: AccuracyReport
    not_compared: tuple[str, ...]  # subset × protocol × format answered in one run only

    @property
    def regression(self) -> bool:
        return any(s.regression for s in self.strata)

    @property
    def status(self) -> str:
        return "regression" if self.regression else "no regression shown"

    @property
    def exit_code(self) -> int:
        return 1 if self.regression else 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "canary.compare/1", "a": self.a, "b": self.b, "status": self.status,
            "exit_code": self.exit_code, "limits": jsonable(self.limits),
            "strata": [{"subset": s.subset, "protocol": s.protocol, "format": s.format,
                        "comparison": s.comparison.to_dict(), "gates": [g.model_dump() for g in s.gates],
                        "regression": s.regression} for s in self.strata],
            "shares": [jsonable(r) for r in self.shares],
            "accuracy": {"a": self.accuracy_a.to_dict(), "b": self.accuracy_b.to_dict()},
            "not_compared": list(self.not_compared),
        }


def _share_rows(a: Run, b: Run, subsets: Sequence[str]) -> list[ShareRow]:
    counts = {"a": cell_counts(a.records), "b": cell_counts(b.records)}
    rows = []
    for cell in sorted(set(counts["a"]) | set(counts["b"])):
        values = {}
        for which in ("a", "b"):
            found = counts[which].get(cell, {})
            total = sum(n for s, n in found.items() if s not in (UNKNOWN, ERROR))
            values[which] = {s: (found.get(s, 0), total) for s in subsets}
        for subset in subsets:
            pair = []
            for which in ("a", "b"):
                count, total = values[which][subset]
                low, high = share_intervals(count, total, 0.95) if total else (None, None)
                pair.append((count, total, None if low is None else float(low), None if high is None else float(high)))
            rows.append(ShareRow(f"{cell[0]}/{cell[1]}", subset, pair[0], pair[1]))
    return rows


def compare_runs(a: Run, b: Run, limits: GateLimits | None = None) -> RunComparison:
    """Run B against run A (see the module docstring)."""
    limits = limits or GateLimits()
    rows_a, rows_b = answered(a.records), answered(b.records)
    subsets = list(dict.fromkeys([*a.subsets, *b.subsets]))
    formats = sorted(set(strata(rows_a)) | set(strata(rows_b)))
    if len(formats) > 1 and ALL_FORMATS in formats:  # one run stratified, the other not: compare all
        formats = [ALL_FORMATS]
    found: list[StratumComparison] = []
    missing: list[str] = []
    names = (f"B {b.run_id}", f"A {a.run_id}")
    for subset in subsets:
        for protocol in ("rest", "grpc"):
            for fmt in formats:
                sample_a = stratum_samples(rows_a, subset, protocol, fmt)
                sample_b = stratum_samples(rows_b, subset, protocol, fmt)
                if not sample_a.size and not sample_b.size:
                    continue
                where = f"{subset} {stratum_key(protocol, fmt)}"
                if sample_a.size < 2 or sample_b.size < 2:
                    missing.append(f"{where} ({sample_a.size} responses in A, {sample_b.size} in B)")
                    continue
                comparison = compare_latency(sample_b, sample_a, protocol=protocol, fmt=fmt,
                                             canary_name=f"{subset} in B", stable_name=f"{subset} in A",
                                             confidence=limits.confidence)
                gates = latency_gates(where, sample_b, sample_a, names, limits)
                found.append(StratumComparison(subset, protocol, fmt, comparison, tuple(gates)))
    return RunComparison(
        a=a.run_id, b=b.run_id, limits=limits, strata=tuple(found), shares=tuple(_share_rows(a, b, subsets)),
        accuracy_a=accuracy_report(a.records, subsets=subsets, stable=None, weights=a.weights),
        accuracy_b=accuracy_report(b.records, subsets=subsets, stable=None, weights=b.weights),
        not_compared=tuple(missing),
    )
