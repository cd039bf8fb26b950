"""The phrases every report shows beside a verdict: plain text, one owner for the console and the page."""

from __future__ import annotations

import math

from canary.stats import GroupVerdict

from .verify import CellResult, PhaseResult

__all__ = ["PHASE_COLUMNS", "cell_line", "pct", "phase_row", "verdict_facts"]

PHASE_COLUMNS = ("phase", "mesh version", "push started (UTC)", "acknowledged after", "requests",
                 "settling (not judged)", "new routing took effect", "expected from")


def _s(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f} s"


def phase_row(phase: PhaseResult) -> tuple[str, ...]:
    """One routing phase as the cells of :data:`PHASE_COLUMNS` (plain text)."""
    c = phase.convergence
    live = "– (live when the run started)" if phase.phase == 0 else "–"
    took = c.span if c is not None else live
    acknowledged = _s(c.acknowledged_s) if c is not None else "–"
    return (
        str(phase.phase), "–" if phase.version is None else str(phase.version), phase.started_at or "–",
        acknowledged, str(phase.requests), str(phase.settling), took,
        (phase.source or "no expected split") + (f" ({phase.note})" if phase.note else ""),
    )


def pct(value: float | None, digits: int = 2) -> str:
    """A fraction as a percentage (``–`` for none or NaN)."""
    if value is None or not math.isfinite(value):
        return "–"
    return f"{100 * value:.{digits}f}%"


def cell_line(cell: CellResult) -> str:
    """``rest/canary: 200 responses, resnet50 89.5%, verified``."""
    if cell.verdict is None:
        return f"{cell.name}: not judged"
    first = cell.verdict.shares[0]
    return f"{cell.name}: {cell.verdict.n} responses, {first.subset} {pct(first.observed, 1)}, {cell.status}"


def verdict_facts(verdict: GroupVerdict) -> list[str]:
    """The numbers beside a table's shares, one phrase each (shared by the page)."""
    facts = [f"n = {verdict.n} attributed of {verdict.n_total}"]
    if verdict.deviation is not None:
        d = verdict.deviation
        facts.append(
            f"largest deviation {100 * d.signed:+.2f} points ({d.subset}), "
            f"{100 * d.confidence:.4g}% interval {100 * d.ci_low:.2f}–{100 * d.ci_high:.2f}"
        )
    if verdict.kind == "deterministic" or verdict.wrong.count or len(verdict.expected) > len(
        [v for v in verdict.expected.values() if v > 0]
    ):
        facts.append(
            f"wrong-subset share below {pct(verdict.wrong.upper_bound, 3)} at "
            f"{100 * verdict.wrong.confidence:g}% ({verdict.wrong.count} wrong)"
        )
    srm = verdict.sample_ratio
    if srm is not None and srm.mismatch:
        facts.append(
            f"sample-ratio mismatch: {srm.test} p = {srm.p_value:.3g} < {srm.alpha:.3g} "
            "(the split is off, though not shown beyond the tolerance)"
        )
    if verdict.unknown or verdict.error:
        facts.append(
            f"unknown {verdict.unknown} ({pct(verdict.unknown_rate)}), error {verdict.error} ({pct(verdict.error_rate)})"
        )
    return facts
